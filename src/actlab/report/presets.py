"""`actlab presets`: the table and the figure of each issue-15 mini-experiment, from its runs.

    actlab-train -m experiment=xor_prelu      # runs into results/runs/xor_prelu/ (the preset's paths.runs_dir)
    actlab-train -m experiment=prune_dnr      # runs into results/runs/prune_dnr/
    actlab presets                     # both: results/tables/{xor_prelu,prune_dnr}.{md,csv}, results/figures/*.{png,pdf}
    actlab presets xor_prelu --runs results/runs/xor_prelu

Runs are found under --runs (default results/runs, searched three levels deep) by the preset's tag;
only completed runs count. xor_prelu: per activation (HeLU per margin) the share of the 2-2-1 nets that
solve XOR (all four points right) with a Wilson 95 % interval (n = nets, pooled over seeds), the share of
nets with a forward-dead hidden unit, and an exact McNemar test against ReLU on the same initial nets.
prune_dnr: per activation and target sparsity, mean ± std over seeds of the final test accuracy and dead
rates, and the peak dead_fwd over epochs; the figure follows sparsity, dead_fwd and zero_rate per epoch.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from actlab.report import style
from actlab.report.frame import load_frame
from actlab.report.tables import DASH, fmt_mean_std, fmt_p, mean_std, to_markdown
from actlab.tasks.xor import NETS_FILE

PRESETS = ("xor_prelu", "prune_dnr")
ORDER = ("relu", "helu", "leaky_relu", "prelu", "elu", "gelu", "silu")  # rows and legend order
DENSE, PRUNED = "dense", "pruned"


# --- shared ------------------------------------------------------------------------------------------------
def preset_runs(runs: str | Path, tag: str, history: bool = False) -> pd.DataFrame:
    """The completed runs under `runs` tagged `tag`, ordered by activation (ORDER), margin and seed."""
    df = load_frame(runs, history=history, wandb=False)
    tags = df["tags"].fillna("").astype(str).str.split(",")
    df = df[(df["status"] == "completed") & tags.apply(lambda t: tag in t)].copy()
    if df.empty:
        raise FileNotFoundError(f"no completed runs tagged {tag!r} under {runs}; run "
                                f"`actlab-train -m experiment={tag}` first (or pass --runs)")
    df["_order"] = df["activation"].map(lambda a: ORDER.index(a) if a in ORDER else len(ORDER))
    return df.sort_values(["_order", "margin", "seed"], na_position="first", kind="stable", ignore_index=True)


def label(row) -> str:
    return style.label_for(row["activation"], None if pd.isna(row["margin"]) else float(row["margin"]))


def _groups(df: pd.DataFrame, *extra: str):
    """(activation, margin, *extra) groups in the frame's order (NaN margins kept)."""
    keys = ["activation", "margin", *extra]
    return df.groupby(keys, dropna=False, sort=False)


def _colour(df: pd.DataFrame, activation: str, margin) -> str:
    if activation != "helu":
        return style.color_for(activation)
    margins = sorted(df.loc[df["activation"] == "helu", "margin"].dropna().unique())
    return style.shade("helu", margins.index(margin) if margin in margins else 0, len(margins))


