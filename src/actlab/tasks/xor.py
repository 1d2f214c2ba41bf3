"""XORTask: trains an XOREnsemble (S independent 2-2-1 nets) on XOR; metrics are shares of nets.

The loss is the SUM over nets of each net's mean binary cross-entropy (one logit per net), so every net
gets exactly the gradient it would get trained alone. Metrics (each a share of the S nets):

| key              | what                                                                      |
|------------------|---------------------------------------------------------------------------|
| `<stage>/solved` | nets that classify all four points right (logit > 0 for label 1, < 0 for 0) |
| `<stage>/acc`    | mean over nets of the share of the four points classified right           |
| `<stage>/loss`   | mean over nets of the net's mean BCE (`train/loss` too)                    |
| `<stage>/dead`   | nets with at least one forward-dead hidden unit (|f(z)| <= eps on all 4 points) |

`export` (called by the runner after testing) writes `xor_nets.json`: per-net outcomes of the test pass
(solved, acc, loss, dead hidden units) and the activation's per-net parameters (PReLU's slope).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from actlab import atomic
from actlab.tasks.base import TrainTask

NETS_FILE = "xor_nets.json"


class XORTask(TrainTask):
    kind = "xor"
    main_metric = "test/solved"

    def __init__(self, model: nn.Module, optimizer: Callable, scheduler: Callable | None = None,
                 decay_norm_and_bias: bool = False, dead_eps: float = 1e-6):
        super().__init__(model, optimizer, scheduler, decay_norm_and_bias)
        self.dead_eps = float(dead_eps)
        self.outcomes: dict[str, torch.Tensor] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    @staticmethod
    def net_losses(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """(S,) each net's mean BCE over the batch; logits (S, N), y (N,)."""
        return F.binary_cross_entropy_with_logits(logits, y.expand_as(logits), reduction="none").mean(1)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        losses = self.net_losses(self(x), y)
        self.log_train(batch_idx, x.shape[0], losses.mean())
        return losses.sum()

    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-net outcomes on (x, y): solved, acc, loss (S,) and dead_units (S,) (hidden units with
        |f(z)| <= dead_eps on every input)."""
        hidden = self.model.hidden_output(x)
        logits = self.model(x)
        correct = torch.where(y > 0.5, logits > 0, logits < 0)  # a logit of exactly 0 is wrong for either label
        dead = (hidden.abs() <= self.dead_eps).all(dim=1)
        return {"solved": correct.all(1), "acc": correct.float().mean(1), "loss": self.net_losses(logits, y),
                "dead_units": dead.sum(1)}

    def _eval(self, batch, stage: str) -> None:
        o = self.evaluate(*batch)
        self.log_dict({f"{stage}/solved": o["solved"].float().mean(), f"{stage}/acc": o["acc"].mean(),
                       f"{stage}/loss": o["loss"].mean(), f"{stage}/dead": (o["dead_units"] > 0).float().mean()},
                      prog_bar=False, batch_size=1)
        if stage == "test":
            self.outcomes = {k: v.detach().cpu() for k, v in o.items()}

    def validation_step(self, batch, batch_idx: int) -> None:
        self._eval(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._eval(batch, "test")

    def export(self, run_dir: Path, datamodule=None, activation: dict | None = None) -> dict[str, str]:
        """Write the per-net outcomes of the test pass to `<run_dir>/xor_nets.json`; the record's `files` entry."""
        if self.outcomes is None:
            return {}
        o = self.outcomes
        data = {"nets": int(o["solved"].numel()), "solved": o["solved"].int().tolist(), "acc": o["acc"].tolist(),
                "loss": o["loss"].tolist(), "dead_units": o["dead_units"].tolist(),
                "act_params": {name: p.detach().cpu().reshape(p.shape[0], -1).tolist()
                               for name, p in self.model.act.named_parameters()}}
        atomic.write_json(Path(run_dir) / NETS_FILE, data)
        return {"xor_nets": NETS_FILE}
