"""Known-answer tests for actlab.activations: HeLU's forward/gradient/memory, baselines, build, compile.

    .venv/bin/python -m pytest tests/test_activations.py -q
"""

from __future__ import annotations

import math
import shutil

import pytest
import torch
from torch import nn

from actlab import activations as A
from actlab import helu_kernels as K
from actlab.activations import HeLU
from actlab.bench.activations import saved_bytes

DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]


def _grad(module: nn.Module, z: torch.Tensor, g: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(output, d output/d z . g) for one forward/backward; g defaults to ones."""
    z = z.detach().clone().requires_grad_(True)
    y = module(z)
    y.backward(torch.ones_like(y) if g is None else g)
    return y.detach(), z.grad


def _bits(t: torch.Tensor) -> torch.Tensor:
    """The tensor's raw bits as ints, so -0.0 != +0.0 and NaN == NaN: a bit-for-bit comparison."""
    return t.contiguous().view({2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()])


# ---------------------------------------------------------------- HeLU forward and gradient


@pytest.mark.parametrize("save", A.SAVE_MODES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_helu_forward_is_relu_bit_for_bit(save, dtype):
    z = (torch.randn(3, 37, 5, generator=torch.Generator().manual_seed(0)) * 2).to(dtype)
    z[0, :4, 0] = torch.tensor([0.0, -0.0, -0.01, 0.01]).to(dtype)
    h = HeLU(0.05, save=save)
    y, _ = _grad(h, z)
    assert y.dtype == dtype and torch.equal(_bits(y), _bits(torch.relu(z)))
    with torch.no_grad():
        assert torch.equal(_bits(h(z)), _bits(torch.relu(z)))


@pytest.mark.parametrize("save", A.SAVE_MODES)
@pytest.mark.parametrize("m", [0.001, 0.05, 1.0])
def test_helu_gradient_known_points(save, m):
    # float32 points; z[1] is -margin rounded to float32, the threshold in z's dtype (strict: no gradient).
    d = m / 4
    z = torch.tensor([-m - d, -m, -m + d, 0.0, d, -5.0, 3.0])
    _, g = _grad(HeLU(m, save=save), z)
    assert g.tolist() == [0, 0, 1, 1, 1, 0, 1]


@pytest.mark.parametrize("save", A.SAVE_MODES)
def test_helu_gradient_float64_exact_margin(save):
    h = HeLU(save=save).double()
    h.margin = 0.001  # set after .double(): the buffer holds float64(0.001), not float32(0.001)
    z = torch.tensor([-0.0011, -0.001, -0.0009, 0.0, 1e-9], dtype=torch.float64)
    assert _grad(h, z)[1].tolist() == [0, 0, 1, 1, 1]


@pytest.mark.parametrize("save", A.SAVE_MODES)
def test_helu_negative_margin_needs_z_above_abs_margin(save):
    z = torch.tensor([-1.0, 0.0, 0.05, 0.1, 0.1001, 2.0])
    y, g = _grad(HeLU(-0.1, save=save), z)
    assert torch.equal(y, torch.relu(z))  # forward is still ReLU
    assert g.tolist() == [0, 0, 0, 0, 1, 1]


@pytest.mark.parametrize("save", A.SAVE_MODES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_helu_margin_zero_gradient_is_relus_bit_for_bit(save, dtype):
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(1001, generator=gen).to(dtype)
    z[:3] = torch.tensor([0.0, -0.0, 1.0]).to(dtype)
    g = torch.randn(1001, generator=gen).to(dtype)
    g[:2] = torch.tensor([-1.0, float("nan")]).to(dtype)  # ReLU drops NaN grads and gives +0.0 at z <= 0
    _, ours = _grad(HeLU(0.0, save=save), z, g)
    _, relu = _grad(nn.ReLU(), z, g)
    assert ours[0] == 0 and ours[2] == g[2]  # gradient 0 at z = 0, as ReLU
    assert torch.equal(_bits(ours), _bits(relu))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(0,), (1,), (7,), (9,), (3, 5, 13), (1000, 3)])
def test_helu_save_modes_give_identical_gradients(dtype, shape):
    gen = torch.Generator().manual_seed(2)
    z = (torch.randn(shape, generator=gen) * 0.1).to(dtype)
    g = torch.randn(shape, generator=gen).to(dtype)
    grads = [_grad(HeLU(0.05, save=s), z, g)[1] for s in A.SAVE_MODES]
    expected = torch.where(z > -0.05, g, 0)
    for grad in grads:
        assert grad.shape == z.shape and torch.equal(_bits(grad), _bits(expected))


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 13, 1001])
def test_pack_unpack_round_trip(n):
    mask = torch.rand(n, generator=torch.Generator().manual_seed(n)) > 0.5
    packed = K.pack_bits(mask)
    assert packed.dtype == torch.uint8 and packed.numel() == math.ceil(n / 8)
    assert torch.equal(K.unpack_bits(packed, mask.shape), mask)
    # bit k of byte j is element 8j + k: the layout the compiled and eager paths share
    if n >= 9:
        assert packed[0].item() == sum(int(mask[k]) << k for k in range(8))
    z = torch.randn(n, generator=torch.Generator().manual_seed(n))  # eager fast path = plain ops
    assert torch.equal(K.mask_and_pack(z, torch.tensor(-0.1)), K.pack_bits(z <= -0.1))  # the dropped ones


