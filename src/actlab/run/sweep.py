"""Sweep bookkeeping through Hydra's callback API (configured under `hydra.callbacks` in train.yaml).

`SweepLog`: on_multirun_start creates `<runs_dir>/_sweeps/<time>-<pid>.jsonl` (and beside it `.json`: the
job count, host and pid of the launching process, for `actlab status`); every job appends its
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
import signal
import socket
import sys
from datetime import datetime
from pathlib import Path

import torch
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from actlab import atomic
from actlab.run import distributed, interrupt, sweep_console, sweep_stop


class JobResult(float):
    """The job's objective (NaN when there is none) with the outcome the sweep log keeps; `shown`: what the
    job's console line shows ({"metric", "value", "seconds"})."""

    def __new__(cls, value: float | None, run_id: str, status: str, error: str | None = None,
                exit_code: int | None = None, shown: dict | None = None):
        obj = super().__new__(cls, math.nan if value is None else value)
        obj.run_id, obj.status, obj.error, obj.exit_code = run_id, status, error, exit_code
        obj.shown = dict(shown or {})
        return obj

    def __reduce__(self):  # keep the outcome when a launcher pickles the result back (joblib, submitit)
        value = None if math.isnan(self) else float.__float__(self)
        return (JobResult, (value, self.run_id, self.status, self.error, self.exit_code, self.shown))

    def __float__(self) -> float:
        # Optuna's sweeper casts with float(): a job without an objective must fail the cast (Optuna records a
        # FAIL trial and goes on) rather than give NaN (study.tell raises and ends the whole search).
        if math.isnan(self):
            raise TypeError(f"{self.run_id}: {self.status}, no objective")
        return float.__float__(self)

    def outcome(self) -> dict:
        out = {"run_id": self.run_id, "status": self.status, "error": self.error}
        out |= {"exit_code": self.exit_code} if self.exit_code is not None else {}
        return out | self.shown


def objective_value(cfg: DictConfig, record: dict) -> float | None:
    """The number a sweeper optimises: the record's `objective` metric (config key; null: the main metric).
    A missing metric is a config error, said in one line (a sweeper would otherwise optimise NaN)."""
    name = cfg.get("objective") or record.get("main_metric") or "test/loss"
    metrics = record.get("metrics") or {}
    if record and name not in metrics:
        raise ValueError(f"objective={name} is not among the run's metrics ({', '.join(sorted(metrics)) or 'none'}); "
                         "set objective= to one of them")
    value = metrics.get(name)
    return float(value) if value is not None else None


def shown(record: dict) -> dict:
    """What a job's console line shows of its record: the main metric and the wall time."""
    main = record.get("main_metric") or "test/loss"
    value = (record.get("metrics") or {}).get(main)
    return {"metric": main, "value": value, "seconds": (record.get("timings") or {}).get("wall_s")}


def _outcome(job_return: JobReturn) -> dict:
    if job_return.status == JobStatus.COMPLETED and isinstance(job_return._return_value, JobResult):
        return job_return._return_value.outcome()
    err = job_return._return_value if job_return.status == JobStatus.FAILED else None
    return {"run_id": "?", "status": "failed", "error": f"{type(err).__name__}: {err}" if err else "no result"}


SLURM_JOB_ENV = "ACTLAB_SLURM_JOB"  # set by actlab.run.slurm's launcher inside the jobs it runs


_LAUNCHED: list[str] = []  # sweep logs of the sweeps this process launches (on_multirun_start)


def stopped(signum: int, rows: list[dict] | None = None, gentle: bool = False) -> int:
    """A signal stopped a sweep in its launching process (Ctrl-C or SIGTERM while joblib waits on its
    workers): print the summary of what the jobs logged, how many did not run, and one line on
    resuming; return 128 + signum. `rows`: the log, if already read; `gentle`: every job that started
    has logged its outcome (actlab.run.sweep_stop), so the rest never started."""
    if _LAUNCHED:
        path = Path(_LAUNCHED[-1])
        try:
            rows = outcomes(path) if rows is None else rows
            report(path, rows)
            total = json.loads(path.with_suffix(".json").read_text()).get("jobs")
            if isinstance(total, int) and total > len(rows):
                print(f"sweep: {total - len(rows)} of {total} jobs not run" + (
                      "" if gentle else " (not started, or stopped before they could record: `actlab status` "
                      "reads their records)"), file=sys.stderr, flush=True)
        except (OSError, ValueError) as e:
            print(f"actlab-train: the sweep log {path} cannot be read ({e}); `actlab status` reads the runs' "
                  "own records", file=sys.stderr, flush=True)
    print(f"actlab-train: interrupted by {signal.Signals(signum).name}; relaunch the same command to resume "
          "(completed runs are skipped)", file=sys.stderr, flush=True)
    return 128 + signum


