"""Where a sweep stands: `actlab status [RUNS_DIR] [--watch [SECONDS]]`.

    actlab status                                 # every sweep under results/runs
    actlab status results/runs/demo --watch 5     # refresh every 5 s until Ctrl-C

One table per directory that directly holds run directories (a runs dir may hold sub-sweeps such as
results/runs/demo/margins): counts by status, and a row for every run that is not completed: running ones
with epoch/total (history.jsonl rows vs the config's trainer.max_epochs), seconds per epoch and ETA, failed
ones with their error's first line, stale ones (record says running, process gone) flagged as resumable;
then a sweep ETA line and the latest sweep log (`<dir>/_sweeps/*.jsonl`), whose failed jobs without a run
record are listed too. Unreadable record.json files are listed, never fatal. Exit 0; 1 if RUNS_DIR is missing.
A run's ETA: epochs left x the median `epoch_s` of its last 5 history rows, less the time since its last row
(at most one epoch); the sweep's: the longest of its running runs' (and their sum). Only training epochs of
runs that have a record count (not the test pass); the jobs of the latest sweep that have not started are
counted from the job count its launcher wrote beside the log (`_sweeps/<log>.json`), which also tells
whether that launcher still runs (same host).

Liveness of a `running` record, and a relaunch of a failed one: actlab.report.liveness.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from actlab.report.liveness import fmt_s, heartbeat, liveness, lock_holder, pid_alive
from actlab.run import lock, records, sweep_stop

LOCK = lock.NAME
ORDER = ("completed", "running", "stale", "interrupted", "failed", "unreadable")
KNOWN = {"completed", "running", "interrupted", "failed"}
SKIP_DIRS = {"wandb", "_sweeps", "checkpoints"}
ETA_WINDOW = 5  # per-epoch time: median of the last few epochs (the first one of a process may compile)


@dataclass
class Run:
    run_id: str
    status: str  # one of ORDER
    done: int | None = None  # epochs in history.jsonl (not read for completed runs)
    total: int | None = None  # trainer.max_epochs
    epoch_s: float | None = None
    eta_s: float | None = None
    note: str = ""
    remote: bool = False  # running on another host (not verified)


@dataclass
class Sweep:
    directory: str
    runs: list[Run] = field(default_factory=list)
    log: str | None = None  # the latest sweep log's summary line
    jobs: int | None = None  # jobs the latest sweep launches, where its launcher knew
    finished: int = 0  # lines in the latest sweep log
    launcher_gone: bool = False  # the latest sweep's launching process has ended (same host only)

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.runs)


def epoch_time(rows: list[dict]) -> float | None:
    """Seconds per epoch: the median `epoch_s` of the last ETA_WINDOW rows that have one."""
    times = [r["epoch_s"] for r in rows if isinstance(r.get("epoch_s"), (int, float)) and r["epoch_s"] > 0]
    return statistics.median(times[-ETA_WINDOW:]) if times else None


def eta(rows: list[dict], total: int | None, now: float) -> tuple[float | None, float | None]:
    """(seconds per epoch, seconds left) of a running run: the epochs left times the epoch time, less what
    the current epoch has run since the last row's "time" (at most one epoch's worth)."""
    per = epoch_time(rows)
    if per is None or total is None:
        return per, None
    left = max(total - len(rows), 0) * per
    last = rows[-1].get("time") if rows else None
    if isinstance(last, (int, float)) and left:
        left -= min(max(now - last, 0.0), per)
    return per, left


def _total(rec: dict) -> int | None:
    total = ((rec.get("config") or {}).get("trainer") or {}).get("max_epochs")
    return total if isinstance(total, int) and not isinstance(total, bool) and total > 0 else None


def _first_line(text, limit: int = 200) -> str:
    line = str(text or "no error recorded").strip().splitlines()
    line = line[0] if line else "no error recorded"
    return line if len(line) <= limit else line[:limit - 3] + "..."


def read_run(run_dir: Path, now: float) -> Run:
    """One run directory as a Run (never raises: a record that cannot be used is "unreadable")."""
    try:
        return _read_run(run_dir, now)
    except (OSError, ValueError, TypeError, AttributeError) as e:  # a record.json of the wrong shape
        return Run(run_dir.name, "unreadable", note=f"{records.RECORD} is no run record ({type(e).__name__}: {e})")


def _read_run(run_dir: Path, now: float) -> Run:
    has_record = (run_dir / records.RECORD).exists()
    # without a record: the lock is taken and the run is setting up (or died doing so)
    rec = records.read(run_dir) if has_record else {"status": "running", "timings": {}}
    if not isinstance(rec, dict):
        return Run(run_dir.name, "unreadable", note=f"{records.RECORD} does not parse as a JSON object: "
                                                    "look at it, or delete the run directory to rerun it")
    run_id = rec.get("run_id") if isinstance(rec.get("run_id"), str) else run_dir.name
    status = rec.get("status")
    if status not in KNOWN:
        return Run(run_id, "unreadable", note=f"unknown status {status!r} in {records.RECORD}")
    total = _total(rec)
    if status == "completed":  # counted only: its history is not read (a runs dir may hold thousands)
        return Run(run_id, status, total=total)
    rows = records.read_history(run_dir)
    run = Run(run_id, status, done=len(rows), total=total, epoch_s=epoch_time(rows))
    ckpt = "from its last checkpoint" if (run_dir / "checkpoints" / "last.ckpt").exists() else "from the start"
    if status in ("failed", "interrupted") and (pid := lock_holder(run_dir)) is not None:
        run.status, run.note = "running", f"pid {pid}: relaunched after it {status}, starting (record not rewritten yet)"
    elif status == "failed":
        run.note = _first_line(rec.get("error"))
    elif status == "interrupted":
        run.note = f"{_first_line(rec.get('error'))}; relaunch the same command to resume {ckpt}"
    elif status == "running":
        run.status, run.note, run.remote = liveness(run_dir, rec, now)
        if not has_record:
            run.note = f"no {records.RECORD} yet (setting up); {run.note}"
        if run.status == "running":
            run.epoch_s, run.eta_s = eta(rows, total, now)
            beat = heartbeat(run_dir)
            if run.remote and run.epoch_s and beat is not None and now - beat > 3 * run.epoch_s + 60:
                run.note += "; that is over 3 epochs' time: probably dead (relaunch to resume if so)"
        else:
            run.note += f": interrupted, relaunch the same command to resume {ckpt}"
    return run


def find_sweeps(root: Path) -> dict[str, list[Path]]:
    """Directory -> the run directories it directly holds (a run directory has a record.json or a .lock); a
    directory with a sweep log is a sweep even without runs (its jobs may all have failed before a record)."""
    found: dict[str, list[Path]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if records.RECORD in filenames or LOCK in filenames:
            found.setdefault(os.path.dirname(dirpath), []).append(Path(dirpath))
            dirnames.clear()
        else:
            if "_sweeps" in dirnames:
                found.setdefault(dirpath, [])
            dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("."))
    return {d: sorted(runs) for d, runs in sorted(found.items())}


def sweep_log(directory: Path, sweep: Sweep) -> None:
    """The latest `_sweeps/*.jsonl` of `directory` as a line, and its failed jobs that left no record as runs."""
    logs = sorted((directory / "_sweeps").glob("*.jsonl"))
    if not logs:
        return
    outcomes = []
    try:
        lines = logs[-1].read_text().splitlines()
    except OSError as e:
        sweep.log = f"sweep log {logs[-1]} unreadable: {e.strerror}"
        return
    for line in lines:
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict):
            outcomes.append(doc)
    counts = {}
    for o in outcomes:
        counts[str(o.get("status"))] = counts.get(str(o.get("status")), 0) + 1
    said = ", ".join(f"{n} {s}" for s, n in counts.items()) or "none yet"
    sweep.finished, sweep.jobs, launcher = len(outcomes), *_launcher(logs[-1].with_suffix(".json"))
    of = f" of {sweep.jobs}" if sweep.jobs is not None else ""
    sweep.log = f"latest sweep log {logs[-1].name}: {len(outcomes)}{of} jobs finished ({said})"
    stop = sweep_stop.stopped_by(logs[-1])
    if stop:  # Ctrl-C or SIGTERM to a parallel sweep (actlab.run.sweep_stop): its queued jobs never start
        sweep.launcher_gone = True
        sweep.log += f"; stopped by {stop}: relaunch the same command to run the rest (completed runs are skipped)"
    elif launcher is not None and launcher[0] == socket.gethostname() and not pid_alive(launcher[1]):
        sweep.launcher_gone = True
        if sweep.jobs is not None and sweep.finished < sweep.jobs:
            sweep.log += (f"; its launching process (pid {launcher[1]}) has ended: relaunch the same command to run "
                          "the rest (completed runs are skipped)")
    known = {r.run_id for r in sweep.runs}
    for o in outcomes:
        if o.get("status") == "failed" and o.get("run_id") not in known:
            sweep.runs.append(Run(str(o.get("run_id") or "?"), "failed",
                                  note=f"no run record (from the sweep log): {_first_line(o.get('error'))}"))


def _launcher(meta: Path) -> tuple[int | None, tuple[str, int] | None]:
    """(job count, (host, pid)) from a sweep log's `.json` beside it; None where absent or unreadable."""
    try:
        doc = json.loads(meta.read_text())
    except (OSError, ValueError):
        return None, None
    if not isinstance(doc, dict):
        return None, None
    jobs = doc.get("jobs") if type(doc.get("jobs")) is int and doc["jobs"] >= 0 else None
    host, pid = doc.get("host"), doc.get("pid")
    return jobs, ((host, pid) if isinstance(host, str) and type(pid) is int and pid > 0 else None)


