"""Inference cost of the original activation vs HeLU (= ReLU at inference) in five HF models: Fig. 4 / Fig. 3.

    actlab bench inference --quick                  # CPU, base models, batch 8 x seq 128, fp32 + INT8
    actlab bench inference                          # full: batch 32,256 x seq 128, 20 repeats (GPU machines)
    actlab bench inference --glue sst2,mrpc --glue-data-files sst2=sst2_val.csv,mrpc=mrpc_val.csv

Each model is built from its config with random weights; its twin has the same weights with every
activation swapped to HeLU and then to nn.ReLU (`for_inference`). Both variants get the same inputs
and are timed in interleaved rounds (A B, ..., then B A, ...) with threads pinned, so drift hits both alike.
INT8 is dynamic quantization of every linear layer, on CPU. On CUDA: fp32 and AMP bf16/fp16, timed
with CUDA events. Writes results/bench/inference.{json,md} (GLUE mode: inference_glue.{json,md}).
This module only measures: `actlab figures` draws Fig. 4 (results/figures/fig4_inference.{png,pdf})
and Fig. 3 (fig3_glue_inference.{png,pdf}) from those json files (actlab.report.bench_figures).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import time
from collections.abc import Callable

import pandas as pd
import torch

from actlab.bench import hf_models as hf
from actlab.bench.common import summary, time_interleaved, write_results
from actlab.report.tables import fmt_mean_std, fmt_num, mean_std, to_markdown

# Defaults per mode; explicit flags override them. Quick fits a 2-core CPU in a few minutes.
QUICK = dict(batch_sizes=[8], seq_lens=[128], repeats=5, warmup=1)
FULL = dict(batch_sizes=[32, 256], seq_lens=[128], repeats=20, warmup=3)
CPU_PRECISIONS = ("fp32", "int8")
CUDA_PRECISIONS = ("fp32", "bf16", "fp16", "int8")  # int8 always runs on CPU
AMP = {"bf16": torch.bfloat16, "fp16": torch.float16}
VARIANTS = ("original", "relu")
FIG4_COLUMNS = ["model", "precision", "batch", "seq", "ms/sample original", "ms/sample ReLU", "ReLU/original",
                "paired ratio [q1, q3]", "tokens/s original", "tokens/s ReLU"]
FIG3_COLUMNS = ["task", "precision", "samples", "tokens/sample", "batches", "ms/sample original",
                "ms/sample ReLU", "ReLU/original", "tokens/s original", "tokens/s ReLU"]


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def _names(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of `actlab bench inference` (registered by actlab.cli.main)."""
    p.add_argument("--models", type=_names, default=list(hf.MODELS), help="comma list (default: all five)")
    p.add_argument("--size", choices=("base", "tiny"), default="base", help="tiny: 2-layer, 32-wide (tests)")
    p.add_argument("--batch-sizes", type=_ints, default=None, help="comma list, e.g. 1,8,256")
    p.add_argument("--seq-lens", type=_ints, default=None, help="comma list, e.g. 128,512")
    p.add_argument("--repeats", type=int, default=None, help="timed rounds per variant")
    p.add_argument("--warmup", type=int, default=None, help="untimed rounds per variant first")
    p.add_argument("--precisions", type=_names, default=None,
                   help="fp32,int8 (CPU) / fp32,bf16,fp16 (CUDA AMP), int8 (always CPU); default by device")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch CPU threads (pinned, recorded)")
    p.add_argument("--quick", action="store_true", help="small CPU run: batch 8, seq 128, 5 repeats")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", default="results/bench", help="json and md go here (`actlab figures --bench-dir`)")
    g = p.add_argument_group("GLUE mode (Fig. 3): BERT on real validation sentence lengths")
    g.add_argument("--glue", type=_names, default=None, help="tasks, e.g. sst2,mrpc,qnli")
    g.add_argument(
        "--glue-data-files",
        default=None,
        help="local CSV/JSON with GLUE columns: PATH (one task) or TASK=PATH,TASK=PATH",
    )
    g.add_argument("--glue-batch-size", type=int, default=256)
    g.add_argument("--glue-max-samples", type=int, default=1024)


