"""Comparison tables over seeds: `actlab summarize [RUNS_DIR] --by dataset,activation,margin --metric test/acc`.

Per group of completed runs: mean ± std, n, a 95 % bootstrap CI and the difference to the baseline
activation in the same context (paired t-test when the seed sets match, else Welch). Runs that failed,
are still running or are corrupt are counted per group and listed, never dropped silently.
Writes <out>/<name>.md, .tex (booktabs), .csv (raw units), plus <name>_dead.* and <name>_excluded.csv,
and <name>_int8.* (INT8 minus fp32 per GLUE task, the paper's Table 3) once `actlab int8` has run.
Cells, "mean ± std" (ddof=1) and the Markdown/LaTeX output come from actlab.report.tables; the GLUE
column map and the paper-vs-ours tables from actlab.report.paper, which does not import this module.
"""

from __future__ import annotations

import argparse
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from actlab.report import paper
from actlab.report.frame import DEAD_KEYS, is_nan, load_frame
from actlab.report.tables import DASH, fmt_key, fmt_mean_std, fmt_num, fmt_p, mean_std, to_latex, to_markdown

DEFAULT_BY = ("dataset", "activation", "margin")
PRETTY = {"dataset": "Dataset", "model": "Model", "activation": "Activation", "margin": "α",
          "schedule": "Schedule", "seed": "Seed"}
# Shown in percent: accuracies and other [0, 1] scores (GLUE MCC/F1/correlations and the per-task
# GLUE score), and the dead rates.
_PERCENT = re.compile(r"acc|f1|mcc|matthews|spearman|pearson|corr|auc|precision|recall|score|"
                      + "|".join(DEAD_KEYS))
_LOWER_IS_BETTER = re.compile(r"loss|dead|err|time|_s$|band|zero_rate|ppl|perplexity")


def scale_of(metric: str) -> float:
    """100 for fraction-valued metrics (displayed as %), 1 otherwise (losses, seconds)."""
    return 100.0 if _PERCENT.search(metric) and "loss" not in metric else 1.0


def higher_is_better(metric: str) -> bool:
    return not _LOWER_IS_BETTER.search(metric)


def is_activation_key(key: str) -> bool:
    """Keys that describe the activation itself (not the context a baseline is matched in)."""
    return key in ("activation", "margin", "schedule") or key.startswith(("activation.", "margin."))


def bootstrap_ci(x: np.ndarray, level: float = 0.95, n_resamples: int = 2000) -> tuple[float, float]:
    """Bootstrap CI of the mean, seeded so tables are reproducible.

    n=1: no interval (NaN). Constant samples: the point itself. n=2: percentile method (BCa's
    jackknife is degenerate); it spans the two values and is only indicative. n>=3: BCa.
    """
    x = np.asarray(x, dtype=float)
    if len(x) < 2:
        return (np.nan, np.nan)
    if np.all(x == x[0]):
        return (float(x[0]), float(x[0]))
    method = "percentile" if len(x) < 3 else "BCa"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ci = stats.bootstrap((x,), np.mean, n_resamples=n_resamples, confidence_level=level,
                             method=method, rng=np.random.default_rng(0)).confidence_interval
        if not np.isfinite([ci.low, ci.high]).all():
            ci = stats.bootstrap((x,), np.mean, n_resamples=n_resamples, confidence_level=level,
                                 method="percentile", rng=np.random.default_rng(0)).confidence_interval
    return (float(ci.low), float(ci.high))


def compare(ours: pd.Series, base: pd.Series) -> tuple[float, float, str]:
    """(mean difference, p-value, test) of two seed-indexed samples.

    Paired t-test when both have the same set of seeds (seed s shares data order and init RNG
    with the baseline's seed s); Welch's t-test otherwise; no p-value when a side has n < 2.
    """
    ours, base = ours.dropna(), base.dropna()
    ours, base = ours.groupby(level=0).mean(), base.groupby(level=0).mean()  # duplicate seeds: average
    if len(ours) == 0 or len(base) == 0:
        return (np.nan, np.nan, "")
    diff = float(ours.mean() - base.mean())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if len(ours) >= 2 and set(ours.index) == set(base.index) and not ours.index.hasnans:
            return (diff, float(stats.ttest_rel(ours.sort_index(), base.sort_index()).pvalue), "paired")
        if len(ours) >= 2 and len(base) >= 2:
            return (diff, float(stats.ttest_ind(ours, base, equal_var=False).pvalue), "welch")
    return (diff, np.nan, "")


