"""The run directory's lock: `fcntl.flock` on `<run_dir>/.lock`, so one run_id runs in one process at a time.

The kernel drops a flock when its holder dies (kill -9 included), so a lock never goes stale and there
is nothing to clear by hand. The file stays after the run (deleting it while held would let a second
process lock a fresh inode at the same path); its text says who held it last. On NFS, Linux maps
flock onto POSIX byte-range locks, which the NFS lock manager shares between hosts.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
from pathlib import Path

NAME = ".lock"


class Locked(Exception):
    """Another live process holds this run directory."""


@contextlib.contextmanager
def hold(run_dir: Path):
    """Hold `<run_dir>/.lock` for the block; raise Locked (at once, never waiting) if another process has it."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / NAME
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise Locked(f"{run_dir.name} is running in {owner} (locked: {path}); it resumes or completes "
                         "there, relaunch later to pick it up") from None
        except OSError as e:
            if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                raise OSError(f"cannot lock {path}: this file system has no locks ({e.strerror}); "
                              "put paths.runs_dir on a local disk or an NFS mount with locking") from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{socket.gethostname()}:{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the flock
