"""TrainTask: what every actlab LightningModule shares (optimizer with decay groups, per-step lr schedule,
RNG state in checkpoints, a finite-loss check). Subclasses set `kind` and `main_metric`."""

from __future__ import annotations

import random
from collections.abc import Callable

import lightning as L
import numpy as np
import torch
from torch import nn

from actlab.activations import is_activation
from actlab.steps import last_train_batch

_NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)


def param_groups(model: nn.Module, weight_decay: float, decay_norm_and_bias: bool = False) -> list[dict]:
    """Split parameters so weight decay skips norms, biases and activation parameters (PReLU slopes).

    Decay on those shrinks scales and slopes toward zero, which is not regularisation we want
    (He et al. 2015 train PReLU without decay); `decay_norm_and_bias=True` restores plain decay.
    """
    decay, no_decay = [], []
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            skip = isinstance(module, _NORMS) or is_activation(module) or name == "bias" or p.ndim <= 1
            (no_decay if skip and not decay_norm_and_bias else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class TrainTask(L.LightningModule):
    """What every actlab task shares: optimizer from a config partial with decay groups, a per-step lr
    schedule, and RNG state in checkpoints. Subclasses set `kind` (the data module kind they fit)."""

    kind: str = ""
    main_metric: str = "test/loss"  # what the CLI prints and a sweeper would optimise

    def __init__(self, model: nn.Module, optimizer: Callable, scheduler: Callable | None = None,
                 decay_norm_and_bias: bool = False):
        super().__init__()
        self.model = model
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.decay_norm_and_bias = decay_norm_and_bias
        self._train_sums: torch.Tensor | None = None

    def check_finite(self, loss: torch.Tensor) -> None:
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"loss is {loss.item()} at step {self.global_step}; lower optim.lr or try another margin"
            )

    # -- training metrics at a low per-step cost ---------------------------------------------------------
    # Lightning's self.log costs ~1-2 ms per call on a CPU (it walks its result objects each time): more
    # than a small model's whole step. So training batches only add to device-side sums (no host sync);
    # `train/<name>_step` is logged at the logger's cadence (log_every_n_steps) and the epoch means
    # `train/<name>` once, with the epoch's last batch: before any epoch-end hook (History reads them).

    def log_train(self, batch_idx: int, n: int, loss: torch.Tensor, **values: torch.Tensor) -> None:
        """Add this batch's loss (and values, e.g. acc) weighted by its size n; log as described above."""
        values = {"loss": loss.detach(), **{k: v.detach() for k, v in values.items()}}
        ones = loss.new_ones((), dtype=torch.float32)
        stacked = torch.stack([v.float() for v in values.values()] + [ones]) * n  # sums of values, then of n
        self._train_sums = stacked if batch_idx == 0 or self._train_sums is None else self._train_sums + stacked
        trainer = self.trainer
        on_cpu = loss.device.type == "cpu"
        # Lightning's own cadence test (LoggerConnector.should_update_logs)
        logging_step = (trainer.fit_loop.epoch_loop._batches_that_stepped + 1) % max(1, trainer.log_every_n_steps) == 0
        if on_cpu or logging_step:  # a finite check syncs with the device: on accelerators only when logging
            self.check_finite(loss)
        if logging_step:
            self.log("train/loss_step", values["loss"], on_step=True, on_epoch=False, prog_bar=True, batch_size=n)
        if last_train_batch(trainer, batch_idx):
            means = self._train_sums[:-1] / self._train_sums[-1]
            for i, name in enumerate(values):
                self.log(f"train/{name}", means[i], on_step=False, on_epoch=True, sync_dist=True,
                         prog_bar=name in ("loss", "acc"))
            self._train_sums = None

    def configure_optimizers(self):
        wd = self.optimizer_factory.keywords.get("weight_decay", 0.0)
        opt = self.optimizer_factory(param_groups(self.model, wd, self.decay_norm_and_bias))
        if self.scheduler_factory is None:
            return opt
        sched = self.scheduler_factory(opt, total_steps=int(self.trainer.estimated_stepping_batches))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # RNG state travels with checkpoints so a resumed run draws the same augmentations and dropout
    # masks as an uninterrupted one (Lightning restores model/optimizer/loops, not RNGs).
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        np_state = np.random.get_state()
        checkpoint["actlab_rng"] = {
            "torch": torch.get_rng_state(),
            "python": list(random.getstate()[1]),
            "python_pos": random.getstate()[2],
            "numpy": torch.from_numpy(np_state[1].astype(np.int64)),
            "numpy_pos": int(np_state[2]),
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        rng = checkpoint.get("actlab_rng")
        if not rng:
            return
        torch.set_rng_state(rng["torch"])
        random.setstate((3, tuple(rng["python"]), rng["python_pos"]))
        np.random.set_state(("MT19937", rng["numpy"].numpy().astype(np.uint32), rng["numpy_pos"], 0, 0.0))
