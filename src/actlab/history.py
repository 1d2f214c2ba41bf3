"""A callback that keeps per-epoch metrics for the run record (and carries them across resumes)."""

from __future__ import annotations

from collections.abc import Callable

import lightning as L

_PREFIXES = ("train/", "val/", "margin", "lr")


class History(L.Callback):
    """Appends {epoch, step, train/*, val/*, margin, lr} at each training epoch end; calls `on_epoch`."""

    def __init__(self, on_epoch: Callable[[list[dict]], None] | None = None):
        self.rows: list[dict] = []
        self.epochs_run = 0  # in this process (for seconds per epoch)
        self.on_epoch = on_epoch

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        row: dict = {"epoch": trainer.current_epoch, "step": trainer.global_step}
        for key, value in trainer.callback_metrics.items():
            if key.startswith(_PREFIXES) and not key.endswith("_step"):
                row[key.removesuffix("_epoch")] = float(value)
        if trainer.optimizers:
            row["lr"] = float(trainer.optimizers[0].param_groups[0]["lr"])
        self.rows.append(row)
        self.epochs_run += 1
        if self.on_epoch and trainer.is_global_zero:
            self.on_epoch(self.rows)

    def state_dict(self) -> dict:
        return {"rows": self.rows}

    def load_state_dict(self, state_dict: dict) -> None:
        self.rows = list(state_dict.get("rows", []))
