"""The classification LightningModule: cross-entropy, torchmetrics accuracy, optimizer + lr schedule.

Metric names `train/loss`, `val/acc`, `test/acc` (and `*/acc_top5` when classes > 10) are a
contract with configs, run records and reports.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from actlab.tasks.base import TrainTask


class Classifier(TrainTask):
    """Image classification with any backbone that maps a batch of images to logits."""

    kind = "image"
    main_metric = "test/acc"

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        optimizer: Callable,
        scheduler: Callable | None = None,
        label_smoothing: float = 0.0,
        decay_norm_and_bias: bool = False,
    ):
        super().__init__(model, optimizer, scheduler, decay_norm_and_bias)
        self.num_classes = num_classes
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        stages = ("train", "val", "test")
        # ModuleDict keys cannot be "train" (nn.Module.train), hence the "_acc" suffixes.
        self.metrics = nn.ModuleDict()
        for s in stages:
            self.metrics[f"{s}_acc"] = MulticlassAccuracy(num_classes, top_k=1, average="micro")
            if num_classes > 10:
                self.metrics[f"{s}_acc_top5"] = MulticlassAccuracy(num_classes, top_k=5, average="micro")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def _step(self, batch, stage: str) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = self.loss_fn(logits, y)
        if stage == "train":
            self.check_finite(loss)
        n = y.shape[0]
        self.log(f"{stage}/loss", loss, on_step=stage == "train", on_epoch=True, prog_bar=True, batch_size=n)
        for name in ("acc", "acc_top5"):
            metric = self.metrics[f"{stage}_{name}"] if f"{stage}_{name}" in self.metrics else None
            if metric is not None:
                metric(logits, y)
                self.log(f"{stage}/{name}", metric, on_step=False, on_epoch=True, prog_bar=name == "acc")
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")
