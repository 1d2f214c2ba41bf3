"""Bins of the pre-activation histogram: uniform in z, or uniform in asinh(z / w).

The asinh bins let one histogram resolve a HeLU band of width 0.001 at 0 and still hold the tails of an
unnormalised network at |z| ~ 1e4 (a linear [-20, 20] histogram lost 15 % of a HeLU-0.5 MLP's values).
Near 0 they are linear (width ~ w * step), far out logarithmic (relative width ~ step).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class HistBins:
    """`bins` bins over [lo, hi]; linear_width None: uniform in z, w > 0: uniform in asinh(z / w)."""

    bins: int
    lo: float
    hi: float
    linear_width: float | None = None

    def __post_init__(self) -> None:
        w = self.linear_width
        if self.bins < 1 or not self.hi > self.lo or (w is not None and not w > 0) or not (
                math.isfinite(self.lo) and math.isfinite(self.hi)):
            raise ValueError(f"histogram needs bins >= 1, finite lo < hi and linear_width None or > 0, got "
                             f"bins={self.bins}, range=({self.lo}, {self.hi}), linear_width={w}")

    @classmethod
    def of(cls, spec: HistBins | tuple | list) -> HistBins:
        """A HistBins from itself or from (bins, lo, hi[, linear_width])."""
        if isinstance(spec, HistBins):
            return spec
        bins, lo, hi, *rest = spec
        w = rest[0] if rest else None
        return cls(int(bins), float(lo), float(hi), None if w is None else float(w))

    def _u(self, x: float) -> float:
        return math.asinh(x / self.linear_width) if self.linear_width else x

    def edges(self) -> list[float]:
        """The bins + 1 edges, lo and hi exactly."""
        u = torch.linspace(self._u(self.lo), self._u(self.hi), self.bins + 1, dtype=torch.float64)
        e = torch.sinh(u) * self.linear_width if self.linear_width else u
        e[0], e[-1] = self.lo, self.hi
        return e.tolist()

    def index(self, z: torch.Tensor) -> torch.Tensor:
        """The bin of each value; values outside [lo, hi] go to the first / last bin (counts sum to all)."""
        u = z.double().clamp(self.lo, self.hi)  # float64: asinh keeps the bin of values near an edge
        if self.linear_width:
            u = torch.asinh(u / self.linear_width)
        u0, u1 = self._u(self.lo), self._u(self.hi)
        return ((u - u0) * (self.bins / (u1 - u0))).floor_().long().clamp_(0, self.bins - 1)

    def describe(self) -> dict[str, Any]:
        """What the histogram payload says about its bins, so a reader draws them on the matching axis."""
        if self.linear_width:
            return {"scale": "asinh", "linear_width": self.linear_width}
        return {"scale": "linear"}
