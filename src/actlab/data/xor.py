"""XORData: the four XOR points as one full batch, repeated `steps_per_epoch` times per training epoch.

    dm = XORData(steps_per_epoch=500)        # inputs {0,1}^2, label x1 xor x2 (float, for one logit)

Training is full-batch gradient descent: every step sees all four points. An "epoch" is just
`steps_per_epoch` such steps, so a run of thousands of steps has a few epochs (Lightning's per-epoch
work: validation, history, checkpoint) instead of thousands. Validation and test are the same four
points once. `inputs="signed"` uses {-1, +1}^2 instead of {0, 1}^2 (the labels stay 0/1).
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

INPUTS = ("binary", "signed")


def xor_points(inputs: str = "binary") -> tuple[torch.Tensor, torch.Tensor]:
    """(x (4, 2) float32, y (4,) float32) in the order (0,0), (0,1), (1,0), (1,1)."""
    x = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    y = torch.tensor([0.0, 1.0, 1.0, 0.0])
    return (x * 2 - 1 if inputs == "signed" else x), y


class RepeatBatch:
    """An iterable of `times` copies of one batch (what Lightning takes as a dataloader)."""

    def __init__(self, batch: tuple[torch.Tensor, torch.Tensor], times: int):
        self.batch, self.times = batch, times

    def __len__(self) -> int:
        return self.times

    def __iter__(self):
        for _ in range(self.times):
            yield self.batch


class XORData(L.LightningDataModule):
    """The XOR problem for XOREnsemble (model_kind "xor") and the XOR task (kind "xor")."""

    kind = "xor"
    model_kind = "xor"

    def __init__(self, steps_per_epoch: int = 500, inputs: str = "binary"):
        super().__init__()
        if not isinstance(steps_per_epoch, int) or isinstance(steps_per_epoch, bool) or steps_per_epoch < 1:
            raise ValueError(f"dataset.steps_per_epoch must be a positive integer, got {steps_per_epoch!r}")
        if inputs not in INPUTS:
            raise ValueError(f"dataset.inputs must be one of {'|'.join(INPUTS)}, got {inputs!r}")
        self.steps_per_epoch, self.inputs = steps_per_epoch, inputs
        self.points = xor_points(inputs)

    def model_kwargs(self) -> dict[str, Any]:
        return {"in_features": 2}

    def task_kwargs(self) -> dict[str, Any]:
        return {}

    def example_input(self) -> torch.Tensor:
        return self.points[0]

    def train_dataloader(self) -> RepeatBatch:
        return RepeatBatch(self.points, self.steps_per_epoch)

    def val_dataloader(self) -> RepeatBatch:
        return RepeatBatch(self.points, 1)

    def test_dataloader(self) -> RepeatBatch:
        return RepeatBatch(self.points, 1)
