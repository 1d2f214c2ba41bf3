"""Every activation actlab compares, by name: HeLU and its baselines, `swap()` and `for_inference()`.

HeLU (Kimhi et al. 2024) is ReLU in the forward pass; its backward pass lets the gradient through
wherever z > -margin (strict), so units whose pre-activation sits in the band (-margin, 0] still
learn. margin = 0 is exactly ReLU's gradient (0 at z = 0). A negative margin is legal: the
gradient threshold moves right of zero (gradient only where z > |margin|), a "stricter than ReLU"
control. At inference HeLU is ReLU: `for_inference()` makes that literal.

The gradient rule, one for every dtype, bit for bit the same eager and under torch.compile: HeLU
zeroes the gradient exactly where z <= -margin compared in z's dtype (the margin rounded to z's dtype
as eager PyTorch rounds a Python float: 16-bit dtypes via float32) and passes it everywhere else,
NaN z included, as ReLU does. The margin is kept as the float64 it was set to, whatever the module's
dtype, so HeLU(0.05) gives no gradient at a float64 z of exactly -0.05.

sugar_bsilu, sugar_nelu (SUGAR, Horuz et al. 2025) and st_relu are ReLU forward with other surrogate
backwards; they live in actlab.surrogates (formulas, sources, what backward saves).
"""

from __future__ import annotations

import functools
import logging
import types
from collections.abc import Callable

import torch
from torch import nn

from actlab.helu_kernels import (
    INT_OF_SIZE,
    keep_table,
    mask_and_pack,
    masked_grad,
    pack_bits,
    threshold_for,
    unpack_bits,
)
from actlab.surrogates import RELU_FORWARD, STReLU, SugarBSiLU, SugarNeLU

log = logging.getLogger("actlab")

SAVE_MODES = ("bits", "bool", "input")


def _fused(t: torch.Tensor) -> bool:
    """Whether eager "bits" runs the fused Triton ops: CUDA only (helu_triton imports triton: on first use)."""
    if not t.is_cuda:
        return False
    from actlab import helu_triton

    return helu_triton.available(t)


class _HeLUFunction(torch.autograd.Function):
    """relu(z) forward; backward zeroes grad where z <= -margin (the margin at forward time), in z's dtype.

    Saves the mask of dropped elements, not z. Eager runs helu_kernels' fast paths (CUDA "bits": helu_triton's
    fused ops, same bits). threshold_for rounds the margin to z's dtype, by casts in eager, by integer ops
    under torch.compile. Under torch.compile (Inductor fuses plain ops itself) and under create_graph=True
    (double backward needs d grad_in / d grad = mask, which the integer tricks drop) backward uses plain
    differentiable ops.
    """

    @staticmethod
    def forward(ctx, z: torch.Tensor, margin: torch.Tensor, save: str) -> torch.Tensor:
        ctx.save_mode = save
        ctx.shape = z.shape
        compiling = torch.compiler.is_compiling()
        # A new tensor: a margin changed before backward cannot affect this step.
        threshold = threshold_for(margin, z.dtype, compiled=compiling)
        if save == "input":  # the paper's reference approach, kept for the memory benchmark
            ctx.save_for_backward(z, threshold)
        elif save == "bool":
            ctx.save_for_backward(z <= threshold)
        elif compiling:
            ctx.save_for_backward(pack_bits(z <= threshold))
        elif _fused(z):  # CUDA: relu and the packed mask in one pass (actlab.helu_triton)
            out, packed = torch.ops.actlab.helu_fwd(z, threshold)
            ctx.save_for_backward(packed)
            return out
        else:
            ctx.save_for_backward(mask_and_pack(z, threshold))
        return torch.relu(z)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        plain = torch.compiler.is_compiling() or torch.is_grad_enabled()  # grad mode on = create_graph
        if ctx.save_mode == "bits" and not plain:
            (packed,) = ctx.saved_tensors
            if _fused(grad):
                return torch.ops.actlab.helu_bwd(grad, packed), None, None
            table = keep_table(grad.element_size(), grad.device)
            keep = torch.index_select(table, 0, packed.to(torch.int32)).view(-1)[: ctx.shape.numel()]
            return masked_grad(grad, keep.view(ctx.shape)), None, None
        if ctx.save_mode == "input":
            z, threshold = ctx.saved_tensors
            dropped = z <= threshold
        elif ctx.save_mode == "bits":
            dropped = unpack_bits(ctx.saved_tensors[0], ctx.shape)
        else:
            (dropped,) = ctx.saved_tensors
        if plain:
            return torch.where(dropped, 0, grad), None, None
        return masked_grad(grad, dropped.to(INT_OF_SIZE[grad.element_size()]).sub_(1)), None, None