class SweepLog(Callback):
    """One JSON line per job of a multirun; a summary and the exit code at its end."""

    def __init__(self) -> None:
        self.path: str | None = None
        self.pid: int | None = None  # the launching process
        self.total: int | None = None  # jobs in the sweep, where the sweeper says upfront
        self.parallel = False  # joblib: jobs run in worker processes of the launcher

    # Hydra turns an Exception in a callback into a warning and goes on, so a sweep log that cannot be written
    # or read would end the sweep with exit 0 whatever its jobs did: these hooks exit 1 instead (SystemExit
    # passes through Hydra's callback wrapper).
    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        self.pid = os.getpid()
        self.total = sweep_console.job_count(config)
        folder = Path(config.paths.runs_dir) / "_sweeps"
        now = datetime.now()
        path = folder / f"{now:%Y%m%d-%H%M%S}-{os.getpid()}.jsonl"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path.touch()
            # what a reader of the log cannot know from its lines: how many jobs to expect, and who launches them
            atomic.write_text(path.with_suffix(".json"), json.dumps({
                "jobs": self.total, "host": socket.gethostname(), "pid": self.pid,
                "started_at": now.astimezone().isoformat(timespec="seconds")}) + "\n")
        except OSError as e:
            _fatal(f"cannot write the sweep log {path} ({e.strerror or e}): paths.runs_dir must be a writable "
                   "directory with free space; no job was started")
        self.path = str(path.resolve())
        _LAUNCHED.append(self.path)
        self.parallel = sweep_stop.is_parallel(config.hydra.launcher)
        if self.parallel:  # Ctrl-C or SIGTERM: running jobs record their runs, queued ones do not start
            sweep_stop.install(path)
        else:  # so SIGTERM to the launcher also ends with the summary, not silently
            interrupt.stop_sweep_on_sigterm()

    def on_job_start(self, config: DictConfig, **kwargs) -> None:
        if self.parallel and self.path and os.getpid() != self.pid:
            sweep_stop.worker_start(self.path)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs) -> None:
        if not self.path or distributed.rank() != 0:  # rank 0 speaks for a DDP job
            return
        outcome = _outcome(job_return)
        if outcome["status"] == NOT_STARTED:
            return  # the sweep was stopping; the launcher counts it as not run
        if outcome["status"] == "interrupted" and os.environ.get(SLURM_JOB_ENV):
            return  # a SLURM job requeues or ends: the requeued job, or the launcher (actlab.run.slurm), says which
        try:
            self.append(outcome)
        except OSError as e:  # the launcher sees the missing line and exits 1 (on_multirun_end)
            print(f"actlab-train: error: {outcome.get('run_id')}: its outcome ({outcome['status']}) could not be "
                  f"written to the sweep log ({e.strerror or e}); the sweep will exit 1", file=sys.stderr, flush=True)
        if outcome["status"] == "interrupted" and os.getpid() == self.pid:
            # A signal to the process that runs the sweep (basic launcher) stops the sweep, not just one job.
            report(Path(self.path))
            raise SystemExit(outcome.get("exit_code") or 143)

    def append(self, outcome: dict) -> None:
        """One job's outcome as one line of the log (concurrent jobs: whole lines), and its console line,
        numbered by its place in the log: `[7/21] <run_id> test/acc=0.7612 (38 s)`."""
        index = sweep_console.append(self.path, json.dumps(outcome))
        print(sweep_console.job_line(index, self.total, outcome), flush=True)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        if not self.path:
            return
        try:
            rows = outcomes(Path(self.path))
        except OSError as e:
            _fatal(f"the sweep log {self.path} cannot be read ({e.strerror or e}): the sweep's outcome is unknown; "
                   f"`actlab status {config.paths.runs_dir}` reads the runs' own records")
        if sweep_stop.stopping():
            raise SystemExit(stopped(sweep_stop.stopping(), rows, gentle=True))
        code = report(Path(self.path), rows)
        if not code and self.total is not None and len(rows) < self.total:
            _fatal(f"{self.total - len(rows)} of the sweep's {self.total} jobs left no line in its log {self.path} (a "
                   f"full disk?): their outcome is unknown; `actlab status {config.paths.runs_dir}` reads the runs' "
                   "own records")
        if code:
            raise SystemExit(code)


