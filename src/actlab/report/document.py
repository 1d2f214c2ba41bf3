"""`actlab report`: a Markdown report written from run records and nothing else (no number typed by hand).

    actlab report results/runs/demo/activations results/runs/demo/margins --out results/REPORT.md
    actlab report results/runs/cpu_table1 --baseline relu --metric test/acc --no-figures

One section per RUNS_DIR (one experiment): how many records were read, which runs were not counted
(failed, interrupted, running, corrupt, or a non-finite metric) and the git commit(s) the runs ran at;
the comparison table of actlab.report.summarize, grouped by activation and margin plus the config keys
that vary between the runs (dataset, model, a sparsity ...: groups.plan), with n (completed runs, one
per seed), mean ± std and the 95 % Student-t CI; the dead-neuron, dormancy and disagreement metrics the
records hold; the figures of actlab.report.figures that apply, drawn into <out dir>/figures/<section>/;
one sentence per comparison with the baseline activation (actlab.report.comparisons: effect, 95 % CI,
paired or Welch p, Holm over the section, minimum detectable difference at 80 % power) and, for test
accuracy, the paper's Table 1 difference for the same pair, labelled as the paper's setting.
W&B runs are not read: the report is the records'.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from actlab.report import comparisons, disagreement, figures, groups, style
from actlab.report.frame import load_frame
from actlab.report.summarize import (
    GROUP_METRICS,
    PRETTY,
    Summary,
    display_table,
    excluded_markdown,
    scale_of,
    summarize,
)
from actlab.report.tables import fmt_key, fmt_mean_std, to_markdown

RATE_METRICS = ("dead_fwd", "dead_grad", "dormant_redo@0_025", "eff_rank")  # when the records hold them
ACTIVATION_BY = ["activation", "margin"]
CONVENTIONS = (
    "Conventions: a table row pools only completed runs identical in every config key but the seed (true "
    "replicates; n counts them, one per seed); mean ± std uses the sample std; the 95 % CI of a mean is Student "
    "t's. A comparison sets a row against the baseline row with the same config but for the activation and the "
    "seed: the effect is the difference of means (in points for percentages), its 95 % CI and p come from a "
    "paired t-test when both rows ran the same seeds, else Welch's; p-values are Holm-adjusted over the "
    "comparisons of one metric in one section; the detectable difference is the one a two-sided test at "
    "α = 0.05 finds with 80 % power at the n and variance observed. Lines marked \"Paper\" quote the paper's "
    "Table 1 (src/actlab/report/paper/), in the paper's setting, not ours.")


class ReportError(ValueError):
    """Input the report cannot be made from; the message names the problem and the fix."""


@dataclass
class Section:
    runs_dir: str
    markdown: str
    n_records: int
    n_counted: int
    n_excluded: int
    commits: str
    metrics: list[str]
    sentences: list[str] = field(default_factory=list)


def group_keys(df: pd.DataFrame) -> list[str]:
    """activation, margin and the identity keys that vary between runs of one (activation, margin): the
    keys a row needs to pool only true replicates (groups.plan), dataset and model first."""
    split = groups.plan(df, ACTIVATION_BY).split
    first = [k for k in ("dataset", "model") if k in split]
    return first + ACTIVATION_BY + [k for k in split if k not in first]


def commits(df: pd.DataFrame) -> str:
    """The records' git commits: `abcdef123456` (n records, k with uncommitted changes); ..."""
    if "git_commit" not in df:
        return "none recorded"
    parts = []
    for commit, g in df.groupby(df["git_commit"].fillna(""), sort=True):
        dirty = int(g["git_dirty"].map(lambda v: v is True).sum()) if "git_dirty" in g else 0
        name = f"`{commit[:12]}`" if commit else "no commit recorded"
        parts.append(f"{name} ({len(g)} record{'s' if len(g) != 1 else ''}"
                     + (f", {dirty} with uncommitted changes" if dirty else "") + ")")
    return "; ".join(parts) or "none recorded"


def duplicate_seeds(df: pd.DataFrame, s: Summary) -> list[str]:
    """A note per table row whose counted runs repeat a seed (they are averaged per seed in the tests)."""
    if s.plan is None:
        return []
    gone = set(s.excluded["run_id"])
    notes = []
    for kv, rows in zip(s.plan.key_values, s.plan.members):
        runs = df.iloc[rows]
        runs = runs[(runs["status"] == "completed") & ~runs["run_id"].isin(gone)]
        if runs["seed"].nunique(dropna=False) < len(runs):
            keys = ", ".join(f"{k}={fmt_key(v)}" for k, v in zip(s.plan.keys, kv))
            notes.append(f"note: the row {keys} counts {len(runs)} runs over {runs['seed'].nunique(dropna=False)} "
                         "seeds; the comparisons average runs of one seed first")
    return notes


