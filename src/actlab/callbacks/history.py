"""A callback that keeps per-epoch metrics for the run's history (and carries them across resumes).

Each row also says when its epoch ended (TIME_KEYS): "time", unix seconds at the epoch's end, and
"epoch_s", the wall-clock seconds of that epoch in the process that ran it (`actlab status` estimates
remaining time from them). Rows restored from a checkpoint keep the times of the process that wrote them.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import lightning as L

# Wall-clock fields of a history row: not metrics (two identical runs differ only in these).
TIME_KEYS = ("time", "epoch_s")


def epoch_metrics(values: dict, extra: tuple[str, ...] = ()) -> dict:
    """Epoch-level `train/`, `val/`, `test/` metrics (and keys starting with `extra`) as floats: `*_step`
    values dropped, `_epoch` suffixes removed. Per-layer dead rates also carry "/" but belong to the
    monitor. The one filter behind a record's final metrics and its per-epoch history rows."""
    out = {}
    for k, v in values.items():
        if k.startswith(("train/", "val/", "test/", *extra)) and not k.endswith("_step"):
            out[k.removesuffix("_epoch")] = float(v)
    return out


class History(L.Callback):
    """Appends {epoch, step, train/*, val/*, margin, lr, time, epoch_s} at each training epoch end; calls
    `on_epoch(rows)` (the runner writes them to history.jsonl). Place it after the monitor, whose epoch-end
    rates it is written with."""

    def __init__(self, on_epoch: Callable[[list[dict]], None] | None = None):
        self.rows: list[dict] = []
        self.epochs_run = 0  # in this process (for seconds per epoch)
        self.on_epoch = on_epoch
        self._t_epoch: float | None = None  # perf_counter at the start of the epoch being timed

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # An epoch lasts from the previous epoch's end (checkpointing in between included) or, for the first
        # epoch of this process, from its start (not the sanity check nor the setup before it).
        if self._t_epoch is None:
            self._t_epoch = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        end = time.perf_counter()
        row: dict = {"epoch": trainer.current_epoch, "step": trainer.global_step}
        row.update(epoch_metrics({k: v for k, v in trainer.callback_metrics.items() if not k.startswith("test/")},
                                 extra=("margin", "lr")))
        if trainer.optimizers:
            row["lr"] = float(trainer.optimizers[0].param_groups[0]["lr"])
        row["time"] = round(time.time(), 3)
        row["epoch_s"] = round(end - (self._t_epoch if self._t_epoch is not None else end), 4)
        self._t_epoch = end
        self.rows.append(row)
        self.epochs_run += 1
        if self.on_epoch and trainer.is_global_zero:
            self.on_epoch(self.rows)

    def state_dict(self) -> dict:
        return {"rows": self.rows}

    def load_state_dict(self, state_dict: dict) -> None:
        self.rows = list(state_dict.get("rows", []))