class HeLU(nn.Module):
    """Hysteresis ReLU: ReLU forward (torch.relu, bit for bit); gradient where z > -margin.

    Exactly: the gradient is zeroed where z <= -margin compared in z's dtype (margin rounded to z's
    dtype as eager PyTorch rounds a Python float: 16-bit via float32) and passed elsewhere, NaN z
    included (as ReLU) — one rule for every dtype, eager and compiled alike, bit for bit.
    The margin lives in a 0-d float64 buffer so a schedule can change it every step without
    torch.compile recompiling (a Python float would be a guarded constant); read and set it as the
    float `margin`. Module casts (.half(), .to(bf16)) move it but keep it float64 (float32 on MPS).
    `save` picks what backward keeps: "bits" (1 bit/element, default), "bool" (1 byte) or "input" (z).
    """

    def __init__(self, margin: float = 0.05, save: str = "bits"):
        super().__init__()
        if save not in SAVE_MODES:
            raise ValueError(f"HeLU save must be one of {SAVE_MODES}, got {save!r}")
        self.save = save
        self.register_buffer("margin_", torch.tensor(float(margin), dtype=torch.float64))

    def _apply(self, fn, recurse=True):
        """.to(device) / .half() / .to(bf16) ... move the margin, but it stays the float64 it was set to."""
        exact = self.margin_
        self.margin_ = exact.float()  # what `fn` sees: every device has float32 (MPS has no float64)
        super()._apply(fn, recurse)
        moved = self.margin_
        if moved.device.type != "mps":  # back to float64, from the unrounded value
            self.margin_ = (moved if exact.is_meta else exact.to(moved.device)).double()
        return self

    @property
    def margin(self) -> float:
        return float(self.margin_)

    @margin.setter
    def margin(self, value: float) -> None:
        with torch.no_grad():
            self.margin_.fill_(float(value))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if not torch.is_grad_enabled() or not z.requires_grad:
            return torch.relu(z)  # nothing to save: inference costs exactly ReLU
        return _HeLUFunction.apply(z, self.margin_, self.save)

    def extra_repr(self) -> str:
        return f"margin={self.margin:g}" + ("" if self.save == "bits" else f", save={self.save}")


class SmeLU(nn.Module):
    """Smooth ReLU (Shamir et al. 2020): 0 below -beta, (z+beta)^2/(4 beta) on [-beta, beta], z above."""

    def __init__(self, beta: float = 1.0):
        super().__init__()
        if beta <= 0:
            raise ValueError(f"SmeLU beta must be > 0, got {beta}")
        self.beta = float(beta)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        b = self.beta
        quad = (z + b) ** 2 / (4 * b)
        return torch.where(z <= -b, torch.zeros_like(z), torch.where(z >= b, z, quad))

    def extra_repr(self) -> str:
        return f"beta={self.beta:g}"


class Swish(nn.Module):
    """Swish: z * sigmoid(beta z); beta = 1 is SiLU. `learnable` makes beta a parameter."""

    def __init__(self, beta: float = 1.0, learnable: bool = False):
        super().__init__()
        t = torch.tensor(float(beta))
        if learnable:
            self.beta = nn.Parameter(t)
        else:
            self.register_buffer("beta", t)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z * torch.sigmoid(self.beta * z)

    def extra_repr(self) -> str:
        return f"beta={float(self.beta):g}"


