"""A model's layers beyond its activations: mean |w| (w_abs), weight-gradient norms (grad_norm), and the
rank of the features its last Linear layer reads (eff_rank, approx_rank). Definitions: actlab.monitor."""

from __future__ import annotations

import torch
from torch import nn

from actlab import dormancy
from actlab.site_stats import drop_padding

WEIGHT_LAYERS = (nn.Linear, nn.modules.conv._ConvNd)  # the layers of w_abs and grad_norm


def weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(path, module) of every nn.Linear / nn.ConvNd with a weight tensor (each module once)."""
    return [(p or type(m).__name__, m) for p, m in model.named_modules()
            if isinstance(m, WEIGHT_LAYERS) and isinstance(getattr(m, "weight", None), torch.Tensor)]


def weight_abs(model: nn.Module, prefix: str = "") -> dict[str, float]:
    """w_abs/<layer> = mean |w| of each weight layer; w_abs = mean |w| over all their weights."""
    layers = weight_layers(model)
    if not layers:
        return {}
    dev = layers[0][1].weight.device
    sums = torch.stack([m.weight.detach().abs().sum().float().to(dev) for _, m in layers])  # one sync below
    numels = [m.weight.numel() for _, m in layers]
    vals = sums.tolist()
    out = {f"{prefix}w_abs/{p}": v / n if n else 0.0 for (p, _), v, n in zip(layers, vals, numels)}
    out[f"{prefix}w_abs"] = sum(vals) / max(sum(numels), 1)
    return out


class GradNorms:
    """Per-layer weight-gradient L2 norms of the weight layers, summed on the device over `accumulate()`
    calls (one per optimizer step, with no host sync) and averaged by `rates()`; see the module docstring."""

    def __init__(self, model: nn.Module):
        self.layers = [(p, m) for p, m in weight_layers(model) if m.weight.requires_grad]
        self.reset()

    def reset(self) -> None:
        self.sum: torch.Tensor | None = None  # per-layer norms, then the global norm
        self.steps: torch.Tensor | None = None  # steps with a finite global norm

    def accumulate(self) -> None:
        if not self.layers:
            return
        norms = dormancy.grad_norms([m.weight.grad for _, m in self.layers])
        ok = torch.isfinite(norms[-1])  # an AMP step skipped for inf / NaN gradients is not counted
        norms = torch.where(ok, norms, torch.zeros_like(norms))
        if self.sum is None:
            self.sum, self.steps = norms, ok.to(torch.int64)
        else:
            self.sum += norms
            self.steps += ok

    def rates(self, prefix: str = "") -> dict[str, float]:
        if self.sum is None:
            return {}
        steps = int(self.steps)
        vals = (self.sum / steps).tolist() if steps else [float("nan")] * self.sum.numel()
        out = {f"{prefix}grad_norm/{p}": v for (p, _), v in zip(self.layers, vals)}
        out[f"{prefix}grad_norm"] = vals[-1]
        return out


class FeatureGram:
    """Streams F^T F of the inputs of the model's last nn.Linear (float64 where the device has it), one row
    per example (per real token of an (N, L, D) input); `ranks()` gives eff_rank and approx_rank."""

    def __init__(self, model: nn.Module):
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        self.module = linears[-1] if linears else None
        self.gram: torch.Tensor | None = None
        self.mask: torch.Tensor | None = None
        self._handle = None

    def __enter__(self) -> FeatureGram:
        if self.module is not None:
            self._handle = self.module.register_forward_pre_hook(self._hook)
        return self

    def __exit__(self, *exc) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def _hook(self, module, args) -> None:
        if not args:
            return
        x = drop_padding(args[0].detach(), self.mask)
        x = x.reshape(-1, x.shape[-1])
        x = x.to(torch.float32 if x.device.type == "mps" else torch.float64)  # MPS has no float64
        g = x.T @ x
        self.gram = g if self.gram is None else self.gram.add_(g)

    def ranks(self, prefix: str = "") -> dict[str, float]:
        if self.gram is None:
            return {}
        sv = dormancy.singular_values_from_gram(self.gram)
        return {f"{prefix}eff_rank": dormancy.effective_rank(sv),
                f"{prefix}approx_rank": float(dormancy.approx_rank(sv))}
