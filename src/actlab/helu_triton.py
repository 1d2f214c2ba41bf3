"""HeLU's fused Triton kernels: forward = relu(z) + the 1-bit packed mask in one pass, backward = unpack + mask in
one pass, as torch.library ops (actlab::helu_fwd, actlab::helu_bwd; fake impls, autograd) so compile sees ops.
Bit for bit the eager path of helu_kernels (same mask bytes, same relu bits, dropped gradient +0.0).
"""

import contextlib
import os
import types

import torch

from actlab.helu_kernels import mask_and_pack, unpack_bits

try:
    import triton
    import triton.language as tl
    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import JITFunction
except ImportError:  # no triton: available() is False, the ops run their eager fallback
    triton = None
    tl = types.SimpleNamespace(constexpr=int)  # for the kernels' annotations only

BYTES = 256  # packed bytes per program: 2048 elements
# float dtype -> (its integer view, |bits| mask, bits of +inf)
_DTYPES = {torch.float16: (torch.int16, 0x7FFF, 0x7C00), torch.bfloat16: (torch.int16, 0x7FFF, 0x7F80),
           torch.float32: (torch.int32, 0x7FFFFFFF, 0x7F800000),
           torch.float64: (torch.int64, 0x7FFFFFFFFFFFFFFF, 0x7FF0000000000000)}
_KERNELS: dict = {}
_RELU_KEEPS_NEG_ZERO: dict = {}

# Kernels use Triton builtins only (no tl.sum / tl.reduce, which are @triton.jit functions themselves):
# that lets them run under an InterpretedFunction made here, whatever TRITON_INTERPRET was at `import triton`.
# Element [j, k] of a program's [BYTES, 8] tile is logical (row-major) index 8 * byte_j + k: bit k of byte_j.
# STRIDED: memory offset from the logical index through (up to) 4 merged dims, sizes s*, strides t*.