def scan(root: str | os.PathLike, now: float | None = None) -> list[Sweep]:
    """Every sweep under `root` with its runs' state at time `now` (default: the clock)."""
    now = time.time() if now is None else now
    root = Path(root)
    if (root / records.RECORD).exists() or (root / LOCK).exists():
        groups = {str(root.parent): [root]}
    else:
        groups = find_sweeps(root)
    out = []
    for directory, run_dirs in groups.items():
        sweep = Sweep(directory, [read_run(d, now) for d in run_dirs])
        sweep_log(Path(directory), sweep)
        out.append(sweep)
    return out


def counts_line(sweep: Sweep) -> str:
    parts = [f"{sweep.count(s)} {s}" for s in ORDER if sweep.count(s) or s in ("completed", "running", "failed")]
    remote = sum(r.remote for r in sweep.runs if r.status == "running")
    line = f"{len(sweep.runs)} runs: " + ", ".join(parts)
    return line + (f" ({remote} of the running unverified)" if remote else "")


def _not_started(sweep: Sweep) -> str:
    """What the ETA leaves out of the sweep's jobs that have no record yet."""
    if sweep.jobs is None or sweep.launcher_gone:
        return "runs not started yet (records appear only when a run starts)"
    waiting = max(sweep.jobs - sweep.finished - sweep.count("running"), 0)
    return f"{waiting} job(s) of the latest sweep not started yet"


