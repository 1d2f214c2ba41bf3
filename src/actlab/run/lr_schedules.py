"""Learning-rate schedules over optimizer steps (cosine, linear, step, one-cycle), built from config partials.

Each function takes (optimizer, total_steps) plus its knobs and returns a torch LR scheduler that
is stepped every optimizer step, so schedules mean the same thing whatever the epoch count.
"""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR


def cosine(optimizer: Optimizer, total_steps: int, warmup: float = 0.0, min_factor: float = 0.0) -> LRScheduler:
    """Linear warm-up over `warmup` (fraction of steps), then cosine decay to `min_factor` x lr."""
    warm = int(warmup * total_steps)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        p = (step - warm) / max(1, total_steps - warm)
        return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * min(1.0, p)))

    return LambdaLR(optimizer, factor)


def step(optimizer: Optimizer, total_steps: int, milestones=(0.5, 0.75), gamma: float = 0.1) -> LRScheduler:
    """lr x gamma at each milestone, milestones given as fractions of training."""
    marks = [int(m * total_steps) for m in milestones]
    return LambdaLR(optimizer, lambda s: gamma ** sum(s >= m for m in marks))


def linear(optimizer: Optimizer, total_steps: int, warmup: float = 0.1) -> LRScheduler:
    """Linear warm-up over `warmup` (fraction of steps), then linear decay to 0: BERT's fine-tuning schedule."""
    warm = int(warmup * total_steps)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (total_steps - step) / max(1, total_steps - warm))

    return LambdaLR(optimizer, factor)


def onecycle(optimizer: Optimizer, total_steps: int, pct_start: float = 0.3, anneal: str = "cos") -> LRScheduler:
    """torch's OneCycleLR peaking at each group's configured lr; `anneal` "cos" or "linear" (triangular)."""
    if anneal not in ("cos", "linear"):
        raise ValueError(f"scheduler.anneal must be cos or linear, got {anneal!r}")
    max_lr = [g["lr"] for g in optimizer.param_groups]
    return OneCycleLR(optimizer, max_lr=max_lr, total_steps=max(1, total_steps), pct_start=pct_start,
                      anneal_strategy=anneal)
