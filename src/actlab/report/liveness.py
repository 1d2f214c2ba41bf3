"""Liveness of a run whose record says `running`, from its `.lock` text "host:pid" (the lock itself is never
taken: a run starting at that moment would find it locked and skip itself):
- same host: the pid must exist (os.kill(pid, 0)) and have started no later than the record
  (/proc/<pid>/stat start time vs timings.started_at), else the pid was reused and the run is stale; a
  relaunch that holds the lock but has not rewritten the record yet is told apart through /proc/locks.
- other host: not verifiable from here; shown as "running on <host>?" with the age of the last heartbeat
  (newest mtime of history.jsonl / record.json), called probably dead past 3 epochs' time + 60 s.
- a record that says failed or interrupted while a process of this host holds its lock (/proc/locks) is a
  relaunch that has not rewritten the record yet: running.
Not detected: a hung process (alive, no progress: watch the heartbeat age), a run without a .lock (shown
as unverified), a relaunch on another host before it rewrites the record (old status shown).
"""

from __future__ import annotations

import os
import socket
from datetime import datetime
from pathlib import Path

from actlab.run import lock, records

LOCK = lock.NAME
START_SLACK_S = 5.0  # started_at has 1 s resolution and /proc's boot time drifts by a second or so


def fmt_s(s: float | None) -> str:
    if s is None:
        return "?"
    s = int(round(s))
    if s >= 3600:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 60}m {s % 60:02d}s" if s >= 60 else f"{s}s"


def _timestamp(iso) -> float | None:
    try:
        return datetime.fromisoformat(iso).timestamp()
    except (TypeError, ValueError):
        return None


def _proc_start(pid: int) -> float | None:
    """Unix time at which process `pid` of this host started (None where /proc cannot say)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22, starttime in clock ticks after boot
        btime = next(int(ln.split()[1]) for ln in Path("/proc/stat").read_text().splitlines()
                     if ln.startswith("btime "))
        return btime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _holds_flock(pid: int, path: Path) -> bool | None:
    """Whether `pid` holds a lock on `path` by /proc/locks (read only); None where it cannot say."""
    try:
        ino = os.stat(path).st_ino
        text = Path("/proc/locks").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        parts = line.split()
        if len(parts) > 5 and parts[1] != "->" and parts[4] == str(pid) and parts[5].rsplit(":", 1)[-1] == str(ino):
            return True
    return False


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    except OSError:
        return False
    return True


def heartbeat(run_dir: Path) -> float | None:
    """Newest mtime of history.jsonl and record.json (what a live run rewrites every epoch)."""
    times = []
    for name in (records.HISTORY, records.RECORD):
        try:
            times.append(os.stat(run_dir / name).st_mtime)
        except OSError:
            pass
    return max(times) if times else None


def _owner(run_dir: Path) -> tuple[str, int | None]:
    """(host, pid) named by the run's .lock; pid None where it names no process."""
    try:
        host, _, pid_text = (run_dir / LOCK).read_text().strip().rpartition(":")
    except OSError:
        return "", None
    # pid 0 is refused: os.kill(0, 0) would probe our own process group
    return host, int(pid_text) if pid_text.isdigit() and int(pid_text) > 0 else None


def liveness(run_dir: Path, rec: dict, now: float) -> tuple[str, str, bool]:
    """(status, note, remote) of a record that says running: "running" or "stale"."""
    host, pid = _owner(run_dir)
    beat = heartbeat(run_dir)
    age = f"last heartbeat {fmt_s(max(now - beat, 0.0))} ago" if beat is not None else "no heartbeat"
    if pid is None:
        return "running", f"unverified: no {LOCK} naming its process; {age}", True
    if host != socket.gethostname():
        return "running", f"running on {host}? (pid {pid}, not checkable from here); {age}", True
    if not pid_alive(pid):
        return "stale", f"process {pid} is gone (killed?)", False
    started, proc = _timestamp((rec.get("timings") or {}).get("started_at")), _proc_start(pid)
    if started is not None and proc is not None and proc > started + START_SLACK_S:
        if _holds_flock(pid, run_dir / LOCK):
            return "running", f"pid {pid}: relaunched, starting (record not rewritten yet)", False
        return "stale", f"process {pid} is gone (its pid now belongs to a later process)", False
    return "running", f"pid {pid}", False


def lock_holder(run_dir: Path) -> int | None:
    """The pid of a process of this host that holds the run's lock now (a relaunch of a failed or interrupted
    run, before it rewrites the record); None where none does or it cannot be told."""
    host, pid = _owner(run_dir)
    if pid is None or host != socket.gethostname():
        return None
    return pid if pid_alive(pid) and _holds_flock(pid, run_dir / LOCK) else None