def _fatal(message: str):
    print(f"actlab-train: error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(1)


def outcomes(path: Path) -> list[dict]:
    """The log's outcomes; a line that is not one (cut short by a full disk) is a failed job of unknown run."""
    rows = []
    for line in Path(path).read_text().splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        ok = isinstance(row, dict) and row.get("status") in STATUSES
        rows.append(row if ok else {"run_id": "?", "status": "failed",
                                    "error": f"unreadable sweep log line: {line[:80]!r}"})
    return rows


STATUSES = ("completed", "skipped", "locked", "interrupted", "failed")
NOT_STARTED = "not started"  # a job of a stopping sweep (sweep_stop): no run, no line in the log


def _settle_locked(rows: list[dict], runs_dir: Path) -> list[dict]:
    """A job that found its run locked by a job of this same sweep (a duplicate grid point, launched while
    the first was training) counts as skipped once that run completed; still locked otherwise."""
    from actlab.run import records

    def settled(r: dict) -> dict:
        if r["status"] == "locked" and (records.read(runs_dir / r["run_id"]) or {}).get("status") == "completed":
            return {**r, "status": "skipped"}
        return r

    return [settled(r) for r in rows]


def report(path: Path, rows: list[dict] | None = None) -> int:
    """Print the sweep's outcome and return its exit code: 128 + N if a job was stopped by signal N (a script
    that chains sweeps must stop, even where another job failed), else 1 if any job failed (or none
    reported), else 75 if another live run holds some of its runs, else 0. `rows`: the log, if already read."""
    from rich.console import Console

    rows = _settle_locked(outcomes(path) if rows is None else rows, Path(path).parent.parent)
    console = Console(stderr=True)
    counts = {s: sum(r["status"] == s for r in rows) for s in STATUSES}
    console.print(f"sweep: {len(rows)} jobs: {counts['completed']} completed, {counts['skipped']} skipped "
                  f"(already completed or duplicate), {counts['locked']} locked (running elsewhere), "
                  f"{counts['interrupted']} interrupted, {counts['failed']} failed  [log: {path}]",
                  soft_wrap=True, markup=False)
    bad = [r for r in rows if r["status"] in ("failed", "interrupted")]
    if bad:  # plain lines, not a table: run ids must survive narrow terminals and grep
        console.print("failed or interrupted runs (their records say why; relaunch the sweep to retry or resume):",
                      soft_wrap=True)
        for r in bad:
            console.print(f"  {r['run_id']}: {(r['error'] or '')[:200]}", soft_wrap=True, markup=False)
    if counts["interrupted"]:
        return next(r.get("exit_code") or 143 for r in rows if r["status"] == "interrupted")
    if counts["failed"] or not rows:
        return 1
    return 75 if counts["locked"] else 0


class JobSetup(Callback):
    """Per-job settings of a multirun, undone when the job ends (a basic launcher runs jobs in one process)."""

    def __init__(self) -> None:
        self._saved: tuple | None = None

    def on_job_start(self, config: DictConfig, **kwargs) -> None:
        if getattr(config.hydra.mode, "name", str(config.hydra.mode)) != "MULTIRUN":
            return
        self._saved = (sys.argv, torch.get_num_threads())
        launcher = config.hydra.launcher
        n_jobs = launcher.get("n_jobs") if sweep_stop.is_parallel(launcher) else None
        if n_jobs and n_jobs > 0:
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // n_jobs))
        # With the sweep's `-m a=1,2` in argv, every DDP rank would start the whole sweep again.
        sys.argv = [sys.argv[0], *config.hydra.overrides.task]

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs) -> None:
        if self._saved is not None:
            sys.argv, threads = self._saved
            torch.set_num_threads(threads)
            self._saved = None