def eta_line(sweep: Sweep) -> str:
    running = [r for r in sweep.runs if r.status == "running"]
    if not running:
        return "ETA: nothing running" + ("" if sweep.count("stale") + sweep.count("interrupted") == 0 else
                                         "; stale and interrupted runs wait for a relaunch")
    known = [r.eta_s for r in running if r.eta_s is not None]
    line = (f"ETA: {fmt_s(max(known))} until the {len(known)} running run(s) with epoch times finish "
            f"(longest; {fmt_s(sum(known))} of run time left in all)" if known else "ETA: unknown")
    missing = len(running) - len(known)
    not_counted = [_not_started(sweep), "the test pass after the last epoch"]
    if missing:
        not_counted.insert(0, f"{missing} running run(s) without an epoch time yet or without max_epochs")
    if sweep.count("stale") + sweep.count("interrupted"):
        not_counted.append("stale and interrupted runs until relaunched")
    return line + "; not counted: " + ", ".join(not_counted)


def _cells(r: Run) -> tuple[str, str, str]:
    """(epoch, s/epoch, ETA) of a run as text ("" where unknown or meaningless)."""
    epoch = f"{r.done}/{r.total if r.total is not None else '?'}" if r.done is not None else ""
    per = f"{r.epoch_s:.1f}" if r.epoch_s is not None else ""
    return epoch, per, fmt_s(r.eta_s) if r.status == "running" else ""