def rates_table(s: Summary) -> str:
    """Mean ± std per row of the rate metrics (in % where summarize shows them in %)."""
    header = [PRETTY.get(k, k) for k in s.by] + ["n"]
    header += [f"{m} (%)" if scale_of(m) == 100 else m for m in s.metrics]
    rows = [[fmt_key(r[k]) for k in s.by] + [str(r["n"])]
            + [fmt_mean_std(r[f"{m}:mean"] * scale_of(m), r[f"{m}:std"] * scale_of(m)) for m in s.metrics]
            for _, r in s.stats.iterrows()]
    return to_markdown(pd.DataFrame(rows, columns=header))


def _figures(df: pd.DataFrame, metric: str | None, fig_dir: Path, report_dir: Path) -> list[str]:
    """Draw the figures that apply; Markdown lines linking them (PNG) or saying why one was not drawn."""
    style.use()
    jobs = {"acc_vs_margin": lambda: figures.fig_acc_vs_margin(df, fig_dir, metric or "test/acc"),
            "dead_curves": lambda: figures.fig_dead_curves(df, fig_dir),
            "fig1b_preact_hist": lambda: figures.fig_preact_hist(df, fig_dir)}  # the largest-margin HeLU run
    lines = []
    for name, job in jobs.items():
        try:
            png = next(p for p in job() if p.suffix == ".png")
            lines.append(f"![{name}]({Path(os.path.relpath(png, report_dir)).as_posix()})")
        except figures.Skip as e:
            lines.append(f"- {name}: not drawn ({e})")
        finally:
            figures.plt.close("all")
    return lines


def comparison_lines(df: pd.DataFrame, s: Summary, metric: str, sentences: list[str]) -> list[str]:
    """The comparisons of `metric` as Markdown list items (each sentence also appended to `sentences`), the
    paper's claim under each where it has one."""
    if not (df["activation"] == s.baseline).any():
        return [f"No {s.baseline} run in this section: nothing to compare with (--baseline names the activation).", ""]
    found, unmatched = comparisons.comparisons(df, s, metric)
    lines = [comparisons.family_note(found), ""] if found and comparisons.family_note(found) else []
    for c in found:
        sentences.append(comparisons.sentence(c))
        claim = comparisons.paper_claim(c)
        lines += [f"- {sentences[-1]}"] + ([f"  - {claim}"] if claim else [])
    if unmatched:
        lines += ["", f"{unmatched} row(s) have no single {s.baseline} row with the same config but for the activation "
                  "and the seed (none, or several): not compared."]
    return lines + [""]


def section(runs_dir: str, baseline: str | None, metrics: list[str], fig_dir: Path | None,
            report_dir: Path) -> Section:
    """One runs dir's section (fig_dir None: no figures)."""
    df = load_frame(runs_dir, history=fig_dir is not None, wandb=False)
    if df.empty:
        raise ReportError(f"no run records (record.json) under {runs_dir}: give a directory a sweep wrote runs into")
    present = [m for m in metrics if m in df and pd.to_numeric(df[m], errors="coerce").notna().any()]
    by = group_keys(df)
    s = summarize(df, by, present, baseline, "t")
    excluded = s.excluded
    md = [f"## {runs_dir}", ""]
    n_counted = int(s.stats["n"].sum()) if len(s.stats) else 0
    statuses = ", ".join(f"{n} {st}" for st, n in df["status"].value_counts().items())
    md += [f"Records read: {len(df)} ({statuses}); counted: {n_counted}; not counted: {len(excluded)}"
           + (" (listed at the end of this section)" if len(excluded) else "") + f". Git commit(s): {commits(df)}.", ""]
    missing = [m for m in metrics if m not in present]
    if missing:
        md += [f"No run here records {', '.join(missing)}.", ""]
    md += [f"### Comparison table: {', '.join(present) or 'runs'} by {', '.join(s.by)} (mean ± std over seeds)", ""]
    table, bold = display_table(s)
    md += [to_markdown(table, bold)] + [f"{n}\n" for n in s.notes + duplicate_seeds(df, s)]
    if s.baseline and present:
        md += ["p in this table: uncorrected (the comparisons below give the Holm-adjusted p).", ""]
    rates = [m for m in RATE_METRICS if m in df and pd.to_numeric(df[m], errors="coerce").notna().any()]
    rates += list(GROUP_METRICS) if disagreement.any_predictions(df) else []
    if rates:
        gone = dict(zip(excluded["run_id"], excluded["reason"]))  # a run not counted above is not counted here
        d = summarize(df, by, rates, baseline, ci=False, drop=gone, plan=s.plan)
        excluded = pd.concat([excluded, d.excluded[~d.excluded["run_id"].isin(gone)]], ignore_index=True)
        md += ["### Dead-neuron, dormancy and disagreement metrics (final epoch; mean ± std over seeds)", "",
               rates_table(d)] + [f"{n}\n" for n in d.notes if n not in s.notes]
        if any(m in GROUP_METRICS for m in rates):
            md += [disagreement.LEGEND, ""]
    sentences: list[str] = []
    for m in present if baseline else []:
        md += [f"### Comparisons with {style.label_for(baseline)}: {m}", ""] + comparison_lines(df, s, m, sentences)
    if fig_dir is not None:
        md += ["### Figures", ""] + _figures(df, present[0] if present else None, fig_dir, report_dir) + [""]
    if not excluded.empty:
        md += [excluded_markdown(excluded)]  # opens with "Runs not counted (n):"
    return Section(runs_dir, "\n".join(md).rstrip() + "\n", len(df), n_counted, len(excluded), commits(df),
                   present, sentences)


