"""One console line per training epoch, for runs without a progress bar (output to a file, a pipe, a job log):

    epoch 3/10  train/loss=0.5639  val/loss=0.5012  val/acc=0.8093  dead_fwd=3.1%  (12.4 s)
"""

from __future__ import annotations

import logging
import time

import lightning as L

from actlab.callbacks.history import epoch_metrics

log = logging.getLogger("actlab")
# Shown when present, in this order; rates as percentages.
KEYS = ("train/loss", "val/loss", "val/acc", "val/matthews", "val/pearson", "val/perplexity")
RATES = ("dead_fwd", "dead_grad")


class EpochLine(L.Callback):
    """Logs the epoch's main numbers through the `actlab` logger (console and train.log)."""

    def __init__(self) -> None:
        self._t0: float | None = None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        values = epoch_metrics(dict(trainer.callback_metrics), extra=RATES)
        parts = [f"{k}={values[k]:.4f}" for k in KEYS if k in values]
        parts += [f"{k}={100 * values[k]:.1f}%" for k in RATES if k in values]
        took = f"  ({time.perf_counter() - self._t0:.1f} s)" if self._t0 is not None else ""
        log.info("epoch %d/%s  %s%s", trainer.current_epoch + 1, trainer.max_epochs, "  ".join(parts), took)
