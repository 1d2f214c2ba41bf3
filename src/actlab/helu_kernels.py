"""HeLU's backward machinery: the threshold in z's dtype, and the 1-bit packed mask of dropped elements.

Plain torch only (no actlab imports): actlab.activations builds HeLU's autograd Function on these.
Eager runs the fast paths (mask_and_pack, keep_table + masked_grad); torch.compile sees the plain
ops (pack_bits, unpack_bits), which Inductor fuses itself. Both use the same bit layout.
"""

from __future__ import annotations

import math

import torch

# Bit order for packing 8 booleans into a byte (bit k = element k of each group of 8).
_SHIFTS = torch.arange(8, dtype=torch.uint8)
# Multiplying a little-endian int64 holding 8 bytes of 0/1 by this moves byte k's bit to bit 56 + k,
# with no carries (every partial product lands on a distinct bit), so byte 7 of the product (`>> 56`)
# is the packed byte. int64 overflow wraps, which is what we want: only the top byte is kept.
_PACK_MAGIC = 0x0102040810204080
INT_OF_SIZE = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
_KEEP_TABLES: dict[tuple[int, torch.device], torch.Tensor] = {}


def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """Bool tensor -> uint8 tensor of ceil(n / 8) bytes (1 bit per element). Plain ops: what compile sees."""
    flat = mask.reshape(-1)
    pad = (-flat.numel()) % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    words = flat.view(torch.uint8).view(torch.int64)
    return ((words * _PACK_MAGIC) >> 56).to(torch.uint8)


def unpack_bits(packed: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Inverse of pack_bits: uint8 bytes -> bool tensor of `shape`."""
    bits = (packed.unsqueeze(-1) >> _SHIFTS.to(packed.device)) & 1
    # ne(0), not view(torch.bool): Inductor's AVX2 C++ for a bool *view* calls a Vectorized<bool>::cast
    # that does not exist (compile error on CPUs without AVX-512); a comparison lowers to a proper mask.
    return bits.reshape(-1)[: shape.numel()].ne(0).reshape(shape)


def threshold_for(margin: torch.Tensor, dtype: torch.dtype, compiled: bool = True) -> torch.Tensor:
    """-margin rounded to `dtype` (16-bit: via float32, as eager PyTorch rounds a Python float).

    Eager (compiled=False): by casts, a 0-d tensor of `dtype`, so that `z <= threshold` runs PyTorch's
    same-dtype fast kernels. Compiled: Inductor elides a 16-bit cast inside a fused kernel (it would
    compare against the unrounded margin), so the float32 -> bfloat16/float16 rounding (to nearest even)
    is done by integer ops on the float32 bits, which nothing elides; the value is held in float32.
    """
    neg = -margin.to(torch.float64 if dtype == torch.float64 else torch.float32)
    if not compiled:
        return neg.to(dtype)
    if dtype not in (torch.bfloat16, torch.float16):
        return neg
    drop = 16 if dtype == torch.bfloat16 else 13  # float32 mantissa bits that `dtype` lacks
    bits = neg.view(torch.int32)
    r = ((bits + ((1 << (drop - 1)) - 1) + ((bits >> drop) & 1)) & -(1 << drop)).view(torch.float32)
    if dtype == torch.float16:  # its own exponent range: subnormal steps of 2**-24, inf past 65504
        r = torch.where(neg.abs() < 2**-14, torch.round(neg * 2**24) * 2**-24, r)
        r = torch.where(r.abs() > 65504, r * math.inf, r)
    return r


def mask_and_pack(z: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """Packed bits of z <= threshold in 3 passes and 2 allocations (eager fast path of pack_bits).

    The compare writes straight into a padded contiguous buffer (no cat, no reshape copy for strided z),
    the magic multiply runs in place, and byte 7 of each word is gathered by a strided copy.
    """
    n = z.numel()
    buf = torch.empty(n + (-n) % 8, dtype=torch.bool, device=z.device)
    buf[n:] = False
    torch.le(z, threshold, out=buf[:n].view(z.shape))
    buf.view(torch.uint8).view(torch.int64).mul_(_PACK_MAGIC)
    return buf.view(torch.uint8)[7::8].contiguous()


def keep_table(itemsize: int, device: torch.device) -> torch.Tensor:
    """(256, 8) ints of `itemsize` bytes: row b, column k is 0 if bit k of b (dropped) is set, else -1."""
    key = (itemsize, device)
    if key not in _KEEP_TABLES:
        bits = (torch.arange(256).unsqueeze(1) >> torch.arange(8)) & 1
        _KEEP_TABLES[key] = (bits - 1).to(INT_OF_SIZE[itemsize]).to(device)
    return _KEEP_TABLES[key]


def masked_grad(grad: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """where(keep, grad, +0.0) as an in-place bitwise AND of grad's bits with `keep` (ints, -1 or 0).

    Same result, bit for bit, as ReLU's threshold_backward (+0.0, NaN grads dropped where masked), but
    all-integer and vectorised: PyTorch's CPU kernels for float x bool (mul, where) are not.
    """
    return keep.bitwise_and_(grad.view(keep.dtype)).view(grad.dtype)