@pytest.mark.parametrize("save", A.SAVE_MODES)
def test_helu_non_contiguous_input(save):
    gen = torch.Generator().manual_seed(3)
    base = torch.randn(6, 11, generator=gen)
    g = torch.randn(11, 6, generator=gen)
    y, grad = _grad(HeLU(0.3, save=save), base.t(), g)
    assert torch.equal(y, torch.relu(base.t()))
    assert torch.equal(grad, torch.where(base.t() > -0.3, g, 0))
    cl = torch.randn(2, 3, 4, 5, generator=gen).to(memory_format=torch.channels_last)
    _, grad = _grad(HeLU(0.3, save=save), cl)
    assert torch.equal(grad, (cl > -0.3).float())


def test_helu_uses_the_margin_of_the_forward_pass():
    for save in A.SAVE_MODES:  # a schedule that moves the margin before backward must not break it
        h = HeLU(0.5, save=save)
        z = torch.tensor([-0.3, 1.0], requires_grad=True)
        y = h(z)
        h.margin = 0.1
        y.sum().backward()
        assert z.grad.tolist() == [1, 1], save


@pytest.mark.parametrize("save", A.SAVE_MODES)
def test_helu_double_backward_gradient_penalty(save):
    # L = sum(w * helu(z)); dL/dz = w * mask; penalty P = sum((dL/dz)^2) -> dP/dw = 2 w mask (known answer)
    z = torch.tensor([-1.0, -0.2, 0.0, 0.7], dtype=torch.float64, requires_grad=True)
    w = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64, requires_grad=True)
    h = HeLU(save=save).double()
    h.margin = 0.5
    (gz,) = torch.autograd.grad((w * h(z)).sum(), z, create_graph=True)
    (gz**2).sum().backward()
    assert w.grad.tolist() == [0.0, 4.0, 6.0, 8.0]
    assert torch.autograd.gradgradcheck(h, (z.detach()[[0, 1, 3]].requires_grad_(True),))


def test_helu_rejects_unknown_save_mode():
    with pytest.raises(ValueError, match="bits"):
        HeLU(save="float")


# ---------------------------------------------------------------- the one gradient rule (module docstring)
# Zeroed exactly where z <= -margin in z's dtype (margin rounded to z's dtype as eager PyTorch rounds a
# Python float: 16-bit via float32), passed elsewhere, NaN z included, eager and compiled alike.

# Margins whose rounding is awkward somewhere: float32(0.05) > 0.05, bfloat16(0.001) < 0.001, 1e-6 is a
# float16 subnormal, 1e5 overflows float16, and 1 + 2**-8 + 2**-30 rounds to bfloat16 differently in one
# step than via float32 (as PyTorch does): a tie after the float32 rounding (same for float16 with 2**-11).
EDGE_MARGINS = [0.05, 0.001, 0.7, 1 / 3, 0.0, -0.1, 1e-6, 1e5, 1 + 2**-8 + 2**-30, 1 + 2**-11 + 2**-30]


