"""INT8 minus full precision on GLUE dev sets (the paper's Table 3), stored in each run's record.

    actlab int8                          # every completed GLUE fine-tune under results/runs
    actlab int8 results/runs --force     # re-evaluate runs that already have an int8 entry
    actlab summarize --paper             # then: <name>_int8.* and paper_table3.* tables

Per run: rebuild data module, model and task from record["config"] (actlab.run.build.build), load
checkpoints/last.ckpt, test on the dev split(s) on CPU in fp32, then again after post-training
dynamic INT8 quantization of every nn.Linear (no calibration: actlab.quantize.quantize_int8),
and write record["int8"] = {fp32, int8, delta = int8 - fp32, quantizer, evaluated_at, torch, ...}.
A run that fails is reported in one line and skipped; the command then exits 1 after the others.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from actlab.run import records

QUANTIZER = ("torch.ao.quantization.quantize_dynamic: every nn.Linear to qint8 weights, activations "
             "quantized per batch (no calibration), CPU")


def is_glue_run(rec: dict) -> bool:
    """A completed GLUE fine-tune (the only runs Table 3 is about)."""
    return rec.get("status") == "completed" and records.kind_of(rec) == "glue"


def count_modules(model: nn.Module, kind: type) -> int:
    return sum(isinstance(m, kind) for m in model.modules())


@contextlib.contextmanager
def _quiet():
    """Lightning's per-Trainer banners (GPU available, ...) and data-loader hints, twice per run, are noise here."""
    loggers = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*(does not have many workers|LeafSpec).*")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def dev_metrics(task, dm) -> dict[str, float]:
    """The task's test/* metrics on the data module's dev split(s), on CPU (what a run records)."""
    import lightning as L

    from actlab.callbacks.history import epoch_metrics

    with _quiet():
        trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                            enable_checkpointing=False, enable_model_summary=False)
        trainer.test(task, datamodule=dm, verbose=False)
    return {k: v for k, v in epoch_metrics(trainer.callback_metrics).items() if k.startswith("test/")}


def load_task(run_dir: Path, rec: dict):
    """(data module, task) of a recorded run with its checkpoint's weights, on CPU, eval mode."""
    from omegaconf import OmegaConf

    from actlab.run.build import build, unwrap

    ckpt_rel = (rec.get("files") or {}).get("checkpoint")
    if not ckpt_rel:
        raise ValueError("the record lists no files.checkpoint; rerun the fine-tune (force=true) to make one")
    path = Path(run_dir) / ckpt_rel
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} is missing; rerun the fine-tune (force=true) to make it")
    try:
        dm, _, task = build(OmegaConf.create(rec["config"]))
    except Exception as e:  # Hydra wraps the user's error (a moved data file, say): show that one
        raise unwrap(e) from None
    ckpt = torch.load(path, map_location="cpu", weights_only=False)  # Lightning checkpoints hold more than tensors
    if "state_dict" not in ckpt:
        raise ValueError(f"{path} is not a Lightning checkpoint (no state_dict)")
    task.load_state_dict(ckpt["state_dict"])
    return dm, task.cpu().float().eval()


def evaluate(run_dir: Path, rec: dict) -> dict:
    """The record's `int8` entry: test metrics in fp32 and dynamic INT8 on CPU, and their difference."""
    from torch.ao.nn.quantized.dynamic import Linear as QLinear

    from actlab.quantize import quantize_int8

    dm, task = load_task(run_dir, rec)
    t0 = time.perf_counter()
    fp32 = dev_metrics(task, dm)
    t1 = time.perf_counter()
    n_linear = count_modules(task.model, nn.Linear)
    task.model = quantize_int8(task.model)  # a quantized deep copy; the task's metrics stay as they were
    n_quantized = count_modules(task.model, QLinear)
    t2 = time.perf_counter()
    int8 = dev_metrics(task, dm)
    t3 = time.perf_counter()
    if not fp32 or set(fp32) != set(int8):
        raise RuntimeError(f"test metrics differ between fp32 {sorted(fp32)} and int8 {sorted(int8)}")
    delta = {k: None if fp32[k] is None or int8[k] is None else int8[k] - fp32[k] for k in fp32}
    return {"fp32": fp32, "int8": int8, "delta": delta, "quantizer": QUANTIZER,
            "linear_layers": {"fp32": n_linear, "int8": n_quantized},
            "eval_s": {"fp32": t1 - t0, "int8": t3 - t2}, "checkpoint": rec["files"]["checkpoint"],
            "evaluated_at": records.now(), "torch": torch.__version__}


