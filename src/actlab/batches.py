"""Batches as the models here take them: an image tensor, an (x, y) tuple, or a dict of HF model kwargs.

Moving them, feeding them to a model, and slicing the first examples off a loader (a probe set)
work the same for all three, so the monitor and the training entry share these.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn


def device_of(model: nn.Module) -> torch.device:
    """Where the model lives (its first parameter or buffer; CPU for a stateless model)."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor of a tensor / tuple / list / dict batch to `device`."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def attention_mask(batch: Any) -> torch.Tensor | None:
    """The (N, L) bool attention mask of a dict batch, else None."""
    if isinstance(batch, dict) and isinstance(batch.get("attention_mask"), torch.Tensor):
        return batch["attention_mask"].bool()
    return None


def forward(model: nn.Module, batch: Any) -> Any:
    """Run `model` on a batch: a tensor as is, the first element of a tuple, a dict as keyword arguments
    (keys the model's forward does not take, e.g. "idx", are dropped)."""
    if isinstance(batch, dict):
        params = inspect.signature(model.forward).parameters
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            batch = {k: v for k, v in batch.items() if k in params}
        return model(**batch)
    if isinstance(batch, (list, tuple)):
        return model(batch[0])
    return model(batch)


def batch_len(batch: Any) -> int:
    """Number of examples in a batch (the first dim of its first tensor; a list's length otherwise)."""
    if isinstance(batch, torch.Tensor):
        return batch.shape[0] if batch.dim() else 1
    values = list(batch.values()) if isinstance(batch, dict) else batch
    for v in values:
        if isinstance(v, (torch.Tensor, dict, list, tuple)):
            return batch_len(v)
    return len(values)


def take(batch: Any, k: int) -> Any:
    """The first k examples of a batch (every tensor sliced on its first dim)."""
    if isinstance(batch, torch.Tensor):
        return batch[:k] if batch.dim() else batch
    if isinstance(batch, dict):
        return {key: take(v, k) for key, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        if batch and not isinstance(batch[0], (torch.Tensor, dict, list, tuple)):
            return batch[:k]  # a list of examples (e.g. strings)
        return type(batch)(take(v, k) for v in batch)
    return batch


def first_examples(loader: Iterable, k: int) -> list:
    """The first k examples of a data loader as a list of batches: a probe set fixed across epochs."""
    probe, have = [], 0
    for batch in loader:
        n = batch_len(batch)
        probe.append(take(batch, k - have) if have + n > k else batch)
        have += min(n, k - have)
        if have >= k:
            break
    return probe