def _rounded_neg(m: float, dtype: torch.dtype) -> torch.Tensor:
    """-m rounded to `dtype` by the rule: one rounding to float32 (none for float64), then one to dtype."""
    t = torch.tensor(-m, dtype=torch.float64)
    return t if dtype == torch.float64 else t.to(torch.float32).to(dtype)


def _around(m: float, dtype: torch.dtype) -> torch.Tensor:
    """The largest value below the threshold, the threshold, and the smallest above, all in `dtype`."""
    t = _rounded_neg(m, dtype)
    inf = torch.tensor(math.inf, dtype=dtype)
    return torch.stack([torch.nextafter(t, -inf), t, torch.nextafter(t, inf)])


def _rule(z: torch.Tensor, g: torch.Tensor, m: float) -> torch.Tensor:
    return torch.where(z <= _rounded_neg(m, z.dtype), 0, g)  # NaN <= t is False: NaN z passes


@pytest.mark.parametrize("save", A.SAVE_MODES)
def test_helu_float64_gets_no_gradient_at_exactly_minus_margin(save):
    z = _around(0.05, torch.float64)  # -0.05 - ulp, -0.05, -0.05 + ulp
    assert z[1].item() == -0.05
    # a float32 margin (0.0500000007) would put z = -0.05 inside the band; casts must not round it either
    for h in (HeLU(0.05, save=save), HeLU(0.05, save=save).double(), HeLU(0.05, save=save).half().double()):
        assert _grad(h, z)[1].tolist() == [0, 0, 1]


@pytest.mark.parametrize("save", A.SAVE_MODES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_helu_nan_input_passes_gradient_as_relu(save, dtype):
    nan = float("nan")
    z = torch.tensor([nan, -nan, -3.0, -0.2, 0.0, 2.0]).to(dtype)
    g = torch.tensor([1.5, -2.0, 1.0, 1.0, 1.0, nan]).to(dtype)
    _, relu = _grad(nn.ReLU(), z, g)
    assert relu[:2].tolist() == [1.5, -2.0]  # what torch does: threshold_backward keeps grad where NaN <= 0 fails
    y, ours = _grad(HeLU(0.0, save=save), z, g)
    assert torch.equal(_bits(ours), _bits(relu)) and torch.equal(_bits(y), _bits(torch.relu(z)))
    _, ours = _grad(HeLU(0.5, save=save), z, g)
    assert torch.equal(_bits(ours), _bits(_rule(z, g, 0.5))) and ours[:2].tolist() == [1.5, -2.0]


@pytest.mark.parametrize("dtype", DTYPES)
def test_threshold_for_rounds_as_eager_pytorch(dtype):
    # Every value of a 16-bit dtype; for float32/64 the neighbours of each threshold, and the specials.
    if dtype.itemsize == 2:
        every = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16).view(dtype)
    gen = torch.Generator().manual_seed(5)
    randoms = ((torch.rand(50, generator=gen, dtype=torch.float64) - 0.5) * 10 ** (torch.rand(
        50, generator=gen, dtype=torch.float64) * 12 - 8)).tolist()
    special = torch.tensor([math.nan, -math.inf, math.inf, 0.0, -0.0]).to(dtype)
    for m in EDGE_MARGINS + [-m for m in EDGE_MARGINS] + randoms:
        margin = torch.tensor(m, dtype=torch.float64)
        t, eager = K.threshold_for(margin, dtype), K.threshold_for(margin, dtype, compiled=False)
        assert eager.dtype == dtype and t.to(dtype).to(t.dtype).equal(t) and t.to(dtype).equal(eager), m
        z = every if dtype.itemsize == 2 else torch.cat([_around(m, dtype), special])
        assert torch.equal(z <= t, z <= -m), m  # a Python float: eager PyTorch's own rounding
        assert torch.equal(z <= t, z <= _rounded_neg(m, dtype)), m


# ---------------------------------------------------------------- the margin buffer


