"""Figures of the inference benchmark: Fig. 4 (per-model latency) and Fig. 3 (BERT per GLUE task).

    from actlab.report.bench_figures import fig4, fig3
    fig4(json.load(open("results/bench/inference.json")), "results/figures")
    fig3(json.load(open("results/bench/inference_glue.json")), "results/figures")

Input is the payload `actlab bench inference` writes; colours come from report.style (Okabe-Ito),
original activation = GELU's colour, HeLU = HeLU's, so the pair reads the same in every figure.
"""

from __future__ import annotations

import csv
import math
from importlib import resources
from pathlib import Path

from actlab.report import style
from actlab.report.style import plt

MODEL_NAMES = {"bert": "BERT", "roberta": "RoBERTa", "xlnet": "XLNet", "gpt2": "GPT-2", "electra": "ELECTRA"}
PRECISION_NAMES = {"fp32": "fp32", "bf16": "AMP bf16", "fp16": "AMP fp16", "int8": "INT8 (dynamic)"}
PAPER_CSV = "fig4_inference_ms_per_sample_t4.csv"
ORIGINAL = dict(color=style.color_for("gelu"), label="original activation (GELU family)")
HELU = dict(color=style.color_for("helu"), label="HeLU (= ReLU at inference)", hatch="//", edgecolor="white")


def paper_fig4() -> dict[str, tuple[float, float]] | None:
    """The paper's T4 numbers {model: (original ms, HeLU ms)} from actlab.report/paper/, or None if absent."""
    path = resources.files("actlab.report").joinpath("paper", PAPER_CSV)
    if not path.is_file():
        return None
    with path.open() as f:
        return {
            r["model"]: (float(r["original_activation_ms"]), float(r["helu_ms"])) for r in csv.DictReader(f)
        }


def _upper(values, err) -> list[float]:
    """Bar tops with the upper whisker; err is None, symmetric [e...] or asymmetric [[lo...], [hi...]]."""
    if err is None:
        return list(values)
    hi = err[1] if isinstance(err[0], (list, tuple)) else err
    return [v + e for v, e in zip(values, hi)]


def _pair_bars(ax, labels, orig, helu, orig_err=None, helu_err=None, ratios=None):
    """Grouped bars original vs HeLU at each label; ratio HeLU/original written above each pair."""
    x = range(len(labels))
    w = 0.38
    ax.bar([i - w / 2 for i in x], orig, w, yerr=orig_err, capsize=2, **ORIGINAL)
    ax.bar([i + w / 2 for i in x], helu, w, yerr=helu_err, capsize=2, **HELU)
    ax.set_xticks(list(x), labels)
    ax.grid(axis="x", visible=False)
    if ratios:
        # Write the ratio above the taller bar of the pair, whiskers included.
        tops = [max(a, b) for a, b in zip(_upper(orig, orig_err), _upper(helu, helu_err))]
        for i, r in zip(x, ratios):
            ax.text(i, tops[i] + 0.03 * max(tops), f"×{r:.2f}", ha="center", va="bottom", fontsize=7)
        ax.set_ylim(0, max(tops) * 1.15)


def _iqr_err(rows, variant):
    """Asymmetric error bars [median - q1, q3 - median] in ms/sample."""
    lo = [r[variant]["ms_per_sample"] - r[variant]["ms_per_sample_q1"] for r in rows]
    hi = [r[variant]["ms_per_sample_q3"] - r[variant]["ms_per_sample"] for r in rows]
    return [lo, hi]


def _std_err(rows, variant, key) -> list[float]:
    """Symmetric error bars: the std over batches; none (0) where one batch leaves it undefined (NaN)."""
    return [0.0 if math.isnan(std := float(r[variant][key + "_std"])) else std for r in rows]