def _printable(text: str) -> str:
    """`text` as the console can print it: surrogate escapes (undecodable bytes in file names, lone
    surrogates in JSON) as backslash escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def render(sweeps: list[Sweep], root: str, width: int = 200):
    """One table per sweep; plain lines where a table would not fit `width` with whole run ids (grep-able)."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    if not sweeps:
        return Text(_printable(f"no runs under {root} yet"))
    rank = {s: i for i, s in enumerate(ORDER)}
    parts = []
    for sweep in sweeps:
        title = Text(_printable(f"{sweep.directory}: {counts_line(sweep)}"), style="bold")
        shown = sorted((r for r in sweep.runs if r.status != "completed"), key=lambda r: (rank[r.status], r.run_id))
        if shown and width >= max(len(r.run_id) for r in shown) + 75:
            table = Table(title=title, title_justify="left", show_edge=False)
            table.add_column("run", no_wrap=True)
            for name in ("status", "epoch", "s/epoch", "ETA"):
                table.add_column(name, no_wrap=True, justify="left" if name == "status" else "right")
            table.add_column("note", overflow="fold")
            for r in shown:
                style = {"running": "green", "stale": "yellow", "interrupted": "yellow"}.get(r.status, "red")
                table.add_row(Text(_printable(r.run_id)), Text(r.status, style=style), *_cells(r),
                              Text(_printable(r.note)))
            parts.append(table)
        else:
            parts.append(title)
            for r in shown:
                epoch, per, left = _cells(r)
                facts = ", ".join(x for x in (epoch and f"epoch {epoch}", per and f"{per} s/epoch",
                                              left and f"ETA {left}", r.note) if x)
                parts.append(Text(_printable(f"  {r.run_id}: {r.status}" + (f" ({facts})" if facts else ""))))
        parts += [Text(eta_line(sweep))] + ([Text(_printable(sweep.log))] if sweep.log else []) + [Text("")]
    return Group(*parts)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs_dir", nargs="?", default="results/runs", help="runs directory (default results/runs)")
    parser.add_argument("--watch", nargs="?", type=float, const=10.0, default=None, metavar="SECONDS",
                        help="refresh every SECONDS (default 10) until Ctrl-C")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.live import Live

    console = Console()
    root = Path(args.runs_dir)
    if not root.is_dir():
        console.print(f"actlab status: {root} is not a directory: give the runs directory of a sweep "
                      "(paths.runs_dir, default results/runs)", markup=False, highlight=False, soft_wrap=True)
        return 1
    if args.watch is None:
        console.print(render(scan(root), str(root), console.width))
        return 0
    if args.watch <= 0:
        console.print(f"actlab status: --watch {args.watch:g}: give a positive number of seconds", markup=False)
        return 1
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C ends it even if started with SIGINT ignored
    try:
        if not console.is_terminal:  # a pipe or a job log: one block per refresh (Live would print only the last)
            while True:
                console.print(render(scan(root), str(root), console.width))
                time.sleep(args.watch)
        with Live(render(scan(root), str(root), console.width), console=console, auto_refresh=False) as live:
            while True:
                time.sleep(args.watch)
                live.update(render(scan(root), str(root), console.width), refresh=True)
    except KeyboardInterrupt:
        return 0
