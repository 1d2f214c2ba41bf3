"""HeLU margin search (experiment=tune_margin): its Optuna search space and its summary, `actlab tune`.

    actlab-train -m experiment=tune_margin                 # the search (records in results/tune_margin)
    actlab tune results/tune_margin                        # -> results/tables/tune_margin.md/.csv,
                                                           #    results/figures/tune_margin.png/.pdf
    actlab tune RUNS_DIR --metric val/loss --name NAME --where model.depth=16

`actlab.run.search.margin_space` is the preset's hydra.sweeper.custom_search_space: the study's first trial is margin 0,
spelled `activation=relu` (HeLU at margin 0 is ReLU exactly: same forward, same backward); every later
trial draws activation.margin log-uniformly. So 0 is tried once, and Optuna's log scale never sees it.

The summary has one row per run of the search (a trial that Optuna proposed twice is one run, trained
once): order trained, margin, the objective, the test metric, the final dead-unit rates, status;
completed runs by objective (higher is better unless the metric is a loss, an error, ...), the best one
marked (ties: the first trained, as Optuna's best trial), then runs without a result (failed,
interrupted, running, corrupt) with "—" for every number. The figure draws the objective against the
margin on a symlog axis (0 in its linear part, as ReLU's square), colour = order trained, the best ringed,
runs without a result as crosses on the bottom axis. Optuna's own optimization_results.yaml in RUNS_DIR
is cross-checked when present.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from actlab.report import groups, style
from actlab.report.frame import is_nan, load_frame
from actlab.report.summarize import higher_is_better, scale_of
from actlab.report.tables import DASH, fmt_num, to_markdown
from actlab.run.search import HIGH, LOW

SEARCHED = ("helu", "relu")  # relu: margin 0
OPTUNA_RESULTS = "optimization_results.yaml"  # what the Optuna sweeper writes into the sweep dir (= runs dir)


# --- the table -----------------------------------------------------------------------------------------------
class TuneError(ValueError):
    """Runs that cannot be summarised as one search; the message names the problem and the fix."""


def _where(df: pd.DataFrame, where: list[str]) -> pd.DataFrame:
    for item in where:
        key, sep, value = item.partition("=")
        col = {v: k for k, v in groups.LONG.items()}.get(key, key)  # model.name -> model
        if not sep or col not in df:
            raise TuneError(f"--where {item}: expected KEY=VALUE with a config key of the runs (e.g. model.depth=16)")
        df = df[[not is_nan(v) and _same(v, value) for v in df[col]]]
    return df


def _same(v, text: str) -> bool:
    if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool):
        try:
            return float(v) == float(text)
        except ValueError:
            return False
    return str(v).lower() == text.lower()


def select(df: pd.DataFrame, metric: str, where: list[str] = ()) -> tuple[pd.DataFrame, list[str]]:
    """The runs of one margin search (HeLU and ReLU runs; `where` filters) and notes on what was left out.
    TuneError when they mix several searches (config keys beyond the margin differ) or when `metric`
    is a validation metric measured on the test set (dataset.val_split=0)."""
    df = _where(df, list(where))
    readable = df[df["status"] != "corrupt"]
    other = readable[~readable["activation"].isin(SEARCHED)]
    notes = [f"left out {len(other)} run(s) of other activations ({', '.join(sorted(map(str, set(other['activation']))))})"] \
        if len(other) else []
    df = df[(df["status"] == "corrupt") | df["activation"].isin(SEARCHED)].reset_index(drop=True)
    ok = df[df["status"] != "corrupt"]
    run_ids = ok["run_id"].to_numpy(dtype=object)
    varying = [c for c in groups.identity_columns(ok) if not groups.is_activation_key(c)
               and len(set(groups.codes(ok, c, run_ids))) > 1]
    if ok["seed"].nunique(dropna=False) > 1:
        varying.append("seed")
    if metric.startswith("val/") and "dataset.val_split" in ok:
        on_test = ok[ok["dataset.val_split"].map(lambda v: not is_nan(v) and float(v) == 0)]
        if len(on_test):
            raise TuneError(f"{metric} of {len(on_test)} run(s) is measured on the test set (dataset.val_split=0, "
                            f"e.g. {on_test['run_id'].iloc[0]}): tune on a held-out split, relaunch with "
                            "dataset.val_split=0.1")
    if varying:
        key = varying[0]
        values = ", ".join(sorted(map(str, ok[key].unique())))
        raise TuneError(f"the runs differ in {', '.join(groups.config_key(k) for k in varying)} ({groups.config_key(key)}: "
                        f"{values}): more than one search; pick one with --where {groups.config_key(key)}=VALUE, "
                        f"or give each search its own paths.runs_dir")
    return df, notes


def sweep_order(runs_dir: Path) -> dict[str, int]:
    """run_id -> position of its first job in the sweep logs under `runs_dir` (actlab.run.sweep.SweepLog's
    _sweeps/<time>-<pid>.jsonl, one JSON line per job in launch order), oldest log first."""
    order: dict[str, int] = {}
    for log in sorted((Path(runs_dir) / "_sweeps").glob("*.jsonl")):
        for line in log.read_text(errors="replace").splitlines():
            try:
                rid = json.loads(line).get("run_id")
            except (ValueError, AttributeError):
                continue  # a line cut by a kill
            if isinstance(rid, str) and rid not in order:
                order[rid] = len(order)
    return order


def trials_table(df: pd.DataFrame, metric: str, test_metric: str | None,
                 sweep_order: dict[str, int] | None = None) -> pd.DataFrame:
    """One row per run in raw units: order (1 = first trained: by `sweep_order`, else by started_at),
    run_id, activation, margin (0 for ReLU), objective, test, dead_fwd, dead_grad, status, error, best;
    completed runs by objective, then the rest. Runs that did not complete carry no numbers (a failed
    run's last metrics are no result)."""
    if df.empty:
        return pd.DataFrame(columns=["order", "run_id", "activation", "margin", "objective", "test", "dead_fwd",
                                     "dead_grad", "status", "error", "best"])
    df = df.reset_index(drop=True)
    done = (df["status"] == "completed").to_numpy()
    started = pd.to_datetime(df["started_at"], utc=True, errors="coerce") if "started_at" in df else \
        pd.Series(pd.NaT, index=df.index)
    first = [(sweep_order or {}).get(r, math.inf) for r in df["run_id"]]  # started_at has whole seconds only
    order = pd.DataFrame({"job": first, "t": started}).sort_values(["job", "t"], kind="stable", na_position="last")
    order = pd.Series(np.arange(1, len(df) + 1), index=order.index).sort_index()
    margin = np.where(df["activation"] == "relu", 0.0, pd.to_numeric(df["margin"], errors="coerce"))

    def num(col: str | None) -> np.ndarray:
        if col is None or col not in df:
            return np.full(len(df), np.nan)
        return np.where(done, pd.to_numeric(df[col], errors="coerce"), np.nan)

    t = pd.DataFrame({"order": order, "run_id": df["run_id"], "activation": df["activation"], "margin": margin,
                      "objective": num(metric), "test": num(test_metric), "dead_fwd": num("dead_fwd"),
                      "dead_grad": num("dead_grad"), "status": df["status"],
                      "error": [None if is_nan(e) else str(e).splitlines()[0][:200] for e in df["error"]]})
    t["best"] = False
    sign = -1.0 if higher_is_better(metric) else 1.0
    t["_key"] = np.where(t["objective"].notna(), sign * t["objective"], np.inf)
    t = t.sort_values(["_key", "order"], kind="stable").drop(columns="_key").reset_index(drop=True)
    if t["objective"].notna().any():
        t.loc[0, "best"] = True  # first by objective, ties by order trained (Optuna keeps the first best)
    return t


def display(t: pd.DataFrame, metric: str, test_metric: str | None) -> tuple[pd.DataFrame, np.ndarray]:
    """Display strings (metrics and dead rates in % where they are fractions) and the bold mask (best row)."""
    def pct(x, m):
        return fmt_num(x * scale_of(m), 2 if scale_of(m) == 100 else 4)

    unit = " (%)" if scale_of(metric) == 100 else ""
    cells = pd.DataFrame({
        "#": t["order"].astype(str),
        "activation": [style.DISPLAY_NAMES.get(a, str(a)) if not is_nan(a) else DASH for a in t["activation"]],
        "margin α": [DASH if is_nan(m) else f"{m:.4g}" for m in t["margin"]],
        f"{metric}{unit}": [pct(x, metric) for x in t["objective"]],
        f"{test_metric or 'test'}{' (%)' if test_metric and scale_of(test_metric) == 100 else ''}":
            [pct(x, test_metric or "") for x in t["test"]],
        "forward-dead (%)": [fmt_num(x * 100, 1) for x in t["dead_fwd"]],
        "gradient-dead (%)": [fmt_num(x * 100, 1) for x in t["dead_grad"]],
        "status": [s if ok else f"{s}: {e}".replace("|", "\\|") if e else s for s, e, ok in
                   zip(t["status"], t["error"].fillna(""), t["status"] == "completed")],
        "best": ["best" if b else "" for b in t["best"]],
        "run_id": t["run_id"].astype(str),
    })
    bold = np.zeros(cells.shape, dtype=bool)
    bold[t["best"].to_numpy(bool), :] = True
    return cells, bold


def optuna_best(runs_dir: Path) -> dict | None:
    """Optuna's optimization_results.yaml in `runs_dir` (best_params, best_value), or None."""
    path = Path(runs_dir) / OPTUNA_RESULTS
    if not path.is_file():
        return None
    import yaml

    data = yaml.safe_load(path.read_text())
    return data if isinstance(data, dict) else None


def _optuna_note(best: dict | None, t: pd.DataFrame, metric: str) -> str:
    if best is None:
        return f"No {OPTUNA_RESULTS} in the runs dir (not an Optuna sweep, or it did not finish)."
    value = best.get("best_value")
    line = f"Optuna ({OPTUNA_RESULTS}): best {metric} = {value}, params {best.get('best_params')}."
    ours = t.loc[t["best"], "objective"]
    if len(ours) and (value is None or not math.isclose(float(value), float(ours.iloc[0]), rel_tol=1e-9)):
        line += (f" It differs from the table's best ({float(ours.iloc[0])}): the runs dir holds runs of another "
                 "search, or Optuna optimised another objective or direction.")
    return line


# --- the figure ---------------------------------------------------------------------------------------------
def figure(t: pd.DataFrame, metric: str, out: Path, name: str) -> list[Path]:
    """Objective vs margin (symlog x: 0 in the linear part), colour = order trained, best ringed."""
    style.use()
    plt = style.plt
    scale = scale_of(metric)
    fig, ax = plt.subplots(figsize=(5.2, 3.3), layout="constrained")
    done = t[t["objective"].notna()]
    positive = t["margin"][t["margin"] > 0]
    linthresh = 10 ** math.floor(math.log10(min(LOW, positive.min()))) if len(positive) else LOW
    n = max(int(t["order"].max()), 1)
    helu = done[done["margin"] > 0]
    sc = ax.scatter(helu["margin"], helu["objective"] * scale, c=helu["order"], cmap="viridis", vmin=1, vmax=n,
                    s=28, zorder=3, label="HeLU α > 0", edgecolors="none")
    zero = done[done["margin"] == 0]
    if len(zero):
        ax.scatter(zero["margin"], zero["objective"] * scale, c=zero["order"], cmap="viridis", vmin=1, vmax=n,
                   marker="s", s=40, zorder=3, edgecolors=style.color_for("relu"), linewidths=1.2,
                   label="α = 0 (ReLU)")
        ax.axhline(float(zero["objective"].iloc[0]) * scale, color=style.color_for("relu"), ls="--", lw=1,
                   zorder=1)
    best = done[done["best"]]
    if len(best):
        ax.scatter(best["margin"], best["objective"] * scale, s=160, facecolors="none",
                   edgecolors=style.OKABE_ITO["vermillion"], linewidths=1.6, zorder=4,
                   label=f"best (α = {float(best['margin'].iloc[0]):.3g})")
    lost = t[t["objective"].isna() & t["margin"].notna()]
    if len(lost):  # no value: a cross on the bottom axis at its margin
        ax.scatter(lost["margin"], np.zeros(len(lost)), marker="x", color=style.OKABE_ITO["grey"], s=30,
                   transform=ax.get_xaxis_transform(), clip_on=False, zorder=4,
                   label="no result (failed, interrupted, running)")
    ax.set_xscale("symlog", linthresh=linthresh, linscale=0.6)
    hi = max(HIGH, float(positive.max())) if len(positive) else HIGH
    ax.set_xlim(-0.3 * linthresh, hi * 1.6)
    ax.set(xlabel="margin α (symlog: 0 = ReLU)", ylabel=f"{metric} (%)" if scale == 100 else metric,
           title=f"{name}: {len(done)} runs with a result, {len(t) - len(done)} without")
    fig.colorbar(sc, ax=ax, label="order trained", ticks=range(1, n + 1) if n <= 12 else None)
    ax.legend(loc="best")
    return style.save(fig, out, name)


# --- CLI ------------------------------------------------------------------------------------------------------
def write_tuning(df: pd.DataFrame, runs_dir: Path, tables: Path, figures: Path, name: str, metric: str,
                 test_metric: str | None = None, where: list[str] = ()) -> tuple[list[Path], str, pd.DataFrame]:
    """Write <tables>/<name>.md/.csv and <figures>/<name>.png/.pdf; return (paths, Markdown, table)."""
    runs, notes = select(df, metric, where)
    if not runs["status"].eq("completed").any():
        raise TuneError(f"no completed run under {runs_dir}: nothing to compare (see the records' errors)")
    if metric not in runs:
        raise TuneError(f"no run has the metric {metric}; pass --metric with one of the records' metrics")
    if test_metric is None:
        candidate = "test/" + metric.split("/", 1)[1] if metric.startswith("val/") else None
        test_metric = candidate if candidate in runs else None
    t = trials_table(runs, metric, test_metric, sweep_order(runs_dir))
    cells, bold = display(t, metric, test_metric)
    better = "higher" if higher_is_better(metric) else "lower"
    md = (f"## {name}: HeLU margin search, {metric} ({better} is better), one row per run\n\n"
          + to_markdown(cells, bold)
          + "\n`#`: order trained. α = 0 is ReLU (HeLU at margin 0). Runs without a result show no numbers.\n"
          + "One run per margin: a few points apart may be seed noise; confirm the leaders over seeds\n"
          + "(`actlab-train -m ... activation.margin=A,B seed=0,1,2`, then `actlab summarize`).\n"
          + f"\n{_optuna_note(optuna_best(runs_dir), t, metric)}\n" + "".join(f"\n{n}\n" for n in notes))
    tables.mkdir(parents=True, exist_ok=True)
    (tables / f"{name}.md").write_text(md)
    t.to_csv(tables / f"{name}.csv", index=False)
    paths = [tables / f"{name}.md", tables / f"{name}.csv"]
    return paths + figure(t, metric, figures, name), md, t


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs_dir", nargs="?", default="results/tune_margin",
                        help="the search's runs dir (default results/tune_margin, experiment=tune_margin's)")
    parser.add_argument("--metric", default="val/acc", help="the objective the search optimised (default val/acc)")
    parser.add_argument("--test-metric", default=None, help="reported beside it (default: test/ of the same name)")
    parser.add_argument("--name", default="tune_margin", help="file stem of the table and the figure")
    parser.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                        help="only runs with this config value (repeatable), e.g. model.depth=16")
    parser.add_argument("--tables", default="results/tables", help="table folder")
    parser.add_argument("--figures", default="results/figures", help="figure folder")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markdown import Markdown

    console = Console()
    runs_dir = Path(args.runs_dir)
    if not runs_dir.is_dir():
        console.print(f"[red]actlab tune: {runs_dir} is not a folder; pass the search's paths.runs_dir[/red]",
                      soft_wrap=True)
        return 2
    df = load_frame(runs_dir, wandb=False)
    if df.empty:
        console.print(f"[red]actlab tune: no run records under {runs_dir}; run actlab-train -m "
                      "experiment=tune_margin first[/red]", soft_wrap=True)
        return 1
    try:
        paths, md, _ = write_tuning(df, runs_dir, Path(args.tables), Path(args.figures), args.name, args.metric,
                                    args.test_metric, args.where)
    except TuneError as e:
        console.print(f"actlab tune: error: {e}", style="red", markup=False, soft_wrap=True)
        return 2
    console.print(Markdown(md))
    for p in paths:
        console.print(f"wrote {p}")
    return 0