def run(args: argparse.Namespace) -> int:
    """Entry point of `actlab bench inference`; returns a process exit code."""
    try:
        settings = _settings(args)
    except ValueError as e:
        print(f"actlab bench inference: {e}")
        return 2
    t0 = time.perf_counter()
    if args.glue:
        try:
            payload = {"settings": settings, "glue": bench_glue(args, settings)}
        except (ValueError, FileNotFoundError) as e:  # unknown task, missing file or column
            print(f"actlab bench inference --glue: {e}")
            return 2
        name, tabulate, figure = "inference_glue", glue_table_md, "Fig. 3"
    else:
        payload = {"settings": settings, **bench_models(args, settings)}
        name, tabulate, figure = "inference", table_md, "Fig. 4"
    payload["settings"]["runtime_s"] = round(time.perf_counter() - t0, 1)
    payload["settings"]["load_avg_end"] = _load()
    table = tabulate(payload) + "\n" + _load_note(payload["settings"])
    path = write_results(name, payload, table, args.out_dir, device=payload["settings"]["device"])
    print(table)
    print(f"wrote {path} and {path.with_suffix('.md')} in {payload['settings']['runtime_s']} s")
    print(f"draw {figure}: actlab figures --bench-dir {args.out_dir}")
    return 0


def _load() -> list[float]:
    """1, 5 and 15 minute load averages: other processes on the box make every timing noisier."""
    return [round(x, 2) for x in os.getloadavg()]


def _load_note(s: dict) -> str:
    """A line saying how busy the machine was, with a warning when it was oversubscribed."""
    start, end = s["load_avg_start"][0], s["load_avg_end"][0]
    cores = os.cpu_count() or 1
    note = (
        f"Load average (1 min) {start} at start, {end} at end, on {cores} cores; run took {s['runtime_s']} s."
    )
    if max(start, end) > cores:
        note += (
            " WARNING: the machine was shared (load above core count): absolute times are inflated and noisy."
        )
    return note


def _settings(args: argparse.Namespace) -> dict:
    """Resolve mode defaults, device and precisions; pin threads. Raises ValueError on a bad combination."""
    import transformers

    if args.glue and args.repeats is None:
        args.repeats = 3 if args.quick else 10  # the paper's 10 repeats per GLUE batch
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device
    device = "cpu" if device == "auto" else device
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda but torch.cuda.is_available() is False")
    if args.precisions is None:
        if device == "cuda":
            args.precisions = ["fp16", "int8"] if args.glue else ["fp32", "bf16", "fp16"]
        else:
            args.precisions = list(CPU_PRECISIONS)
    allowed = CUDA_PRECISIONS if device == "cuda" else CPU_PRECISIONS
    bad = [p for p in args.precisions if p not in allowed]
    if bad:
        raise ValueError(f"precision(s) {bad} not available on {device}; choose from {', '.join(allowed)}")
    unknown = [m for m in args.models if m not in hf.MODELS]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; choose from {', '.join(hf.MODELS)}")
    torch.set_num_threads(args.threads)
    if args.glue:  # batches come from the data: shapes are per batch, not a grid
        args.models, args.batch_sizes, args.seq_lens = ["bert"], [args.glue_batch_size], None
    return {
        "device": device,
        "size": args.size,
        "models": args.models,
        "batch_sizes": args.batch_sizes,
        "seq_lens": args.seq_lens,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "precisions": args.precisions,
        "quick": args.quick,
        "seed": args.seed,
        "threads": torch.get_num_threads(),
        "transformers": transformers.__version__,
        "int8": "torch.ao.quantization.quantize_dynamic(nn.Linear, qint8) on CPU (deprecated in torch 2.14,"
        f" engine {torch.backends.quantized.engine})",
        "timer": ("CUDA events" if device == "cuda" else "time.perf_counter")
        + ", interleaved rounds, half AB half BA",
        "load_avg_start": _load(),
        **({"tf32_matmul": torch.backends.cuda.matmul.allow_tf32} if device == "cuda" else {}),
    }


