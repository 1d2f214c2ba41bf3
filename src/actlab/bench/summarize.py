"""How fast `actlab summarize` reads and tabulates many runs: `actlab bench summarize [--n 10000]`.

For each record shape (--layers 0,16,37) writes N synthetic runs laid out like the training entry's
(schema-3 record.json: config, final metrics, the aggregate final dead rates; dead_layers.json: the
final per-layer rates; history.jsonl: per-epoch metrics and dead rates) into a temp folder, then
times load_frame as `actlab summarize` calls it (W&B folders looked for; warm page cache) and
write_summary. 37 layers is WRN-40-4 (the paper's vision model, the biggest record), 16 an MLP, 0 a
run without the monitor. Target: 10,000 records in at most 1 s. Results: results/bench/summarize.
{json,md}, with CPU time and load average so that timings from a shared machine can be judged.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

from actlab.bench.common import summary, write_results
from actlab.run import records

TARGET_S = 1.0
DATASETS = ("fashion_mnist", "cifar10", "cifar100", "imagenette")
ACTIVATIONS = (("relu", None), ("gelu", None), ("elu", None), ("helu", 0.001), ("helu", 0.01),
               ("helu", 0.05), ("helu", 0.1))
WRN40_SITES = [f"block{g}.{b}.act{a}" for g in (1, 2, 3) for b in range(6) for a in (1, 2)] + ["act"]


def layer_names(layers: int) -> list[str]:
    """Activation-site names: WRN-40-4's 37 (as the monitor names them), else an MLP's."""
    return WRN40_SITES if layers == len(WRN40_SITES) else [f"net.{2 * j + 1}" for j in range(layers)]


def synthetic_run(i: int, epochs: int, layers: int, rng: random.Random) -> tuple[dict, list[dict]]:
    """(record, history rows) of run i: cycles through dataset x activation; seeds grow with i; 2 % failed,
    1 % running."""
    ds = DATASETS[i % len(DATASETS)]
    act, margin = ACTIVATIONS[(i // len(DATASETS)) % len(ACTIVATIONS)]
    seed = i // (len(DATASETS) * len(ACTIVATIONS))
    status = "failed" if i % 50 == 7 else "running" if i % 100 == 3 else "completed"
    run_id = f"{ds}-wrn40_4-{act}-m{margin}-s{seed}-{i:08x}"
    names = layer_names(layers)

    def dead() -> dict:
        """What the monitor stores per epoch: 4 rates per layer and overall, on the probe and on train."""
        d = {}
        for pre in ("", "train_"):
            for rate in ("dead_fwd", "dead_grad", "zero_rate", "band"):
                d |= {f"{pre}{rate}/{n}": rng.random() * 0.3 for n in names}
                d[f"{pre}{rate}"] = rng.random() * 0.3
            d[f"{pre}dead_fwd_units"], d[f"{pre}dead_grad_units"] = rng.random(), rng.random()
        return d

    history = [{"epoch": e, "step": 391 * (e + 1), "train/loss": rng.random(), "val/acc": rng.random(),
                "val/loss": rng.random(), "lr": 0.01, "margin": margin, "dead": dead()}
               for e in range(epochs)]
    record = {
        "schema": records.SCHEMA, "run_id": run_id, "kind": "image", "main_metric": "test/acc",
        "status": status,
        "error": "RuntimeError: out of memory" if status == "failed" else None,
        "config": {"seed": seed, "dataset": {"name": ds, "data_dir": "data", "batch_size": 128, "augment": True},
                   "model": {"name": "wrn40_4", "depth": 40, "widen": 4, "dropout": 0.0},
                   "activation": {"name": act, "margin": margin}, "margin": {"name": "constant"},
                   "optim": {"name": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4},
                   "scheduler": {"name": "cosine"}, "trainer": {"max_epochs": epochs, "precision": "32"},
                   "task": {"_target_": "actlab.tasks.classify.Classifier"}, "tags": ["bench"]},
        "metrics": {} if status != "completed" else {
            "train/loss": rng.random(), "val/acc": 0.9 + rng.random() * 0.05, "val/loss": rng.random(),
            "test/acc": 0.9 + rng.random() * 0.05, "test/loss": rng.random(), "test/acc_top5": 0.99},
        "dead": {"final": {"epoch": epochs - 1, **dead()}},  # write_runs splits off the per-layer rates
        "timings": {"started_at": "2025-01-01T00:00:00+00:00", "ended_at": "2025-01-01T01:00:00+00:00",
                    "wall_s": 3600.0, "fit_s": 3500.0, "test_s": 100.0, "s_per_epoch": 3500.0 / epochs},
        "versions": {"python": "3.11.7", "torch": "2.14.1", "lightning": "2.6"},
        "git": {"commit": "0" * 40, "dirty": False}, "host": {"hostname": "node1", "cpu_count": 2},
        "files": {"history": records.HISTORY, "checkpoint": "last.ckpt"},
    }
    return record, history


def write_runs(root: Path, n: int, epochs: int, layers: int) -> int:
    """Write n runs under root as the training entry lays them out (RunRecord.write_dead: aggregate final
    dead rates in record.json, per-layer ones in dead_layers.json); return the total bytes of their
    record.json files (dead_layers.json and history.jsonl are written too, but summaries read neither)."""
    rng = random.Random(0)
    total = 0
    for i in range(n):
        rec, history = synthetic_run(i, epochs, layers, rng)
        d = root / rec["run_id"]
        d.mkdir(parents=True)
        agg, per_layer = records.split_dead(rec["dead"]["final"])
        rec["dead"] = {"final": agg}
        if per_layer:
            (d / records.DEAD_LAYERS).write_text(json.dumps({"final": per_layer}, indent=1) + "\n")
            rec["files"]["dead_layers"] = records.DEAD_LAYERS
        text = json.dumps(rec, indent=1) + "\n"  # as records.write_atomic writes it (without its fsync)
        (d / records.RECORD).write_text(text)
        (d / records.HISTORY).write_text("".join(json.dumps(r) + "\n" for r in history))
        total += len(text)
    return total


def _cpu() -> float:
    """User + system seconds of this process (and of finished children, should any be used)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _speed() -> float:
    """Seconds of a fixed pure-Python loop (1M additions): how fast this machine runs Python right now.
    A shared VM's speed drifts; a shape timed while this is high was timed on a slow machine."""
    t, total = time.perf_counter(), 0
    for i in range(1_000_000):
        total += i
    return round(time.perf_counter() - t, 3)


