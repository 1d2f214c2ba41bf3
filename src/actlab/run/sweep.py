"""Sweep bookkeeping through Hydra's callback API (configured under `hydra.callbacks` in train.yaml).

`SweepLog`: on_multirun_start creates `<runs_dir>/_sweeps/<time>-<pid>.jsonl`; every job appends its
outcome there in on_job_end (the callback object, with the log's path, travels to joblib and SLURM
jobs inside Hydra's context); on_multirun_end prints which runs failed and exits 1 if any did.
`JobSetup`: per-job settings of a sweep (torch threads shared between parallel jobs; a sys.argv with
only this job's overrides, which Lightning's DDP launcher re-runs for ranks > 0).
A job's task function returns a `JobResult`: a float (the objective a Hydra sweeper sees) that also
carries the run's outcome.
"""

from __future__ import annotations

import json
import math
import os
import sys
from datetime import datetime
from pathlib import Path

import torch
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from actlab.run import distributed


class JobResult(float):
    """The job's objective (NaN when there is none) with the outcome the sweep log keeps."""

    def __new__(cls, value: float | None, run_id: str, status: str, error: str | None = None):
        obj = super().__new__(cls, math.nan if value is None else value)
        obj.run_id, obj.status, obj.error = run_id, status, error
        return obj

    def __reduce__(self):  # keep the outcome when a launcher pickles the result back (joblib, submitit)
        value = None if math.isnan(self) else float(self)
        return (JobResult, (value, self.run_id, self.status, self.error))

    def outcome(self) -> dict:
        return {"run_id": self.run_id, "status": self.status, "error": self.error}


def _outcome(job_return: JobReturn) -> dict:
    if job_return.status == JobStatus.COMPLETED and isinstance(job_return._return_value, JobResult):
        return job_return._return_value.outcome()
    err = job_return._return_value if job_return.status == JobStatus.FAILED else None
    return {"run_id": "?", "status": "failed", "error": f"{type(err).__name__}: {err}" if err else "no result"}


class SweepLog(Callback):
    """One JSON line per job of a multirun; a summary and the exit code at its end."""

    def __init__(self) -> None:
        self.path: str | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        folder = Path(config.paths.runs_dir) / "_sweeps"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{datetime.now():%Y%m%d-%H%M%S}-{os.getpid()}.jsonl"
        path.touch()
        self.path = str(path.resolve())

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs) -> None:
        if not self.path or distributed.rank() != 0:  # rank 0 speaks for a DDP job
            return
        line = json.dumps(_outcome(job_return)) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)  # concurrent jobs: whole lines
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        if self.path and report(Path(self.path)):
            raise SystemExit(1)


def outcomes(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def report(path: Path) -> int:
    """Print the sweep's outcome; 1 if any job failed (or none reported), else 0."""
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


class JobSetup(Callback):
    """Per-job settings of a multirun, undone when the job ends (a basic launcher runs jobs in one process)."""

    def __init__(self) -> None:
        self._saved: tuple | None = None

    def on_job_start(self, config: DictConfig, **kwargs) -> None:
        if getattr(config.hydra.mode, "name", str(config.hydra.mode)) != "MULTIRUN":
            return
        self._saved = (sys.argv, torch.get_num_threads())
        launcher = config.hydra.launcher
        n_jobs = launcher.get("n_jobs") if "joblib" in str(launcher.get("_target_", "")) else None
        if n_jobs and n_jobs > 0:
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // n_jobs))
        # With the sweep's `-m a=1,2` in argv, every DDP rank would start the whole sweep again.
        sys.argv = [sys.argv[0], *config.hydra.overrides.task]

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs) -> None:
        if self._saved is not None:
            sys.argv, threads = self._saved
            torch.set_num_threads(threads)
            self._saved = None