def _forward(model, inputs: dict, amp: torch.dtype | None) -> Callable[[], None]:
    """A zero-argument closure running one forward pass under inference_mode (and autocast for AMP)."""

    def fn():
        ctx = torch.autocast("cuda", dtype=amp) if amp is not None else contextlib.nullcontext()
        with torch.inference_mode(), ctx:
            model(**inputs)

    return fn


def time_cuda_events(variants: dict, repeats: int = 10, warmup: int = 2) -> dict[str, list[float]]:
    """Seconds per call from CUDA events, interleaved like common.time_interleaved; one sync at the end."""
    for _ in range(warmup):
        for fn in variants.values():
            fn()
    torch.cuda.synchronize()
    events: dict[str, list] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            events[name].append((start, end))
    torch.cuda.synchronize()
    return {name: [s.elapsed_time(e) / 1e3 for s, e in pairs] for name, pairs in events.items()}


def _variants_for(pair: dict, precision: str, device: str) -> tuple[dict, str, torch.dtype | None]:
    """Models of both variants at one precision: (models, device they run on, autocast dtype)."""
    if precision == "int8":
        return {v: hf.quantize_int8(m) for v, m in pair.items()}, "cpu", None
    return {v: m.to(device) for v, m in pair.items()}, device, AMP.get(precision)


