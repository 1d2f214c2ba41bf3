"""GradualPruning: magnitude pruning during training on Zhu & Gupta's (2017) cubic schedule.

    actlab-train callbacks=prune callbacks.prune.target_sparsity=0.9 callbacks.prune.end_epoch=7

Sparsity rises from 0 at `start_epoch` to `target_sparsity` at `end_epoch` (both counted in epochs, turned
into optimizer steps with the trainer's batches per epoch) as s_t = s_f (1 - (1 - p)^3), p = (t - t0) / (t1 - t0),
and stays there: the steepest pruning comes early, while the network can still recover. Every
`every_n_steps` steps in [t0, t1] (and at t1 itself), before the step's forward, each pruned weight gets a
mask keeping exactly the round((1 - s_t) n) largest |w| of its layer (scope "layer", Zhu & Gupta's), or of
all pruned weights together (scope "global"). Masks are computed from the masked weights, so a pruned
weight never comes back.

What is pruned: the `weight` of every nn.Linear and nn.Conv{1,2,3}d of the task's model (`module_attr`),
except modules whose path starts with a prefix in `exclude` ("head"). The masks are
torch.nn.utils.prune's: `weight_orig` (the parameter the optimizer keeps) and a `weight_mask` buffer, put
in place (all ones) in `setup`, before Lightning restores a checkpoint: checkpoints carry the masks and
a resumed run continues from them. The measured sparsity (zero share of the pruned weights' masks) is
logged once per epoch as `train/sparsity`, with the epoch's last batch, so history.jsonl has it beside the
epoch's dead-neuron rates.
"""

from __future__ import annotations

import logging
import math

import lightning as L
import torch
from torch import nn
from torch.nn.utils import prune

from actlab.steps import last_train_batch

log = logging.getLogger("actlab")

PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
SCOPES = ("layer", "global")


def cubic_sparsity(step: int, start: int, end: int, target: float) -> float:
    """Zhu & Gupta's s_t = target (1 - (1 - p)^3), p = (step - start) / (end - start) clipped to [0, 1]."""
    if step < start:
        return 0.0
    if step >= end:
        return float(target)
    p = (step - start) / (end - start)
    return float(target) * (1.0 - (1.0 - p) ** 3)


def top_magnitude_mask(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    """A 0/1 mask of weight's shape keeping exactly the n - round(sparsity n) largest |w| (ties broken by topk)."""
    n = weight.numel()
    keep = n - int(round(sparsity * n))
    mask = torch.zeros(n, dtype=weight.dtype, device=weight.device)
    if keep > 0:
        mask[torch.topk(weight.detach().abs().reshape(-1), keep, sorted=False).indices] = 1
    return mask.view_as(weight)


class GradualPruning(L.Callback):
    """Gradual magnitude pruning to `target_sparsity` between `start_epoch` and `end_epoch`; see the module doc."""

    def __init__(self, target_sparsity: float = 0.9, start_epoch: int = 1, end_epoch: int = 7,
                 every_n_steps: int = 10, scope: str = "layer", exclude: list[str] | tuple[str, ...] = (),
                 module_attr: str | None = "model"):
        bad = [what for what, ok in (
            ("0 <= target_sparsity < 1", 0.0 <= target_sparsity < 1.0),
            ("0 <= start_epoch < end_epoch", 0 <= start_epoch < end_epoch),
            ("every_n_steps >= 1", every_n_steps >= 1),
            (f"scope in {SCOPES}", scope in SCOPES)) if not ok]
        if bad:
            raise ValueError(f"callbacks.prune needs {', '.join(bad)}")
        self.target, self.start_epoch, self.end_epoch = float(target_sparsity), int(start_epoch), int(end_epoch)
        self.every, self.scope, self.exclude = int(every_n_steps), scope, tuple(exclude)
        self.module_attr = module_attr
        self.layers: list[tuple[str, nn.Module]] = []

    # -- which weights ------------------------------------------------------------------------------
    def _root(self, pl_module: L.LightningModule) -> nn.Module:
        root = getattr(pl_module, self.module_attr, None) if self.module_attr else None
        return root if isinstance(root, nn.Module) else pl_module

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Masks of ones on every prunable weight (once): the state_dict then has weight_orig/weight_mask,
        as the checkpoints of this run do, so resuming loads them."""
        if self.layers:
            return
        for path, m in self._root(pl_module).named_modules():
            if not isinstance(m, PRUNABLE) or (self.exclude and path.startswith(self.exclude)):
                continue
            if not hasattr(m, "weight_mask"):
                prune.identity(m, "weight")
            self.layers.append((path, m))
        if not self.layers:
            log.warning("GradualPruning: no Linear/Conv weights to prune in %s", type(self._root(pl_module)).__name__)

    # -- the schedule ---------------------------------------------------------------------------------
    def steps(self, trainer: L.Trainer) -> tuple[int, int]:
        """(first, last) optimizer step of the ramp: start_epoch and end_epoch in steps."""
        per_epoch = max(1, math.ceil(trainer.num_training_batches / trainer.accumulate_grad_batches))
        return self.start_epoch * per_epoch, self.end_epoch * per_epoch

    def due(self, step: int, start: int, end: int) -> bool:
        return start <= step <= end and ((step - start) % self.every == 0 or step == end)

    @torch.no_grad()
    def apply(self, sparsity: float) -> None:
        """Set the masks to `sparsity` (per layer or globally) from the current masked weights."""
        if not self.layers:
            return
        weights = [m.weight_orig * m.weight_mask for _, m in self.layers]
        if self.scope == "layer":
            masks = [top_magnitude_mask(w, sparsity) for w in weights]
        else:
            flat = top_magnitude_mask(torch.cat([w.reshape(-1) for w in weights]), sparsity)
            masks = list(torch.split(flat, [w.numel() for w in weights]))
        for (_, m), w, mask in zip(self.layers, weights, masks):
            m.weight_mask.copy_(mask.view_as(w))
            m.weight = m.weight_orig * m.weight_mask  # what forward reads until the pre-hook runs again

    def sparsity(self) -> float:
        """The measured zero share of all pruned weights' masks."""
        total = sum(m.weight_mask.numel() for _, m in self.layers)
        kept = sum(float(m.weight_mask.sum()) for _, m in self.layers)
        return 1.0 - kept / total if total else 0.0

    # -- hooks ---------------------------------------------------------------------------------------
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        start, end = self.steps(trainer)
        step = trainer.global_step
        if self.target > 0 and self.due(step, start, end):
            self.apply(cubic_sparsity(step, start, end, self.target))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if last_train_batch(trainer, batch_idx):
            pl_module.log("train/sparsity", self.sparsity(), on_step=False, on_epoch=True, batch_size=1)
