"""What every benchmark shares: machine facts, interleaved A/B timing, and writing results/bench/.

Timings are reported as ratios measured within one process; variants are interleaved round by
round so that machine drift (thermal, other load) hits every variant alike.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import torch

from actlab import atomic


def machine_info() -> dict:
    """Facts a reader needs to judge a timing: CPU, threads, torch build, device."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    return info


def time_interleaved(
    variants: dict[str, Callable[[], object]],
    repeats: int = 10,
    warmup: int = 2,
    sync: Callable[[], None] | None = None,
) -> dict[str, list[float]]:
    """Seconds per call for each variant, measured in interleaved rounds (A B C, A B C, ...).

    `sync` (e.g. torch.cuda.synchronize) runs before each clock read so asynchronous work counts.
    """
    sync = sync or (lambda: None)
    for _ in range(warmup):
        for fn in variants.values():
            fn()
    sync()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - t0)
    return times


def summary(samples: list[float]) -> dict:
    """Median and spread of a list of timings (seconds)."""
    s = sorted(samples)
    q = statistics.quantiles(s, n=4) if len(s) >= 2 else [s[0]] * 3
    return {"median": statistics.median(s), "q1": q[0], "q3": q[2], "min": s[0], "max": s[-1], "n": len(s)}


def write_results(name: str, payload: dict, table_md: str, out_dir: str | Path = "results/bench",
                  device: str = "cpu") -> Path:
    """Write `<out_dir>/<name>.json` (with machine facts) and `<out_dir>/<name>.md`; return the json path.
    On CUDA the name gets `_cuda`, so a GPU run never overwrites the CPU results (and vice versa)."""
    name = f"{name}_cuda" if device == "cuda" and not name.endswith("_cuda") else name
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    payload = {"machine": machine_info(), **payload}
    path = out / f"{name}.json"
    atomic.write_json(path, payload, indent=2, default=float, allow_nan=True)
    atomic.write_text(out / f"{name}.md", table_md.rstrip() + "\n")
    return path
