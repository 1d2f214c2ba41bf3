"""Run records: `<runs_dir>/<run_id>/record.json`, written atomically at every status change.

A record says what ran (resolved config), how it ended (status running -> completed | failed, and
the error), what it measured (final metrics, per-epoch history, dead-neuron rates), how long it
took, and with which code (versions, git commit). Summaries read records, not logger files.
"""

from __future__ import annotations

import json
import math
import os
import platform
import socket
import subprocess
import tempfile
from datetime import datetime, timezone
from pathlib import Path

# Schema 2: "schema" first and the per-epoch lists last ("history", then "dead" with its "history" last), so that
# summaries can stop reading where they begin (report.frame.loads_summary). Schema 1 had no order.
SCHEMA = 2
RECORD = "record.json"


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _clean(value):
    """JSON-safe copy: tensors and numpy scalars to floats, NaN/inf to None (strict JSON)."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def ordered(data: dict) -> dict:
    """`data` as schema 2 lays it out: "schema" first, the bulky per-epoch lists last (others keep their order)."""
    if not isinstance(data, dict) or "schema" not in data:
        return data
    out = {"schema": data["schema"]} | {k: v for k, v in data.items() if k not in ("history", "dead")}
    if "history" in data:
        out["history"] = data["history"]
    dead = data.get("dead")
    if isinstance(dead, dict) and "history" in dead:
        out["dead"] = {k: v for k, v in dead.items() if k != "history"} | {"history": dead["history"]}
    elif "dead" in data:
        out["dead"] = dead
    return out


def write_atomic(path: Path, data: dict) -> None:
    """Write JSON via a temp file in the same directory + rename, so readers never see half a file.
    Run records (dicts with a "schema") are written in schema 2's order (see `ordered`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".record-", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; records are meant to be shared
        with os.fdopen(fd, "w") as f:
            json.dump(_clean(ordered(data)), f, indent=1, allow_nan=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read(run_dir: Path) -> dict | None:
    """The record in `run_dir`, or None if there is none or it cannot be parsed."""
    try:
        return json.loads((Path(run_dir) / RECORD).read_text())
    except (OSError, ValueError):
        return None


def git_info() -> dict:
    """Commit and dirtiness of the checkout actlab runs from (None outside a git checkout)."""
    root = Path(__file__).resolve().parents[2]

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


class RunRecord:
    """The record of one run, rewritten atomically whenever it changes."""

    def __init__(self, run_dir: Path, run_id: str, config: dict):
        self.path = Path(run_dir) / RECORD
        self.data: dict = {
            "schema": SCHEMA,
            "run_id": run_id,
            "status": "running",
            "error": None,
            "config": config,
            "metrics": {},
            "history": [],
            "dead": {},
            "timings": {"started_at": now()},
            "versions": versions(),
            "git": git_info(),
            "host": {"hostname": socket.gethostname(), "cpu_count": os.cpu_count()},
            "files": {},
        }

    def save(self) -> None:
        write_atomic(self.path, self.data)

    def update(self, **fields) -> None:
        self.data.update(fields)
        self.save()

    def finish(self, status: str, error: str | None = None, **fields) -> None:
        self.data["timings"]["ended_at"] = now()
        self.update(status=status, error=error, **fields)