def _fwd_kernel(z_ptr, out_ptr, packed_ptr, thr_ptr, n, s1, s2, s3, t0, t1, t2, t3,
                BYTES: tl.constexpr, STRIDED: tl.constexpr, ABS: tl.constexpr, INF: tl.constexpr,
                KEEP_NEG0: tl.constexpr):
    # z, out and the threshold are integer views (bits): IEEE order by integer keys, so subnormals compare
    # exactly whatever a backend's (or the interpreter's) float denormal mode; NaN bits pass through relu.
    byte = tl.program_id(0).to(tl.int64) * BYTES + tl.arange(0, BYTES)
    idx = byte[:, None] * 8 + tl.arange(0, 8)[None, :]
    inb = idx < n
    off = idx
    if STRIDED:
        off = (idx % s3) * t3 + (idx // s3 % s2) * t2 + (idx // s3 // s2 % s1) * t1 + (idx // s3 // s2 // s1) * t0
    x = tl.load(z_ptr + off, mask=inb, other=0)
    t = tl.load(thr_ptr)
    ax, at = x & ABS, t & ABS
    nan = ax > INF
    # key: -|v| for sign bit set, |v| otherwise (so -0.0 == +0.0); NaN z never dropped, as ReLU passes it
    dropped = (tl.where(x < 0, -ax, ax) <= tl.where(t < 0, -at, at)) & (at <= INF) & ~nan & inb
    neg = (x < 0) & ~nan  # torch.relu: 0 below zero; NaN kept; -0.0 kept or made +0.0 as the device's relu
    if KEEP_NEG0:
        neg = neg & (ax != 0)
    tl.store(out_ptr + off, tl.where(neg, tl.full((BYTES, 8), 0, x.dtype), x), mask=inb)
    b = dropped.to(tl.int32) << tl.arange(0, 8)[None, :]  # OR of 8 disjoint bits, by halving splits
    lo, hi = tl.split(tl.reshape(b, (BYTES, 4, 2)))
    lo, hi = tl.split(tl.reshape(lo | hi, (BYTES, 2, 2)))
    lo, hi = tl.split(lo | hi)
    tl.store(packed_ptr + byte, (lo | hi).to(tl.uint8), mask=byte * 8 < n)


def _bwd_kernel(g_ptr, out_ptr, packed_ptr, n, s1, s2, s3, t0, t1, t2, t3,
                BYTES: tl.constexpr, STRIDED: tl.constexpr):
    # g and out are integer views of the gradient: kept elements are copied bit for bit (NaN, -0.0 too)
    byte = tl.program_id(0).to(tl.int64) * BYTES + tl.arange(0, BYTES)
    idx = byte[:, None] * 8 + tl.arange(0, 8)[None, :]
    inb = idx < n
    off = idx
    if STRIDED:
        off = (idx % s3) * t3 + (idx // s3 % s2) * t2 + (idx // s3 // s2 % s1) * t1 + (idx // s3 // s2 // s1) * t0
    bits = tl.load(packed_ptr + byte, mask=byte * 8 < n, other=0).to(tl.int32)
    dropped = ((bits[:, None] >> tl.arange(0, 8)[None, :]) & 1) != 0
    g = tl.load(g_ptr + off, mask=inb, other=0)
    tl.store(out_ptr + off, tl.where(dropped, tl.full((BYTES, 8), 0, g.dtype), g), mask=inb)


def available(t: torch.Tensor) -> bool:
    """Whether the ops run the Triton kernels for `t` (else their eager fallback): triton imports, t is a
    float16/bfloat16/float32/float64 tensor, and t is on CUDA (compiled kernels), or on the CPU with
    TRITON_INTERPRET=1 set at the call (Triton's interpreter: the explicit ask, how CI tests the kernels).
    actlab.activations only asks for CUDA tensors, so the CPU path of HeLU never changes."""
    if triton is None or t.dtype not in _DTYPES:
        return False
    return t.is_cuda or (t.device.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1")


def _kernel(fn, device: torch.device):
    """fn interpreted for CPU tensors, compiled for CUDA ones (not triton.jit: its choice follows the env)."""
    key = (fn.__name__, device.type == "cpu")
    if key not in _KERNELS:
        _KERNELS[key] = InterpretedFunction(fn) if key[1] else JITFunction(fn)
    return _KERNELS[key]


def _relu_keeps_neg_zero(device: torch.device, dtype: torch.dtype) -> bool:
    """torch.relu(-0.0) on this device: -0.0 (True; the CPU) or +0.0. Asked once per device type and dtype."""
    key = (device.type, dtype)
    if key not in _RELU_KEEPS_NEG_ZERO:
        probe = torch.relu(torch.full((64,), -0.0, dtype=dtype, device=device))
        _RELU_KEEPS_NEG_ZERO[key] = bool(probe.signbit().all())
    return _RELU_KEEPS_NEG_ZERO[key]


def _geometry(t: torch.Tensor):
    """(s1, s2, s3, t0, t1, t2, t3, strided) of t with size-1 dims dropped and adjacent dims merged where
    memory allows, left-padded to 4 dims; None if more than 4 dims remain."""
    merged: list[tuple[int, int]] = []  # (size, stride), innermost first
    for size, stride in reversed([d for d in zip(t.shape, t.stride()) if d[0] != 1]):
        if merged and merged[-1][0] * merged[-1][1] == stride:
            merged[-1] = (merged[-1][0] * size, merged[-1][1])
        else:
            merged.append((size, stride))
    if len(merged) > 4:
        return None
    strided = not (len(merged) <= 1 and (not merged or merged[0][1] == 1))
    (s3, t3), (s2, t2), (s1, t1), (_, t0) = merged + [(1, 0)] * (4 - len(merged))
    return s1, s2, s3, t0, t1, t2, t3, strided


def _launch(fn, src: torch.Tensor, out: torch.Tensor, *args, **constexprs) -> None:
    """Run kernel `fn` reading src, writing out (empty_like(src)'s layout): src is first copied into out when
    their strides differ (non-dense src), and both made contiguous when > 4 dims stay after merging."""
    n = src.numel()
    if n == 0:
        return
    if src.stride() != out.stride():
        src = out.copy_(src)  # the kernel then reads and writes out in place, element by element
    geo, dst = _geometry(out), out
    if geo is None:
        src = src.contiguous()
        dst = torch.empty_like(src)
        geo = _geometry(dst)
    grid = (triton.cdiv(triton.cdiv(n, 8), BYTES),)
    with torch.cuda.device(src.device) if src.is_cuda else contextlib.nullcontext():
        _kernel(fn, src.device)[grid](src, dst, *args, n, *geo[:7], BYTES=BYTES, STRIDED=geo[7], **constexprs)
    if dst is not out:
        out.copy_(dst)


@torch.library.custom_op("actlab::helu_fwd", mutates_args=())
def helu_fwd(z: torch.Tensor, threshold: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(relu(z), packed mask of z <= threshold): bit k of byte j is element 8j + k of z in logical order.

    threshold: 0-d, -margin rounded to z's dtype (helu_kernels.threshold_for, eager or compiled: a float32
    holding the rounded value is fine), converted to z's dtype; compared as eager does, in z's dtype.
    """
    out = torch.empty_like(z)
    packed = torch.empty(((z.numel() + 7) // 8,), dtype=torch.uint8, device=z.device)
    thr = threshold.to(z.device, z.dtype)
    if not available(z):
        out.copy_(torch.relu(z))
        packed.copy_(mask_and_pack(z, thr))
        return out, packed
    ints, abs_mask, inf = _DTYPES[z.dtype]
    _launch(_fwd_kernel, z.view(ints), out.view(ints), packed, thr.reshape(1).view(ints), ABS=abs_mask,
            INF=inf, KEEP_NEG0=_relu_keeps_neg_zero(z.device, z.dtype))
    return out, packed


@helu_fwd.register_fake
def _(z, threshold):
    return torch.empty_like(z), z.new_empty(((z.numel() + 7) // 8,), dtype=torch.uint8)


@torch.library.custom_op("actlab::helu_bwd", mutates_args=())
def helu_bwd(grad: torch.Tensor, packed: torch.Tensor) -> torch.Tensor:
    """grad where the packed bit is 0, +0.0 where it is 1 (dropped): kept values bit for bit, NaN included."""
    out = torch.empty_like(grad)
    if not available(grad):
        return out.copy_(torch.where(unpack_bits(packed, grad.shape), 0, grad))
    ints = _DTYPES[grad.dtype][0]
    _launch(_bwd_kernel, grad.view(ints), out.view(ints), packed.to(grad.device))
    return out


@helu_bwd.register_fake
def _(grad, packed):
    return torch.empty_like(grad)


def _save_fwd(ctx, inputs, output):
    ctx.save_for_backward(output[1])


def _save_bwd(ctx, inputs, output):
    ctx.save_for_backward(inputs[1])


def _fwd_backward(ctx, grad_out, _grad_packed):
    return helu_bwd(grad_out, ctx.saved_tensors[0]), None


def _bwd_backward(ctx, grad):  # helu_bwd is linear in grad: d grad_in / d grad = the same mask
    return helu_bwd(grad, ctx.saved_tensors[0]), None


torch.library.register_autograd("actlab::helu_fwd", _fwd_backward, setup_context=_save_fwd)
torch.library.register_autograd("actlab::helu_bwd", _bwd_backward, setup_context=_save_bwd)