@dataclass
class Summary:
    """Numeric per-group statistics (raw units) and the runs that were not counted."""

    stats: pd.DataFrame
    excluded: pd.DataFrame
    by: list[str]
    metrics: list[str]
    baseline: str | None


def _norm(key, n: int) -> tuple:
    """A groupby key as a tuple with NaN -> None (NaN != NaN would break dict lookups)."""
    key = key if isinstance(key, tuple) else (key,)
    return tuple(None if is_nan(v) else v for v in key[:n])


def _by_seed(runs: pd.DataFrame, metric: str) -> pd.Series:
    return pd.Series(runs[metric].to_numpy(dtype=float), index=runs["seed"].to_numpy())


def summarize(df: pd.DataFrame, by=DEFAULT_BY, metrics=("test/acc",), baseline: str | None = "relu",
              ci: bool = True) -> Summary:
    """Group runs by `by`; stats over completed runs, status counts over all of them (raw units)."""
    by, metrics = list(by), [m for m in metrics if m in df.columns]
    missing = [k for k in by if k not in df.columns]
    if missing:
        raise KeyError(f"unknown --by key(s) {missing}; columns: {', '.join(map(str, df.columns))}")
    context = [k for k in by if not is_activation_key(k)]
    done = df[df["status"] == "completed"]
    base_runs: dict[tuple, pd.DataFrame] = {}
    if baseline and "activation" in by:
        b = done[done["activation"] == baseline]
        base_runs = {_norm(k, len(context)): g for k, g in b.groupby(context, dropna=False)} if context else {(): b}
    rows = []
    for key, g in df.groupby(by, dropna=False, sort=True):
        key = _norm(key, len(by))
        counts = g["status"].value_counts()
        row = dict(zip(by, key)) | {"n": int(counts.get("completed", 0))}
        for st in ("failed", "running", "corrupt"):
            row[f"n_{st}"] = int(counts.get(st, 0))
        row["n_other"] = int(len(g) - row["n"] - row["n_failed"] - row["n_running"] - row["n_corrupt"])
        mine = g[g["status"] == "completed"]
        base = None
        if base_runs and row["activation"] != baseline:
            base = base_runs.get(tuple(row[k] for k in context))
        for m in metrics:
            x = mine[m].dropna().astype(float)
            row[f"{m}:mean"], row[f"{m}:std"], row[f"{m}:n"] = mean_std(x)
            if ci:
                row[f"{m}:ci_low"], row[f"{m}:ci_high"] = bootstrap_ci(x.to_numpy())
            if baseline and "activation" in by:
                d, p, test = (np.nan, np.nan, "") if base is None or mine.empty else compare(
                    _by_seed(mine, m), _by_seed(base, m))
                row |= {f"{m}:diff": d, f"{m}:p": p, f"{m}:test": test}
        rows.append(row)
    out = pd.DataFrame(rows)
    if baseline and "activation" in by:  # the baseline's row first within each context
        out["_o"] = out["activation"] != baseline
        out = out.sort_values(context + ["_o"], kind="stable", na_position="last").drop(columns="_o")
        out = out.reset_index(drop=True)
    _mark_best(out, context, metrics)
    excluded = df.loc[df["status"] != "completed", ["run_id", "status", "error", "path"]]
    return Summary(out, excluded.reset_index(drop=True), by, metrics, baseline)


def _mark_best(out, context, metrics) -> None:
    """<m>:best is True for the best mean within each context (ties at display precision all marked)."""
    for m in metrics:
        shown = (out[f"{m}:mean"] * scale_of(m)).round(2)
        keys = [out[k].astype(str) for k in context] or [pd.Series("", index=out.index)]
        best = shown.groupby(keys).transform("max" if higher_is_better(m) else "min")
        out[f"{m}:best"] = shown.notna() & (shown == best)


