"""Which DDP rank this process is, and a scope that undoes what Lightning's DDP launcher leaves behind.

Lightning's launcher sets MASTER_ADDR/MASTER_PORT/NODE_RANK/LOCAL_RANK/WORLD_SIZE in os.environ and
keeps the process group alive after fit. The next run in the same process (the next job of a basic
multirun, a notebook, a test) then sees LOCAL_RANK, concludes its ranks are launched externally and
waits for them forever, or its subprocesses inherit a MASTER_PORT that is still held (EADDRINUSE).
"""

from __future__ import annotations

import contextlib
import os

import torch

LAUNCH_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE", "RANK", "GROUP_RANK")


def rank() -> int:
    """Global rank from the launcher's environment (Lightning DDP, torchrun, SLURM); 0 when alone."""
    for key in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if os.environ.get(key, "").isdigit():
            return int(os.environ[key]) + (int(os.environ.get("NODE_RANK", 0)) if key == "LOCAL_RANK" else 0)
    return 0


@contextlib.contextmanager
def scope():
    """Run a fit inside: on exit, destroy a process group the fit created and restore the launch
    variables as they were (a process started by torchrun or SLURM keeps its own)."""
    dist = torch.distributed
    before = {k: os.environ.get(k) for k in LAUNCH_ENV}
    had_group = dist.is_available() and dist.is_initialized()
    try:
        yield
    finally:
        if not had_group and dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
