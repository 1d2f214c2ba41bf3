"""The classification LightningModule: cross-entropy, torchmetrics accuracy, optimizer + lr schedule.

Metric names `train/loss`, `val/acc`, `test/acc` (and `*/acc_top5` when classes > 10) are a
contract with configs, run records and reports.

After `trainer.test`, `test_predictions` holds the predicted class (argmax of the logits) of every test
example in test-set index order, as a small unsigned numpy array (uint8 up to 256 classes); the runner
saves it beside the record (run.records.PREDICTIONS) for prediction disagreement between seeds
(actlab.report.disagreement). Under DDP the ranks' shards are gathered and put back in index order.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from torchmetrics import MeanMetric
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
        self.topk = [("acc", 1)] + ([("acc_top5", 5)] if num_classes > 10 else [])
        self.metrics = nn.ModuleDict({f"{s}_{name}": MulticlassAccuracy(num_classes, top_k=k, average="micro")
                                      for s in ("val", "test") for name, k in self.topk})
        for s in ("val", "test"):
            self.metrics[f"{s}_loss"] = MeanMetric()
        self._test_preds: list[torch.Tensor] = []
        self.test_predictions: np.ndarray | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def _step(self, batch, batch_idx: int, stage: str) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = self.loss_fn(logits, y)
        n = y.shape[0]
        if stage == "train":
            # Plain tensors summed on the device (TrainTask.log_train); the batch-size-weighted epoch
            # mean of per-batch accuracy is the epoch's accuracy.
            self.log_train(batch_idx, n, loss, **{name: _hits(logits, y, k) for name, k in self.topk})
            return loss
        # Evaluation: torchmetrics states updated per batch, logged once per epoch (exact, synced under DDP).
        self.metrics[f"{stage}_loss"].update(loss, weight=n)
        for name, _ in self.topk:
            self.metrics[f"{stage}_{name}"].update(logits, y)
        if stage == "test":
            self._test_preds.append(logits.argmax(1).detach())  # on the device: no host sync per batch
        return loss

    def _log_metrics(self, stage: str) -> None:
        self.log(f"{stage}/loss", self.metrics[f"{stage}_loss"], prog_bar=True)
        for name, _ in self.topk:
            self.log(f"{stage}/{name}", self.metrics[f"{stage}_{name}"], prog_bar=name == "acc")

    def training_step(self, batch, batch_idx):
        return self._step(batch, batch_idx, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, batch_idx, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val")

    def on_test_epoch_start(self) -> None:
        self._test_preds, self.test_predictions = [], None

    def test_step(self, batch, batch_idx):
        self._step(batch, batch_idx, "test")

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test")
        preds = (torch.cat(self._test_preds) if self._test_preds
                 else torch.zeros(0, dtype=torch.long, device=self.device))
        self._test_preds = []
        if self.trainer.world_size > 1:
            preds = self._gather_in_order(preds)
        self.test_predictions = preds.cpu().numpy().astype(np.min_scalar_type(max(self.num_classes - 1, 0)))

    def _gather_in_order(self, preds: torch.Tensor) -> torch.Tensor:
        """Every rank's test predictions in test-set index order. Both evaluation loaders give rank r of
        `world` the examples r, r + world, r + 2 world, ... (TensorBatches: exactly those; torchvision's
        DataLoader under Lightning's DistributedSampler(shuffle=False): padded with the first examples to
        equal shards), so example j*world + r is rank r's j-th; padding beyond the test set is cut off."""
        world = self.trainer.world_size
        count = torch.tensor([preds.numel()], device=preds.device)
        counts = self.all_gather(count).reshape(world)
        width = int(counts.max())
        padded = torch.full((width,), -1, dtype=preds.dtype, device=preds.device)
        padded[: preds.numel()] = preds
        table = self.all_gather(padded).reshape(world, width)  # rank r's row: examples r, r + world, ...
        valid = torch.arange(width, device=preds.device)[None, :] < counts[:, None]
        n = int(counts.sum())
        dataset = getattr(self.trainer.test_dataloaders, "dataset", None)
        if dataset is not None and hasattr(dataset, "__len__"):  # DistributedSampler's padding
            n = min(n, len(dataset))
        order = table.T.reshape(-1)[valid.T.reshape(-1)]  # position j*world + r
        return order[:n]


def _hits(logits: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    """Fraction of the batch whose label is among the top-k logits (k=1: argmax, as torchmetrics)."""
    if k == 1:
        return (logits.argmax(1) == y).float().mean()
    return (logits.topk(k, dim=1).indices == y[:, None]).any(1).float().mean()
