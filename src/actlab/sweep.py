"""Sweep bookkeeping: every job of an `actlab-train -m` sweep appends its outcome to one log, and the
launching process prints which runs failed and exits non-zero if any did.

The log lives under `<runs_dir>/_sweeps/` (a shared file system for SLURM jobs); jobs find it through
$ACTLAB_SWEEP_LOG, set by the launching process before Hydra starts any job. One JSON line per job,
appended with O_APPEND so concurrent jobs do not interleave partial lines.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime
from pathlib import Path

from actlab import distributed

ENV = "ACTLAB_SWEEP_LOG"


def start(runs_dir: str | Path) -> Path:
    """Create this sweep's log and point $ACTLAB_SWEEP_LOG at it (inherited by launched jobs)."""
    folder = Path(runs_dir) / "_sweeps"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{datetime.now():%Y%m%d-%H%M%S}-{os.getpid()}.jsonl"
    path.touch()
    os.environ[ENV] = str(path.resolve())
    return path


def note(run_id: str, status: str, error: str | None = None) -> None:
    """Append one job's outcome (completed | failed | skipped) if this process is part of a sweep;
    DDP ranks > 0 inherit the sweep's variable but only rank 0 speaks for the job."""
    path = os.environ.get(ENV)
    if not path or distributed.rank() != 0:
        return
    line = json.dumps({"run_id": run_id, "status": status, "error": error}) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def outcomes(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def report(path: Path) -> int:
    """Print the sweep's outcome; exit code 1 if any job failed (or none reported), else 0."""
    from rich.console import Console

    rows = outcomes(path)
    console = Console(stderr=True)
    counts = {s: sum(r["status"] == s for r in rows) for s in ("completed", "skipped", "failed")}
    console.print(f"sweep: {len(rows)} jobs: {counts['completed']} completed, {counts['skipped']} skipped "
                  f"(already done or duplicate), {counts['failed']} failed  [log: {path}]")
    failed = [r for r in rows if r["status"] == "failed"]
    if failed:  # plain lines, not a table: run ids must survive narrow terminals and grep
        console.print("failed runs (their records say why; relaunch the sweep to retry them):")
        for r in failed:
            console.print(f"  {r['run_id']}: {(r['error'] or '')[:200]}", soft_wrap=True, markup=False)
    return 1 if failed or not rows else 0


def is_multirun_argv(argv: list[str] | None = None) -> bool:
    argv = sys.argv[1:] if argv is None else argv
    return any(a in ("-m", "--multirun") for a in argv)
