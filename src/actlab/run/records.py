"""Run records: `<run_dir>/record.json` (small, rewritten atomically at every status change) and
`<run_dir>/history.jsonl` (one JSON line per epoch, rewritten atomically at every epoch end).

record.json says what ran (`kind`, resolved `config`), how it ended (`status` running -> completed |
failed, and the `error`), what it measured at the end (`metrics`, `dead` with the final per-layer
dead-neuron rates), how long it took, and with which code (versions, git commit). Both files are
plain JSON: `json.load` reads a record, `read_history` the per-epoch series. Schema 3; schema 1/2
records kept the per-epoch lists inside record.json: `upgrade()` converts them (`actlab migrate`).
Image classifiers also leave their test-set predictions (PREDICTIONS, a .npy array; `read_predictions`).
"""

from __future__ import annotations

import json
import math
import os
import platform
import socket
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from actlab import atomic

SCHEMA = 3
RECORD = "record.json"
HISTORY = "history.jsonl"
DEAD_LAYERS = "dead_layers.json"  # the final per-layer dead-neuron rates (record.json keeps the aggregates)
# Image classifiers' test-set predictions: the predicted class of every test example in index order, a 1-D
# .npy array of the smallest unsigned integer type that holds the classes (uint8 up to 256); read_predictions.
PREDICTIONS = "predictions.npy"
# Task class paths (before `kind` existed in records, schema 1/2, and today's, for W&B configs) -> kind.
_TASK_KINDS = {"actlab.task.Classifier": "image", "actlab.glue_task.GLUEClassifier": "glue",
               "actlab.mlm_task.MaskedLM": "mlm", "actlab.tasks.classify.Classifier": "image",
               "actlab.tasks.glue.GLUEClassifier": "glue", "actlab.tasks.mlm.MaskedLM": "mlm"}


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def clean(value):
    """JSON-safe copy: tensors and numpy scalars to floats; NaN/inf as the strings "nan"/"inf"/"-inf"
    (strict JSON has neither, and null would hide that a value was not finite)."""
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def write_atomic(path: Path, data: dict) -> None:
    """A record (or any JSON document) via temp file + rename, so readers never see half a file."""
    atomic.write_json(path, clean(data), indent=1)


def write_history(run_dir: Path, rows: list[dict]) -> None:
    """history.jsonl from the per-epoch rows, rewritten whole (atomically): after a resume it holds
    exactly the epochs the checkpoint knows, never a torn line."""
    atomic.write_text(Path(run_dir) / HISTORY, "".join(json.dumps(clean(r)) + "\n" for r in rows))


def split_dead(final: dict) -> tuple[dict, dict]:
    """(aggregate rates, per-layer rates) of a final dead-rate dict: per-layer keys are `<rate>/<layer>`."""
    agg = {k: v for k, v in final.items() if "/" not in k}
    return agg, {k: v for k, v in final.items() if "/" in k}


def read_dead_layers(run_dir: Path) -> dict:
    """The final per-layer dead rates of a run ({} when there are none or the file is unreadable)."""
    try:
        return json.loads((Path(run_dir) / DEAD_LAYERS).read_text()).get("final", {})
    except (OSError, ValueError, AttributeError):
        return {}


def write_predictions(run_dir: Path, predictions) -> str:
    """PREDICTIONS in `run_dir` from a 1-D integer array (np.save to a temp file, then rename); returns the
    file name, for the record's "files"."""
    arr = np.asarray(predictions)
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        raise ValueError(f"predictions must be a 1-D integer array, not {arr.dtype} of shape {arr.shape}")
    atomic.write_with(Path(run_dir) / PREDICTIONS, lambda f: np.save(f, arr, allow_pickle=False))
    return PREDICTIONS


def read_predictions(run_dir: Path):
    """The run's test-set predictions (1-D integer numpy array), or None when there are none (load_predictions)."""
    return load_predictions(Path(run_dir) / PREDICTIONS)


def load_predictions(path: str | os.PathLike):
    """A predictions file as a 1-D integer numpy array; None when it is missing, unreadable or not such an array."""
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    return arr if isinstance(arr, np.ndarray) and arr.ndim == 1 and arr.dtype.kind in "iu" else None


def read(run_dir: Path) -> dict | None:
    """The record in `run_dir`, or None if there is none or it cannot be parsed."""
    try:
        return json.loads((Path(run_dir) / RECORD).read_text())
    except (OSError, ValueError):
        return None


def read_history(run_dir: Path) -> list[dict]:
    """The per-epoch rows of a run ({"epoch", "step", "train/loss", ..., "dead": {...}}); [] when none.
    A line that does not parse (a file copied mid-write by hand) ends the list there."""
    rows = []
    try:
        text = (Path(run_dir) / HISTORY).read_text()
    except (OSError, ValueError):
        return rows
    for line in text.splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            break
    return rows


def kind_of(rec: dict) -> str:
    """The record's kind (image | glue | mlm); old records derive it from their task's class path."""
    if rec.get("kind"):
        return rec["kind"]
    task = ((rec.get("config") or {}).get("task") or {}).get("_target_")
    return _TASK_KINDS.get(task, "image")


def merge_history(rows: list[dict], dead_rows: list[dict]) -> list[dict]:
    """Per-epoch training rows and per-epoch dead-rate rows joined on "epoch" (dead rates under "dead")."""
    out = {r.get("epoch"): dict(r) for r in rows}
    for d in dead_rows:
        e = d.get("epoch")
        out.setdefault(e, {"epoch": e})["dead"] = {k: v for k, v in d.items() if k != "epoch"}
    return [out[e] for e in sorted(out, key=lambda e: (e is None, e if e is not None else 0))]