# --- display tables (cells formatted by actlab.report.tables) -------------------------------------------
def display_table(s: Summary) -> tuple[pd.DataFrame, np.ndarray]:
    """The main table's cells (metrics in display units) and its bold mask (the best mean per context)."""
    base = s.baseline and "activation" in s.by
    header = [PRETTY.get(k, k) for k in s.by] + ["n"]
    for m in s.metrics:
        unit = " (%)" if scale_of(m) == 100 else ""
        header += [f"{m}{unit}", "95% CI"] + ([f"Δ vs {s.baseline}", "p"] if base else [])
    header += ["failed", "running", "corrupt"]
    rows, bold = [], []
    for _, r in s.stats.iterrows():
        cells = [fmt_key(r[k]) for k in s.by] + [str(r["n"])]
        mask = [False] * len(cells)
        for m in s.metrics:
            c = scale_of(m)
            lo, hi = r.get(f"{m}:ci_low", np.nan), r.get(f"{m}:ci_high", np.nan)
            cells += [fmt_mean_std(r[f"{m}:mean"] * c, r[f"{m}:std"] * c),
                      DASH if is_nan(lo) else f"[{fmt_num(lo * c)}, {fmt_num(hi * c)}]"]
            mask += [bool(r[f"{m}:best"]), False]
            if base:
                p = r[f"{m}:p"]
                cells += [fmt_num(r[f"{m}:diff"] * c, sign=True),
                          DASH if is_nan(p) else f"{fmt_p(p)} ({r[f'{m}:test']})"]
                mask += [False, False]
        cells += [str(r["n_failed"]), str(r["n_running"]), str(r["n_corrupt"])]
        rows.append(cells)
        bold.append(mask + [False] * 3)
    return pd.DataFrame(rows, columns=header), np.array(bold, dtype=bool).reshape(len(rows), len(header))


def dead_table(s: Summary) -> pd.DataFrame:
    """The dead-rate table's cells (mean ± std in %)."""
    header = [PRETTY.get(k, k) for k in s.by] + ["n"] + [f"{m} (%)" for m in s.metrics]
    rows = [[fmt_key(r[k]) for k in s.by] + [str(r["n"])]
            + [fmt_mean_std(r[f"{m}:mean"] * 100, r[f"{m}:std"] * 100) for m in s.metrics]
            for _, r in s.stats.iterrows()]
    return pd.DataFrame(rows, columns=header)


def int8_view(df: pd.DataFrame, by=("activation", "margin")) -> pd.DataFrame:
    """Table 3 as ours: per group of `by` (rows) and GLUE task (columns as the paper's, plus CoLA), the
    mean, std and n over completed runs of INT8 minus fp32 in points (actlab int8's deltas x 100);
    `avg:mean` is the mean of the paper's nine columns when all are present. Empty without int8 data."""
    if not paper.has_int8(df):
        return pd.DataFrame()
    done = paper.glue_runs(df)
    done = done[done[[c for c in done.columns if c.startswith(paper.INT8_PREFIX)]].notna().any(axis=1)]
    columns = {**paper.INT8_COLUMNS, "cola_mcc": ("cola", "mcc")}
    rows = []
    for key, g in done.groupby(list(by), dropna=False, sort=True):
        row = dict(zip(by, _norm(key, len(by)))) | {"n": len(g)}
        for col, (task, metric) in columns.items():
            x = paper.glue_value(g, task, metric, (paper.INT8_PREFIX,)).astype(float) * 100
            row[f"{col}:mean"], row[f"{col}:std"], row[f"{col}:n"] = mean_std(x)
        means = [row[f"{c}:mean"] for c in paper.INT8_COLUMNS]
        row["avg:mean"] = np.mean(means) if not np.isnan(means).any() else np.nan
        rows.append(row)
    out = pd.DataFrame(rows)
    empty = [c for c in columns if out[f"{c}:n"].sum() == 0]  # tasks no run has: no column
    return out.drop(columns=[f"{c}:{s}" for c in empty for s in ("mean", "std", "n")])


def int8_display(t: pd.DataFrame, by) -> pd.DataFrame:
    """int8_view's cells: signed points, ± std when a cell has several runs."""
    cols = [c.removesuffix(":mean") for c in t.columns if c.endswith(":mean")]
    header = [PRETTY.get(k, k) for k in by] + ["n"] + cols
    rows = [[fmt_key(r[k]) for k in by] + [str(r["n"])]
            + [fmt_mean_std(r[f"{c}:mean"], r.get(f"{c}:std", np.nan), sign=True) for c in cols]
            for _, r in t.iterrows()]
    return pd.DataFrame(rows, columns=header)


def excluded_markdown(excluded: pd.DataFrame, limit: int = 50) -> str:
    """The runs not counted in the statistics, one line each (error's first line, truncated)."""
    if excluded.empty:
        return ""
    lines = [f"Runs not counted ({len(excluded)}):", ""]
    for _, r in excluded.head(limit).iterrows():
        err = "" if is_nan(r["error"]) else " — " + str(r["error"]).splitlines()[0][:120]
        lines.append(f"- `{r['run_id']}` {r['status']}{err}")
    if len(excluded) > limit:
        lines.append(f"- ... and {len(excluded) - limit} more (see the _excluded.csv)")
    return "\n".join(lines) + "\n"


