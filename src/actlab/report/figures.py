"""The paper's figures from run records: `actlab figures [RUNS_DIR] --out results/figures --margin 1.0`.

fig2_activations     ReLU, GELU, HeLU(α), SUGAR B-SiLU/NeLU, ST-ReLU: the derivatives training uses
fig1b_preact_hist    pre-activation histogram of one run (all layers summed), band (-α, 0] shaded
acc_vs_margin        HeLU accuracy vs margin per dataset, 95 % Student-t CIs, ReLU/GELU references
dead_curves          forward- and gradient-dead rates over epochs, mean over seeds ± std
fig3/fig4            inference benchmarks, drawn by actlab.report.bench_figures from results/bench/
                     inference*.json when present (`actlab bench inference` measures, never draws)
A figure without data is skipped with a one-line reason. Each is written as PNG and PDF.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullLocator

from actlab.report import style
from actlab.report.frame import is_nan, load_frame
from actlab.report.groups import is_activation_key
from actlab.report.summarize import scale_of, summarize
from actlab.report.tables import fmt_key

plt = style.plt


class Skip(Exception):
    """A figure that cannot be drawn from the data at hand; the message says why."""


# Fig. 2's ReLU-forward surrogates, drawn in their own panel: (registry name, kwargs, label, Okabe-Ito hue).
# Hues not taken by ReLU (blue), GELU (orange) or HeLU (vermillion); style.py has no entry for them yet.
SURROGATES = (
    ("sugar_bsilu", {}, "SUGAR B-SiLU α=1.67", "green"),
    ("sugar_nelu", {}, "SUGAR NeLU α=0.01", "purple"),
    ("st_relu", {}, "ST-ReLU s=0.01", "sky"),
)


def _derivative_curves(margin: float) -> tuple[np.ndarray, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """z and {name: (f(z), df/dz)} through the project's own modules, so the plot shows what trains."""
    import torch

    try:
        from actlab.activations import build, derivative
    except ImportError as e:
        raise Skip(f"actlab.activations is not importable ({e})") from e
    z = torch.linspace(-5, 5, 4001, dtype=torch.float64)
    curves = {}
    named = [("relu", {}), ("gelu", {}), ("helu", {"margin": margin})] + [(n, kw) for n, kw, *_ in SURROGATES]
    for name, kw in named:
        act = build(name, **kw).double()
        with torch.no_grad():
            y = act(z)
        curves[name] = (y.numpy(), derivative(act, z).numpy())
    return z.numpy(), curves


def _surrogate_style(name: str) -> tuple[str, str]:
    for n, _, label, hue in SURROGATES:
        if n == name:
            known = name in style.ACTIVATION_COLORS  # style.py's entry wins once it has one
            return (style.label_for(name) if name in style.DISPLAY_NAMES else label,
                    style.color_for(name) if known else style.OKABE_ITO[hue])
    raise KeyError(name)


def fig_activations(out: Path, margin: float = 1.0) -> list[Path]:
    """Fig. 2: forward (HeLU's, SUGAR's and ST-ReLU's are ReLU's) and the derivatives backward uses.

    Top: the activations and the derivatives of ReLU, GELU, HeLU(α). Bottom: HeLU's beside the ReLU-forward
    surrogates (SUGAR B-SiLU, SUGAR NeLU, straight-through ReLU), in full and zoomed on z <= 0, where they
    differ by a few hundredths.
    """
    z, curves = _derivative_curves(margin)
    fig, ((a0, a1), (a2, a3)) = plt.subplots(2, 2, figsize=(7.0, 5.4), layout="constrained")
    dashes = {"relu": "-", "gelu": "-", "helu": (0, (4, 2.5))}  # HeLU's forward lies on ReLU's: dash it
    for name in ("relu", "gelu", "helu"):
        y, g = curves[name]
        label = style.label_for(name, margin if name == "helu" else None)
        kw = dict(color=style.color_for(name), ls=dashes[name], label=label, lw=2.2 if name == "relu" else 1.6)
        a0.plot(z, y, **kw)
        a1.plot(z, g, **kw)
        if name != "gelu":
            for ax in (a2, a3):
                ax.plot(z, g, **{**kw, "lw": 1.3})
    a0.plot([], [], " ", label="SUGAR, ST-ReLU: ReLU's")  # same forward: not drawn again
    for name, *_ in SURROGATES:
        label, color = _surrogate_style(name)
        a2.plot(z, curves[name][1], color=color, label=label)
        a3.plot(z, curves[name][1], color=color)
    for ax in (a1, a2, a3):
        ax.axvspan(-margin, 0, color=style.color_for("helu"), alpha=0.12, lw=0,
                   label=f"band (−{margin:g}, 0]" if ax is a1 else None)
    a3.axhline(0, color="0.4", lw=0.6)
    a0.set(xlabel="z", ylabel="f(z)", title="activation", xlim=(-5, 5), ylim=(-0.5, 5))
    a1.set(xlabel="z", ylabel="∂f/∂z used in backward", title="derivative", xlim=(-5, 5), ylim=(-0.15, 1.2))
    a2.set(xlabel="z", ylabel="∂f/∂z used in backward", title="ReLU forward, surrogate backward",
           xlim=(-5, 5), ylim=(-0.15, 1.35))
    a3.set(xlabel="z", title="the same, z ≤ 0 zoomed", xlim=(-5, 0.3), ylim=(-0.03, 0.03))
    a0.legend(loc="upper left")
    a1.legend(loc="upper left")
    a2.legend(loc="lower right", fontsize=7, handlelength=2.2)
    return style.save(fig, out, "fig2_activations")