def test_margin_property_is_a_float_over_a_0d_buffer():
    h = HeLU(0.05)
    assert isinstance(h.margin, float) and h.margin == pytest.approx(0.05)
    h.margin = 0.25
    assert h.margin == 0.25 and isinstance(h.margin, float)
    assert h.margin_.dim() == 0 and "margin_" in dict(h.named_buffers())
    assert "margin=0.25" in repr(h)


def test_margin_stays_float64_under_module_casts():
    h = HeLU(0.05)
    assert h.margin_.dtype == torch.float64 and h.margin == 0.05  # the Python float, not float32(0.05)
    for cast in (torch.bfloat16, torch.float16, torch.float32, torch.float64):
        h.to(cast)
        assert h.margin_.dtype == torch.float64 and h.margin == 0.05, cast
    h.half().float().double()
    assert h.margin == 0.05 and h.margin_.dim() == 0
    assert HeLU(0.3).to("meta").margin_.dtype == torch.float64  # casts of a module on the meta device too
    model = nn.Sequential(nn.Linear(2, 2), HeLU(0.7)).to(torch.bfloat16)
    assert model[0].weight.dtype == torch.bfloat16 and model[1].margin == 0.7


def test_margin_follows_to_and_state_dict():
    h = HeLU(0.125)
    h.to(torch.float64)
    assert h.margin_.dtype == torch.float64 and h.margin == 0.125
    h.to(torch.bfloat16).to("cpu")  # moves with the module, but stays float64 (see the rounding test)
    assert h.margin_.dtype == torch.float64 and h.margin_.device.type == "cpu" and h.margin_.dim() == 0
    sd = HeLU(0.75).state_dict()
    assert set(sd) == {"margin_"} and sd["margin_"].item() == 0.75
    fresh = HeLU(0.05)
    fresh.load_state_dict(sd)
    assert fresh.margin == 0.75
    model = A.swap(nn.Sequential(nn.Linear(2, 2), nn.ReLU()), "helu", margin=0.3)
    assert model.state_dict()["1.margin_"].item() == pytest.approx(0.3)


# ---------------------------------------------------------------- saved-for-backward memory


