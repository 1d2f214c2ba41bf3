"""A sweep's console: one line per finished job, numbered in the order jobs finish.

    [7/21] fashion_mnist-mlp-helu-m0.05-s1-3f2a9c1e test/acc=0.7612 (38 s)
    [8/21] fashion_mnist-mlp-relu-s2-0b1c2d3e FAILED: FloatingPointError: final metrics are not finite ...

The number comes from the sweep log itself (the job's line is appended atomically; its position in the
file is its number), so parallel jobs in separate processes count without talking to each other.
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig

_BASIC = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


def job_count(config: DictConfig) -> int | None:
    """How many jobs the sweep launches: the product of the basic sweeper's value lists (the sweeper's
    params plus the command line's), Optuna's n_trials; None for a sweeper whose count is not known upfront."""
    sweeper = config.hydra.sweeper
    target = str(sweeper.get("_target_", ""))
    if "optuna" in target.lower():
        return int(sweeper.n_trials) if sweeper.get("n_trials") else None
    if target != _BASIC:
        return None
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = [f"{k}={v}" for k, v in (sweeper.get("params") or {}).items()]
    try:
        overrides = OverridesParser.create().parse_overrides([*params, *config.hydra.overrides.task])
    except Exception:  # noqa: BLE001 - a glob or other form that needs the config loader: count unknown
        return None
    sizes: dict[str, int] = {}
    for o in overrides:
        key = o.get_key_element()
        sizes[key] = len(list(o.sweep_string_iterator())) if o.is_discrete_sweep() else 1
    n = 1
    for size in sizes.values():
        n *= size
    return n


def append(path: str | Path, line: str) -> int:
    """Append one line (atomically: O_APPEND, one write) and return its 1-based position in the file."""
    data = line.rstrip("\n").encode() + b"\n"
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
        end = os.lseek(fd, 0, os.SEEK_CUR)
        return os.pread(fd, end, 0).count(b"\n")
    finally:
        os.close(fd)


def job_line(index: int, total: int | None, outcome: dict) -> str:
    """The console line of one finished job (outcome: the sweep log's JSON line)."""
    head = f"[{index}/{total}]" if total else f"[{index}]"
    rid, status = outcome.get("run_id", "?"), outcome.get("status")
    metric, value = outcome.get("metric"), outcome.get("value")
    shown = f" {metric}={value:.4f}" if metric and isinstance(value, (int, float)) else ""
    secs = outcome.get("seconds")
    took = f" ({secs:.0f} s)" if isinstance(secs, (int, float)) else ""
    error = (outcome.get("error") or "").strip().splitlines()
    error = error[0][:160] if error else ""
    if status == "completed":
        return f"{head} {rid}{shown}{took}"
    if status == "skipped":
        return f"{head} {rid} already done{shown}"
    if status == "locked":
        return f"{head} {rid} locked: running in another process"
    if status == "interrupted":
        return f"{head} {rid} interrupted (resumable: relaunch the sweep): {error}"
    return f"{head} {rid} FAILED: {error}"
