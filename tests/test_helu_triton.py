"""Known-answer tests for actlab.helu_triton: the fused HeLU kernels, bit for bit against the eager path.

Without a GPU the kernels run under Triton's interpreter. Triton 3.8 reads TRITON_INTERPRET when @triton.jit
decorates (at `import triton.language`, which torch or another test may already have done), so helu_triton
wraps its kernels in an InterpretedFunction itself for CPU tensors, and TRITON_INTERPRET=1 (set per test by
monkeypatch) is only the explicit ask that `available()` reads at the call: no subprocess, nothing leaks.
Tests marked `cuda` run the same checks compiled on a GPU.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from actlab import activations as A
from actlab import helu_triton as H
from actlab.activations import HeLU, _HeLUFunction
from actlab.helu_kernels import INT_OF_SIZE, mask_and_pack, threshold_for

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
MARGINS = [0.0, 0.05, -0.05]
CUDA = pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU")])
DEVICES = ["cpu", CUDA]


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(INT_OF_SIZE[t.element_size()])


@pytest.fixture
def launches(monkeypatch):
    """Kernels on: TRITON_INTERPRET=1 (used for CPU tensors only) and a count of kernel launches, so a test
    knows the kernels ran, not the ops' eager fallback."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    calls = []
    launch = H._launch

    def spy(fn, *args, **kwargs):
        calls.append(fn.__name__)
        return launch(fn, *args, **kwargs)

    monkeypatch.setattr(H, "_launch", spy)
    return calls


# Layouts: flat sizes around a byte's 8 elements, a 4-D shape, a transposed slice (not dense), channels_last,
# and a permuted 5-D tensor (5 dims that do not merge: the kernels' contiguous-copy fallback).
LAYOUTS = {
    **{f"n{n}": (lambda n=n: torch.empty(n)) for n in (1, 7, 8, 9, 1023, 4099)},
    "3x5x7x11": lambda: torch.empty(3, 5, 7, 11),
    "transposed_slice": lambda: torch.empty(13, 21)[:, 1:18].t(),
    "channels_last": lambda: torch.empty(2, 3, 5, 7).to(memory_format=torch.channels_last),
    "permuted_5d": lambda: torch.empty(2, 3, 4, 5, 6).permute(4, 2, 0, 3, 1),
}


def _filled(layout: str, dtype, device, flat: torch.Tensor) -> torch.Tensor:
    t = LAYOUTS[layout]().to(dtype)
    t.copy_(flat[: t.numel()].to(dtype).view(t.shape))
    return t.to(device)


def _values(n: int, dtype, margin: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(z, grad) flat, in `dtype`: z near the threshold band, with NaN/inf/±0, the threshold and its two
    neighbours (±1 ulp) at random places; grad random with NaN/inf/-0.0 at random places."""
    gen = torch.Generator().manual_seed(seed)
    z = (torch.randn(n, generator=gen) * 0.1).to(dtype)
    thr = threshold_for(torch.tensor(margin, dtype=torch.float64), dtype, compiled=False).reshape(1)
    inf = torch.full_like(thr, math.inf)
    near = torch.cat([thr, torch.nextafter(thr, inf), torch.nextafter(thr, -inf), -thr])
    tiny = torch.nextafter(torch.zeros(1, dtype=dtype), inf)  # smallest subnormal
    special = torch.cat([torch.tensor([math.nan, -math.nan, math.inf, -math.inf, 0.0, -0.0]).to(dtype), tiny, -tiny])
    specials = torch.cat([near, special, near])
    pos = torch.randperm(n, generator=gen)[: len(specials)]
    z[pos] = specials[: len(pos)]
    g = torch.randn(n, generator=gen).to(dtype)
    gpos = torch.randperm(n, generator=gen)[:8]
    g[gpos] = torch.tensor([math.nan, -0.0, math.inf, -math.inf, -math.nan, -0.0, math.nan, 0.0]).to(dtype)[: len(gpos)]
    return z, g


def _assert_relu_bits(out: torch.Tensor, z: torch.Tensor) -> None:
    """out is torch.relu(z) on z's device bit for bit, NaN bits aside on the CPU: PyTorch's CPU relu may rewrite
    them (bfloat16 0x7FFF -> 0xFFFF); its CUDA relu returns a NaN as is, as the kernel does everywhere."""
    ref, nan = torch.relu(z), z.isnan()
    assert out.dtype == z.dtype and out.stride() == ref.stride() and torch.equal(out.isnan(), nan)
    if z.is_cuda:
        assert torch.equal(_bits(out), _bits(ref))
    assert torch.equal(_bits(out)[~nan], _bits(ref)[~nan]) and torch.equal(_bits(out)[nan], _bits(z)[nan])


def _eager(z: torch.Tensor, g: torch.Tensor, margin: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(relu, packed, grad) by the eager CPU path: what the kernels must reproduce bit for bit."""
    m = torch.tensor(margin, dtype=torch.float64)
    zz = z.detach().cpu().clone().requires_grad_(True)
    y = _HeLUFunction.apply(zz, m, "bits")
    y.backward(g.cpu())
    return y.detach(), mask_and_pack(z.cpu(), threshold_for(m, z.dtype, compiled=False)), zz.grad


def _check(z, g, margin, threshold=None):
    m = torch.tensor(margin, dtype=torch.float64)
    threshold = threshold_for(m, z.dtype, compiled=True) if threshold is None else threshold
    out, packed = H.helu_fwd(z, threshold.to(z.device))
    grad = H.helu_bwd(g, packed)
    _, ref_packed, ref_grad = _eager(z, g, margin)
    _assert_relu_bits(out, z)  # the device's own relu: its sign of zero for -0.0 is the reference
    assert packed.dtype == torch.uint8 and torch.equal(packed.cpu(), ref_packed)
    assert grad.dtype == g.dtype and grad.shape == g.shape
    assert torch.equal(_bits(grad.cpu()), _bits(ref_grad.to(grad.dtype)))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_kernels_bit_exact_vs_eager(launches, layout, dtype, device):
    for i, margin in enumerate(MARGINS):
        t = LAYOUTS[layout]()
        z, g = _values(t.numel(), dtype, margin, seed=i)
        z, g = _filled(layout, dtype, device, z), _filled(layout, dtype, device, g)
        _check(z, g, margin)
    assert launches.count("_fwd_kernel") == len(MARGINS) == launches.count("_bwd_kernel")


@pytest.mark.parametrize("device", DEVICES)
def test_grad_layouts_expanded_and_other_than_z(launches, device):
    z, g = _values(4 * 37, torch.float32, 0.05, seed=3)
    z = z.view(4, 37).to(device)
    _check(z, torch.tensor(-0.0, device=device).expand(4, 37), 0.05)  # y.sum()-style grad: stride 0
    _check(z, g.view(37, 4).t().to(device), 0.05)  # a transposed grad for a contiguous z
    _check(z.t().contiguous().t(), g.view(4, 37).to(device), 0.05)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_every_16bit_value_either_threshold_equals_eager(launches, dtype, device):
    """Every bit pattern of the dtype (subnormals, NaNs included), with the float32 threshold of
    threshold_for(compiled=True) and with eager's 16-bit one: eager's mask and gradient. fp16 margins below
    its normal range (subnormal threshold) and above its max (threshold -inf) included."""
    every = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16).view(dtype).to(device)
    grad = torch.ones_like(every)
    for margin in (0.05, 0.0, 1 / 3, 3e-6, 1e5):
        _check(every, grad, margin)
        eager_thr = threshold_for(torch.tensor(margin, dtype=torch.float64), dtype, compiled=False)
        _check(every, grad, margin, threshold=eager_thr)


