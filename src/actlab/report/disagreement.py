"""Prediction disagreement between seeds (Shamir, Lin & Coviello 2020, "Smooth activations and
reproducibility in deep networks"): `actlab summarize --metric pd rel_pd`.

    pd      the share of test examples on which two runs that differ only in the seed predict different
            classes, averaged over all pairs of runs of a summary row (k runs: k (k-1) / 2 pairs);
    rel_pd  pd divided by the row's mean top-1 test error, mean over its runs of 1 - test/acc (the
            same runs): the paper's relative PD, disagreement per unit of error.

Each image run saves its test-set predictions beside its record (run.records.PREDICTIONS: the predicted
class of every test example, in index order). Rows are summarize's true replicates (actlab.report.groups),
so a pair differs only in the seed. A row gets no value (NaN, shown —) when it has fewer than two counted
runs, or when one of them has no readable predictions file (runs of older actlab versions) or their
lengths differ (another test set size, or trainer.limit_test_batches): never a number over a subset of
the row's runs; summarize adds a note with the reasons (`Disagreement.why`). GLUE and masked-LM rows
save no predictions: no value and no note, as for a metric their kind does not record. The spread shown
is the std over pairs; no confidence interval (the pairs share runs, so they are not independent).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pandas as pd

from actlab.run import records

METRICS = ("pd", "rel_pd")  # per-row (group) metrics, computed from the runs' prediction files
ERROR_OF = "test/acc"  # rel_pd's error rate is 1 - this, averaged over the row's runs


def pairwise(predictions: list[np.ndarray]) -> np.ndarray:
    """The disagreement (share of positions that differ) of every pair i < j of equal-length arrays."""
    return np.array([np.count_nonzero(a != b) / len(a) for a, b in combinations(predictions, 2)], dtype=float)


@dataclass
class Disagreement:
    """pd and rel_pd of one row: mean and std (ddof=1) over its pairs, k runs, and why there is no value."""

    pd: float = np.nan
    pd_std: float = np.nan
    rel_pd: float = np.nan
    rel_pd_std: float = np.nan
    n: int = 0  # runs
    pairs: int = 0
    why: str | None = None  # None when the row has a value, or has fewer than two runs (nothing to pair)


def of_runs(predictions: list[np.ndarray | None], accuracies: np.ndarray) -> Disagreement:
    """pd and rel_pd of k runs of one row from their prediction arrays (None: no file) and test accuracies."""
    k = len(predictions)
    out = Disagreement(n=k, pairs=k * (k - 1) // 2)
    if k < 2:
        return out
    if any(p is None for p in predictions):
        out.why = f"a run without a readable {records.PREDICTIONS}"
        return out
    lengths = {len(p) for p in predictions}
    if len(lengths) > 1 or 0 in lengths:
        out.why = "prediction files of different lengths" if len(lengths) > 1 else "empty prediction files"
        return out
    d = pairwise(predictions)
    out.pd = float(d.mean())
    out.pd_std = float(d.std(ddof=1)) if len(d) > 1 else np.nan
    err = float(np.mean(1.0 - np.asarray(accuracies, dtype=float)))
    if not np.isfinite(err):
        out.why = f"no {ERROR_OF} for a run (rel_pd only)"
    elif err <= 0:
        out.why = "test error 0 (rel_pd only)"
    else:
        out.rel_pd, out.rel_pd_std = out.pd / err, out.pd_std / err
    return out


def prediction_paths(df: pd.DataFrame) -> np.ndarray:
    """Per frame row, where its prediction file would be (None for rows without a run directory): the
    frame's "predictions" column when it has one, else PREDICTIONS beside the record.json in "path"."""
    if "predictions" in df.columns:
        return np.array([p if isinstance(p, str) and p else None for p in df["predictions"]], dtype=object)
    src = df["source"].to_numpy(dtype=object) if "source" in df.columns else np.full(len(df), "record", dtype=object)
    paths = df["path"].to_numpy(dtype=object) if "path" in df.columns else np.full(len(df), None, dtype=object)
    return np.array([os.path.join(os.path.dirname(p), records.PREDICTIONS)
                     if s == "record" and isinstance(p, str) and p.endswith(records.RECORD) else None
                     for s, p in zip(src, paths)], dtype=object)


def by_row(df: pd.DataFrame, rows: list[np.ndarray]) -> list[Disagreement]:
    """pd and rel_pd of each summary row, given the frame positions of the runs it counts."""
    paths = prediction_paths(df)
    acc = (pd.to_numeric(df[ERROR_OF], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
           if ERROR_OF in df.columns else np.full(len(df), np.nan))
    kinds = df["kind"].to_numpy(dtype=object) if "kind" in df.columns else np.full(len(df), "image", dtype=object)
    out = []
    for r in rows:  # a row of one run pairs nothing: its file is not read
        preds = [records.load_predictions(paths[p]) if paths[p] else None for p in r] if len(r) >= 2 else [None] * len(r)
        out.append(of_runs(preds, acc[r]))
        if len(r) and not (kinds[r] == "image").any():  # GLUE, MLM: never saved, as test/acc is never recorded
            out[-1].why = None
    return out


def any_predictions(df: pd.DataFrame) -> bool:
    """Whether a completed run of the frame has a prediction file (the CLI then shows pd and rel_pd)."""
    done = (df["status"] == "completed").to_numpy(dtype=bool) if "status" in df.columns else np.ones(len(df), bool)
    return any(p is not None and os.path.isfile(p) for p in prediction_paths(df)[done])


def note(results: list[Disagreement], metrics: list[str]) -> str | None:
    """One line saying how many rows of 2+ runs have no value of `metrics` (pd, rel_pd) and why, or None."""
    counts: dict[str, int] = {}
    for r in results:
        if r.why and ("rel_pd" in metrics or "rel_pd only" not in r.why):
            counts[r.why] = counts.get(r.why, 0) + 1
    if not counts:
        return None
    reasons = "; ".join(f"{w}: {n} row(s)" for w, n in counts.items())
    return (f"note: {' / '.join(metrics)} is — in rows of 2+ runs that cannot be compared ({reasons}); only "
            f"image runs save {records.PREDICTIONS}, and a row's value always pairs all of its counted runs")


LEGEND = ("pd: share of test examples on which two runs of a row (differing only in the seed) predict different "
             "classes, mean ± std over all pairs of its runs; rel_pd = pd / the row's mean test error (1 - test/acc); "
             "Δ without a test (Shamir et al. 2020)")


def cells(m: str, r: Disagreement, b: Disagreement | None, method,
                 with_base: bool) -> dict:
    """A group metric's cells of one row: mean and std over its pairs, n runs, the pairs; no CI; Δ vs the
    baseline row's value (no test: pairs are not independent samples)."""
    mean, std = (r.pd, r.pd_std) if m == "pd" else (r.rel_pd, r.rel_pd_std)
    cells = {f"{m}:mean": mean, f"{m}:std": std, f"{m}:n": r.n, f"{m}:pairs": r.pairs}
    if method:
        cells[f"{m}:ci_low"] = cells[f"{m}:ci_high"] = np.nan
    if with_base:
        base = np.nan if b is None else (b.pd if m == "pd" else b.rel_pd)
        cells |= {f"{m}:diff": mean - base, f"{m}:p": np.nan, f"{m}:test": ""}
    return cells