def _write_table(table: pd.DataFrame, numbers: pd.DataFrame, out: Path, stem: str, caption: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    md, csv = out / f"{stem}.md", out / f"{stem}.csv"
    md.write_text(f"{caption}\n\n{to_markdown(table)}\n")
    numbers.to_csv(csv, index=False, float_format="%.6g")
    return [md, csv]


# --- xor_prelu -----------------------------------------------------------------------------------------------
def wilson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion k / n (scipy's binomtest)."""
    ci = stats.binomtest(int(k), int(n)).proportion_ci(confidence_level=level, method="wilson")
    return float(ci.low), float(ci.high)


def mcnemar_p(a: np.ndarray, b: np.ndarray) -> float:
    """Exact (binomial) McNemar p-value of paired 0/1 outcomes a, b; 1.0 with no discordant pair."""
    b_only, a_only = int(np.sum((a == 0) & (b == 1))), int(np.sum((a == 1) & (b == 0)))
    if b_only + a_only == 0:
        return 1.0
    return float(stats.binomtest(b_only, b_only + a_only, 0.5).pvalue)


def _nets(path: str) -> dict:
    return json.loads((Path(path).parent / NETS_FILE).read_text())


def xor_outcomes(df: pd.DataFrame) -> list[dict]:
    """Per (activation, margin): seeds, per-net 0/1 solved and dead vectors (concatenated in seed order)."""
    out = []
    for (act, margin), g in _groups(df):
        nets = [_nets(p) for p in g["path"]]
        # the validation share one epoch before the end (n-weighted over seeds): is it still changing?
        prev = [(rows[-2]["val/solved"], n["nets"]) for rows, n in zip(g["history"], nets)
                if len(rows) > 1 and "val/solved" in rows[-2]]
        out.append({"activation": act, "margin": margin, "seeds": [int(s) for s in g["seed"]],
                    "prev_share": sum(v * w for v, w in prev) / sum(w for _, w in prev) if prev else math.nan,
                    "solved": np.concatenate([np.asarray(n["solved"], dtype=int) for n in nets]),
                    "dead": np.concatenate([(np.asarray(n["dead_units"]) > 0).astype(int) for n in nets]),
                    "loss": np.concatenate([np.asarray(n["loss"], dtype=float) for n in nets])})
    return out


def xor_table(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(display table, numbers) of the solve share per activation; see the module docstring."""
    groups = xor_outcomes(df)
    relu = next((g for g in groups if g["activation"] == "relu"), None)
    shown, numbers = [], []
    for g in groups:
        n, k = len(g["solved"]), int(g["solved"].sum())
        lo, hi = wilson(k, n)
        paired = relu is not None and g is not relu and g["seeds"] == relu["seeds"] and n == len(relu["solved"])
        p = mcnemar_p(relu["solved"], g["solved"]) if paired else math.nan
        dead = float(g["dead"].mean())
        margin = g["margin"]
        shown.append({"activation": style.DISPLAY_NAMES.get(g["activation"], g["activation"]),
                      "margin": DASH if pd.isna(margin) else f"{margin:g}", "n (nets)": str(n), "solved": str(k),
                      "solve share (%)": f"{100 * k / n:.1f}", "95% CI (Wilson)": f"[{100 * lo:.1f}, {100 * hi:.1f}]",
                      "one epoch earlier (%)": DASH if pd.isna(g["prev_share"]) else f"{100 * g['prev_share']:.1f}",
                      "nets with a dead hidden unit (%)": f"{100 * dead:.1f}",
                      "vs ReLU, McNemar p": DASH if g is relu else fmt_p(p)})
        numbers.append({"activation": g["activation"], "margin": margin, "n": n, "solved": k, "share": k / n,
                        "ci_low": lo, "ci_high": hi, "share_one_epoch_earlier": g["prev_share"], "dead_share": dead, "mean_final_loss": float(g["loss"].mean()),
                        "mcnemar_p_vs_relu": p, "seeds": " ".join(map(str, g["seeds"]))})
    return pd.DataFrame(shown), pd.DataFrame(numbers)


def _xor_caption(df: pd.DataFrame) -> str:
    r = df.iloc[0]
    steps = int(r["trainer.max_epochs"]) * int(r["dataset.steps_per_epoch"])
    return (f"XOR with the smallest net that can solve it (2-{int(r['model.hidden'])}-1, one logit, BCE): share of "
            f"{int(r['model.nets'])} random inits per run (init `{r['model.init']}`, seeds "
            f"{', '.join(map(str, sorted(df['seed'].unique())))}) that classify all four points right after {steps} "
            f"full-batch SGD steps (lr {r['optim.lr']:g}, momentum {r['optim.momentum']:g}). 95 % Wilson intervals; "
            "every activation trains the same initial nets, so the McNemar test (exact) against ReLU is paired. "
            f"'One epoch earlier': the share {int(r['dataset.steps_per_epoch'])} steps before the end (has it settled?).")


def xor_figure(df: pd.DataFrame, numbers: pd.DataFrame, out: Path) -> list[Path]:
    import matplotlib.pyplot as plt

    style.use()
    fig, (ax, curve) = plt.subplots(1, 2, figsize=(9.5, 3.6), gridspec_kw={"width_ratios": [1, 1.3]})
    y = np.arange(len(numbers))[::-1]
    for yi, (_, r) in zip(y, numbers.iterrows()):
        c = _colour(df, r["activation"], r["margin"])
        ax.errorbar(100 * r["share"], yi, xerr=[[100 * (r["share"] - r["ci_low"])], [100 * (r["ci_high"] - r["share"])]],
                    fmt="o", color=c, capsize=3)
    ax.set_yticks(y, [label(r) for _, r in numbers.iterrows()])
    ax.set_xlabel("nets that solve XOR (%), 95 % Wilson CI")
    ax.set_xlim(-3, 103)
    ax.set_title(f"(a) 2-2-1 nets, n = {int(numbers['n'].iloc[0])} per activation")
    for (act, margin), g in _groups(df):
        rows = [(h["step"], h["val/solved"]) for hist in g["history"] for h in hist if "val/solved" in h]
        if not rows:
            continue
        steps = sorted({s for s, _ in rows})
        mean = [100 * np.mean([v for s, v in rows if s == st]) for st in steps]
        curve.plot(steps, mean, color=_colour(df, act, margin), marker=".", lw=3.2 if act == "relu" else None,
                   label=style.label_for(act, None if pd.isna(margin) else float(margin)))  # wide: HeLU(0) = ReLU
    curve.set_xlabel("training step (end of epoch)")
    curve.set_ylabel("nets that solve XOR (%)")
    curve.set_title("(b) during training")
    curve.legend(loc="center left", bbox_to_anchor=(1.0, 0.5))
    return style.save(fig, out, "xor_prelu")


def xor_prelu(runs: str | Path, tables: Path, figures: Path) -> list[Path]:
    df = preset_runs(runs, "xor_prelu", history=True)
    table, numbers = xor_table(df)
    return _write_table(table, numbers, tables, "xor_prelu", _xor_caption(df)) + xor_figure(df, numbers, figures)


# --- prune_dnr -----------------------------------------------------------------------------------------------
def _variant(df: pd.DataFrame) -> pd.Series:
    return np.where(df["callbacks.prune.target_sparsity"].astype(float) > 0, PRUNED, DENSE)


def _per_epoch(hist: list[dict], dead_hist: list[dict], key: str) -> dict[int, float]:
    rows = dead_hist if key in ("dead_fwd", "dead_grad", "zero_rate", "band") else hist
    return {int(r["epoch"]): float(r[key]) for r in rows if key in r and r.get("epoch") is not None}


def prune_table(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    df = df.assign(variant=_variant(df))
    shown, numbers = [], []
    for (act, margin, target), g in _groups(df, "callbacks.prune.target_sparsity"):
        peak = [max(_per_epoch(h, d, "dead_fwd").values(), default=math.nan)
                for h, d in zip(g["history"], g["dead_history"])]
        cells = {"activation": style.DISPLAY_NAMES.get(act, act), "margin": DASH if pd.isna(margin) else f"{margin:g}",
                 "target sparsity": f"{float(target):g}", "seeds": str(len(g))}
        num = {"activation": act, "margin": margin, "target_sparsity": float(target), "seeds": len(g)}
        for key, head, scale in (("train/sparsity", "final sparsity", 1), ("test/acc", "test acc (%)", 100),
                                 ("dead_fwd", "dead_fwd (%)", 100), ("dead_grad", "dead_grad (%)", 100),
                                 ("zero_rate", "zero_rate (%)", 100), ("peak", "peak dead_fwd over epochs (%)", 100)):
            values = pd.Series(peak) if key == "peak" else g[key] if key in g else pd.Series(dtype=float)
            m, s, _ = mean_std(values.astype(float))  # fractions in the csv, percent on display
            cells[head] = fmt_mean_std(m * scale, s * scale, 3 if scale == 1 else 1)
            num[key.replace("/", "_") + "_mean"], num[key.replace("/", "_") + "_std"] = m, s
        _paired_vs_dense(df, g, cells, num)
        shown.append(cells)
        numbers.append(num)
    return pd.DataFrame(shown), pd.DataFrame(numbers)


def _paired_vs_dense(df: pd.DataFrame, g: pd.DataFrame, cells: dict, num: dict) -> None:
    """Pruned minus dense of the same activation, margin and seed (the seed fixes init and data order):
    mean ± std of the per-seed differences, in percentage points, with a paired t-test p-value."""
    same = (df["activation"] == g["activation"].iloc[0]) & (df["variant"] == DENSE)
    same &= df["margin"].isna() if pd.isna(g["margin"].iloc[0]) else df["margin"] == g["margin"].iloc[0]
    dense = df[same].set_index("seed")
    for key, head in (("dead_fwd", "Δ dead_fwd vs dense (pp)"), ("test/acc", "Δ test acc vs dense (pp)")):
        pairs = [(r[key], dense.at[r["seed"], key]) for _, r in g.iterrows()
                 if g["variant"].iloc[0] == PRUNED and r["seed"] in dense.index]
        diff = np.array([a - b for a, b in pairs], dtype=float)
        m, s, n = mean_std(diff * 100)
        p = float(stats.ttest_rel(*zip(*pairs)).pvalue) if n > 1 and np.any(diff != 0) else math.nan
        cells[head] = DASH if not n else fmt_mean_std(m, s, 1, sign=True) + (f" (p {fmt_p(p)})" if n > 1 else "")
        num[f"delta_{key.replace('/', '_')}_pp_mean"], num[f"delta_{key.replace('/', '_')}_pp_std"] = m, s
        num[f"delta_{key.replace('/', '_')}_p"] = p


def _prune_caption(df: pd.DataFrame) -> str:
    r = df.iloc[0]
    return (f"Gradual magnitude pruning (Zhu & Gupta cubic schedule, per layer, every Linear weight, epochs "
            f"{int(r['callbacks.prune.start_epoch'])} to {int(r['callbacks.prune.end_epoch'])} of "
            f"{int(r['trainer.max_epochs'])}) of a {int(r['model.depth'])} x {int(r['model.width'])} MLP on "
            f"{r['dataset']} (first {int(r['dataset.subset'])} training images; SGD lr {r['optim.lr']:g}, cosine). "
            "Mean ± std over seeds; dead rates at the end of training on the monitor's probe (first "
            f"{int(r['monitor.probe_size'])} validation images), peak = the highest per-epoch dead_fwd; Δ = pruned "
            "minus dense run of the same seed (same init and data order), paired t-test p.")


def prune_figure(df: pd.DataFrame, out: Path) -> list[Path]:
    """Sparsity, dead_fwd and zero_rate per epoch; mean over seeds, ± std band."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    style.use()
    df = df.assign(variant=_variant(df))
    panels = (("train/sparsity", "weight sparsity", 1), ("dead_fwd", "forward-dead units (%)", 100),
              ("zero_rate", "zero activations (%)", 100))
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
    for (act, margin, variant), g in _groups(df, "variant"):
        colour = _colour(df, act, margin)
        name = style.label_for(act, None if pd.isna(margin) else float(margin))
        for i, (ax, (key, _, scale)) in enumerate(zip(axes, panels)):
            series = [_per_epoch(h, d, key) for h, d in zip(g["history"], g["dead_history"])]
            epochs = sorted(set().union(*series))
            if not epochs or (i == 0 and variant == DENSE):
                continue
            values = np.array([[s.get(e, np.nan) for e in epochs] for s in series]) * scale
            mean = np.nanmean(values, axis=0)
            if i == 0:  # one schedule for all pruned runs: drawn once per activation, on top of each other
                ax.plot(epochs, mean, color="black", marker=".")
                continue
            ax.plot(epochs, mean, color=colour, ls="-" if variant == PRUNED else "--", marker=".",
                    label=f"{name}, {variant}" if i == 1 else None)
            if len(series) > 1:
                std = np.nanstd(values, axis=0, ddof=1)
                ax.fill_between(epochs, mean - std, mean + std, color=colour, alpha=0.12, lw=0)
    for ax, (_, ylabel, _) in zip(axes, panels):
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].set_title("(a) sparsity of the pruned runs")
    axes[1].set_title("(b) dead_fwd: pruned (solid), dense (dashed)")
    axes[2].set_title("(c) zero_rate")
    axes[1].legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3)
    return style.save(fig, out, "prune_dnr")


def prune_dnr(runs: str | Path, tables: Path, figures: Path) -> list[Path]:
    df = preset_runs(runs, "prune_dnr", history=True)
    df = df.sort_values(["_order", "margin", "callbacks.prune.target_sparsity", "seed"], na_position="first",
                        kind="stable", ignore_index=True)  # dense before pruned
    table, numbers = prune_table(df)
    return _write_table(table, numbers, tables, "prune_dnr", _prune_caption(df)) + prune_figure(df, figures)


# --- CLI -----------------------------------------------------------------------------------------------------
WRITERS = {"xor_prelu": xor_prelu, "prune_dnr": prune_dnr}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("presets", nargs="*", metavar="PRESET", help=f"{' and/or '.join(PRESETS)} (default: both)")
    parser.add_argument("--runs", default="results/runs", help="where the preset runs are (default results/runs)")
    parser.add_argument("--tables", default="results/tables", help="table folder (default results/tables)")
    parser.add_argument("--figures", default="results/figures", help="figure folder (default results/figures)")


def run(args: argparse.Namespace) -> int:
    unknown = [p for p in args.presets if p not in PRESETS]
    if unknown:
        print(f"actlab presets: unknown preset {', '.join(unknown)}; choose from {', '.join(PRESETS)}", file=sys.stderr)
        return 2
    status = 0
    for name in args.presets or PRESETS:
        try:
            for path in WRITERS[name](args.runs, Path(args.tables), Path(args.figures)):
                print(path)
        except FileNotFoundError as e:
            print(f"actlab presets: {name}: {e}", file=sys.stderr)
            status = 1
    return status