def write_summary(df: pd.DataFrame, out: str | Path, name: str, by=DEFAULT_BY, metrics=("test/acc",),
                  baseline: str | None = "relu") -> tuple[list[Path], str]:
    """Write the main and dead-rate tables; return (paths written, the Markdown shown to the user)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    s = summarize(df, by, metrics, baseline)
    if not s.metrics:
        raise KeyError(f"none of the metrics {list(metrics)} is in the runs")
    table, bold = display_table(s)
    md = f"## {name}: {', '.join(s.metrics)} by {', '.join(s.by)} (mean ± std over seeds)\n\n"
    md += to_markdown(table, bold)
    tex = to_latex(table, bold, caption=f"actlab summarize: {name}")
    s.stats.to_csv(out / f"{name}.csv", index=False)
    paths = [out / f"{name}.md", out / f"{name}.tex", out / f"{name}.csv"]
    dead_metrics = [k for k in ("dead_fwd", "dead_grad") if k in df.columns and df[k].notna().any()]
    if dead_metrics:
        d = summarize(df, by, dead_metrics, baseline, ci=False)  # baseline: same row order, Δ in the csv
        dead = dead_table(d)
        md += "\n### Dead-neuron rates (%, final epoch)\n\n" + to_markdown(dead)
        (out / f"{name}_dead.tex").write_text(to_latex(dead, caption=f"actlab summarize: {name} dead"))
        d.stats.to_csv(out / f"{name}_dead.csv", index=False)
        paths += [out / f"{name}_dead.tex", out / f"{name}_dead.csv"]
    int8_by = [k for k in s.by if k != "dataset"] or ["activation", "margin"]  # tasks are its columns
    int8 = int8_view(df, int8_by)
    if not int8.empty:
        cells = int8_display(int8, int8_by)
        md += ("\n### INT8 minus full precision (GLUE dev, points; mean ± std over runs; paper Table 3)\n\n"
               + to_markdown(cells))
        (out / f"{name}_int8.tex").write_text(to_latex(cells, caption=f"actlab summarize: {name} INT8 - fp32"))
        int8.to_csv(out / f"{name}_int8.csv", index=False)
        paths += [out / f"{name}_int8.tex", out / f"{name}_int8.csv"]
    if not s.excluded.empty:
        md += "\n" + excluded_markdown(s.excluded)
        s.excluded.to_csv(out / f"{name}_excluded.csv", index=False)
        paths.append(out / f"{name}_excluded.csv")
    (out / f"{name}.md").write_text(md)
    (out / f"{name}.tex").write_text(tex)
    return paths, md


# --- CLI -----------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs_dir", nargs="?", default="results/runs", help="run records (default results/runs)")
    parser.add_argument("--by", default=",".join(DEFAULT_BY), help="comma-separated group keys")
    parser.add_argument("--metric", nargs="+", action="extend", dest="metrics", help="metrics (default test/acc)")
    parser.add_argument("--out", default="results/tables", help="output folder")
    parser.add_argument("--baseline", default="relu", help="activation to compare against ('' for none)")
    parser.add_argument("--name", default="summary", help="file stem of the tables")
    parser.add_argument("--paper", action="store_true", help="also write the paper-vs-ours tables")
    parser.add_argument("--no-wandb", action="store_true", help="ignore W&B offline runs")
    parser.add_argument("--wandb-project", default=None, help="read an online W&B project entity/project")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markdown import Markdown

    console = Console()
    df = load_frame(args.runs_dir, wandb=not args.no_wandb, wandb_project=args.wandb_project)
    if df.empty:
        console.print(f"[red]no run records under {args.runs_dir}[/red]")
        return 1
    by = [k.strip() for k in args.by.split(",") if k.strip()]
    try:
        paths, md = write_summary(df, args.out, args.name, by, args.metrics or ["test/acc"], args.baseline or None)
    except KeyError as e:
        console.print(f"[red]{e.args[0]}[/red]")
        return 2
    console.print(Markdown(md))
    paths += paper.write_paper_tables(df, args.out, force=args.paper, console=console)
    for p in paths:
        console.print(f"wrote {p}")
    return 0
