"""Stopping a parallel (joblib) sweep on Ctrl-C or SIGTERM without losing a run's record.

The launcher's first signal writes `<sweep log>.stop`, passes the signal on to its worker processes (a
`kill` reaches only the launcher; Ctrl-C reaches them all, and a run takes only the first), and returns:
each running job records its run as `interrupted` and returns, each queued job sees the marker and
returns without starting, and the sweep ends with its summary and exit 128 + N. A second signal stops
at once (joblib kills the workers; a run killed before it recorded stays `running`, which
`actlab status` shows as stale and a relaunch resumes).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

from actlab import atomic
from actlab.run import interrupt

_stopping: int | None = None  # in the launcher: the signal that is stopping the sweep
_marker: Path | None = None  # the launcher's marker; in a worker, the marker of the sweep it runs jobs for


def marker_of(log: str | os.PathLike) -> Path:
    """The stop marker beside a sweep log (`<time>-<pid>.jsonl` -> `<time>-<pid>.stop`)."""
    return Path(log).with_suffix(".stop")


def stopped_by(log: str | os.PathLike) -> str | None:
    """The signal a sweep's stop marker names ("SIGINT"), "a signal" if it is unreadable, None if the sweep
    was not stopped this way (for `actlab status`)."""
    try:
        return signal.Signals(int(marker_of(log).read_text().strip())).name
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return "a signal"


def install(log: str | os.PathLike) -> None:
    """In the launching process of a joblib sweep (main thread): the first SIGINT or SIGTERM stops the
    sweep gently (module docstring), a second at once."""
    global _marker, _stopping
    if threading.current_thread() is not threading.main_thread():
        return
    _marker, _stopping = marker_of(log), None
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, _on_signal)


def _on_signal(signum, frame):
    global _stopping
    if _stopping is not None:
        raise interrupt.SweepStopped(signum)  # joblib answers a KeyboardInterrupt by killing its workers
    _stopping = signum
    try:
        atomic.write_text(_marker, f"{signum}\n")
    except OSError as e:  # the workers still get the signal; only jobs not yet started would miss the marker
        print(f"actlab-train: cannot write {_marker} ({e.strerror or e})", file=sys.stderr, flush=True)
    print(f"actlab-train: stopping on {signal.Signals(signum).name}: running jobs record their runs as interrupted, "
          "no new job starts (again to stop at once)", file=sys.stderr, flush=True)
    for pid in _children():
        try:
            os.kill(pid, signum)
        except OSError:  # ended meanwhile
            pass


def _children() -> list[int]:
    """Processes whose parent is this one (Linux /proc; elsewhere none: Ctrl-C reaches the workers anyway)."""
    me, found = os.getpid(), []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "(comm)", which may hold spaces
        except (OSError, IndexError):
            continue
        if fields[1] == str(me):
            found.append(int(stat.parent.name))
    return found


def stopping() -> int | None:
    """In the launcher: the signal stopping its sweep, if one is."""
    return _stopping


def worker_start(log: str | os.PathLike) -> None:
    """In a joblib worker at each job's start: signals between runs are noted (interrupt.defer_between_runs)
    and the sweep's marker is the one `requested` checks."""
    global _marker
    _marker = marker_of(log)
    interrupt.defer_between_runs()


def requested() -> bool:
    """In a job: its sweep is stopping (this worker got a signal between runs, or the launcher's marker is
    there), so the job must not start its run."""
    return bool(interrupt.pending() or _stopping) or (_marker is not None and _marker.exists())


def is_parallel(launcher) -> bool:
    """Whether a launcher config runs its jobs in local worker processes (joblib, or our LocalLauncher)."""
    target = str(launcher.get("_target_", ""))
    return "joblib" in target.lower() or target.endswith("LocalLauncher")
