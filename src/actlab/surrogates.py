"""ReLU forward, another derivative backward: SUGAR's B-SiLU and NeLU surrogates and a straight-through ReLU.

All three compute `torch.relu(z)` in the forward pass (bit for bit, -0.0, NaN and inf included), so
`actlab.activations.for_inference` replaces them by nn.ReLU. Only the backward differs:

sugar_bsilu  SUGAR with the B-SiLU surrogate (Horuz et al. 2025, "The Resurrection of the ReLU",
             arXiv 2505.22074): B-SiLU(z) = (z + α) σ(z) - α/2, α = 1.67 (the paper's value), and
             backward uses its derivative everywhere (both signs of z, as the paper's forward gradient
             injection y = f(z) - sg(f(z)) + sg(relu(z)) does):
                 f'(z) = σ(z) + (z + α) σ(z) (1 - σ(z))  =  σ(z) (1 + (z + α) σ(-z)).
             It is not 1 for z > 0 (peak 1.29 at z ≈ 1.49, -> 1 as z -> inf, f'(0) = 0.9175), crosses 0
             at z ≈ -2.7349, is negative below (minimum -0.0237 at z ≈ -3.765) and -> 0- as z -> -inf.
sugar_nelu   SUGAR with the NeLU surrogate ("Negative slope Linear Unit", same paper), defined there by
             its derivative:  f'(z) = 1 for z > 0,  2 α z / (1 + z^2)^2 otherwise  (z <= 0, so <= 0:
             the "negative slope"; f'(0) = 0, minimum -0.6495 α at z = -1/sqrt(3), -> 0- as z -> -inf).
             Antiderivative: z for z > 0, α z^2 / (1 + z^2) for z <= 0. α = 0.01 by default: the paper
             sweeps α in {0.01, 0.05, 0.1} on CIFAR (0.01 best) and uses 0.01 for Swin, 0.1 for Conv2NeXt.
st_relu      straight-through / leaky-backward ReLU (ProxyGrad, Linse et al., cited by SUGAR, is the same
             construction): f'(z) = 1 for z > 0, `slope` (default 0.01) for z <= 0; NaN z gets 1, as
             ReLU passes the gradient of a NaN z (and HeLU does).

Sources, and what could not be confirmed: the paper's PDF/HTML body was not readable from here (only its
abstract, arxiv.org/html/2505.22074v1). The formulas above were taken from secondary sources that quote it
and agree with each other: a public PyTorch re-implementation of SUGAR (B-SiLU and NeLU derivatives as
above, "Eq. 11-12" multiplication trick), a Korean summary of the paper and Japanese reading notes quoting
the PDF (both: B-SiLU with α = 1.67 and NeLU's derivative; the notes: NeLU α swept in {0.01, 0.05, 0.1},
the summary: α = 0.1 for Conv2NeXt, 0.01 for Swin), and Chinese blog posts on B-SiLU (same formula,
α = 1.67). Not confirmed against the PDF: the exact NeLU equation (its sign convention, that z = 0 takes
the "else" branch) and that B-SiLU's derivative also replaces ReLU's 1 for z > 0 (implied by the forward
gradient injection y = f(z) - sg(f(z)) + sg(relu(z)) the sources quote; that is what is implemented).

What backward keeps (per element of z):
  sugar_bsilu, sugar_nelu  z itself (`save_for_backward(z)`, no copy): itemsize bytes (4 float32, 2
                           bf16/fp16, 8 float64), the same as nn.ReLU, which saves its output. The
                           derivative depends on z's value on the negative side, so neither the sign
                           nor relu(z) is enough; nothing smaller is exact.
  st_relu                  the sign: save="bits" (default) packs `z <= 0` to 1 bit per element
                           (ceil(n / 8) bytes, HeLU's layout and kernels: actlab.helu_kernels), "bool"
                           keeps a 1-byte mask.

Gradient-dead units under the monitor (actlab.site_stats, eps = 1e-6 by default): these modules take its
generic path, a unit is gradient-dead when max |f'(z)| <= eps over all its elements, f' = the surrogate
above (autograd through this backward, `actlab.activations.derivative`). Hence:
  st_relu      |slope| > eps: no unit is ever gradient-dead; |slope| <= eps: dead iff z <= 0 everywhere.
  sugar_bsilu  f' reaches 0 (z ≈ -2.7349) and vanishes as z -> -inf: with eps = 1e-6 a unit is dead iff
               all its z lie in about [-2.734917, -2.734884] or below about -16.44.
  sugar_nelu   f'(0) = 0 and f' -> 0 as z -> -inf: with α = 0.01, eps = 1e-6 a unit is dead iff all its
               z lie in [-5e-5, 0] or below about -27.12 (or, for α <= eps / 0.6495, iff all z <= 0).

Backward math runs in float32 for float16/bfloat16 z (as PyTorch's own activation backwards do) and
z = ±inf gets the limit (B-SiLU: 0 / 1, NeLU: 0 / 1): z is clamped to the dtype's finite range first,
which changes no finite value. NaN z gives a NaN gradient for the SUGAR surrogates.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from actlab.helu_kernels import mask_and_pack, pack_bits, unpack_bits

BSILU_ALPHA = 1.67  # Horuz et al. 2025
NELU_ALPHA = 0.01  # Horuz et al. 2025: 0.01 (Swin, best of their CIFAR sweep), 0.1 (Conv2NeXt)
ST_SLOPE = 0.01
ST_SAVE_MODES = ("bits", "bool")


def _opmath(z: torch.Tensor) -> torch.Tensor:
    """z in the dtype the derivative is computed in (float32 for 16-bit floats), ±inf -> ±max finite."""
    if z.dtype in (torch.float16, torch.bfloat16):
        z = z.float()
    big = torch.finfo(z.dtype).max
    return z.clamp(-big, big)  # NaN stays NaN


def bsilu_grad(z: torch.Tensor, alpha: float = BSILU_ALPHA) -> torch.Tensor:
    """d/dz [(z + α) σ(z) - α/2] = σ(z) (1 + (z + α) σ(-z)), in float32 for 16-bit z (see _opmath)."""
    z = _opmath(z)
    return torch.sigmoid(z) * (1 + (z + alpha) * torch.sigmoid(-z))  # σ(-z), not 1 - σ(z): exact tail


def nelu_grad(z: torch.Tensor, alpha: float = NELU_ALPHA) -> torch.Tensor:
    """1 for z > 0, 2 α z / (1 + z²)² otherwise, in float32 for 16-bit z (see _opmath)."""
    z = _opmath(z)
    t = 1 + z * z
    return torch.where(z > 0, 1.0, (2 * alpha) * z / (t * t))


_SURROGATES = {"bsilu": bsilu_grad, "nelu": nelu_grad}


class _SugarFunction(torch.autograd.Function):
    """relu(z) forward; backward grad * f'(z) for the named surrogate. Saves z (itemsize bytes/element).

    Backward is plain differentiable ops, so it compiles (Inductor fuses it) and double backward works.
    """

    @staticmethod
    def forward(ctx, z: torch.Tensor, kind: str, alpha: float) -> torch.Tensor:
        ctx.kind, ctx.alpha = kind, alpha
        ctx.save_for_backward(z)
        return torch.relu(z)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (z,) = ctx.saved_tensors
        d = _SURROGATES[ctx.kind](z, ctx.alpha)
        return (grad.to(d.dtype) * d).to(grad.dtype), None, None


class _STReLUFunction(torch.autograd.Function):
    """relu(z) forward; backward grad where z > 0 (or NaN), slope * grad where z <= 0. Saves the sign only."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, slope: float, save: str) -> torch.Tensor:
        ctx.slope, ctx.save_mode, ctx.shape = slope, save, z.shape
        if save == "bool":
            ctx.save_for_backward(z <= 0)
        elif torch.compiler.is_compiling():  # plain ops: Inductor fuses them itself
            ctx.save_for_backward(pack_bits(z <= 0))
        else:  # eager: HeLU's 3-pass packer, threshold 0 in z's dtype
            ctx.save_for_backward(mask_and_pack(z, z.new_zeros(())))
        return torch.relu(z)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (saved,) = ctx.saved_tensors
        neg = unpack_bits(saved, ctx.shape) if ctx.save_mode == "bits" else saved
        return torch.where(neg, grad * ctx.slope, grad), None, None


