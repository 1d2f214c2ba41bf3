"""ReLU-forward surrogates (actlab.surrogates): sugar_bsilu, sugar_nelu (SUGAR, Horuz et al. 2025), st_relu.

Run: .venv/bin/python -m pytest tests/test_surrogates.py -q -p no:xdist   (CPU, ~30 s; torch.compile most)

The expected derivatives are written out here from the formulas (not imported from the code):
  B-SiLU  f'(z) = σ(z) + (z + α) σ(z) (1 - σ(z)), α = 1.67
  NeLU    f'(z) = 1 for z > 0, 2 α z / (1 + z²)² otherwise, α = 0.01
  ST-ReLU f'(z) = 1 for z > 0 (and NaN z), s for z <= 0, s = 0.01
"""

from __future__ import annotations

import math

import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from actlab import activations as A
from actlab.monitor import measure
from actlab.surrogates import STReLU, SugarBSiLU, SugarNeLU

from compose import fashion, make_cfg

NAMES = ("sugar_bsilu", "sugar_nelu", "st_relu")
INF, NAN = math.inf, math.nan


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    """Every test of this module on one torch thread (conftest.one_thread)."""


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x)) if x >= 0 else math.exp(x) / (1 + math.exp(x))


def bsilu_prime(x: float, a: float = 1.67) -> float:
    if math.isinf(x):
        return 1.0 if x > 0 else 0.0  # the limits
    s = _sigmoid(x)
    return s + (x + a) * s * (1 - s)


def nelu_prime(x: float, a: float = 0.01) -> float:
    if x > 0:
        return 1.0
    if math.isinf(x):
        return 0.0
    t = 1 + x * x
    return 2 * a * x / (t * t)


def st_prime(x: float, s: float = 0.01) -> float:
    return s if x <= 0 else 1.0  # NaN: not <= 0, so 1


FORMULA = {"sugar_bsilu": bsilu_prime, "sugar_nelu": nelu_prime, "st_relu": st_prime}

# 0 (both signs), tiny, the B-SiLU root and minimum, NeLU's minimum -1/sqrt(3), large and infinite |z|
GRID = [0.0, -0.0, 1e-300, -1e-300, 1e-8, -1e-8, 0.5, -0.5, -1 / math.sqrt(3), 1.0, -1.0, 1.49, -2.7349004665497607,
        -3.765, 2.5, -2.5, 5.0, -5.0, 20.0, -20.0, 50.0, -50.0, 1e3, -1e3, 1e6, -1e6, 1e200, -1e200, INF, -INF]


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.view({8: torch.int64, 4: torch.int32, 2: torch.int16}[t.element_size()])


# ---------------------------------------------------------------- forward: exactly torch.relu


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16])
def test_forward_is_relu_bit_for_bit(name, dtype):
    z = torch.tensor([0.0, -0.0, NAN, -NAN, INF, -INF, 1e-30, -1e-30, 3.5, -3.5], dtype=torch.float64).to(dtype)
    z = torch.cat([z, torch.randn(500, dtype=torch.float64).to(dtype) * 4])
    act = A.build(name)
    for grad in (False, True):
        y = act(z.clone().requires_grad_(grad))
        assert y.dtype == dtype and torch.equal(_bits(y.detach()), _bits(torch.relu(z)))


# ---------------------------------------------------------------- backward: the formulas


@pytest.mark.parametrize("name", NAMES)
def test_backward_matches_the_formula_float64(name):
    z = torch.tensor(GRID, dtype=torch.float64, requires_grad=True)
    g = torch.linspace(-2, 3, len(GRID), dtype=torch.float64)  # an upstream gradient, not all ones
    A.build(name)(z).backward(g)
    want = torch.tensor([gi * FORMULA[name](x) for gi, x in zip(g.tolist(), GRID)], dtype=torch.float64)
    assert torch.isfinite(z.grad).all()
    if name == "st_relu":
        assert torch.equal(z.grad, want)  # one multiply by s, or none: bit for bit
        return
    # relative 1e-13, except where B-SiLU's two terms cancel (its root): there 1e-15 of the terms' size
    scale = [abs(gi) * (_sigmoid(x) * (1 + abs(x + 1.67) * (1 - _sigmoid(x))) if math.isfinite(x) else 0)
             for gi, x in zip(g.tolist(), GRID)] if name == "sugar_bsilu" else [0.0] * len(GRID)
    err = (z.grad - want).abs()
    assert (err <= 1e-13 * want.abs() + 1e-15 * torch.tensor(scale, dtype=torch.float64)).all(), err