def fig4(results: dict, out_dir, paper: dict | None | bool = True) -> list[Path]:
    """Per-sample latency, original vs HeLU per model: one panel per measured precision (+ the paper's T4).

    Each panel uses the largest batch x sequence measured; bars are medians, whiskers the quartiles.
    `paper`: True loads the packaged CSV (panel skipped if absent), a dict supplies it, None/False omits it.
    """
    style.use()
    rows = results["rows"]
    precisions = list(dict.fromkeys(r["precision"] for r in rows))
    panels = []
    for p in precisions:
        sub = [r for r in rows if r["precision"] == p]
        batch, seq = max((r["batch"], r["seq"]) for r in sub)
        sub = [r for r in sub if (r["batch"], r["seq"]) == (batch, seq)]
        where = f"{sub[0]['device'].upper()} {PRECISION_NAMES.get(p, p)}"
        panels.append(
            (
                f"ours: {where}, batch {batch} × {seq} tokens",
                sub,
            )
        )
    paper = paper_fig4() if paper is True else (paper or None)
    n = len(panels) + (paper is not None)
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n, 3.0), squeeze=False)
    for ax, (title, sub) in zip(axes[0], panels):
        _pair_bars(
            ax,
            [MODEL_NAMES.get(r["model"], r["model"]) for r in sub],
            [r["original"]["ms_per_sample"] for r in sub],
            [r["relu"]["ms_per_sample"] for r in sub],
            _iqr_err(sub, "original"),
            _iqr_err(sub, "relu"),
            [r["ratio"] for r in sub],
        )
        ax.set_title(title, fontsize=8)
        ax.set_ylabel("ms / sample")
    if paper is not None:
        ax = axes[0][-1]
        names = list(paper)
        _pair_bars(
            ax,
            [MODEL_NAMES.get(m, m) for m in names],
            [paper[m][0] for m in names],
            [paper[m][1] for m in names],
            ratios=[paper[m][1] / paper[m][0] for m in names],
        )
        ax.set_title("paper (Kimhi et al. 2024, Fig. 4): T4 GPU", fontsize=8)
        ax.set_ylabel("ms / sample")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, bbox_to_anchor=(0.5, -0.06))
    s = results.get("settings", {})
    fig.suptitle(
        f"Inference time per sample, original vs HeLU ({s.get('threads', '?')} CPU threads; "
        f"whiskers: quartiles over rounds; ×: HeLU / original)",
        fontsize=9,
    )
    fig.tight_layout()
    return style.save(fig, out_dir, "fig4_inference")


def fig3(results: dict, out_dir) -> list[Path]:
    """2x2 per GLUE task: time and throughput (rows) at full precision and INT8 (columns), GELU vs HeLU.

    Bars are means over batches of per-batch medians; whiskers one sample standard deviation (ddof=1)
    over batches, none for a task measured in a single batch.
    """
    style.use()
    rows = results["glue"]["rows"]
    full = next((r["precision"] for r in rows if r["precision"] != "int8"), None)
    columns = [
        (full, f"full precision ({PRECISION_NAMES.get(full, full)})" if full else "full precision"),
        ("int8", "INT8 (dynamic)"),
    ]
    metrics = [("ms_per_sample", "ms / sample"), ("tokens_per_s", "tokens / s")]
    fig, axes = plt.subplots(2, 2, figsize=(8.0, 5.6), squeeze=False)
    for j, (precision, col_title) in enumerate(columns):
        sub = [r for r in rows if precision is not None and r["precision"] == precision]
        for i, (key, ylabel) in enumerate(metrics):
            ax = axes[i][j]
            if not sub:
                ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
                ax.set_xticks([])
                ax.set_yticks([])
            else:
                orig = [r["original"][key] for r in sub]
                helu = [r["relu"][key] for r in sub]
                _pair_bars(
                    ax,
                    [r["task"].upper() for r in sub],
                    orig,
                    helu,
                    _std_err(sub, "original", key),
                    _std_err(sub, "relu", key),
                    [h / o for h, o in zip(helu, orig)],
                )
                ax.set_title(f"{col_title} on {sub[0]['device'].upper()}", fontsize=8)
            ax.set_ylabel(ylabel)
    handles, labels = next((a.get_legend_handles_labels() for a in axes.flat if a.patches), ([], []))
    fig.legend(handles, labels, loc="lower center", ncol=2, bbox_to_anchor=(0.5, -0.03))
    fig.suptitle("BERT inference per GLUE task, original (GELU) vs HeLU (×: HeLU / original)", fontsize=9)
    fig.tight_layout()
    return style.save(fig, out_dir, "fig3_glue_inference")