def _same_run(a: dict, b: dict) -> bool:
    """b is still the run a was read from (not retrained or restarted meanwhile)."""
    ta, tb = a.get("timings") or {}, b.get("timings") or {}
    return (a.get("status"), ta.get("started_at"), ta.get("ended_at")) == \
           (b.get("status"), tb.get("started_at"), tb.get("ended_at"))


def store(run_dir: Path, rec: dict, entry: dict) -> None:
    """Add `entry` as record["int8"] to the record as it is on disk now, atomically, other fields kept."""
    fresh = records.read(run_dir)
    if fresh is None or not _same_run(rec, fresh):
        raise RuntimeError("the record changed during evaluation (retrained?); run actlab int8 again")
    fresh["int8"] = entry
    records.write_atomic(Path(run_dir) / records.RECORD, fresh)


def evaluate_all(runs_dir: Path, force: bool = False, console=None) -> dict[str, list[str]]:
    """Evaluate every completed GLUE run under runs_dir; {"done", "skipped", "failed", "other"}: run ids
    (failed: "<run_id>: <error>"). A run that fails does not stop the others."""

    say = console.print if console is not None else print
    out: dict[str, list[str]] = {"done": [], "skipped": [], "failed": [], "other": []}
    for path in records.find(Path(runs_dir)):
        run_dir = path.parent
        rec = records.read(run_dir)
        if not isinstance(rec, dict):
            out["failed"].append(f"{run_dir.name}: unreadable record.json (fix or remove {path})")
            say(f"[red]failed {run_dir.name}: unreadable record.json (fix or remove {path})[/red]")
            continue
        rid = rec.get("run_id") or run_dir.name
        if not is_glue_run(rec):
            out["other"].append(rid)
            continue
        if rec.get("int8") and not force:
            out["skipped"].append(rid)
            continue
        try:
            entry = evaluate(run_dir, rec)
            store(run_dir, rec, entry)
        except Exception as e:  # noqa: BLE001 - one bad run is reported, the others still evaluated
            msg = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            out["failed"].append(f"{rid}: {msg}")
            say(f"[red]failed {rid}: {msg}[/red]")
            continue
        out["done"].append(rid)
        say(_line(rid, entry))
    return out


def _line(rid: str, entry: dict) -> str:
    main = "test/score" if "test/score" in entry["fp32"] else next(iter(entry["fp32"]))
    fp, q, d = entry["fp32"][main], entry["int8"][main], entry["delta"][main]
    layers = entry["linear_layers"]
    warn = "" if layers["fp32"] == layers["int8"] else (
        f" [yellow]only {layers['int8']} of {layers['fp32']} nn.Linear quantized[/yellow]")
    if d is None:
        return f"int8 {rid}: {main} fp32 {fp} int8 {q}{warn}"
    return f"int8 {rid}: {main} fp32 {fp:.4f} int8 {q:.4f} Δ {100 * d:+.2f} points{warn}"


# --- CLI -----------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs_dir", nargs="?", default="results/runs", help="run records (default results/runs)")
    parser.add_argument("--force", action="store_true", help="re-evaluate runs that already have an int8 entry")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    console = Console(highlight=False, soft_wrap=True)  # one line per run, even in logs
    runs_dir = Path(args.runs_dir)
    if not runs_dir.exists():
        console.print(f"[red]no such folder {runs_dir}; give the runs folder (default results/runs)[/red]")
        return 2
    out = evaluate_all(runs_dir, force=args.force, console=console)
    if not (out["done"] or out["skipped"] or out["failed"]):
        console.print(f"[red]no completed GLUE fine-tuning runs under {runs_dir} "
                      f"(actlab-train experiment=glue ... makes one)[/red]")
        return 1
    console.print(f"int8: {len(out['done'])} evaluated, {len(out['skipped'])} already had an entry"
                  f"{'' if args.force else ' (--force re-evaluates)'}, {len(out['failed'])} failed, "
                  f"{len(out['other'])} other runs ignored")
    return 1 if out["failed"] else 0