def _finite(name: str, what: str, value) -> float:
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} {what} must be finite, got {value}")
    return value


class _ReLUForward(nn.Module):
    """Base of the activations whose forward is exactly torch.relu (for_inference makes them nn.ReLU)."""

    def _apply_fn(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if not torch.is_grad_enabled() or not z.requires_grad:
            return torch.relu(z)  # nothing to save: inference costs exactly ReLU
        return self._apply_fn(z)


class SugarBSiLU(_ReLUForward):
    """SUGAR with B-SiLU (Horuz et al. 2025): ReLU forward; backward σ(z)(1 + (z + α)σ(-z)). Saves z."""

    def __init__(self, alpha: float = BSILU_ALPHA):
        super().__init__()
        self.alpha = _finite("sugar_bsilu", "alpha", alpha)

    def _apply_fn(self, z):
        return _SugarFunction.apply(z, "bsilu", self.alpha)

    def surrogate_grad(self, z: torch.Tensor) -> torch.Tensor:
        return bsilu_grad(z, self.alpha)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha:g}"


class SugarNeLU(_ReLUForward):
    """SUGAR with NeLU (Horuz et al. 2025): ReLU forward; backward 1 (z > 0), 2αz/(1+z²)² (z <= 0). Saves z."""

    def __init__(self, alpha: float = NELU_ALPHA):
        super().__init__()
        self.alpha = _finite("sugar_nelu", "alpha", alpha)

    def _apply_fn(self, z):
        return _SugarFunction.apply(z, "nelu", self.alpha)

    def surrogate_grad(self, z: torch.Tensor) -> torch.Tensor:
        return nelu_grad(z, self.alpha)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha:g}"


class STReLU(_ReLUForward):
    """Straight-through (leaky-backward) ReLU: ReLU forward; backward 1 for z > 0, `slope` for z <= 0.

    `save`: "bits" (default, 1 bit per element, HeLU's packing) or "bool" (1 byte per element).
    """

    def __init__(self, slope: float = ST_SLOPE, save: str = "bits"):
        super().__init__()
        if save not in ST_SAVE_MODES:
            raise ValueError(f"st_relu save must be one of {ST_SAVE_MODES}, got {save!r}")
        self.slope = _finite("st_relu", "slope", slope)
        self.save = save

    def _apply_fn(self, z):
        return _STReLUFunction.apply(z, self.slope, self.save)

    def surrogate_grad(self, z: torch.Tensor) -> torch.Tensor:
        return torch.where(z <= 0, self.slope, 1.0).to(z.dtype)

    def extra_repr(self) -> str:
        return f"slope={self.slope:g}" + ("" if self.save == "bits" else f", save={self.save}")


RELU_FORWARD = (SugarBSiLU, SugarNeLU, STReLU)