def _pick_hist_run(df: pd.DataFrame, run_id: str | None) -> pd.Series:
    if "preact_hist" not in df:
        raise Skip("no run has a preact_hist.json")
    cand = df[df["preact_hist"].notna()]
    cand = cand[[Path(p).is_file() for p in cand["preact_hist"]]]
    if run_id:
        cand = cand[cand["run_id"] == run_id]
    if cand.empty:
        raise Skip(f"no preact_hist.json found{' for run ' + run_id if run_id else ''}")
    # A finished HeLU run with the largest margin (the band to see), then any finished run: the paper's
    # Fig. 1b is a trained HeLU network.
    margin = pd.to_numeric(cand.get("margin", pd.Series(np.nan, cand.index)), errors="coerce").fillna(-1.0)
    cand = cand.assign(_done=(cand["status"] != "completed").astype(int), _helu=(cand["activation"] != "helu").astype(int),
                       _m=-margin)
    return cand.sort_values(["_done", "_helu", "_m", "run_id"], kind="stable").iloc[0]


def read_hist(path: Path) -> tuple[dict, np.ndarray, np.ndarray]:
    """(payload, edges, counts summed over layers) of a preact_hist.json; Skip naming the file when it is
    unreadable or not a histogram (a damaged file costs the figure, never the report)."""
    try:
        h = json.loads(path.read_text())
        edges = np.asarray(h["edges"], dtype=float)
        layers = [np.asarray(c, dtype=float) for c in h["layers"].values()]
        counts = np.sum(layers, axis=0)
        ok = (edges.ndim == 1 and len(edges) >= 2 and np.all(np.diff(edges) > 0) and layers
              and all(c.shape == (len(edges) - 1,) for c in layers) and np.all(counts >= 0) and counts.sum() > 0
              and (h.get("scale") != "asinh" or float(h["linear_width"]) > 0))
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
        raise Skip(f"{path} is unreadable ({type(e).__name__}: {e}); `actlab figures --run-id` draws another "
                   "run's") from None
    if not ok:
        raise Skip(f"{path} is not a histogram (edges, per-layer counts of len(edges) - 1, a count > 0); "
                   "`actlab figures --run-id` draws another run's")
    return h, edges, counts


def view_range(edges: np.ndarray, share: np.ndarray, cover: float = 99.5) -> tuple[float, float]:
    """The central x-range holding `cover` % of the histogram (whole bins), widened to include 0."""
    cum = np.cumsum(share) / max(share.sum(), 1e-300) * 100
    tail = (100 - cover) / 2
    lo = edges[int(np.searchsorted(cum, tail, side="left"))]
    hi = edges[min(int(np.searchsorted(cum, 100 - tail, side="left")) + 1, len(edges) - 1)]
    return min(lo, 0.0), max(hi, 0.0)


def _asinh_axis(ax, w: float, lo: float, hi: float) -> None:
    """An asinh x-axis (linear within ±w) ticked at 0 and ±10^k from 10 w up: the default ticks crowd at 0."""
    ax.set_xscale("asinh", linear_width=w)
    decades = range(int(np.ceil(np.log10(10 * w))), int(np.floor(np.log10(max(abs(lo), abs(hi), 10 * w)))) + 1)
    ticks = sorted([0.0] + [s * 10.0**k for k in decades for s in (-1, 1) if lo <= s * 10.0**k <= hi])
    if len(ticks) >= 3:
        ax.set_xticks(ticks)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel(f"pre-activation z (asinh axis: linear within ±{w:g}, logarithmic beyond)")