class PReLU(nn.Module):
    """PReLU (He et al. 2015) with slope init 0.25; shared, or one slope per unit when `per_channel`.

    The unit axis follows actlab's unit convention: dim 1 for (N, C, H, W), the last dim otherwise.
    Per-channel slopes are created lazily on the first forward, since a call site's width is not
    known when activations are swapped in; models run one dummy forward before training.
    """

    def __init__(self, per_channel: bool = False, init: float = 0.25):
        super().__init__()
        self.per_channel = per_channel
        self.init = float(init)
        if per_channel:
            self.weight = nn.parameter.UninitializedParameter()
        else:
            self.weight = nn.Parameter(torch.tensor([self.init]))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        w = self.weight
        if isinstance(w, nn.parameter.UninitializedParameter):
            width = z.shape[1] if z.dim() == 4 else z.shape[-1]
            w.materialize((width,), device=z.device, dtype=z.dtype)
            with torch.no_grad():
                w.fill_(self.init)
            w = self.weight
        if self.per_channel and z.dim() == 4:
            w = w.view(1, -1, 1, 1)
        return torch.where(z > 0, z, w * z)  # z = 0 on the slope side, as torch's ReLU/LeakyReLU/PReLU

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # A checkpoint knows the width: materialise lazy slopes first, so resume/eval needs no dummy forward.
        w = state_dict.get(prefix + "weight")
        if isinstance(self.weight, nn.parameter.UninitializedParameter) and w is not None:
            self.weight.materialize(w.shape)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return f"per_channel={self.per_channel}, init={self.init:g}"


_REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "relu": lambda: nn.ReLU(),
    "leaky_relu": lambda slope=0.01: nn.LeakyReLU(negative_slope=slope),
    "prelu": PReLU,
    "elu": lambda alpha=1.0: nn.ELU(alpha=alpha),
    "gelu": lambda: nn.GELU(),
    "gelu_tanh": lambda: nn.GELU(approximate="tanh"),
    "silu": lambda: nn.SiLU(),
    "swish": Swish,
    "smelu": SmeLU,
    "helu": HeLU,
    "sugar_bsilu": SugarBSiLU,  # ReLU forward, surrogate backward: actlab.surrogates
    "sugar_nelu": SugarNeLU,
    "st_relu": STReLU,
}
NAMES: tuple[str, ...] = tuple(_REGISTRY)


def build(name: str, **kwargs) -> nn.Module:
    """A fresh activation module by name; an unknown name or parameter raises a one-line error."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown activation {name!r}; valid names: {', '.join(NAMES)}")
    try:
        return _REGISTRY[name](**kwargs)
    except TypeError as e:
        raise ValueError(f"activation {name!r} does not take {sorted(kwargs)}: {e}") from None


def factory(name: str, margin: float | None = None, **kwargs) -> Callable[[], nn.Module]:
    """A zero-argument constructor for `name` (what models call once per site), from a config node.

    `margin` is HeLU's; configs of other activations carry `margin: null` so that sweeps can cross
    activation x margin, and a non-null margin for them is an error rather than silently ignored.
    """
    if margin is not None:
        if name != "helu":
            raise ValueError(f"activation.margin is only used by helu, not {name!r}; drop it or set null")
        kwargs["margin"] = margin
    build(name, **kwargs)  # fail now, at config time, not inside a model constructor

    def make() -> nn.Module:
        return build(name, **kwargs)

    make.activation_name = name  # type: ignore[attr-defined]
    return make


# What swap() treats as an activation: rectifier-family modules. Sigmoid/Tanh/Softmax are excluded
# on purpose: they gate or normalise (SE blocks, LSTMs, attention) and must not be replaced.
_TORCH_ACTIVATIONS = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU,
    nn.SiLU, nn.Mish, nn.Hardswish, nn.Softplus,
)
_OURS = (HeLU, SmeLU, Swish, PReLU, *RELU_FORWARD)
_HF_EXCLUDED = {"LinearActivation", "ClassInstantier"}


def derivative(module: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """f'(z) elementwise, the derivative training uses (HeLU, sugar_*, st_relu: their surrogate), by
    autograd: the grad of f(z).sum() is f'(z) for an elementwise f. Calls .forward, so hooks on the
    module do not fire."""
    with torch.enable_grad():
        zz = z.detach().clone().requires_grad_(True)  # clone: an in-place f must not touch z
        (g,) = torch.autograd.grad(module.forward(zz).sum(), zz)
    return g


def is_activation(module: nn.Module) -> bool:
    """True for modules swap() replaces: torch rectifier-family, transformers' activations, ours."""
    if isinstance(module, _TORCH_ACTIVATIONS + _OURS):
        return True
    cls = type(module)
    return cls.__module__ == "transformers.activations" and cls.__name__ not in _HF_EXCLUDED


