"""Every table actlab writes: cell formatting, "mean ± std", and Markdown / LaTeX output from one frame.

Callers build a DataFrame of display strings (one column per header, duplicates allowed, e.g. a "95% CI"
per metric) and, where a table marks the best value, a boolean mask of the same shape. `to_markdown`
renders it with DataFrame.to_markdown (GitHub pipe table, bold as **x**), `to_latex` with
DataFrame.style -> Styler.to_latex (a booktabs tabular, bold as \\textbf{x}). A column whose non-empty
cells all look numeric is right-aligned in both. Statistics over seeds, runs or batches use one
convention: `mean_std` (sample std, ddof=1; undefined, NaN, for a single value).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np
import pandas as pd

from actlab.report.frame import is_nan

DDOF = 1  # sample standard deviation, everywhere a "± std" is shown or stored
DASH = "—"  # a cell without a value
_NUMERIC = re.compile(r"^[-+<\d.\[—]")  # "<0.001" is a p-value
# After pandas' LaTeX escaping: the symbols the tables use, as text-mode LaTeX (pdflatex lacks them).
_TEX_SYMBOLS = {"±": r"$\pm$", "α": r"$\alpha$", "Δ": r"$\Delta$", "≠": r"$\neq$", "—": "--"}


# --- statistics and cells ------------------------------------------------------------------------------
def mean_std(values: Iterable[float]) -> tuple[float, float, int]:
    """(mean, std with ddof=1, n) of the non-NaN values; NaN mean for none, NaN std for fewer than two."""
    if isinstance(values, pd.Series):
        x = values.to_numpy(dtype=float, na_value=np.nan)
    else:
        x = np.asarray(values if isinstance(values, np.ndarray) else list(values), dtype=float)
    x = x[~np.isnan(x)]  # numpy, not a pandas Series: summarize calls this for every row and metric
    n = len(x)
    return (float(x.mean()) if n else np.nan, float(x.std(ddof=DDOF)) if n > DDOF else np.nan, n)


def fmt_num(x, digits: int = 2, sign: bool = False, thousands: bool = False) -> str:
    """x with `digits` decimals ('+' on positives with sign, ',' grouping with thousands); '—' for NaN."""
    if is_nan(x):
        return DASH
    return f"{x:{'+' if sign else ''}{',' if thousands else ''}.{digits}f}"


def fmt_mean_std(mean, std, digits: int = 2, sign: bool = False, thousands: bool = False) -> str:
    """'mean ± std' (the sign, if asked, only on the mean); the mean alone when std is NaN (n = 1)."""
    m = fmt_num(mean, digits, sign, thousands)
    return m if is_nan(std) or m == DASH else f"{m} ± {fmt_num(std, digits, thousands=thousands)}"


def fmt_p(p) -> str:
    """A p-value: three decimals, '<0.001' below that, '—' when there is none."""
    return DASH if is_nan(p) else "<0.001" if p < 0.001 else f"{p:.3f}"


def fmt_key(v) -> str:
    """A group-key cell (dataset, activation, margin, ...): floats as %g, missing as '—'."""
    if is_nan(v):
        return DASH
    return f"{v:g}" if isinstance(v, float) else str(v)


# --- output --------------------------------------------------------------------------------------------
def right_aligned(table: pd.DataFrame) -> list[bool]:
    """Per column: True when it has a value and every non-empty cell looks like a number ('—' counts)."""
    out = []
    for j in range(table.shape[1]):
        cells = [str(c) for c in table.iloc[:, j] if str(c) != ""]
        out.append(bool(cells) and all(_NUMERIC.match(c) for c in cells))
    return out


def _mask(table: pd.DataFrame, bold) -> np.ndarray:
    """The bold mask as a bool array of the table's shape (none bold when absent)."""
    if bold is None or not table.size:
        return np.zeros(table.shape, dtype=bool)
    return np.asarray(bold, dtype=bool).reshape(table.shape)


def to_markdown(table: pd.DataFrame, bold=None) -> str:
    """A GitHub-flavoured Markdown table of `table`'s cells (as given); bold cells wrapped in ** **."""
    cells = table.astype(str)
    mask = _mask(table, bold)
    for i, j in zip(*np.nonzero(mask)):
        cells.iat[i, j] = f"**{cells.iat[i, j]}**"
    # Without alignment tabulate leaves cells unpadded (rows stay short and greppable, as the committed
    # tables are); the rule line then says how each column aligns.
    text = cells.to_markdown(index=False, tablefmt="pipe", stralign=None, numalign=None, disable_numparse=True)
    lines = text.splitlines()
    lines[1] = "|" + "|".join("---:" if r else ":---" for r in right_aligned(table)) + "|"
    return "\n".join(lines) + "\n"


def _tex_symbols(text) -> str:
    return "".join(_TEX_SYMBOLS.get(ch, ch) for ch in str(text))


def to_latex(table: pd.DataFrame, bold=None, caption: str | None = None) -> str:
    """A booktabs tabular (\\toprule/\\midrule/\\bottomrule) ready to \\input into a paper's table; the
    caption becomes a leading comment, so the caller's table environment stays its own."""
    frame = table.astype(str).copy()
    # Styler.apply needs unique labels, and tables repeat some ("95% CI", "p"): a hidden second level
    # of positions makes them unique while the first level is what is printed.
    frame.columns = pd.MultiIndex.from_arrays([list(table.columns), range(table.shape[1])])
    mask = _mask(table, bold)
    styler = (frame.style.hide(axis="index").hide(axis="columns", level=1)
              .format(escape="latex", formatter=_tex_symbols)
              .format_index(escape="latex", formatter=_tex_symbols, axis="columns", level=0)
              .apply(lambda d: np.where(mask, "textbf:--rwrap;", ""), axis=None))
    align = "".join("r" if r else "l" for r in right_aligned(table))
    body = styler.to_latex(hrules=True, column_format=align, sparse_columns=False)
    return f"% {caption or 'generated by actlab'}\n{body}"