@pytest.mark.parametrize("save, expected", [("bits", 2**20 // 8), ("bool", 2**20), ("input", 4 * 2**20 + 4)])
def test_helu_saved_bytes_known_answer(save, expected):
    z = torch.randn(2**20, requires_grad=True)
    assert saved_bytes(lambda: HeLU(0.05, save=save)(z)) == expected  # input also keeps the 4-byte -margin
    assert saved_bytes(lambda: nn.ReLU()(z)) == 4 * 2**20  # ReLU keeps its output


def test_saved_bytes_counts_shared_storage_once_and_skips_excluded():
    z = torch.randn(256, 64, requires_grad=True)
    w = torch.randn(64, 32, requires_grad=True)
    # relu saves its output; the matmul saves that same tensor and w: 256*64*4 bytes + w
    assert saved_bytes(lambda: torch.relu(z) @ w) == 256 * 64 * 4 + 64 * 32 * 4
    assert saved_bytes(lambda: torch.relu(z) @ w, exclude={w.untyped_storage().data_ptr()}) == 256 * 64 * 4


# ---------------------------------------------------------------- the other activations


def _points() -> torch.Tensor:
    return torch.tensor([-3.0, -1.5, -0.7, -0.2, 0.1, 0.6, 1.3, 2.5], dtype=torch.float64)


_TANH_C = math.sqrt(2 / math.pi)


def _phi(z): return 0.5 * (1 + torch.erf(z / math.sqrt(2)))
def _sig(z): return 1 / (1 + torch.exp(-z))
def _tanh_arg(z): return torch.tanh(_TANH_C * (z + 0.044715 * z**3))
def _gelu_tanh(z): return 0.5 * z * (1 + _tanh_arg(z))
def _gelu_tanh_d(z): return 0.5 * (1 + _tanh_arg(z)) + 0.5 * z * (1 - _tanh_arg(z) ** 2) * _TANH_C * (1 + 3 * 0.044715 * z**2)
def _smelu(z, b): return torch.where(z <= -b, 0 * z, torch.where(z >= b, z, (z + b) ** 2 / (4 * b)))
def _smelu_d(z, b): return torch.where(z <= -b, 0 * z, torch.where(z >= b, 1 + 0 * z, (z + b) / (2 * b)))
def _pick(cond, a, b):  # torch.where with float64 scalars (Python scalars would give float32)
    return torch.where(cond, torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64))


# name, kwargs, f(z), f'(z) closed forms; z never at a kink
CLOSED_FORMS = [
    ("relu", {}, lambda z: z.clamp_min(0), lambda z: (z > 0).double()),
    ("leaky_relu", {}, lambda z: torch.where(z > 0, z, 0.01 * z), lambda z: _pick(z > 0, 1.0, 0.01)),
    ("leaky_relu", {"slope": 0.2}, lambda z: torch.where(z > 0, z, 0.2 * z), lambda z: _pick(z > 0, 1.0, 0.2)),
    ("prelu", {}, lambda z: torch.where(z > 0, z, 0.25 * z), lambda z: _pick(z > 0, 1.0, 0.25)),
    ("elu", {}, lambda z: torch.where(z > 0, z, torch.exp(z) - 1), lambda z: torch.where(z > 0, 1 + 0 * z, torch.exp(z))),
    ("gelu", {}, lambda z: z * _phi(z), lambda z: _phi(z) + z * torch.exp(-(z**2) / 2) / math.sqrt(2 * math.pi)),
    ("gelu_tanh", {}, _gelu_tanh, _gelu_tanh_d),
    ("silu", {}, lambda z: z * _sig(z), lambda z: _sig(z) * (1 + z * (1 - _sig(z)))),
    ("swish", {"beta": 2.0}, lambda z: z * _sig(2 * z), lambda z: _sig(2 * z) * (1 + 2 * z * (1 - _sig(2 * z)))),
    ("smelu", {}, lambda z: _smelu(z, 1.0), lambda z: _smelu_d(z, 1.0)),
    ("smelu", {"beta": 0.5}, lambda z: _smelu(z, 0.5), lambda z: _smelu_d(z, 0.5)),
    ("helu", {"margin": 0.5}, lambda z: z.clamp_min(0), lambda z: (z > -0.5).double()),
]


@pytest.mark.parametrize("name, kwargs, f, df", CLOSED_FORMS, ids=[f"{c[0]}{c[1] or ''}" for c in CLOSED_FORMS])
def test_activation_matches_closed_form(name, kwargs, f, df):
    module = A.build(name, **kwargs).double()
    y, g = _grad(module, _points())
    torch.testing.assert_close(y, f(_points()), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(g, df(_points()), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name, kwargs", [("elu", {}), ("gelu", {}), ("gelu_tanh", {}), ("silu", {}),
                                          ("swish", {"beta": 1.7}), ("smelu", {"beta": 0.8})])
def test_smooth_activations_pass_gradcheck(name, kwargs):
    module = A.build(name, **kwargs).double()
    z = _points().requires_grad_(True)
    assert torch.autograd.gradcheck(module, (z,), eps=1e-6, atol=1e-7)
    assert torch.autograd.gradgradcheck(module, (z,), eps=1e-6, atol=1e-6)


def test_swish_beta_one_is_silu_and_learnable_beta_gets_gradient():
    z = _points()
    torch.testing.assert_close(A.build("swish")(z), nn.SiLU()(z))
    s = A.Swish(beta=1.5, learnable=True).double()
    s(z).sum().backward()
    torch.testing.assert_close(s.beta.grad, (z * z * _sig(1.5 * z) * (1 - _sig(1.5 * z))).sum())


@pytest.mark.parametrize("beta", [0.3, 1.0, 2.0])
def test_smelu_is_continuous_with_continuous_slope_at_plus_minus_beta(beta):
    s = A.SmeLU(beta).double()
    for knot, value, slope in [(-beta, 0.0, 0.0), (beta, beta, 1.0)]:
        z = torch.tensor([knot - 1e-9, knot, knot + 1e-9], dtype=torch.float64)
        y, g = _grad(s, z)
        torch.testing.assert_close(y, torch.full_like(z, value), atol=1e-8, rtol=0)
        torch.testing.assert_close(g, torch.full_like(z, slope), atol=1e-8, rtol=0)
    with pytest.raises(ValueError):
        A.SmeLU(0.0)


def test_prelu_per_channel_conv_and_sequence_layouts():
    gen = torch.Generator().manual_seed(4)
    conv = A.build("prelu", per_channel=True)
    z = torch.randn(2, 3, 4, 5, generator=gen)
    conv(z)  # materialises one slope per channel (dim 1)
    assert conv.weight.shape == (3,) and torch.all(conv.weight == 0.25)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([0.1, 0.2, 0.3]))
    w = torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1)
    zz = z.clone().requires_grad_(True)
    conv(zz).sum().backward()
    torch.testing.assert_close(zz.grad, torch.where(z > 0, 1.0, w.expand_as(z)))
    torch.testing.assert_close(conv.weight.grad, torch.where(z > 0, 0.0, z).sum(dim=(0, 2, 3)))

    seq = A.build("prelu", per_channel=True)
    x = torch.randn(2, 7, 4, generator=gen)  # (N, L, D): one slope per unit, the last dim
    seq(x)
    assert seq.weight.shape == (4,)
    with torch.no_grad():
        seq.weight.copy_(torch.tensor([0.5, -1.0, 2.0, 0.0]))
    torch.testing.assert_close(seq(x), torch.where(x > 0, x, x * torch.tensor([0.5, -1.0, 2.0, 0.0])))

    shared = A.build("prelu")
    assert shared.weight.shape == (1,)
    xx = x.clone().requires_grad_(True)
    shared(xx).sum().backward()
    torch.testing.assert_close(shared.weight.grad, torch.where(x > 0, 0.0, x).sum().view(1))