def test_float64_and_empty(launches):
    z, g = _values(100, torch.float64, 0.05, seed=1)
    _check(z, g, 0.05)
    out, packed = H.helu_fwd(torch.empty(0, 3), torch.tensor(-0.05))
    assert out.shape == (0, 3) and packed.shape == (0,)
    assert H.helu_bwd(torch.empty(0, 3), packed).shape == (0, 3)


def test_available_rule(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert not H.available(torch.ones(2))  # CPU: only when asked
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert H.available(torch.ones(2)) and H.available(torch.ones(2, dtype=torch.bfloat16))
    assert not H.available(torch.ones(2, dtype=torch.int32)) and not H.available(torch.ones(2, device="meta"))


@pytest.mark.parametrize("kernels", [True, False], ids=["kernels", "eager_fallback"])
def test_opcheck(monkeypatch, kernels):
    if kernels:
        monkeypatch.setenv("TRITON_INTERPRET", "1")
    else:
        monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    for layout, dtype in (("3x5x7x11", torch.float32), ("channels_last", torch.bfloat16), ("n9", torch.float16)):
        z, g = torch.randn(2, LAYOUTS[layout]().numel()) * 0.1  # no NaN: opcheck compares with allclose
        z, g = _filled(layout, dtype, "cpu", z).requires_grad_(True), _filled(layout, dtype, "cpu", g)
        thr = threshold_for(torch.tensor(0.05, dtype=torch.float64), dtype)
        torch.library.opcheck(torch.ops.actlab.helu_fwd.default, (z, thr))
        packed = mask_and_pack(z.detach(), thr.to(dtype))
        torch.library.opcheck(torch.ops.actlab.helu_bwd.default, (g.requires_grad_(True), packed))


@pytest.mark.filterwarnings("ignore:Your compiler for AOTAutograd:UserWarning")  # the recording backend's
def test_compile_fullgraph_sees_the_ops(launches):
    """Dynamo traces through the op (fake impl) in one graph; AOT autograd puts helu_bwd in the backward."""
    from torch._dynamo.testing import AotEagerAndRecordGraphs

    torch._dynamo.reset()
    backend = AotEagerAndRecordGraphs()
    lin = nn.Linear(6, 6)
    thr = threshold_for(torch.tensor(0.05, dtype=torch.float64), torch.float32)

    def f(x):
        out, _ = torch.ops.actlab.helu_fwd(lin(x), thr)
        return out.sum()

    x = torch.randn(5, 6)
    torch.compile(f, backend=backend, fullgraph=True)(x).backward()
    compiled = lin.weight.grad.clone()
    lin.zero_grad()
    f(x).backward()
    assert torch.equal(compiled, lin.weight.grad)
    assert "actlab.helu_fwd" in backend.fw_graphs[0].code and "actlab.helu_bwd" in backend.bw_graphs[0].code
    torch._dynamo.reset()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_helu_module_uses_the_fused_ops_bit_exact(monkeypatch, launches, dtype, device):
    """HeLU(save="bits") on CUDA runs the ops (forced on for CPU tensors here); same bits as eager CPU."""
    if device == "cpu":
        monkeypatch.setattr(A, "_fused", H.available)
    z, g = _values(2 * 3 * 5 * 7, dtype, 0.05, seed=7)
    z, g = _filled("channels_last", dtype, "cpu", z), _filled("channels_last", dtype, "cpu", g)
    zz = z.to(device).requires_grad_(True)
    y = HeLU(0.05).to(device)(zz)
    y.backward(g.to(device))
    assert launches == ["_fwd_kernel", "_bwd_kernel"]
    _, _, ref_grad = _eager(z, g, 0.05)
    _assert_relu_bits(y.detach(), zz.detach())
    assert torch.equal(_bits(zz.grad.cpu()), _bits(ref_grad))