def fig_preact_hist(df: pd.DataFrame, out: Path, run_id: str | None = None) -> list[Path]:
    """Fig. 1b: histogram of a trained network's pre-activations, the HeLU band (-α, 0] coloured."""
    run = _pick_hist_run(df, run_id)
    h, edges, counts = read_hist(Path(run["preact_hist"]))
    margin = h.get("margin", run.get("margin"))
    share = counts / counts.sum() * 100  # % per bin: comparable across runs and layer counts
    # The monitor clamps out-of-range values into the first and last bin: those two are tails, not
    # density, and would dwarf the rest; they are reported in the legend instead of drawn.
    tails = share[0] + share[-1]
    share[0] = share[-1] = 0.0
    lo, hi = view_range(edges, share)
    shown = share[(edges[:-1] >= lo) & (edges[1:] <= hi)].sum()
    fig, ax = plt.subplots(figsize=(4.6, 2.9), layout="constrained")
    ax.stairs(share, edges, fill=True, color=style.color_for("relu"), alpha=0.75, label="pre-activations")
    if not is_nan(margin) and margin and margin > 0:
        centers = (edges[:-1] + edges[1:]) / 2
        in_band = (centers > -margin) & (centers <= 0)
        ax.stairs(np.where(in_band, share, 0), edges, fill=True, color=style.color_for("helu"),
                  label=f"band (−{margin:g}, 0]: {share[in_band].sum():.1f}% of all")
        ax.axvspan(-margin, 0, color=style.color_for("helu"), alpha=0.12, lw=0)
    ax.plot([], [], " ", label=f"drawn range [{lo:.3g}, {hi:.3g}]: {shown:.1f}% of all")
    if tails > 0:
        ax.plot([], [], " ", label=f"outside the histogram [{edges[0]:g}, {edges[-1]:g}]: {tails:.1f}%")
    ax.set(xlabel="pre-activation z", ylabel="% of pre-activations per bin", xlim=(lo, hi))
    if h.get("scale") == "asinh":  # bins uniform in asinh(z / w): drawn equal-width on the matching axis
        _asinh_axis(ax, float(h["linear_width"]), lo, hi)
    ax.set_title(f"{run['dataset']}, {style.label_for(run['activation'], margin)}, all layers")
    fig.text(1.0, 0.0, str(run["run_id"]), fontsize=6, color="0.5", ha="right", va="top")
    ax.legend(loc="best", fontsize=7)
    return style.save(fig, out, "fig1b_preact_hist")


def _grid(n: int, width: float = 3.3, height: float = 2.7, ncols: int = 3):
    ncols = min(n, ncols)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols + 1.4, height * nrows),
                             layout="constrained", squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat)


def fig_acc_vs_margin(df: pd.DataFrame, out: Path, metric: str = "test/acc") -> list[Path]:
    """HeLU accuracy (mean, 95 % Student-t CI over seeds) vs margin; other activations as lines + bands.

    One panel per dataset, or per dataset and config where summarize splits runs that are not replicates
    (two models on one dataset: a panel each)."""
    if metric not in df:
        raise Skip(f"no run has {metric}")
    done = df[(df["status"] == "completed") & df[metric].notna()]
    if not done.loc[(done["activation"] == "helu") & done["margin"].notna(), "dataset"].notna().any():
        raise Skip(f"no completed HeLU run with {metric}")
    summary = summarize(done, ("dataset", "activation", "margin"), [metric], baseline=None)
    sig = significance(done, metric)
    s, panel_keys = summary.stats, [k for k in summary.by if not is_activation_key(k)]
    scale = scale_of(metric)  # accuracies and rates in %, ranks and norms as they are
    helu_rows = s[(s["activation"] == "helu") & s["margin"].notna() & s["dataset"].notna()]
    panels = list(dict.fromkeys(tuple(r[k] for k in panel_keys) for _, r in helu_rows.iterrows()))
    fig, axes = _grid(len(panels))
    for ax, panel in zip(axes, panels):
        g = s[np.logical_and.reduce([(s[k].isna() if is_nan(v) else s[k] == v).to_numpy(bool)
                                     for k, v in zip(panel_keys, panel)])]
        helu = g[(g["activation"] == "helu") & g["margin"].notna()].sort_values("margin")
        m, lo, hi = (helu[f"{metric}:{k}"].to_numpy(float) * scale for k in ("mean", "ci_low", "ci_high"))
        err = np.nan_to_num(np.vstack([m - lo, hi - m]))  # n=1: no interval, no bar
        x = helu["margin"].to_numpy(float)
        ax.errorbar(x, m, yerr=err, color=style.color_for("helu"), marker="o", ms=4, capsize=3,
                    label="HeLU (95% CI)")
        for xi, top in zip(x, np.where(np.isfinite(hi), hi, m)):
            if sig.get((panel[0], "helu", _mkey(xi)), 1.0) < 0.05:
                ax.annotate("*", (xi, top), ha="center", va="bottom", fontsize=12, color=style.color_for("helu"))
        for _, r in g[g["activation"] != "helu"].iterrows():
            c = style.color_for(r["activation"])
            star = " *" if sig.get((panel[0], r["activation"], _mkey(r["margin"])), 1.0) < 0.05 else ""
            ax.axhline(r[f"{metric}:mean"] * scale, color=c, lw=1.2, ls="--",
                       label=style.label_for(r["activation"]) + star)
            if not is_nan(r[f"{metric}:ci_low"]):
                ax.axhspan(r[f"{metric}:ci_low"] * scale, r[f"{metric}:ci_high"] * scale, color=c, alpha=0.12, lw=0)
        if len(x) and x.min() > 0 and x.max() / x.min() >= 10:
            ax.set_xscale("log")
        title = ", ".join([str(panel[0])] + [f"{k}={fmt_key(v)}" for k, v in zip(panel_keys[1:], panel[1:])])
        ax.set(title=title, xlabel="margin α", ylabel=f"{metric} (%)" if scale == 100 else metric)
    fig.suptitle("HeLU: mean over seeds, 95% CI (Student t)\n* differs from ReLU (Holm-adjusted p < 0.05)\n"
                 "dashed: other activations, band: their CI",
                 fontsize=9, x=0.02, ha="left")
    _legend(fig, axes)
    return style.save(fig, out, "acc_vs_margin")