def split_history(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """The inverse of merge_history: (training rows, dead-rate rows with "epoch")."""
    train = [{k: v for k, v in r.items() if k != "dead"} for r in rows]
    dead = [{"epoch": r.get("epoch"), **r["dead"]} for r in rows if isinstance(r.get("dead"), dict)]
    return train, dead


def upgrade(rec: dict) -> tuple[dict, list[dict] | None, dict]:
    """(schema-3 record, history rows or None, final per-layer dead rates) from a schema 1/2 record; a
    schema-3 record is returned as is (its per-layer rates are in DEAD_LAYERS: read_dead_layers)."""
    if rec.get("schema") == SCHEMA:
        return rec, None, {}
    rec = dict(rec)
    dead = dict(rec.get("dead") or {})
    rows = merge_history(rec.pop("history", None) or [], dead.pop("history", None) or [])
    agg, layers = split_dead(dead.get("final") or {})
    rec["dead"] = dict(dead, final=agg)
    if layers:
        rec.setdefault("files", {})["dead_layers"] = DEAD_LAYERS
    rec["kind"] = kind_of(rec)
    rec["schema"] = SCHEMA
    if rows:
        rec.setdefault("files", {})["history"] = HISTORY
    return {k: rec[k] for k in _ORDER if k in rec} | rec, rows, layers


def find(root: Path, max_depth: int = 3) -> list[Path]:
    """record.json files at most `max_depth` directories below root (Hydra multirun nests runs), as Paths;
    the walk is `find_paths`'s."""
    return [Path(p) for p in find_paths(root, max_depth)]


def git_info() -> dict:
    """Commit and dirtiness of the checkout actlab runs from (None outside a git checkout)."""
    root = Path(__file__).resolve().parents[3]

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("actlab", "torch", "torchvision", "lightning", "hydra-core", "torchmetrics", "transformers", "wandb"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


_ORDER = ("schema", "run_id", "kind", "main_metric", "status", "error", "config", "metrics", "dead", "timings", "versions",
          "git", "host", "files")


class RunRecord:
    """The record of one run, rewritten atomically whenever it changes; its history beside it."""

    def __init__(self, run_dir: Path, run_id: str, config: dict, kind: str, main_metric: str | None = None):
        import torch  # here, not at the top: reports read records without importing torch

        self.run_dir = Path(run_dir)
        self.path = self.run_dir / RECORD
        self.data: dict = {
            "schema": SCHEMA,
            "run_id": run_id,
            "kind": kind,
            "main_metric": main_metric,  # what the CLI prints and a sweeper optimises (the task's)
            "status": "running",
            "error": None,
            "config": config,
            "metrics": {},
            "dead": {},
            "timings": {"started_at": now()},
            "versions": versions(),
            "git": git_info(),
            # torch's CPU threads change float summation order, and a small deep net's result with it
            # (16x16 MLP, 1 epoch: test/acc 0.60 with 2 threads, 0.54 with 1): kept to explain such a difference
            "host": {"hostname": socket.gethostname(), "cpu_count": os.cpu_count(),
                     "torch_threads": torch.get_num_threads(),
                     "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
            "files": {},
        }

    def save(self) -> None:
        write_atomic(self.path, self.data)

    def update(self, **fields) -> None:
        self.data.update(fields)
        self.save()

    def write_history(self, rows: list[dict]) -> None:
        write_history(self.run_dir, rows)
        if self.data["files"].get("history") != HISTORY:
            self.data["files"]["history"] = HISTORY
            self.save()

    def write_dead(self, final: dict) -> None:
        """Final dead rates: aggregates into the record, per-layer rates into dead_layers.json (so that
        reading 10,000 records for a table does not decode 300 per-layer numbers each)."""
        agg, layers = split_dead(final)
        if layers:
            atomic.write_json(self.run_dir / DEAD_LAYERS, {"final": clean(layers)}, indent=1)
            self.data["files"]["dead_layers"] = DEAD_LAYERS
        self.data["dead"] = {"final": agg}

    def finish(self, status: str, error: str | None = None, **fields) -> None:
        self.data["timings"]["ended_at"] = now()
        self.update(status=status, error=error, **fields)


def find_paths(root: str | os.PathLike, max_depth: int = 3, wandb_dirs: list[str] | None = None) -> list[str]:
    """record.json files below root as sorted path strings: what a reader of 10,000 records wants (10,000
    Path objects cost more than the directory walk). A directory holding a record.json is a run directory:
    its checkpoints and wandb files are not searched; names are str as os.scandir gives them (undecodable bytes as surrogate escapes).
    `wandb_dirs`, if given, receives the "wandb" folders the walk meets outside run directories (W&B
    runs without a record), so that one walk finds both."""
    root = os.path.normpath(root)  # as Path(root) would print it
    rec = os.path.join(root, RECORD)
    if os.path.isfile(rec):
        return [rec]
    found: list[str] = []

    def walk(d: str, depth: int) -> None:
        try:
            entries = list(os.scandir(d))
        except OSError:
            return
        for e in entries:
            if e.is_dir(follow_symlinks=False):
                rec = os.path.join(e.path, RECORD)
                if os.path.exists(rec):
                    found.append(rec)
                elif e.name == "wandb":
                    if wandb_dirs is not None:
                        wandb_dirs.append(e.path)
                elif depth > 1:
                    walk(e.path, depth - 1)

    walk(root, max_depth)
    return sorted(found)


def wandb_id(run_id: str) -> str:
    """The W&B run id of a run (run.loggers.wandb): characters other than letters, digits, "-" and "_" as
    "_", the last 64 kept. W&B runs logged before the run_id went into their config are known by it."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in run_id)[-64:]
