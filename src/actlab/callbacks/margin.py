"""MarginScheduler: the callback that sets every HeLU's margin from a schedule (actlab.margin) each step.

    actlab-train activation=helu activation.margin=0.1 margin=cosine     # margin decays to 0

With no HeLU in the model the callback does nothing and says so once.
"""

from __future__ import annotations

import logging
import math

import lightning as L

from actlab.activations import helu_modules
from actlab.margin import check
from actlab.steps import last_train_batch

log = logging.getLogger("actlab")


class MarginScheduler(L.Callback):
    """Sets every HeLU's margin from `schedule(progress)` before each training step; logs `margin`."""

    def __init__(self, schedule):
        check(schedule)
        self.schedule = schedule
        self._modules: list = []
        self._sum, self._n, self._set = 0.0, 0, None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.schedule is None:  # normalised away: the activation has no margin (runid.normalise)
            return
        self._modules = helu_modules(pl_module)
        if not self._modules:
            log.info("margin schedule %s: no HeLU in the model, nothing to schedule", type(self.schedule).__name__)

    def margin_at(self, trainer: L.Trainer) -> float | None:
        total = trainer.estimated_stepping_batches
        p = min(1.0, trainer.global_step / total) if total and math.isfinite(total) else 0.0
        return self.schedule(p)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._sum, self._n, self._set = 0.0, 0, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if not self._modules:
            return
        value = self.margin_at(trainer)
        if value is None:
            return
        if value != self._set:  # a constant schedule writes the margins once, not every step
            for m in self._modules:
                m.margin = value
            self._set = value
        self._sum, self._n = self._sum + value, self._n + 1

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # `margin` is the epoch's mean, logged once with the last batch: Lightning's self.log costs
        # ~1-2 ms per call, more than a small model's step (see TrainTask.log_train).
        if self._n and last_train_batch(trainer, batch_idx):
            pl_module.log("margin", self._sum / self._n, on_step=False, on_epoch=True, batch_size=1)