def _mkey(margin) -> float | None:
    return None if is_nan(margin) else round(float(margin), 9)


def significance(done: pd.DataFrame, metric: str) -> dict[tuple, float]:
    """{(dataset, activation, margin): Holm-adjusted p vs ReLU} over every comparison the figure shows
    (actlab.report.comparisons: paired by seed where both ran the same seeds, else Welch)."""
    from actlab.report.comparisons import comparisons

    if not (done["activation"] == "relu").any():
        return {}
    found, _ = comparisons(done, summarize(done, ("dataset", "activation", "margin"), [metric], baseline="relu"),
                           metric)
    return {(c.dataset, c.keys.get("activation"), _mkey(c.keys.get("margin"))): c.p_holm for c in found}


def _legend(fig, axes) -> None:
    """One figure legend right of the panels, entries deduplicated and in a stable order."""
    handles = {lab: h for ax in axes for h, lab in zip(*ax.get_legend_handles_labels())}
    labels = sorted(handles, key=style.legend_key)
    fig.legend([handles[k] for k in labels], labels, loc="outside right upper")


# Per-epoch rates drawn by fig_dead_curves: history key -> panel title.
CURVES = {"dead_fwd": "forward-dead", "dead_grad": "gradient-dead", "dormant_redo@0_025": "dormant (ReDo τ=0.025)"}


def dead_long(df: pd.DataFrame) -> pd.DataFrame:
    """Per-epoch dead rates of completed runs as a long frame (needs load_frame(..., history=True))."""
    if "dead_history" not in df:
        raise Skip("frame was loaded without history")
    rows = []
    for _, r in df[df["status"] == "completed"].iterrows():
        for i, h in enumerate(r["dead_history"] or []):
            rows.append({"dataset": r["dataset"], "activation": r["activation"], "margin": r["margin"],
                         "seed": r["seed"], "epoch": h.get("epoch", i),
                         **{k: h.get(k) for k in CURVES}})
    return pd.DataFrame(rows)


