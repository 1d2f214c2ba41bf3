"""Comparison tables over seeds: `actlab summarize [RUNS_DIR] --by dataset,activation,margin --metric test/acc`.

A row pools only true replicates: completed runs identical in every config key but the seed. Runs of
one --by group that differ in another key (a second model, another learning rate) are split into rows
by it, a column is added and a note says which key (actlab.report.groups). Per row: mean ± std, n, a 95 %
CI of the mean (Student t by default, `--ci bootstrap` for BCa; the header names the method; see
actlab.report.stats) and the difference to the baseline activation run with the same config but for
activation, margin, schedule and seed (paired t-test when the seed sets match, else Welch). Runs that
failed, are still running or are corrupt are counted per row and listed, never dropped silently; so are
completed runs with a non-finite metric (an old record): excluded from their row, with the reason.
Writes <out>/<name>.md, .tex (booktabs), .csv (raw units), plus <name>_dead.* and <name>_excluded.csv,
and <name>_int8.* (INT8 minus fp32 per GLUE task, the paper's Table 3) once `actlab int8` has run.
`pd` and `rel_pd` (--metric pd rel_pd; shown by default when runs saved test predictions) are per-row
metrics over pairs of the row's runs: prediction disagreement between seeds (actlab.report.disagreement).
Cells, "mean ± std" (ddof=1) and the Markdown/LaTeX output come from actlab.report.tables; the GLUE
column map and the paper-vs-ours tables from actlab.report.paper, which does not import this module.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from actlab.report import disagreement, groups, paper
from actlab.report.frame import DEAD_KEYS, is_nan, load_frame
from actlab.report.groups import is_activation_key  # noqa: F401 - part of this module's interface
from actlab.report.stats import CI_LABEL, CI_METHODS, bootstrap_ci, compare, interval, t_ci  # noqa: F401
from actlab.report.tables import DASH, fmt_key, fmt_mean_std, fmt_num, fmt_p, mean_std, to_latex, to_markdown

DEFAULT_BY = ("dataset", "activation", "margin")
PRETTY = {"dataset": "Dataset", "model": "Model", "activation": "Activation", "margin": "α",
          "schedule": "Schedule", "seed": "Seed"}
# Shown in percent: accuracies and other [0, 1] scores (GLUE MCC/F1/correlations and the per-task
# GLUE score), and the dead rates.
_PERCENT = re.compile(r"acc|f1|mcc|matthews|spearman|pearson|corr|auc|precision|recall|score|^pd$|"
                      r"dormant|revived|still_dead|" + "|".join(DEAD_KEYS))
_LOWER_IS_BETTER = re.compile(r"loss|dead|err|time|_s$|band|zero_rate|ppl|perplexity|^pd$|^rel_pd$|"
                              r"dormant|still_dead")
# Per-row metrics over pairs of a row's runs (not per-run frame columns): prediction disagreement between
# seeds and relative to the test error (actlab.report.disagreement). Stored as <m>:mean (over pairs), <m>:std
# (over pairs), <m>:n (runs) and <m>:pairs; no CI (pairs share runs); Δ vs the baseline row without a test.
GROUP_METRICS = disagreement.METRICS


def scale_of(metric: str) -> float:
    """100 for fraction-valued metrics (displayed as %), 1 otherwise (losses, seconds)."""
    return 100.0 if _PERCENT.search(metric) and "loss" not in metric else 1.0


def higher_is_better(metric: str) -> bool:
    return not _LOWER_IS_BETTER.search(metric)


@dataclass
class Summary:
    """Numeric per-row statistics (raw units) and the runs that were not counted.

    `by`: the row keys (the --by keys, then `split`, the config keys that had to be added so that each
    row pools true replicates); `ci`: the CI method ("t", "bootstrap", or None); `notes`: one-line
    remarks for the reader (a split, rows without a comparable baseline)."""

    stats: pd.DataFrame
    excluded: pd.DataFrame
    by: list[str]
    metrics: list[str]
    baseline: str | None
    ci: str | None = "t"
    split: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    plan: groups.Plan | None = None


def _nonfinite(rows: np.ndarray, values: dict[str, np.ndarray]) -> dict[int, str]:
    """Row position -> reason, for completed runs of one row with a non-finite metric: ±inf, or NaN
    while another run of the row has a value. A metric NaN in every run of the row is not recorded there
    (a GLUE task without test/acc): its cells show —, and it excludes nobody."""
    reasons: dict[int, list[str]] = {}
    for m, v in values.items():
        x = v[rows]
        bad = ~np.isfinite(x)
        if not bad.any() or np.isnan(x).all():
            continue
        for pos, val in zip(rows[bad], x[bad]):
            why = "non-finite" if np.isinf(val) else "not a number, or not recorded"
            reasons.setdefault(int(pos), []).append(f"{m} = {val} ({why})")
    return {p: "; ".join(r) for p, r in reasons.items()}


def _ci_method(ci) -> str | None:
    method = "t" if ci is True else (ci or None)
    if method is not None and method not in CI_METHODS:
        raise ValueError(f"unknown CI method {ci!r}; one of {', '.join(CI_METHODS)}")
    return method


def summarize(df: pd.DataFrame, by=DEFAULT_BY, metrics=("test/acc",), baseline: str | None = "relu",
              ci: str | bool | None = "t", drop: dict[str, str] | None = None,
              plan: groups.Plan | None = None) -> Summary:
    """Group runs by `by` (split into true replicates); stats over completed runs, status counts over all
    of them (raw units). `drop`: run_id -> reason for completed runs to leave out too (the dead-rate
    table drops the main table's); `plan`: a groups.plan(df, by) already made."""
    by, metrics = list(by), [m for m in metrics if m in df.columns or m in GROUP_METRICS]
    missing = [k for k in by if k not in df.columns]
    if missing:
        raise KeyError(f"unknown --by key(s) {missing}; columns: {', '.join(map(str, df.columns))}")
    method = _ci_method(ci)
    plan = plan or groups.plan(df, by)
    keys, drop = plan.keys, drop or {}
    status = df["status"].to_numpy(dtype=object)
    run_ids = df["run_id"].to_numpy(dtype=object)
    seeds = pd.to_numeric(df["seed"], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    values = {m: pd.to_numeric(df[m], errors="coerce").to_numpy(dtype=float, na_value=np.nan) for m in metrics
              if m not in GROUP_METRICS}
    used, why = [], {}
    for rows in plan.members:  # the runs each row counts
        done = rows[status[rows] == "completed"]
        bad = _nonfinite(done, values) | {int(p): drop[run_ids[p]] for p in done if run_ids[p] in drop}
        why |= bad
        used.append(done[[int(p) not in bad for p in done]] if bad else done)
    group_metrics = [m for m in metrics if m in GROUP_METRICS]
    pairs = disagreement.by_row(df, used) if group_metrics else []
    with_base = bool(baseline) and "activation" in keys
    base_of: dict[tuple, list[int]] = {}
    if with_base:
        a = keys.index("activation")
        for gi, kv in enumerate(plan.key_values):
            if kv[a] == baseline:
                base_of.setdefault(plan.context[gi], []).append(gi)
    rows_out, unmatched = [], 0
    for gi, rows in enumerate(plan.members):
        st = status[rows]
        mine = used[gi]
        row = dict(zip(keys, plan.key_values[gi])) | {"n": len(mine)}
        for name in ("failed", "running", "corrupt"):
            row[f"n_{name}"] = int(np.count_nonzero(st == name))
        row["n_other"] = int(len(rows) - np.count_nonzero(st == "completed") - row["n_failed"] - row["n_running"]
                             - row["n_corrupt"])
        row["n_nonfinite"] = int(np.count_nonzero(st == "completed") - len(mine))
        base = base_gi = None
        if with_base and row["activation"] != baseline:
            match = base_of.get(plan.context[gi], [])
            base_gi = match[0] if len(match) == 1 else None  # several: ambiguous, none: nothing to pair
            base = used[base_gi] if base_gi is not None else None
            unmatched += int(base is None and len(mine) > 0)
        for m in metrics:
            if m in GROUP_METRICS:
                row |= disagreement.cells(m, pairs[gi], pairs[base_gi] if base is not None else None, method, with_base)
                continue
            x = values[m][mine]
            x = x[~np.isnan(x)]
            mean, std, n = mean_std(x)
            row |= {f"{m}:mean": mean, f"{m}:std": std, f"{m}:n": n}
            if method:
                row[f"{m}:ci_low"], row[f"{m}:ci_high"] = interval(x, method, mean, std)
            if with_base:
                d, p, test = ((np.nan, np.nan, "") if base is None or not len(mine) else
                              compare(values[m][mine], seeds[mine], values[m][base], seeds[base]))
                row |= {f"{m}:diff": d, f"{m}:p": p, f"{m}:test": test}
        rows_out.append(row)
    context_keys = [k for k in keys if not is_activation_key(k)]

    def order(gi: int) -> tuple:
        kv = dict(zip(keys, plan.key_values[gi]))
        if not with_base:
            return groups.sort_key(plan.key_values[gi])
        return (groups.sort_key(tuple(kv[k] for k in context_keys)), kv["activation"] != baseline,
                groups.sort_key(plan.key_values[gi]))

    ranked = sorted(range(len(rows_out)), key=order)
    out = pd.DataFrame([rows_out[i] for i in ranked], columns=list(rows_out[0]) if rows_out else keys + ["n"])
    contexts = {c: j for j, c in enumerate(dict.fromkeys(plan.context))}
    _mark_best(out, np.array([contexts[plan.context[i]] for i in ranked], dtype=int), metrics)
    notes = [n for n in (plan.note(), disagreement.note(pairs, group_metrics) if group_metrics else None) if n]
    if with_base and unmatched:
        notes.append(f"note: {unmatched} row(s) have no {baseline} row (or several) with the same config but for "
                     "activation, margin, schedule and seed: their Δ and p are —")
    excluded = _excluded(df, status != "completed", why)
    return Summary(out, excluded, keys, metrics, baseline, method, plan.split, notes, plan)


def _excluded(df: pd.DataFrame, not_done: np.ndarray, why: dict[int, str]) -> pd.DataFrame:
    """run_id, status, reason, error, path of the runs not counted, in frame order."""
    mask = not_done.copy()
    mask[list(why)] = True
    out = df.loc[mask, ["run_id", "status", "error", "path"]].copy()
    reasons = []
    for pos, st, err in zip(np.flatnonzero(mask), out["status"], out["error"]):
        first = "" if is_nan(err) else (str(err).strip().splitlines() or [""])[0][:200]
        reasons.append(why.get(int(pos)) or (f"{st}: {first}" if first else str(st)))
    out.insert(2, "reason", reasons)
    return out.reset_index(drop=True)


def _mark_best(out, context, metrics) -> None:
    """<m>:best is True for the best mean among rows of one context (ties at display precision all marked)."""
    for m in metrics:
        shown = (out[f"{m}:mean"] * scale_of(m)).round(2)
        best = shown.groupby(context).transform("max" if higher_is_better(m) else "min") if len(out) else shown
        out[f"{m}:best"] = shown.notna() & (shown == best)


# --- display tables (cells formatted by actlab.report.tables) -------------------------------------------
def display_table(s: Summary) -> tuple[pd.DataFrame, np.ndarray]:
    """The main table's cells (metrics in display units) and its bold mask (the best mean per context).

    The CI header names its method ("95% CI (t)"); a "non-finite" column appears when a run was excluded
    for a non-finite metric."""
    base = s.baseline and "activation" in s.by
    ci = f"95% CI ({CI_LABEL[s.ci]})" if s.ci else None
    header = [PRETTY.get(k, k) for k in s.by] + ["n"]
    for m in s.metrics:
        unit = " (%)" if scale_of(m) == 100 else ""
        header += [f"{m}{unit}"] + ([ci] if ci else []) + ([f"Δ vs {s.baseline}", "p"] if base else [])
    tail = ["n_failed", "n_running", "n_corrupt"] + (["n_nonfinite"] if s.stats.get("n_nonfinite", pd.Series()).any()
                                                      else [])
    header += [k.removeprefix("n_").replace("nonfinite", "non-finite") for k in tail]
    rows, bold = [], []
    for _, r in s.stats.iterrows():
        cells = [fmt_key(r[k]) for k in s.by] + [str(r["n"])]
        mask = [False] * len(cells)
        for m in s.metrics:
            c = scale_of(m)
            cells.append(fmt_mean_std(r[f"{m}:mean"] * c, r[f"{m}:std"] * c))
            mask.append(bool(r[f"{m}:best"]))
            if ci:
                lo, hi = r[f"{m}:ci_low"], r[f"{m}:ci_high"]
                cells.append(DASH if is_nan(lo) else f"[{fmt_num(lo * c)}, {fmt_num(hi * c)}]")
                mask.append(False)
            if base:
                p = r[f"{m}:p"]
                cells += [fmt_num(r[f"{m}:diff"] * c, sign=True),
                          DASH if is_nan(p) else f"{fmt_p(p)} ({r[f'{m}:test']})"]
                mask += [False, False]
        cells += [str(r[k]) for k in tail]
        rows.append(cells)
        bold.append(mask + [False] * len(tail))
    return pd.DataFrame(rows, columns=header), np.array(bold, dtype=bool).reshape(len(rows), len(header))


def dead_table(s: Summary) -> pd.DataFrame:
    """The dead-rate table's cells (mean ± std in %)."""
    header = [PRETTY.get(k, k) for k in s.by] + ["n"] + [f"{m} (%)" for m in s.metrics]
    rows = [[fmt_key(r[k]) for k in s.by] + [str(r["n"])]
            + [fmt_mean_std(r[f"{m}:mean"] * 100, r[f"{m}:std"] * 100) for m in s.metrics]
            for _, r in s.stats.iterrows()]
    return pd.DataFrame(rows, columns=header)


def _norm(key, n: int) -> tuple:
    """A groupby key as a tuple with NaN -> None (NaN != NaN would break dict lookups)."""
    key = key if isinstance(key, tuple) else (key,)
    return tuple(None if is_nan(v) else v for v in key[:n])


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
    """The runs not counted in the statistics, one line each (the reason of a completed run excluded for
    a non-finite metric, else the error's first line, truncated)."""
    if excluded.empty:
        return ""
    lines = [f"Runs not counted ({len(excluded)}):", ""]
    for _, r in excluded.head(limit).iterrows():
        text = r["reason"] if r["status"] == "completed" and "reason" in r else r["error"]
        err = "" if is_nan(text) or not str(text).strip() else " — " + str(text).splitlines()[0][:120]
        lines.append(f"- `{r['run_id']}` {r['status']}{err}")
    if len(excluded) > limit:
        lines.append(f"- ... and {len(excluded) - limit} more (see the _excluded.csv)")
    return "\n".join(lines) + "\n"


def write_summary(df: pd.DataFrame, out: str | Path, name: str, by=DEFAULT_BY, metrics=("test/acc",),
                  baseline: str | None = "relu", ci: str = "t", console=None) -> tuple[list[Path], str]:
    """Write the main and dead-rate tables; return (paths written, the Markdown shown to the user).

    The notes (rows split by a config key, rows without a comparable baseline) go under the main table,
    one paragraph each, and to `console` (a rich Console) when given."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    s = summarize(df, by, metrics, baseline, ci)
    if not s.metrics:
        raise KeyError(f"none of the metrics {list(metrics)} is in the runs")
    table, bold = display_table(s)
    md = f"## {name}: {', '.join(s.metrics)} by {', '.join(s.by)} (mean ± std over seeds)\n\n"
    md += to_markdown(table, bold) + "".join(f"\n{n}\n" for n in s.notes)
    if any(m in GROUP_METRICS for m in s.metrics):
        md += f"\n{disagreement.LEGEND}\n"
    ci_name = {"t": "Student t", "bootstrap": "BCa bootstrap"}.get(s.ci or "", "none")
    tex = to_latex(table, bold, caption=f"actlab summarize: {name} (mean ± std over seeds; 95% CI: {ci_name})")
    s.stats.to_csv(out / f"{name}.csv", index=False)
    paths = [out / f"{name}.md", out / f"{name}.tex", out / f"{name}.csv"]
    excluded = s.excluded
    dead_metrics = [k for k in ("dead_fwd", "dead_grad") if k in df.columns and df[k].notna().any()]
    if dead_metrics:
        gone = dict(zip(excluded["run_id"], excluded["reason"]))  # a run not counted above is not counted here
        # baseline: same row order, Δ in the csv
        d = summarize(df, by, dead_metrics, baseline, ci=False, drop=gone, plan=s.plan)
        excluded = pd.concat([excluded, d.excluded[~d.excluded["run_id"].isin(gone)]], ignore_index=True)
        dead = dead_table(d)
        md += "\n### Dead-neuron rates (%, final epoch)\n\n" + to_markdown(dead)
        (out / f"{name}_dead.tex").write_text(to_latex(dead, caption=f"actlab summarize: {name} dead"))
        d.stats.to_csv(out / f"{name}_dead.csv", index=False)
        paths += [out / f"{name}_dead.tex", out / f"{name}_dead.csv"]
    # GLUE tasks are Table 3's columns: its rows are the other keys
    int8_by = [k for k in s.by if groups.config_key(k).split(".")[0] != "dataset"] or ["activation", "margin"]
    int8 = int8_view(df, int8_by)
    if not int8.empty:
        cells = int8_display(int8, int8_by)
        md += ("\n### INT8 minus full precision (GLUE dev, points; mean ± std over runs; paper Table 3)\n\n"
               + to_markdown(cells))
        (out / f"{name}_int8.tex").write_text(to_latex(cells, caption=f"actlab summarize: {name} INT8 - fp32"))
        int8.to_csv(out / f"{name}_int8.csv", index=False)
        paths += [out / f"{name}_int8.tex", out / f"{name}_int8.csv"]
    if not excluded.empty:
        md += "\n" + excluded_markdown(excluded)
        excluded.to_csv(out / f"{name}_excluded.csv", index=False)
        paths.append(out / f"{name}_excluded.csv")
    (out / f"{name}.md").write_text(md)
    (out / f"{name}.tex").write_text(tex)
    for n in s.notes if console is not None else ():
        console.print(n, style="yellow", soft_wrap=True, markup=False, highlight=False)
    return paths, md


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs_dir", nargs="?", default="results/runs", help="run records (default results/runs)")
    parser.add_argument("--by", default=",".join(DEFAULT_BY), help="comma-separated group keys")
    parser.add_argument("--metric", nargs="+", action="extend", dest="metrics",
                        help="metrics (default test/acc, plus pd and rel_pd when runs saved test predictions)")
    parser.add_argument("--out", default="results/tables", help="output folder")
    parser.add_argument("--baseline", default="relu", help="activation to compare against ('' for none)")
    parser.add_argument("--name", default="summary", help="file stem of the tables")
    parser.add_argument("--ci", choices=CI_METHODS, default="t",
                        help="95%% CI of the mean: t (Student t, the default) or bootstrap (BCa, 2,000 resamples)")
    parser.add_argument("--paper", action="store_true", help="also write the paper-vs-ours tables")
    parser.add_argument("--no-wandb", action="store_true", help="ignore W&B offline runs")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the files written, in one line")
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
        metrics = args.metrics or ["test/acc", *(GROUP_METRICS if disagreement.any_predictions(df) else ())]
        paths, md = write_summary(df, args.out, args.name, by, metrics, args.baseline or None,
                                  getattr(args, "ci", "t"), console=console)
    except KeyError as e:
        console.print(f"[red]{e.args[0]}[/red]")
        return 2
    quiet = getattr(args, "quiet", False)
    if not quiet:
        console.print(Markdown(md))
    paths += paper.write_paper_tables(df, args.out, force=args.paper, console=console)
    lines = [f"summarize: wrote {' '.join(map(str, paths))}"] if quiet else [f"wrote {p}" for p in paths]
    console.print("\n".join(lines), soft_wrap=True, markup=False)
    return 0
