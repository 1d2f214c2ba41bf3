"""Which runs `actlab summarize` may pool into one row: true replicates, identical in every config key but seed.

The frame holds each run's resolved config as columns (short names for dataset, model, activation,
margin and schedule; every other key dotted, e.g. "optim.lr"). A config key counts unless it cannot
change what is computed, by the same definition as the run id (actlab.run.runid: paths, logger, tags,
hydra, force, resume, run_id, the progress bar and log cadence), and with the run id's normalisation:
values derived from the run's own directory ("<runs>/<run_id>/checkpoints") count as "<run_dir>/...",
and actlab's own `_target_`s by class name only. Metrics, dead rates, timings and provenance (git commit,
path, source, kind) are not config (see identity_columns).

`plan(df, by)` groups the rows by the `--by` keys and, where runs of one group still differ in a
config key, splits the group by such keys (the fewest that make every row uniform: the short names
first, then keys ending in ".name", then the rest in frame order) and says so in one line. Each
resulting group has a `context`: its values of every key that is not about the activation (activation,
margin, schedule, activation.*, margin.*, the margin-schedule callback). A group is compared only with a
baseline group of the same context: the same run but for the activation and the seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from actlab.report.frame import SHORT, is_nan
from actlab.run import runid

LONG = {short: long for long, short in SHORT.items()}  # frame column -> config key ("model" -> "model.name")
_ACTIVATION_PARTS = ("activation", "margin")  # config groups that describe the activation and its margin
_RUN_DIR = "<run_dir>"  # as runid.identity resolves the run directory


def config_key(column: str) -> str:
    """A frame column's key in the config ("model" -> "model.name", "optim.lr" -> "optim.lr")."""
    return LONG.get(column, column)


def is_activation_key(column: str) -> bool:
    """Columns that describe the activation itself (not the context a baseline is matched in)."""
    key = config_key(column)
    return key.split(".")[0] in _ACTIVATION_PARTS or key == "callbacks.margin" or key.startswith("callbacks.margin.")


def _ignored(key: str) -> bool:
    """runid's keys that never change results (top-level groups and nested trainer settings)."""
    if key.split(".")[0] in runid.NOT_IDENTITY:
        return True
    return any(key == f"{group}.{k}" or key.startswith(f"{group}.{k}.")
               for group, keys in runid.NOT_IDENTITY_NESTED.items() for k in keys)


def identity_columns(df: pd.DataFrame) -> list[str]:
    """The frame's config columns that define a run (seed excluded), in frame order.

    Config columns are the short names (dataset, model, ...) and the dotted keys ("optim.lr"). Metrics
    have a slash ("test/acc", "dead_fwd/<layer>"); dead rates, timings (epochs_run and resumed_from too),
    W&B counters and provenance have no dot. Neither have top-level config scalars, but all of those
    (seed, force, resume, run_id, tags) are no identity anyway."""
    return [c for c in map(str, df.columns) if (c in LONG and c != "seed" or "." in c and "/" not in c)
            and not _ignored(config_key(c))]


def _short_target(v):
    return runid.short_targets({"_target_": v})["_target_"]


def _without_run_dir(values: np.ndarray, run_ids: np.ndarray) -> np.ndarray:
    """Values with their run's own directory (everything up to the run_id path component) as <run_dir>."""
    out = values.copy()
    for i, (v, r) in enumerate(zip(values, run_ids)):
        if type(v) is str and type(r) is str and r and r in v:
            j = v.find(r)
            end = j + len(r)
            if (j == 0 or v[j - 1] in "/\\") and (end == len(v) or v[end] in "/\\"):
                out[i] = _RUN_DIR + v[end:]
    return out


def codes(df: pd.DataFrame, column: str, run_ids: np.ndarray) -> np.ndarray:
    """Integer codes of a config column (equal codes: equal values after the run id's normalisation)."""
    s = df[column]
    c, uniques = pd.factorize(s, use_na_sentinel=False)
    if len(uniques) < 2 or pd.api.types.is_numeric_dtype(s.dtype):
        return c
    values = s.to_numpy(dtype=object)
    if column.endswith("_target_"):
        values = np.array([_short_target(v) for v in values], dtype=object)
    if any(type(u) is str and ("/" in u or "\\" in u) for u in uniques):  # paths: maybe the run's own
        values = _without_run_dir(values, run_ids)
    return pd.factorize(pd.Series(values, dtype=object), use_na_sentinel=False)[0]