def fig_dead_curves(df: pd.DataFrame, out: Path) -> list[Path]:
    """Forward-dead, gradient-dead and ReDo-dormant (τ = 0.025) rates over epochs, a point per epoch, one line
    per activation (HeLU: one per margin); the dormancy panel only where the records have it."""
    long = dead_long(df)
    if long.empty or long[["dead_fwd", "dead_grad"]].isna().all().all():
        raise Skip("no completed run has dead-neuron history (monitor off?)")
    keys = [k for k in CURVES if long[k].notna().any()]
    datasets = sorted(long["dataset"].dropna().unique())
    fig, axes = plt.subplots(len(datasets), len(keys), figsize=(3.8 * len(keys), 2.6 * len(datasets)),
                             layout="constrained", squeeze=False)
    helu_margins = sorted(long.loc[long["activation"] == "helu", "margin"].dropna().unique())
    for row, ds in zip(axes, datasets):
        d = long[long["dataset"] == ds]
        for (act, margin), g in d.groupby(["activation", "margin"], dropna=False, sort=True):
            k = helu_margins.index(margin) if act == "helu" and margin in helu_margins else None
            ls = "-" if k is None else style.LINESTYLES[k % len(style.LINESTYLES)]
            c = style.color_for(act) if k is None else style.shade(act, k, len(helu_margins))
            stats = g.groupby("epoch")[keys].agg(["mean", "std"])
            for ax, key in zip(row, keys):
                mean, std = stats[(key, "mean")] * 100, stats[(key, "std")].fillna(0) * 100
                ax.plot(mean.index, mean, color=c, ls=ls, marker="." if len(mean) <= 30 else None, ms=4,
                        label=style.label_for(act, margin if act == "helu" else None))
                ax.fill_between(mean.index, mean - std, mean + std, color=c, alpha=0.12, lw=0)
        for ax, key in zip(row, keys):
            ax.set(title=f"{ds}: {CURVES[key]}", xlabel="epoch", ylabel="units (%)")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle("Dead and dormant units per epoch: mean over seeds, band ± 1 std", fontsize=9)
    _legend(fig, axes.flat)
    return style.save(fig, out, "dead_curves")


def fig_bench(bench_dir: Path, out: Path) -> list[Path]:
    """Fig. 3/4 through actlab.report.bench_figures (fig4(payload, out) / fig3(payload, out))."""
    jobs = [(name, bench_dir / f"{stem}.json") for name, stem in (("fig4", "inference"), ("fig3", "inference_glue"))]
    jobs = [(n, p) for n, p in jobs if p.is_file()]
    if not jobs:
        raise Skip(f"no {bench_dir}/inference.json or inference_glue.json (run `actlab bench inference`)")
    try:
        from actlab.report import bench_figures
    except ImportError as e:
        raise Skip(f"actlab.report.bench_figures is not importable ({e})") from e
    paths: list[Path] = []
    for name, p in jobs:
        paths += [Path(x) for x in getattr(bench_figures, name)(json.loads(p.read_text()), out)]
    return paths


def make_figures(df: pd.DataFrame, out: Path, margin: float = 1.0, bench_dir: Path | None = None,
                 metric: str = "test/acc", run_id: str | None = None) -> tuple[list[Path], dict[str, str]]:
    """Draw every figure that has data; return (paths written, {figure: reason skipped})."""
    style.use()
    out = Path(out)
    jobs = {
        "fig2_activations": lambda: fig_activations(out, margin),
        "fig1b_preact_hist": lambda: fig_preact_hist(df, out, run_id),
        "acc_vs_margin": lambda: fig_acc_vs_margin(df, out, metric),
        "dead_curves": lambda: fig_dead_curves(df, out),
        "fig3/fig4 (bench)": lambda: fig_bench(Path(bench_dir or "results/bench"), out),
    }
    written, skipped = [], {}
    for name, job in jobs.items():
        try:
            written += job()
        except Skip as e:
            skipped[name] = str(e)
        finally:
            plt.close("all")
    return written, skipped


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs_dir", nargs="?", default="results/runs", help="run records (default results/runs)")
    parser.add_argument("--out", default="results/figures", help="output folder")
    parser.add_argument("--margin", type=float, default=1.0, help="HeLU margin drawn in Fig. 2 (paper: 1.0)")
    parser.add_argument("--metric", default="test/acc", help="metric of the accuracy-vs-margin figure")
    parser.add_argument("--run-id", default=None, help="run whose histogram Fig. 1b shows")
    parser.add_argument("--bench-dir", default="results/bench", help="where bench json files are")
    parser.add_argument("--no-wandb", action="store_true", help="ignore W&B offline runs")
    parser.add_argument("-q", "--quiet", action="store_true", help="one line for what was written")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    console = Console()
    df = load_frame(args.runs_dir, history=True, wandb=not args.no_wandb)
    if df.empty:
        console.print(f"[yellow]no run records under {args.runs_dir}: drawing the run-independent figures[/yellow]")
    written, skipped = make_figures(df, Path(args.out), args.margin, Path(args.bench_dir), args.metric, args.run_id)
    for name, reason in skipped.items():
        console.print(f"[yellow]skipped {name}:[/yellow] {reason}")
    if getattr(args, "quiet", False):
        names = sorted({p.stem for p in written})
        console.print(f"figures: wrote {len(names)} into {args.out} ({', '.join(names)})", soft_wrap=True, markup=False)
        return 0
    for p in written:
        console.print(f"wrote {p}")
    return 0
