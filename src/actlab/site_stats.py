"""Per-call-site accumulators of the dead-neuron monitor (definitions and costs: actlab.monitor).

A `Site` folds each call's pre-activations into running per-unit maxima and per-element counts, so
no activation copy is ever kept; `actlab.monitor.UnitStats` hooks one Site per activation module.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from actlab.activations import HeLU, PReLU, derivative
from actlab.hist_bins import HistBins

Z_ONLY = ("relu", "helu")  # kinds whose statistics all follow from z (a pre-hook suffices)


def _unit_amax(t: torch.Tensor) -> torch.Tensor:
    """Per-unit max over all other dims: channels of NCHW, last dim otherwise."""
    if t.dim() == 4:
        return t.amax(dim=(2, 3)).amax(0)  # inner contiguous reduction first: ~2x faster than (0, 2, 3)
    if t.dim() <= 1:
        return t.reshape(-1)
    return t.reshape(-1, t.shape[-1]).amax(0)


def _unit_sum(t: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Per-unit sum over all other dims (the layout of _unit_amax), accumulated in `dtype`."""
    if t.dim() == 4:
        return t.sum(dim=(2, 3), dtype=dtype).sum(0)
    if t.dim() <= 1:
        return t.reshape(-1).to(dtype)
    return t.reshape(-1, t.shape[-1]).sum(0, dtype=dtype)


def _kind(mod: nn.Module, eps: float) -> str:
    """Which closed form gives f' for this module; "generic" means autograd. Closed forms assume eps < 1."""
    if eps >= 1:
        return "generic"
    if isinstance(mod, HeLU):
        return "helu"
    if type(mod) is nn.ReLU:
        return "relu"
    if isinstance(mod, nn.ELU) and mod.alpha > 0:
        return "elu"
    if isinstance(mod, nn.LeakyReLU):
        return "leaky"
    if isinstance(mod, (nn.PReLU, PReLU)):
        return "prelu"
    return "generic"