def _varying(matrix: np.ndarray, gid: np.ndarray) -> np.ndarray:
    """Per column of `matrix` (rows x columns of codes): whether it takes several values within a group."""
    if matrix.shape[1] == 0 or len(gid) == 0:
        return np.zeros(matrix.shape[1], dtype=bool)
    order = np.argsort(gid, kind="stable")
    m, g = matrix[order], gid[order]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    return (np.minimum.reduceat(m, starts, axis=0) != np.maximum.reduceat(m, starts, axis=0)).any(axis=0)


def _refine(gid: np.ndarray, code: np.ndarray) -> np.ndarray:
    return pd.factorize(gid.astype(np.int64) * (int(code.max(initial=0)) + 1) + code)[0]


def _priority(column: str, position: int) -> tuple:
    if column in LONG:
        return (0, list(SHORT.values()).index(column))
    return (1 if config_key(column).endswith(".name") else 2, position)


@dataclass
class Plan:
    """The rows of a summary: `keys` = the --by keys + `split`; per group (sorted by `sort_key` later)
    its row positions, its key values (NaN as None) and its context (for baseline matching)."""

    by: list[str]
    split: list[str]
    members: list[np.ndarray]
    key_values: list[tuple]
    context: list[tuple]

    @property
    def keys(self) -> list[str]:
        return self.by + self.split

    def note(self) -> str | None:
        """One line saying which keys split the --by groups, or None."""
        if not self.split:
            return None
        names = ", ".join(config_key(k) for k in self.split)
        verb, it = ("differs", "it") if len(self.split) == 1 else ("differ", "them")
        return (f"note: {names} {verb} between runs of one --by group ({', '.join(self.by)}): rows are split by "
                f"{it} (a row pools only runs identical in every config key but the seed)")


def plan(df: pd.DataFrame, by: list[str]) -> Plan:
    """Group df's rows by `by`, split further until each group's runs are true replicates."""
    by = list(by)
    run_ids = df["run_id"].to_numpy(dtype=object) if "run_id" in df else np.full(len(df), None, dtype=object)
    cols = [c for c in identity_columns(df) if c not in by]
    matrix = (np.column_stack([codes(df, c, run_ids) for c in cols]) if cols
              else np.zeros((len(df), 0), dtype=np.int64))
    gid = (df.groupby(by, dropna=False, sort=False).ngroup().to_numpy() if by
           else np.zeros(len(df), dtype=np.int64))
    split: list[str] = []
    while True:
        vary = [j for j in np.flatnonzero(_varying(matrix, gid)) if cols[j] not in split]
        if not vary:
            break
        j = min(vary, key=lambda j: _priority(cols[j], j))
        split.append(cols[j])
        gid = _refine(gid, matrix[:, j])
    keys = by + split
    order = np.argsort(gid, kind="stable")
    starts = np.flatnonzero(np.r_[True, gid[order][1:] != gid[order][:-1]]) if len(gid) else np.array([], int)
    members = np.split(order, starts[1:]) if len(gid) else []
    arrays = {k: df[k].to_numpy(dtype=object) for k in keys}
    context_cols = [j for j, c in enumerate(cols) if not is_activation_key(c)]
    context_keys = [k for k in keys if not is_activation_key(k)]
    key_values, context = [], []
    for rows in members:
        first = rows[0]
        key_values.append(tuple(None if is_nan(arrays[k][first]) else arrays[k][first] for k in keys))
        context.append(tuple(None if is_nan(arrays[k][first]) else arrays[k][first] for k in context_keys)
                       + tuple(int(matrix[first, j]) for j in context_cols))
    return Plan(by, split, members, key_values, context)


def sort_key(values: tuple) -> tuple:
    """A total order over mixed key values: numbers, then text, then missing (None) last."""
    out = []
    for v in values:
        if v is None:
            out.append((2, 0, ""))
        elif isinstance(v, (int, float, np.integer, np.floating)):
            out.append((0, float(v), ""))
        else:
            out.append((1, 0, str(v)))
    return tuple(out)
