"""GLUE fine-tuning: the sequence-classification LightningModule and GLUE's metrics, per task.

Metrics (torchmetrics, on the dev split(s); values in [0, 1] or [-1, 1], as the vision accuracies):
CoLA `mcc`; STS-B `pearson`, `spearman` (regression, 1 output, MSE loss); MRPC and QQP `acc`, `f1`
(positive class); the rest `acc`; MNLI `acc_m` and `acc_mm`. `score` follows the GLUE convention:
the mean of a task's metrics (MNLI: of matched and mismatched accuracy).

A model that collapsed to one output (constant predictions), or constant gold labels, scores 0:
- CoLA's MCC is 0 when its denominator is 0, as in GLUE's scorer (scikit-learn); torchmetrics' own
  special case gives +-0.0256 for a constant predictor on CoLA dev's label mix (and +-1 for constant labels).
- STS-B's Pearson and Spearman are 0 where GLUE's scorer (scipy) gives NaN. A collapsed regression
  model is a completed run with no skill, not a failed one: NaN would mark the run failed (its final
  metrics are not finite) and drop it from means, flattering the configuration that collapsed; 0 is
  what the MCC convention gives the same collapse on CoLA. Only exactly constant input is treated so;
  near-constant predictions get the ordinary coefficients.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torchmetrics import MetricCollection
from torchmetrics.classification import BinaryF1Score, BinaryMatthewsCorrCoef, MulticlassAccuracy
from torchmetrics.regression import PearsonCorrCoef, SpearmanCorrCoef

from actlab.data.glue import task_spec
from actlab.tasks.base import TrainTask


class GlueMCC(BinaryMatthewsCorrCoef):
    """Matthews correlation as GLUE's scorer (scikit-learn) computes it: 0 when its denominator is 0.

    The confusion matrix is torchmetrics' (state summed across DDP ranks); only the reduction differs.
    """

    def compute(self) -> torch.Tensor:
        (tn, fp), (fn, tp) = self.confmat.tolist()  # exact integer counts: no float rounding before the products
        denominator = (tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)
        value = (tp * tn - fp * fn) / math.sqrt(denominator) if denominator else 0.0
        return torch.tensor(value, dtype=torch.float32, device=self.confmat.device)


class _ZeroIfConstant:
    """Mixin for a correlation metric: 0 when the predictions or the targets (over all ranks) are constant.

    Tracks their minima and maxima as extra states, reduced across DDP ranks by min/max.
    """

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        for name, reduce, start in (("preds_min", "min", math.inf), ("preds_max", "max", -math.inf),
                                    ("target_min", "min", math.inf), ("target_max", "max", -math.inf)):
            self.add_state(name, default=torch.tensor(start), dist_reduce_fx=reduce)

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        super().update(preds, target)
        if preds.numel():
            self.preds_min = torch.minimum(self.preds_min, preds.detach().min().float())
            self.preds_max = torch.maximum(self.preds_max, preds.detach().max().float())
            self.target_min = torch.minimum(self.target_min, target.detach().min().float())
            self.target_max = torch.maximum(self.target_max, target.detach().max().float())

    def compute(self) -> torch.Tensor:
        if self.preds_min == self.preds_max or self.target_min == self.target_max:
            return torch.zeros((), device=self.preds_min.device)
        return super().compute()


class GluePearson(_ZeroIfConstant, PearsonCorrCoef):
    """Pearson's r (torchmetrics); 0 instead of NaN for constant predictions or targets."""


class GlueSpearman(_ZeroIfConstant, SpearmanCorrCoef):
    """Spearman's rho (torchmetrics); 0 for constant predictions or targets, as Pearson."""


def glue_metrics(task: str, **metric_kwargs: Any) -> MetricCollection:
    """The metrics GLUE defines for `task`, fed predicted labels (or scores for STS-B).

    `metric_kwargs` go to every torchmetrics Metric (e.g. its `dist_sync_fn`).
    """
    spec = task_spec(task)
    make = {
        "acc": lambda **kw: MulticlassAccuracy(max(spec.num_labels, 2), average="micro", **kw),
        "f1": BinaryF1Score,
        "mcc": GlueMCC,
        "pearson": GluePearson,
        "spearman": GlueSpearman,
    }
    return MetricCollection({name: make[name](**metric_kwargs) for name in spec.metrics})


def glue_score(values: dict[str, float]) -> float:
    """GLUE's per-task score: the plain mean of the task's metric values (all splits)."""
    return sum(values.values()) / len(values)


class GLUEClassifier(TrainTask):
    """Fine-tunes a Hugging Face sequence classifier on one GLUE task (batches are tokenizer dicts)."""

    kind = "glue"
    main_metric = "test/score"

    def __init__(self, model: nn.Module, glue_task: str, num_labels: int, optimizer: Callable,
                 scheduler: Callable | None = None, decay_norm_and_bias: bool = False):
        super().__init__(model, optimizer, scheduler, decay_norm_and_bias)
        self.glue_task = glue_task
        self.spec = task_spec(glue_task)
        if num_labels != self.spec.num_labels:
            raise ValueError(f"GLUE {glue_task} has {self.spec.num_labels} labels, not {num_labels}")
        self.regression = num_labels == 1
        self.suffixes = [suffix for suffix, _ in self.spec.eval_splits]
        # ModuleDict keys cannot be "train"/"val" attributes of nn.Module, hence the "_metrics" infix.
        self.metrics = nn.ModuleDict({f"{stage}_metrics{suffix}": glue_metrics(glue_task)
                                      for stage in ("val", "test") for suffix in self.suffixes})

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        return self.model(**inputs).logits

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.regression:
            return F.mse_loss(logits.squeeze(-1), labels.float())
        return F.cross_entropy(logits, labels)

    def _predictions(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.squeeze(-1) if self.regression else logits.argmax(-1)

    def training_step(self, batch, batch_idx):
        loss = self._loss(self(batch), batch["labels"])
        self.log_train(batch_idx, len(batch["labels"]), loss)
        return loss

    def _eval_step(self, batch, stage: str, dataloader_idx: int) -> None:
        suffix = self.suffixes[dataloader_idx]
        logits = self(batch)
        labels = batch["labels"]
        self.log(f"{stage}/loss{suffix}", self._loss(logits, labels), on_epoch=True, batch_size=len(labels),
                 add_dataloader_idx=False)
        target = labels.float() if self.regression else labels
        self.metrics[f"{stage}_metrics{suffix}"].update(self._predictions(logits), target)

    def validation_step(self, batch, batch_idx, dataloader_idx: int = 0):
        self._eval_step(batch, "val", dataloader_idx)

    def test_step(self, batch, batch_idx, dataloader_idx: int = 0):
        self._eval_step(batch, "test", dataloader_idx)

    def _log_epoch(self, stage: str) -> None:
        values = {}
        for suffix in self.suffixes:
            collection = self.metrics[f"{stage}_metrics{suffix}"]
            for name, value in collection.compute().items():
                values[f"{name}{suffix}"] = float(value)
            collection.reset()
        for name, value in values.items():
            self.log(f"{stage}/{name}", value, prog_bar=name.startswith(("acc", "mcc", "pearson")))
        self.log(f"{stage}/score", glue_score(values), prog_bar=True)

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")