def test_backward_formula_spot_values():
    """Values checked by hand: B-SiLU f'(0) = 0.5 (1 + 1.67 / 2), NeLU f'(-1) = -2α / 4, ST s at z = 0."""
    z = torch.tensor([0.0, -1.0], dtype=torch.float64)
    assert A.derivative(SugarBSiLU(), z)[0].item() == pytest.approx(0.9175, rel=1e-15)
    assert A.derivative(SugarNeLU(alpha=0.2), z).tolist() == pytest.approx([0.0, -0.1], rel=1e-15)
    assert A.derivative(STReLU(slope=0.3), z).tolist() == [0.3, 0.3]


@pytest.mark.parametrize("name", ["sugar_bsilu", "sugar_nelu"])
def test_nan_input_gives_nan_gradient_and_st_relu_passes_it(name):
    z = torch.tensor([NAN, 1.0], dtype=torch.float64)
    assert math.isnan(A.derivative(A.build(name), z)[0].item())
    assert A.derivative(A.build("st_relu"), z).tolist() == [1.0, 1.0]  # as ReLU/HeLU pass a NaN z's gradient


def _antiderivative(name: str, z: torch.Tensor) -> torch.Tensor:
    """The function whose true derivative the surrogate is (what gradcheck differentiates numerically)."""
    if name == "sugar_bsilu":
        return (z + 1.67) * torch.sigmoid(z) - 1.67 / 2
    if name == "sugar_nelu":
        return torch.where(z > 0, z, 0.01 * z * z / (1 + z * z))
    return torch.where(z > 0, z, 0.01 * z)


@pytest.mark.parametrize("name", NAMES)
def test_gradcheck_against_the_surrogate_function(name):
    """relu(z) with our backward, plus sg(F(z) - relu(z)), has F's value and our gradient: gradcheck
    then compares our backward with finite differences of F (points kept off the kink at 0)."""
    act = A.build(name)

    def f(z):
        return act(z) + (_antiderivative(name, z) - torch.relu(z)).detach()

    z = torch.cat([torch.linspace(-8, -0.05, 25), torch.linspace(0.05, 8, 25)]).double().requires_grad_(True)
    assert torch.autograd.gradcheck(f, (z,), eps=1e-6, atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype, rtol, atol", [(torch.float32, 1e-5, 1e-7), (torch.bfloat16, 1.6e-2, 1e-4)])
def test_backward_low_precision_sanity(name, dtype, rtol, atol):
    z = torch.linspace(-8, 8, 801, dtype=torch.float64).to(dtype)  # grid values exact in dtype
    zz = z.clone().requires_grad_(True)
    A.build(name)(zz).backward(torch.ones_like(zz))
    assert zz.grad.dtype == dtype
    want = torch.tensor([FORMULA[name](x) for x in z.double().tolist()], dtype=torch.float64)
    torch.testing.assert_close(zz.grad.double(), want, rtol=rtol, atol=atol)


def test_st_relu_bool_and_bits_agree_and_params_apply():
    z = torch.randn(3, 37, dtype=torch.float64)
    grads = []
    for save in ("bits", "bool"):
        zz = z.clone().requires_grad_(True)
        STReLU(slope=0.25, save=save)(zz).sum().backward()
        grads.append(zz.grad)
    assert torch.equal(grads[0], grads[1]) and torch.equal(grads[0], torch.where(z <= 0, 0.25, 1.0).double())
    assert A.derivative(SugarBSiLU(alpha=0.0), torch.tensor([1.0])).item() == pytest.approx(
        _sigmoid(1) * (1 + 1 - _sigmoid(1)))  # α = 0 is SiLU's derivative
    with pytest.raises(ValueError):
        STReLU(save="input")
    with pytest.raises(ValueError):
        SugarNeLU(alpha=math.nan)


def test_double_backward_runs():
    z = torch.linspace(-3, 3, 13, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(SugarBSiLU()(z).sum(), z, create_graph=True)
    (h,) = torch.autograd.grad(g.sum(), z)  # d/dz of the surrogate derivative
    s = torch.sigmoid(z.detach())
    d2 = s * (1 - s) * (2 + (z.detach() + 1.67) * (1 - 2 * s))  # B-SiLU''
    torch.testing.assert_close(h, d2, rtol=1e-12, atol=1e-15)


# ---------------------------------------------------------------- registry, swap, for_inference, config


def test_registry_swap_and_for_inference():
    assert {"sugar_bsilu", "sugar_nelu", "st_relu"} <= set(A.NAMES)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.GELU(), nn.Linear(8, 2))
    A.swap(model, "sugar_bsilu")
    assert [type(m) for m in model if A.is_activation(m)] == [SugarBSiLU, SugarBSiLU]
    A.swap(model, "sugar_nelu", alpha=0.1)
    assert model[1].alpha == 0.1 and isinstance(model[3], SugarNeLU)
    model[3] = STReLU()
    x = torch.randn(16, 4, dtype=torch.float32)
    before = model(x)
    A.for_inference(model)
    assert [type(m) for m in model if A.is_activation(m)] == [nn.ReLU, nn.ReLU]
    assert torch.equal(model(x), before)  # params require grad: the autograd path was live before


@pytest.mark.parametrize("name", NAMES)
def test_hydra_config_builds_the_module(name, tmp_path):
    cfg = make_cfg(tmp_path, f"activation={name}")
    make = instantiate(cfg.activation)
    assert make.activation_name == name and type(make()) is type(A.build(name))


def test_one_epoch_run_through_hydra(tmp_path, fashion_dir):
    from actlab.run.runner import run

    rec = run(make_cfg(tmp_path, *fashion(fashion_dir), "activation=sugar_bsilu", "trainer.max_epochs=1"))
    assert rec["status"] == "completed" and rec["error"] is None
    assert rec["config"]["activation"] == {"_target_": "actlab.activations.factory", "name": "sugar_bsilu",
                                          "margin": None, "alpha": 1.67}
    assert 0.0 <= rec["metrics"]["test/acc"] <= 1.0


# ---------------------------------------------------------------- torch.compile


@pytest.mark.parametrize("name", NAMES)
def test_compiles_without_graph_breaks(name):
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 9), A.build(name), nn.Linear(9, 3)).double()
    x = torch.randn(5, 6, dtype=torch.float64)
    model(x).square().sum().backward()
    eager = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)  # a graph break raises
    out = compiled(x)
    out.square().sum().backward()
    assert torch.equal(out, model(x))
    assert all(torch.equal(a, p.grad) for a, p in zip(eager, model.parameters()))