def _loadavg() -> float | None:
    """Other work on the machine inflates wall times; the load average says how much there was."""
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n", type=int, default=10_000, help="number of synthetic records")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats (median reported)")
    parser.add_argument("--epochs", type=int, default=10, help="history length per record")
    parser.add_argument("--layers", default="0,16,37",
                        help="comma list of activation sites per record: one record shape each "
                             "(0: aggregate rates only; 16: an mlp's per-layer rates; 37: WRN-40-4's)")
    parser.add_argument("--out", default="results/bench", help="where summarize.json/.md go")


def time_shape(n: int, epochs: int, layers: int, repeats: int, console) -> dict:
    """Write n records of one shape to a temp dir; time load_frame and write_summary on them."""
    from actlab.report.frame import load_frame
    from actlab.report.summarize import write_summary

    tmp = Path(tempfile.mkdtemp(prefix="actlab-bench-summarize-"))
    try:
        size = write_runs(tmp / "runs", n, epochs, layers)
        console.print(f"{n} records, {layers} layers: {size / n / 1024:.1f} KiB each")
        os.sync()  # the 30,000 files just written: their writeback must not run during the timings
        write_summary(load_frame(tmp / "runs"), tmp / "tables", "bench")  # untimed: warms caches and imports
        speed = _speed()
        load_s, table_s, cpu_s = [], [], []
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), _cpu()
            df = load_frame(tmp / "runs")
            t1 = time.perf_counter()
            write_summary(df, tmp / "tables", "bench")
            t2, c2 = time.perf_counter(), _cpu()
            load_s.append(t1 - t0)
            table_s.append(t2 - t1)
            cpu_s.append(c2 - c0)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    total = summary([a + b for a, b in zip(load_s, table_s)])
    return {
        "n_records": n, "epochs": epochs, "layers": layers, "bytes_per_record": round(size / n),
        "groups": int(df.groupby(["dataset", "activation", "margin"], dropna=False).ngroups),
        "load_s": summary(load_s), "summarize_s": summary(table_s), "total_s": total,
        # CPU seconds: a load-independent measure of the work (about the wall time on an idle machine)
        "cpu_s": summary(cpu_s), "loadavg_1min": _loadavg(), "py_loop_s": speed,
        "within_target": total["median"] <= TARGET_S,
    }


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    console = Console()
    shapes = [time_shape(args.n, args.epochs, int(x), args.repeats, console) for x in args.layers.split(",")]
    rows = "".join(
        f"| {r['layers']} | {r['bytes_per_record'] / 1024:.1f} | {r['load_s']['median']:.3f} | "
        f"{r['summarize_s']['median']:.3f} | {r['total_s']['median']:.3f} | {r['cpu_s']['median']:.3f} | "
        f"{r['loadavg_1min']} | {r['py_loop_s']:.3f} | {'yes' if r['within_target'] else 'NO'} |\n" for r in shapes)
    md = (f"# actlab summarize benchmark\n\n{args.n} synthetic records per shape ({args.epochs} epochs of history), "
          f"warm page cache (synced, one untimed run first), median of {args.repeats}; seconds. Target: total <= {TARGET_S} s.\n\n"
          "| layers | record.json KiB | load_frame | summarize + tables | total | CPU | load avg | Python loop | <= target |\n"
          "|---:|---:|---:|---:|---:|---:|---:|---:|:---|\n" + rows)
    path = write_results("summarize", {"target_s": TARGET_S, "shapes": shapes}, md, args.out)
    console.print(md)
    console.print(f"wrote {path} and {path.with_suffix('.md')}")
    return 0