def test_prelu_per_channel_loads_a_state_dict_before_any_forward():
    trained = A.PReLU(per_channel=True)
    trained(torch.randn(2, 5, 3, 3))
    with torch.no_grad():
        trained.weight.copy_(torch.arange(5.0))
    fresh = A.PReLU(per_channel=True)
    fresh.load_state_dict(trained.state_dict())
    assert torch.equal(fresh.weight, torch.arange(5.0))


# ---------------------------------------------------------------- build and factory


def test_build_names_and_errors():
    assert set(A.NAMES) == {"relu", "leaky_relu", "prelu", "elu", "gelu", "gelu_tanh", "silu", "swish",
                            "smelu", "helu", "sugar_bsilu", "sugar_nelu", "st_relu"}
    with pytest.raises(ValueError) as e:
        A.build("helux")
    assert all(n in str(e.value) for n in A.NAMES)
    with pytest.raises(ValueError) as e:
        A.build("relu", margin=0.1)
    assert "\n" not in str(e.value) and "relu" in str(e.value)
    assert isinstance(A.build("gelu_tanh"), nn.GELU) and A.build("gelu_tanh").approximate == "tanh"
    assert A.build("helu", margin=0.2, save="bool").save == "bool"


def test_factory_margin_and_fresh_instances():
    make = A.factory("helu", margin=0.01)
    a, b = make(), make()
    assert a is not b and a.margin == pytest.approx(0.01) and make.activation_name == "helu"
    a.margin = 0.5
    assert b.margin == pytest.approx(0.01)  # no shared buffer
    with pytest.raises(ValueError, match="only used by helu"):
        A.factory("relu", margin=0.05)
    assert isinstance(A.factory("relu", margin=None)(), nn.ReLU)
    with pytest.raises(ValueError):
        A.factory("smelu", beta=-1)  # fails at config time


# ---------------------------------------------------------------- torch.compile