# ---------------------------------------------------------------- the monitor's gradient-dead units


def _dead_grad_by_definition(name: str, z: torch.Tensor, eps: float = 1e-6, **kw) -> float:
    """Share of units (columns) whose |f'(z)| <= eps on every element, f' from the formula above."""
    f = {"sugar_bsilu": bsilu_prime, "sugar_nelu": nelu_prime, "st_relu": st_prime}[name]
    dead = [all(abs(f(x, *kw.values())) <= eps for x in col) for col in z.T.tolist()]
    return sum(dead) / len(dead)


class _Fixed(nn.Module):
    """Feeds a fixed pre-activation tensor to the activation whatever the input."""

    def __init__(self, z: torch.Tensor, act: nn.Module):
        super().__init__()
        self.register_buffer("z", z)
        self.act = act

    def forward(self, x):
        return self.act(self.z)


# per unit (column): two values of z each. Comments: f' there.
Z_UNITS = torch.tensor([
    [1.0, 0.5],  # alive everywhere
    [-20.0, -30.0],  # B-SiLU |f'| <= 4e-8: dead; NeLU 2α/|z|³ ~ 2.5e-6, 7.4e-7: alive (2.5e-6 > eps)
    [-2.7349004665497607, -2.734900466],  # B-SiLU's root: dead; NeLU -7.6e-4: alive
    [-1e-5, -0.0],  # B-SiLU 0.91: alive; NeLU <= 2e-7: dead
    [-40.0, -100.0],  # B-SiLU dead; NeLU 3e-7, 2e-8: dead
    [-5.0, -1.0],  # B-SiLU -0.016, 0.40: alive; NeLU alive
    [-3.0, -16.0],  # B-SiLU -0.013, 2.5e-6: alive
    [-17.0, -16.5],  # B-SiLU ~ 6.4e-7, 9.5e-7: dead
], dtype=torch.float64).T


@pytest.mark.parametrize(
    "make, kw, expected",
    [
        (SugarBSiLU, {}, 4 / 8),
        (SugarNeLU, {}, 2 / 8),
        (STReLU, {}, 0.0),  # slope 0.01 > eps: nothing is ever gradient-dead
        (lambda: STReLU(slope=1e-7), {"s": 1e-7}, 7 / 8),  # slope <= eps: dead iff z <= 0 everywhere
        (lambda: STReLU(slope=0.0), {"s": 0.0}, 7 / 8),
    ],
    ids=["bsilu", "nelu", "st", "st_tiny_slope", "st_slope0"],
)
def test_monitor_dead_grad_matches_the_definition(make, kw, expected):
    act = make()
    name = {SugarBSiLU: "sugar_bsilu", SugarNeLU: "sugar_nelu", STReLU: "st_relu"}[type(act)]
    assert _dead_grad_by_definition(name, Z_UNITS, **kw) == pytest.approx(expected)
    r = measure(_Fixed(Z_UNITS, act), [torch.zeros(1)])
    assert r["dead_grad/act"] == pytest.approx(expected)
    assert r["dead_fwd/act"] == pytest.approx(7 / 8)  # the forward is ReLU's: only unit 0 fires