def _slug(runs_dir: str, taken: set) -> str:
    """The figure folder of a section: the runs dir's last two path parts, leaving out a `runs` folder
    (results/runs/cpu_table1 -> cpu_table1, results/runs/demo/margins -> demo_margins); unique in `taken`."""
    parts = [p for p in Path(os.path.normpath(runs_dir)).parts if p not in ("/", ".", "..")]
    parts = parts[-2:] if len(parts) < 2 or parts[-2] != "runs" else parts[-1:]
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", "_".join(parts)) or "runs"
    base, i = slug, 2
    while slug in taken:
        slug, i = f"{base}_{i}", i + 1
    taken.add(slug)
    return slug


def write_report(runs_dirs: list[str], out: str | Path, baseline: str | None = "relu",
                 metrics: list[str] | tuple = ("test/acc",), draw: bool = True,
                 command: str | None = None) -> list[Section]:
    """Write the report to `out` (figures into <out dir>/figures/<section>/); return its sections.
    ReportError for a missing runs dir, one without records, or metrics that no run records."""
    for d in runs_dirs:
        if not os.path.isdir(d):
            raise ReportError(f"no such runs dir: {d} (give a directory holding run records, e.g. results/runs)")
    out = Path(out)
    taken: set = set()
    sections = [section(d, baseline or None, list(metrics), out.parent / "figures" / _slug(d, taken) if draw else None,
                        out.parent) for d in runs_dirs]
    if not any(s.metrics for s in sections):
        done = sum(s.n_counted for s in sections)
        raise ReportError(f"no run under {', '.join(runs_dirs)} records {', '.join(metrics)} ({done} runs counted of "
                          f"{sum(s.n_records for s in sections)} records): pass --metric with a metric the runs record "
                          "(e.g. val/acc), or see the runs' errors")
    command = command or shlex.join(["actlab", "report", *runs_dirs, "--out", str(out)])
    summary = pd.DataFrame([[f"`{s.runs_dir}`", str(s.n_records), str(s.n_counted), str(s.n_excluded), s.commits]
                            for s in sections],
                           columns=["runs dir", "records read", "runs counted", "not counted", "git commit(s)"])
    head = ["# actlab report", "",
            f"Written by `{command}` from the run records listed below and nothing else: every number is computed "
            "from them, except lines marked \"Paper\". Rerun the command to regenerate this file.", "",
            to_markdown(summary), CONVENTIONS, ""]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(head) + "\n" + "\n".join(s.markdown for s in sections))
    return sections


# --- CLI -----------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs_dirs", nargs="*", default=["results/runs"], metavar="RUNS_DIR",
                        help="one experiment's runs per directory, a section each (default results/runs)")
    parser.add_argument("--out", default="results/REPORT.md", help="the report file (figures go beside it)")
    parser.add_argument("--baseline", default="relu", help="activation every row is compared with ('' for none)")
    parser.add_argument("--metric", nargs="+", dest="metrics", default=["test/acc"],
                        help="metrics of the tables and comparisons (default test/acc)")
    parser.add_argument("--no-figures", action="store_true", help="do not draw figures")


def _command(args: argparse.Namespace) -> str:
    """The command line that regenerates the report (options shown only where not the default)."""
    words = ["actlab", "report", *args.runs_dirs, "--out", str(args.out)]
    words += ["--baseline", args.baseline] if args.baseline != "relu" else []
    words += ["--metric", *args.metrics] if list(args.metrics) != ["test/acc"] else []
    return shlex.join(words + (["--no-figures"] if args.no_figures else []))


def run(args: argparse.Namespace) -> int:
    try:
        sections = write_report(args.runs_dirs, args.out, args.baseline or None, args.metrics, not args.no_figures,
                                command=_command(args))
    except ReportError as e:
        print(f"actlab report: {e}", file=sys.stderr)
        return 1
    for s in sections:
        print(f"{s.runs_dir}: {s.n_records} records, {s.n_counted} counted, {s.n_excluded} not counted")
        tested = [line for line in s.sentences if "p = " in line]  # the console: tests; REPORT.md: every sentence
        for line in tested:
            print(f"  - {line}")
        if len(tested) < len(s.sentences):
            print(f"  ({len(s.sentences) - len(tested)} comparison(s) without a test (n < 2 or identical runs): "
                  f"see {args.out})")
    print(f"wrote {args.out}")
    return 0