def activation_sites(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(path, module) for every registered activation, duplicates included (a shared module twice)."""
    return [(p, m) for p, m in model.named_modules(remove_duplicate=False) if p and is_activation(m)]


def _split_torchvision_blocks(model: nn.Module) -> list[str]:
    """Give torchvision ResNet blocks one activation module per call site.

    torchvision's BasicBlock calls `self.relu` twice and Bottleneck three times, so per-layer
    statistics would merge sites. We add `relu2` (and `relu3`) and rebind `forward` to use them.
    """
    try:
        from torchvision.models.resnet import BasicBlock, Bottleneck
    except ImportError:  # torchvision is optional for swap
        return []
    split = []
    for path, m in model.named_modules():
        if isinstance(m, (BasicBlock, Bottleneck)) and not hasattr(m, "relu2"):
            m.relu2 = type(m.relu)()
            if isinstance(m, Bottleneck):
                m.relu3 = type(m.relu)()
            m.forward = types.MethodType(_bottleneck_forward if isinstance(m, Bottleneck) else _basic_forward, m)
            split.append(path)
    return split


def _basic_forward(self, x):
    identity = self.downsample(x) if self.downsample is not None else x
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    return self.relu2(out + identity)


def _bottleneck_forward(self, x):
    identity = self.downsample(x) if self.downsample is not None else x
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.relu2(self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(out))
    return self.relu3(out + identity)


def _set_submodule(model: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, attr = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    if isinstance(parent, (nn.Sequential, nn.ModuleList)) and attr.isdigit():
        parent[int(attr)] = new
    else:
        setattr(parent, attr, new)


def swap(model: nn.Module, name: str | Callable[[], nn.Module], **kwargs) -> nn.Module:
    """Put a fresh `build(name, **kwargs)` at every activation site of `model` (in place; returns it).

    `name` may also be a zero-argument constructor (what `factory` returns). One instance per site:
    a module registered under several names gets one per name, and torchvision ResNet blocks are
    split first (see _split_torchvision_blocks). What was replaced is logged and kept on the model
    as `model.actlab_swapped` (list of "path: Old -> New").
    """
    if callable(name):
        make, name = name, getattr(name, "activation_name", getattr(name, "__name__", "custom"))
    else:
        build(name, **kwargs)  # validate before touching the model
        make = functools.partial(build, name, **kwargs)
    split = _split_torchvision_blocks(model)
    report = [f"{p}: split shared relu into one module per call" for p in split]
    for path, old in activation_sites(model):
        new = make()
        _set_submodule(model, path, new)
        report.append(f"{path}: {type(old).__name__} -> {type(new).__name__}")
    model.actlab_swapped = report
    n = len(report) - len(split)
    log.info("swap: %d activation sites -> %s%s", n, name, f" ({len(split)} torchvision blocks split)" * bool(split))
    return model


def for_inference(model: nn.Module) -> nn.Module:
    """Replace every HeLU, SUGAR and st_relu module with nn.ReLU (same forward, bit for bit); returns the
    model, changed in place."""
    for path, m in activation_sites(model):
        if isinstance(m, (HeLU, *RELU_FORWARD)):
            _set_submodule(model, path, nn.ReLU())
    return model


def helu_modules(model: nn.Module) -> list[HeLU]:
    """Every HeLU in the model (what a margin schedule sets)."""
    return [m for m in model.modules() if isinstance(m, HeLU)]