def _compile_case(backend):
    """A compiled MLP with HeLU; the margin changes between steps.

    Returns (backend calls after the first step, after the last, first-layer grads per step).
    """
    from torch._dynamo.testing import CompileCounterWithBackend

    torch._dynamo.reset()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), HeLU(0.0), nn.Linear(8, 1))
    counter = CompileCounterWithBackend(backend)
    compiled = torch.compile(model, backend=counter)
    x = torch.randn(64, 4)
    grads, first = [], None
    for m in MARGINS:
        model[1].margin = m
        model.zero_grad()
        compiled(x).sum().backward()
        first = counter.frame_count if first is None else first
        grads.append(model[0].weight.grad.clone())
        eager = nn.Sequential(nn.Linear(4, 8), HeLU(), nn.Linear(8, 1))
        eager.load_state_dict(model.state_dict())  # margin_ included
        eager(x).sum().backward()
        torch.testing.assert_close(grads[-1], eager[0].weight.grad)
    # known answer at margin 100: every unit passes gradient, so dL/dW1 = outer(W2, sum_x x)
    torch.testing.assert_close(grads[3], torch.outer(model[2].weight[0], x.sum(0)).detach())
    return first, counter.frame_count, grads


MARGINS = [0.0, 0.05, 1.0, 100.0, 0.0]


# One frame. Dynamo traces it twice on CPU: it treats a 0-d float64 CPU tensor (the margin) as a Python
# float, then restarts the trace to keep it a tensor (one backend call per trace; once on GPU). No value
# guard: changing the margin afterwards recompiles nothing.
def test_compile_margin_change_does_not_recompile_and_gradients_follow():
    first, frames, grads = _compile_case("aot_eager")
    assert first <= 2 and frames == first
    assert not torch.equal(grads[0], grads[2])  # a wider margin passes more gradient
    assert torch.equal(grads[0], grads[4])  # and going back to 0 gives ReLU's again


@pytest.mark.slow  # ~25 s cold (C++ builds) on 2 idle cores, seconds once Inductor's cache is warm
@pytest.mark.skipif(not any(map(shutil.which, ("g++", "c++", "clang++"))),
                    reason="Inductor's CPU backend needs a C++ compiler; none on PATH (aot_eager test still runs)")
def test_compile_inductor_margin_change_does_not_recompile():
    first, frames, _ = _compile_case("inductor")
    assert first <= 2 and frames == first


@pytest.mark.slow  # three Inductor builds (one per save mode): ~1 min cold on 2 cores, seconds when cached
@pytest.mark.skipif(not any(map(shutil.which, ("g++", "c++", "clang++"))),
                    reason="Inductor's CPU backend needs a C++ compiler; none on PATH")
@pytest.mark.parametrize("save", A.SAVE_MODES)
def test_compile_inductor_gradient_rule_bit_for_bit_as_eager_every_dtype(save):
    """Eager and Inductor agree bit for bit with each other and with the rule, at the threshold's neighbours
    (float32/64) or at every value (16-bit), NaN included, for awkward margins; forward = torch.relu."""
    torch._dynamo.reset()
    h = HeLU(save=save)

    def step(forward, zs, gs):
        zs = [z.detach().clone().requires_grad_(True) for z in zs]
        ys = forward(zs)
        torch.autograd.backward(ys, gs)  # runs Inductor's backward graph for the compiled forward
        return [y.detach() for y in ys], [z.grad for z in zs]

    def forward(zs):
        return [h(z) for z in zs]

    compiled = torch.compile(forward, backend="inductor", fullgraph=True)
    special = torch.tensor([math.nan, -math.nan, -math.inf, math.inf, 0.0, -0.0, 1.0, -1.0])
    every = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16)
    gen = torch.Generator().manual_seed(6)
    for m in EDGE_MARGINS:
        h.margin = m
        zs = [every.view(d) if d.itemsize == 2 else torch.cat([_around(m, d), special.to(d)]) for d in DTYPES]
        gs = [torch.randn(z.shape, generator=gen).to(z.dtype) for z in zs]
        (ey, eg), (cy, cg) = step(forward, zs, gs), step(compiled, zs, gs)
        for z, g, *out in zip(zs, gs, ey, eg, cy, cg):
            relu, rule = _bits(torch.relu(z)), _bits(_rule(z, g, m))
            assert [torch.equal(_bits(t), ref) for t, ref in zip(out, (relu, rule, relu, rule))] == [True] * 4, (
                z.dtype, m)
