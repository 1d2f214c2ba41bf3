"""actlab.report.tables: known-answer Markdown and LaTeX, the one "mean ± std" (ddof=1), cell formats.

    .venv/bin/python -m pytest tests/test_tables.py -q
"""

from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from actlab.report import tables as T

TABLE = pd.DataFrame([["relu", "—", "92.00 ± 2.00", "a_b"], ["helu", "0.05", "94.00 ± 1.41", "5% & more"]],
                     columns=["Activation", "α", "acc (%)", "Note"])
BOLD = [[False, False, False, False], [False, False, True, False]]


def test_markdown_known_answer():
    # α is numeric ('—' counts as a number), Note is not (a_b): right- and left-aligned.
    assert T.to_markdown(TABLE, BOLD) == (
        "| Activation | α | acc (%) | Note |\n"
        "|:---|---:|---:|:---|\n"
        "| relu | — | 92.00 ± 2.00 | a_b |\n"
        "| helu | 0.05 | **94.00 ± 1.41** | 5% & more |\n"
    )


def test_latex_known_answer_booktabs_escaping_and_bold():
    assert T.to_latex(TABLE, BOLD, caption="demo") == (
        "% demo\n"
        "\\begin{tabular}{lrrl}\n"
        "\\toprule\n"
        "Activation & $\\alpha$ & acc (\\%) & Note \\\\\n"
        "\\midrule\n"
        "relu & -- & 92.00 $\\pm$ 2.00 & a\\_b \\\\\n"
        "helu & 0.05 & \\textbf{94.00 $\\pm$ 1.41} & 5\\% \\& more \\\\\n"
        "\\bottomrule\n"
        "\\end{tabular}\n"
    )


def test_repeated_headers_and_empty_tables():
    t = pd.DataFrame([["x", "1", "2"]], columns=["k", "p", "p"])  # e.g. a "95% CI" per metric
    tex = T.to_latex(t, [[False, False, True]])
    assert "k & p & p \\\\" in tex and "x & 1 & \\textbf{2} \\\\" in tex
    assert T.to_markdown(t, [[False, True, False]]).splitlines()[2] == "| x | **1** | 2 |"
    empty = pd.DataFrame(columns=["a", "b"])
    assert T.to_markdown(empty) == "| a | b |\n|:---|:---|\n"
    assert T.to_latex(empty).splitlines()[1:5] == ["\\begin{tabular}{ll}", "\\toprule", "a & b \\\\", "\\midrule"]


def test_empty_cells_do_not_decide_alignment():
    t = pd.DataFrame({"n": ["3", ""], "note": ["", ""], "name": ["relu", "12"]})
    assert T.right_aligned(t) == [True, False, False]


def test_mean_std_uses_the_sample_std():
    # 2 4 4 4 5 5 7 9: mean 5, squared deviations sum to 32; ddof=1 -> 32/7 (the population std is 2).
    mean, std, n = T.mean_std([2, 4, 4, 4, 5, 5, 7, 9, np.nan, None])
    assert (mean, n) == (5.0, 8) and std == pytest.approx(math.sqrt(32 / 7))
    assert T.DDOF == 1
    one = T.mean_std([0.5])
    assert one[0] == 0.5 and math.isnan(one[1]) and one[2] == 1
    none = T.mean_std(pd.Series([np.nan]))
    assert math.isnan(none[0]) and math.isnan(none[1]) and none[2] == 0


def test_cell_formats():
    assert T.fmt_mean_std(92.0, 2.0) == "92.00 ± 2.00"
    assert T.fmt_mean_std(1.5, np.nan) == "1.50"  # n = 1: no spread to show
    assert T.fmt_mean_std(np.nan, np.nan) == "—"
    assert T.fmt_mean_std(-1.5, 2**0.5 / 2, sign=True) == "-1.50 ± 0.71"  # the sign on the mean only
    assert T.fmt_mean_std(0.4, np.nan, sign=True) == "+0.40"
    assert T.fmt_mean_std(1611.4, 45.2, 0, thousands=True) == "1,611 ± 45"
    assert T.fmt_mean_std(39.4244, 0.3712, 3) == "39.424 ± 0.371"
    assert (T.fmt_num(0.0), T.fmt_num(1 / 3, 4), T.fmt_num(None)) == ("0.00", "0.3333", "—")
    assert (T.fmt_p(0.0004), T.fmt_p(0.25), T.fmt_p(np.nan)) == ("<0.001", "0.250", "—")
    assert [T.fmt_key(v) for v in (np.nan, None, 0.05, 1.0, "relu", 3)] == ["—", "—", "0.05", "1", "relu", "3"]


def _imports(module: str) -> set[str]:
    path = Path(T.__file__).parent / f"{module}.py"
    tree = ast.parse(path.read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    names |= {f"{n.module}.{a.name}" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module
              for a in n.names}
    return names


def test_no_import_circle_between_summarize_and_paper():
    assert "actlab.report.summarize" not in _imports("paper")
    assert not {m for m in _imports("tables") if m.startswith("actlab.")} - {"actlab.report.frame",
                                                                             "actlab.report.frame.is_nan"}