def time_pair(
    models: dict, inputs: dict, device: str, amp, repeats: int, warmup: int
) -> dict[str, list[float]]:
    """Interleaved timings (seconds per forward) of both variants on the same inputs."""
    inputs = {k: t.to(device) for k, t in inputs.items()}
    fns = {v: _forward(models[v], inputs, amp) for v in VARIANTS}
    timer = time_cuda_events if device == "cuda" else time_interleaved
    # Half the rounds run A then B, the other half B then A, so neither variant always goes first.
    ab = timer(fns, repeats=(repeats + 1) // 2, warmup=warmup)
    ba = timer(dict(reversed(list(fns.items()))), repeats=repeats // 2, warmup=0)
    return {v: ab[v] + ba[v] for v in VARIANTS}


def timing_row(times: dict[str, list[float]], n_samples: int, n_tokens: int) -> dict:
    """Median and quartiles per variant as ms/sample and tokens/s, plus the ReLU/original ratios."""
    row = {}
    for v in VARIANTS:
        s = summary(times[v])
        row[v] = {
            "seconds": s,
            "ms_per_sample": s["median"] / n_samples * 1e3,
            "ms_per_sample_q1": s["q1"] / n_samples * 1e3,
            "ms_per_sample_q3": s["q3"] / n_samples * 1e3,
            "tokens_per_s": n_tokens / s["median"],
        }
    row["ratio"] = row["relu"]["ms_per_sample"] / row["original"]["ms_per_sample"]
    # Rounds were interleaved, so round i of A and of B saw the same machine state: pair them.
    row["ratio_paired"] = summary([b / a for a, b in zip(times["original"], times["relu"])])
    return row


def bench_models(args: argparse.Namespace, settings: dict) -> dict:
    """Fig. 4: per-sample latency of each model, original vs ReLU, at every precision, batch and length."""
    models, rows = {}, []
    for name in settings["models"]:
        original = hf.build_model(name, args.size, seed=args.seed)
        relu, report = hf.relu_variant(original)
        probe = hf.random_inputs(original, 1, 8, seed=args.seed)
        report["calls_per_forward"] = {
            "original": hf.trace_activation_calls(original, probe),
            "relu": hf.trace_activation_calls(relu, probe),
        }
        report.update(params=hf.n_params(original), attn_implementation=original.config._attn_implementation)
        models[name] = report
        print(f"[{name}] {report['swapped']} activation sites -> ReLU; remaining {report['after']}")
        for precision in settings["precisions"]:
            pair, device, amp = _variants_for({"original": original, "relu": relu}, precision, settings["device"])
            for batch in settings["batch_sizes"]:
                for seq in settings["seq_lens"]:
                    inputs = hf.random_inputs(original, batch, seq, seed=args.seed)
                    times = time_pair(pair, inputs, device, amp, settings["repeats"], settings["warmup"])
                    row = {
                        "model": name,
                        "precision": precision,
                        "device": device,
                        "batch": batch,
                        "seq": seq,
                        **timing_row(times, batch, batch * seq),
                    }
                    rows.append(row)
                    print(
                        f"  {precision:5s} b={batch:<4d} s={seq:<4d} original "
                        f"{row['original']['ms_per_sample']:.3f} ms/sample, ReLU "
                        f"{row['relu']['ms_per_sample']:.3f}, ratio {row['ratio']:.3f}"
                    )
            del pair
        del original, relu
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return {"models": models, "rows": rows}


def table_md(payload: dict) -> str:
    """Markdown table of the Fig. 4 run, with the settings a reader needs under it."""
    s = payload["settings"]
    rows = []
    for r in payload["rows"]:
        o, h, rp = r["original"], r["relu"], r["ratio_paired"]
        rows.append({
            "model": r["model"], "precision": f"{r['precision']} ({r['device']})", "batch": str(r["batch"]),
            "seq": str(r["seq"]), "ms/sample original": fmt_num(o["ms_per_sample"], 3),
            "ms/sample ReLU": fmt_num(h["ms_per_sample"], 3), "ReLU/original": fmt_num(r["ratio"], 3),
            "paired ratio [q1, q3]": f"{fmt_num(rp['median'], 3)} [{fmt_num(rp['q1'], 3)}, {fmt_num(rp['q3'], 3)}]",
            "tokens/s original": fmt_num(o["tokens_per_s"], 0, thousands=True),
            "tokens/s ReLU": fmt_num(h["tokens_per_s"], 0, thousands=True),
        })
    sites = ", ".join(f"{m} {rep['swapped']}" for m, rep in payload["models"].items())
    return "\n".join([
        to_markdown(pd.DataFrame(rows, columns=FIG4_COLUMNS)),
        f"Medians over {s['repeats']} interleaved rounds ({s['warmup']} warm-up), threads: "
        f"{s['threads']}, {s['size']} models with random weights, same random inputs for both variants.",
        f"Activation sites swapped to ReLU: {sites}. INT8: {s['int8']}.",
    ])


# ---------------------------------------------------------------- GLUE mode (Fig. 3)


def _glue_files(text: str | None, tasks: list[str]) -> dict[str, str]:
    """`PATH` (one task) or `TASK=PATH,TASK=PATH` -> {task: path}."""
    if not text:
        return {}
    if "=" not in text:
        if len(tasks) != 1:
            raise ValueError("--glue-data-files without TASK= needs exactly one --glue task")
        return {tasks[0]: text}
    return dict(item.split("=", 1) for item in text.split(","))


def bench_glue(args: argparse.Namespace, settings: dict) -> dict:
    """Fig. 3: BERT original vs ReLU on batches of real GLUE validation inputs (dynamic padding)."""
    files = _glue_files(args.glue_data_files, args.glue)
    tokenizer, tok_source = hf.bert_tokenizer()
    original = hf.build_model("bert", args.size, seed=args.seed)
    relu, report = hf.relu_variant(original)
    rows = []
    for precision in settings["precisions"]:
        pair, device, amp = _variants_for({"original": original, "relu": relu}, precision, settings["device"])
        for task in args.glue:
            texts = hf.glue_texts(task, files.get(task), args.glue_max_samples)
            batches = hf.glue_batches(texts, tokenizer, args.glue_batch_size)
            per_batch = []
            for batch in batches:
                n, real = batch["input_ids"].shape[0], int(batch["attention_mask"].sum())
                times = time_pair(pair, batch, device, amp, settings["repeats"], settings["warmup"])
                per_batch.append({"size": n, "padded_len": batch["input_ids"].shape[1], "tokens": real,
                                  **timing_row(times, n, real)})
            rows.append({"task": task, "precision": precision, "device": device, "n_samples": len(texts),
                         "batches": per_batch, **_over_batches(per_batch)})
            r = rows[-1]
            print(
                f"  {task:6s} {precision:5s} original {r['original']['ms_per_sample']:.3f} ms/sample, "
                f"ReLU {r['relu']['ms_per_sample']:.3f}, ratio {r['ratio']:.3f}"
            )
    return {
        "model": "bert",
        "swap": report,
        "tokenizer": tok_source,
        "batch_size": args.glue_batch_size,
        "max_samples": args.glue_max_samples,
        # where the texts came from: their lengths are what Fig. 3 is about
        "data": {t: files.get(t) or "nyu-mll/glue validation" for t in args.glue},
        "rows": rows,
    }


def _over_batches(per_batch: list[dict]) -> dict:
    """Mean and sample standard deviation (ddof=1; NaN for one batch) over batches of per-batch medians:
    the Fig. 3 error bars."""
    out = {}
    for v in VARIANTS:
        ms = mean_std(b[v]["ms_per_sample"] for b in per_batch)
        tps = mean_std(b[v]["tokens_per_s"] for b in per_batch)
        out[v] = {"ms_per_sample": ms[0], "ms_per_sample_std": ms[1],
                  "tokens_per_s": tps[0], "tokens_per_s_std": tps[1]}
    out["ratio"] = out["relu"]["ms_per_sample"] / out["original"]["ms_per_sample"]
    return out


def glue_table_md(payload: dict) -> str:
    """Markdown table of the GLUE run (mean ± std over batches)."""
    g, s = payload["glue"], payload["settings"]
    rows = []
    for r in g["rows"]:
        o, h = r["original"], r["relu"]
        per_sample = sum(b["tokens"] for b in r["batches"]) / max(1, sum(b["size"] for b in r["batches"]))
        rows.append({
            "task": r["task"], "precision": f"{r['precision']} ({r['device']})", "samples": str(r["n_samples"]),
            "tokens/sample": fmt_num(per_sample, 1), "batches": str(len(r["batches"])),
            "ms/sample original": fmt_mean_std(o["ms_per_sample"], o["ms_per_sample_std"], 3),
            "ms/sample ReLU": fmt_mean_std(h["ms_per_sample"], h["ms_per_sample_std"], 3),
            "ReLU/original": fmt_num(r["ratio"], 3),
            "tokens/s original": fmt_mean_std(o["tokens_per_s"], o["tokens_per_s_std"], 0, thousands=True),
            "tokens/s ReLU": fmt_mean_std(h["tokens_per_s"], h["tokens_per_s_std"], 0, thousands=True),
        })
    lines = [
        to_markdown(pd.DataFrame(rows, columns=FIG3_COLUMNS)),
        f"BERT ({s['size']}, random weights), batches of {g['batch_size']} from up to "
        f"{g['max_samples']} validation samples, each padded to its own longest; median of "
        f"{s['repeats']} interleaved rounds per batch, ± = sample std (ddof=1) over batches; tokens/s counts "
        f"non-padding tokens; threads: {s['threads']}; tokenizer: {g['tokenizer']}.",
    ]
    if g.get("data"):
        lines.append("Inputs: " + "; ".join(f"{t}: {src}" for t, src in g["data"].items()) + ".")
    return "\n".join(lines)
