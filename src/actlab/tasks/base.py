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

    def check_finite(self, loss: torch.Tensor) -> None:
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"loss is {loss.item()} at step {self.global_step}; lower optim.lr or try another margin"
            )

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
