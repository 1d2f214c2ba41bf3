"""HeLU margin schedules over training progress (actlab.callbacks.margin applies them every step).

The paper keeps the margin fixed (`Constant`); the other schedules are ours. A schedule maps
progress p in [0, 1] (global step / total steps) to a margin. With no HeLU in the model the
callback does nothing and says so once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class Constant:
    """The paper's setting: one margin for the whole run."""

    value: float | None

    def __call__(self, p: float) -> float | None:
        return self.value


@dataclass
class Linear:
    """Straight line from `start` (p = 0) to `end` (p = 1)."""

    start: float
    end: float = 0.0

    def __call__(self, p: float) -> float:
        return self.start + (self.end - self.start) * p


@dataclass
class Cosine:
    """Half-cosine from `start` to `end`: slow at both ends."""

    start: float
    end: float = 0.0

    def __call__(self, p: float) -> float:
        return self.end + (self.start - self.end) * 0.5 * (1 + math.cos(math.pi * p))


@dataclass
class Step:
    """`start`, multiplied by `gamma` at each milestone (fractions of training)."""

    start: float
    milestones: list[float] = field(default_factory=lambda: [0.5, 0.75])
    gamma: float = 0.1

    def __call__(self, p: float) -> float:
        return self.start * self.gamma ** sum(p >= m for m in self.milestones)


@dataclass
class WarmupDecay:
    """Linear rise from `start` to `peak` over the first `warmup` fraction, then linear decay to `end`."""

    peak: float
    warmup: float = 0.1
    start: float = 0.0
    end: float = 0.0

    def __call__(self, p: float) -> float:
        if p < self.warmup:
            return self.start + (self.peak - self.start) * p / self.warmup
        rest = (p - self.warmup) / max(1e-12, 1 - self.warmup)
        return self.peak + (self.end - self.peak) * rest


def check(schedule) -> None:
    for key in ("value", "start", "peak", "end", "warmup", "gamma"):
        v = getattr(schedule, key, 0.0)
        if v is not None and not isinstance(v, (int, float)):
            raise ValueError(f"margin.{key} must be a number, got {v!r}")
    milestones = getattr(schedule, "milestones", None)
    if milestones is not None and (isinstance(milestones, (str, bytes)) or not all(
            isinstance(m, (int, float)) and not isinstance(m, bool) for m in milestones)):
        raise ValueError(f"margin.milestones must be a list of numbers in [0, 1], got {milestones!r}")
    warm = getattr(schedule, "warmup", None)
    if warm is not None and not 0 < warm < 1:
        raise ValueError(f"margin.warmup must be in (0, 1), got {warm}")