class Site:
    """Running per-unit and per-element accumulators of one call site (all tensors on the model's device).

    Per unit: `fwd` = running max of |f(z)| (ReLU/HeLU: of z), alive when > eps; `grad` = running max of
    a score alive when > grad_thr (ReLU: the same tensor as fwd, thr 0; HeLU: max(z + margin), thr 0;
    ELU: max z, thr log(eps / alpha); generic: max |f'(z)|, thr eps). Thresholds apply at read time, so
    a call costs one reduction and one or two in-place maxima.
    With unit_sums (probe measurements only, never in training): `abs_sum` = per-unit running sum of
    |f(z)|, `active` = per-unit count of elements with f(z) != 0, `unit_n` = elements per unit seen.
    """

    def __init__(self, path: str, module: nn.Module, eps: float, hist: HistBins | None,
                 count_every: int = 1, unit_sums: bool = False):
        self.path, self.module, self.eps, self.hist_spec = path, module, eps, hist
        self.count_every, self.unit_sums = count_every, unit_sums
        self.kind = _kind(module, eps)
        self.inplace = bool(getattr(module, "inplace", False))
        self.grad_thr = self.eps if self.kind == "generic" else 0.0
        if self.kind == "elu":  # f' = 1 for z > 0, alpha e^z below: |f'| > eps <=> z > min(0, log(eps/alpha))
            self.grad_thr = min(0.0, math.log(eps / module.alpha)) if eps > 0 else -math.inf
        self.stash: torch.Tensor | None = None  # z of an in-place module, between pre- and post-hook
        self.calls = 0  # calls since the last shared-module check
        self.reset()

    def reset(self) -> None:
        self.fwd: torch.Tensor | None = None
        self.grad: torch.Tensor | None = None
        self.nonzero: torch.Tensor | int = 0  # counted elements with f(z) != 0
        self.band: torch.Tensor | int = 0  # HeLU: counted elements with -m < z <= 0
        self.n = 0  # counted elements (a Python int: shapes are known without a device sync)
        self.seen = 0  # calls since reset: element counts run on every count_every-th one
        self.hist: torch.Tensor | None = None
        self.abs_sum: torch.Tensor | None = None  # unit_sums only: per-unit sum of |f(z)|
        self.active: torch.Tensor | None = None  # unit_sums only: per-unit count of f(z) != 0
        self.unit_n = 0  # unit_sums only: elements per unit so far

    def dead(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(forward-dead, gradient-dead) unit counts as 0-d tensors."""
        return (self.fwd <= self.eps).sum(), (self.grad <= self.grad_thr).sum()

    # -- hooks -----------------------------------------------------------------------------------
    def pre(self, z: torch.Tensor, mask: torch.Tensor | None) -> None:
        self.calls += 1
        if self.kind in Z_ONLY:
            self._from_z(drop_padding(z.detach(), mask))
        elif self.inplace:  # the module will overwrite z: keep it for the post-hook of this same call
            self.stash = z.detach().clone()

    def post(self, z: torch.Tensor, out: torch.Tensor, mask: torch.Tensor | None) -> None:
        if self.kind in Z_ONLY:
            return
        if self.stash is not None:
            z, self.stash = self.stash, None
        self._from_z_out(drop_padding(z.detach(), mask), drop_padding(out.detach(), mask))

    # -- per-call work ----------------------------------------------------------------------------
    @staticmethod
    def _fold(acc: torch.Tensor | None, score: torch.Tensor, path: str) -> torch.Tensor:
        if acc is None:
            return score.float().clone()
        if score.shape != acc.shape:
            raise ValueError(f"dead-neuron monitor: '{path}' saw {score.numel()} units, earlier "
                             f"{acc.numel()}; a call site must keep its width")
        return torch.fmax(acc, score, out=acc)  # fmax: a NaN never marks a unit alive

    def _counting(self) -> bool:
        self.seen += 1
        return (self.seen - 1) % self.count_every == 0

    def _from_z(self, z: torch.Tensor) -> None:
        """ReLU / HeLU: f(z) != 0 <=> z > 0 and f'(z) != 0 <=> z > -m, so max z per unit decides both."""
        mx = _unit_amax(z)
        self.fwd = self._fold(self.fwd, mx, self.path)
        if self.kind == "helu":
            m = self.module.margin_  # a 0-d tensor: a margin schedule may change it between calls
            self.grad = self._fold(self.grad, mx + m, self.path)
        else:
            self.grad = self.fwd
        # f(z) = max(z, 0) for ReLU and HeLU alike
        act = self._add_unit_sums(z.clamp(min=0), z > 0) if self.unit_sums else None
        if self._counting():
            pos = act.sum() if act is not None else torch.count_nonzero(z > 0)
            if self.kind == "helu":  # clamp: a negative margin has an empty band
                self.band = self.band + (torch.count_nonzero(z > -m) - pos).clamp_(min=0)
            self.nonzero = self.nonzero + pos
            self.n += z.numel()
        self._histogram(z)

    def _from_z_out(self, z: torch.Tensor, out: torch.Tensor) -> None:
        self.fwd = self._fold(self.fwd, _unit_amax(out.abs()), self.path)
        if self.kind == "elu":
            grad = _unit_amax(z)
        elif self.kind in ("leaky", "prelu") and (slope := self._slope_alive(z)) is not None:
            mx = _unit_amax(z)  # where the slope is dead, only z > 0 passes gradient
            if isinstance(slope, bool):
                grad = torch.full_like(mx, math.inf) if slope else mx
            else:
                grad = torch.where(slope, math.inf, mx)
        else:  # generic, or an nn.PReLU whose slopes are not on the unit axis (its grad_thr is 0, not eps)
            grad = _unit_amax(derivative(self.module, z).abs()) - (self.eps - self.grad_thr)
        self.grad = self._fold(self.grad, grad, self.path)
        act = self._add_unit_sums(out.abs(), out != 0) if self.unit_sums else None
        if self._counting():  # != 0 first: ~20x faster on floats
            self.nonzero = self.nonzero + (act.sum() if act is not None else torch.count_nonzero(out != 0))
            self.n += out.numel()
        self._histogram(z)

    def _add_unit_sums(self, habs: torch.Tensor, nonzero: torch.Tensor) -> torch.Tensor:
        """Fold per-unit sum |f(z)| and count f(z) != 0 into the accumulators; returns this call's counts."""
        s, act = _unit_sum(habs), _unit_sum(nonzero, torch.int64)  # int64: exact counts
        if self.abs_sum is None:
            self.abs_sum, self.active = s, act.clone()
        else:
            if s.shape != self.abs_sum.shape:
                raise ValueError(f"dead-neuron monitor: '{self.path}' saw {s.numel()} units, earlier "
                                 f"{self.abs_sum.numel()}; a call site must keep its width")
            self.abs_sum += s
            self.active += act
        self.unit_n += habs.numel() // max(s.numel(), 1)
        return act

    def _slope_alive(self, z: torch.Tensor) -> torch.Tensor | bool | None:
        """|negative slope| > eps, per unit or shared; None when the slope layout is not the unit layout."""
        m = self.module
        if isinstance(m, nn.LeakyReLU):
            return abs(m.negative_slope) > self.eps
        w = m.weight.detach().reshape(-1)
        if w.numel() == 1:
            return w.abs()[0] > self.eps
        width = z.shape[1] if z.dim() == 4 else z.shape[-1]
        # nn.PReLU puts its slopes on dim 1, which is the unit dim only for (N, C, H, W) and (N, D)
        if w.numel() == width and (isinstance(m, PReLU) or z.dim() in (2, 4)):
            return w.abs() > self.eps
        return None

    def _histogram(self, z: torch.Tensor) -> None:
        if self.hist_spec is None:
            return
        z = z.reshape(-1)
        if torch.isnan(z).any():
            z = z[~torch.isnan(z)]
        counts = torch.bincount(self.hist_spec.index(z), minlength=self.hist_spec.bins)
        self.hist = counts if self.hist is None else self.hist + counts


def drop_padding(t: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Drop padded positions of an (N, L, D) tensor given a (N, L) attention mask; others unchanged."""
    if mask is not None and t.dim() == 3 and t.shape[:2] == mask.shape:
        return t[mask]
    return t
