"""Dead-neuron monitor: known answers on hand-built networks, shared modules, the Lightning callback.

Run: .venv/bin/python -m pytest tests/test_monitor.py -q   (CPU, well under a minute)

Most networks are a Linear layer with zero weights except a tiny positive slope on inputs in [0, 1],
so each unit's pre-activation z stays inside a chosen interval [bias, bias + 0.01] for every input.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from actlab.activations import HeLU, SmeLU, build, swap
from actlab.monitor import SharedActivationError, UnitStats, measure

D_IN = 5
ALIVE, BAND, DEAD = 0.5, -0.04, -1.0  # z in [b, b + 0.01]: positive / inside (-0.05, -0.02] / far below


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    """Every test of this module on one torch thread (conftest.one_thread)."""


def fixed_linear(biases: list[float], d_in: int = D_IN) -> nn.Linear:
    """z_j = b_j + (0.01 / d_in) * sum(x) for x in [0, 1]^d_in, i.e. z_j in [b_j, b_j + 0.01]."""
    lin = nn.Linear(d_in, len(biases))
    with torch.no_grad():
        lin.weight.fill_(0.01 / d_in)
        lin.bias.copy_(torch.tensor(biases))
    return lin


def inputs(n: int = 64, d_in: int = D_IN, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, d_in, generator=torch.Generator().manual_seed(seed))


def one_layer(act: nn.Module, biases: list[float]) -> nn.Sequential:
    return nn.Sequential(fixed_linear(biases), act)


BIASES = [ALIVE] * 2 + [BAND] * 3 + [DEAD] * 3  # 8 units: 2 alive, 3 in HeLU's band, 3 dead


def test_relu_linear_k_of_n_dead():
    r = measure(one_layer(nn.ReLU(), [ALIVE] * 5 + [DEAD] * 3), [inputs()])
    assert r["dead_fwd/1"] == r["dead_grad/1"] == r["zero_rate/1"] == pytest.approx(3 / 8)
    assert r["dead_fwd"] == r["dead_fwd_units"] == pytest.approx(3 / 8)
    assert "band/1" not in r and r["band"] == 0.0  # band is a HeLU-only quantity


@pytest.mark.parametrize(
    "margin, dead_grad, band",
    [
        (0.05, 3 / 8, 3 / 8),  # band units (z in [-0.04, -0.03]) get gradient: the "regret" region
        (0.01, 6 / 8, 0.0),  # z <= -0.03 < -0.01: no gradient any more
        (0.0, 6 / 8, 0.0),  # margin 0 is ReLU's gradient
        (-0.1, 6 / 8, 0.0),  # negative margin: gradient only where z > 0.1 (alive units sit at 0.5)
        (2.0, 0.0, 6 / 8),  # wide margin reaches the deep-dead units too
    ],
)
def test_helu_margins(margin, dead_grad, band):
    r = measure(one_layer(HeLU(margin), BIASES), [inputs(), inputs(seed=1)])
    assert r["dead_fwd/1"] == pytest.approx(6 / 8)  # HeLU's forward is ReLU's, whatever the margin
    assert r["zero_rate/1"] == pytest.approx(6 / 8)
    assert r["dead_grad/1"] == pytest.approx(dead_grad)
    assert r["band/1"] == pytest.approx(band)
    assert r["dead_grad_units"] == pytest.approx(dead_grad)


@pytest.mark.parametrize(
    "make",
    [nn.GELU, lambda: nn.GELU(approximate="tanh"), nn.LeakyReLU, nn.ELU, lambda: build("prelu"),
     lambda: build("prelu", per_channel=True), nn.SiLU, lambda: nn.LeakyReLU(inplace=True)],
    ids=["gelu", "gelu_tanh", "leaky", "elu", "prelu", "prelu_channel", "silu", "leaky_inplace"],
)
def test_never_dead_activations(make):
    r = measure(one_layer(make(), BIASES), [inputs()])
    assert r["dead_fwd/1"] == r["dead_grad/1"] == r["zero_rate/1"] == 0.0  # GELU is never exactly 0


@pytest.mark.parametrize(
    "act", [nn.LeakyReLU(negative_slope=0.0), nn.PReLU(num_parameters=8, init=0.0), build("prelu", init=0.0)],
    ids=["leaky_slope0", "nn_prelu_slope0", "prelu_slope0"],
)
def test_zero_slope_behaves_like_relu(act):
    r = measure(one_layer(act, BIASES), [inputs()])
    assert r["dead_fwd/1"] == r["dead_grad/1"] == r["zero_rate/1"] == pytest.approx(6 / 8)


def test_prelu_slopes_off_the_unit_axis_fall_back_to_autograd():
    """nn.PReLU(3) on (N, 3, D) puts slopes on dim 1 (positions), not on the unit (last) dim."""
    x = torch.rand(16, 3, D_IN, generator=torch.Generator().manual_seed(0))
    r = measure(one_layer(nn.PReLU(3, init=0.0), BIASES), [x])
    assert r["dead_fwd/1"] == r["dead_grad/1"] == pytest.approx(6 / 8)
    r = measure(one_layer(nn.PReLU(3, init=1e-7), BIASES), [x])  # slope below eps: still grad-dead
    assert r["dead_grad/1"] == pytest.approx(6 / 8)
    r = measure(one_layer(nn.PReLU(3, init=0.1), BIASES), [x])
    assert r["dead_grad/1"] == 0.0


def test_generic_derivative_smelu():
    """SmeLU has no closed form here: f' comes from autograd. Below -beta it is 0 and so is f."""
    r = measure(one_layer(SmeLU(beta=0.5), [ALIVE, BAND, -0.6, DEAD]), [inputs()])
    assert r["dead_fwd/1"] == r["dead_grad/1"] == pytest.approx(2 / 4)  # z in (-beta, 0] still fires
    assert r["zero_rate/1"] == pytest.approx(2 / 4)


def test_eps_threshold():
    model = one_layer(nn.ReLU(), [1e-7, ALIVE])  # z in [1e-7, 0.01 + 1e-7]
    with torch.no_grad():
        model[0].weight.zero_()  # z = 1e-7 exactly: fires, but below eps
    assert measure(model, [inputs()])["dead_fwd/1"] == 0.5
    assert measure(model, [inputs()], eps=0.0)["dead_fwd/1"] == 0.0
    assert measure(model, [inputs()])["dead_grad/1"] == 0.0  # f' = 1 > eps


def test_conv_layout_unit_is_channel_and_any_position_counts():
    """4 channels: alive, dead, fires at exactly one pixel of one sample, dead. Shape (N, 4, 5, 6)."""
    conv = nn.Conv2d(1, 4, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([0.0, 0.0, 1.0, 0.0]).view(4, 1, 1, 1))
        conv.bias.copy_(torch.tensor([1.0, -1.0, -0.5, -0.2]))
    x = torch.zeros(3, 1, 5, 6)
    x[2, 0, 4, 1] = 1.0  # channel 2: z = 0.5 there, -0.5 everywhere else
    r = measure(nn.Sequential(conv, nn.ReLU()), [x])
    assert r["dead_fwd/1"] == r["dead_grad/1"] == pytest.approx(2 / 4)
    n = 3 * 5 * 6
    assert r["zero_rate/1"] == pytest.approx((2 * n + (n - 1)) / (4 * n))
    r = measure(nn.Sequential(conv, HeLU(0.3)), [x])  # channel 3 (z = -0.2) is in the band
    assert r["dead_grad/1"] == pytest.approx(1 / 4) and r["band/1"] == pytest.approx(n / (4 * n))


def test_sequence_layout_unit_is_last_dim():
    """(N, L, D): unit = hidden feature; a feature firing at one token of one sequence is alive."""
    lin = nn.Linear(3, 4)
    with torch.no_grad():
        lin.weight.zero_()
        lin.weight[1, 0] = 1.0
        lin.bias.copy_(torch.tensor([1.0, -0.5, -1.0, -1.0]))
    x = torch.zeros(2, 7, 3)
    x[1, 6, 0] = 1.0
    r = measure(nn.Sequential(lin, nn.ReLU()), [x])
    assert r["dead_fwd/1"] == pytest.approx(2 / 4)
    assert r["zero_rate/1"] == pytest.approx((3 * 14 - 1) / (4 * 14))


class TinyText(nn.Module):
    """input_ids -> embedding -> Linear -> ReLU, taking HF-style keyword arguments."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(4, 2)
        self.fc = nn.Linear(2, 3)
        self.act = nn.ReLU()
        with torch.no_grad():
            self.emb.weight.copy_(torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0]]))  # 0 = pad
            self.fc.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))
            self.fc.bias.copy_(torch.tensor([-0.5, -0.5, -1.0]))  # unit 1 fires only on padding

    def forward(self, input_ids, attention_mask=None):
        return self.act(self.fc(self.emb(input_ids)))


def test_dict_batches_exclude_padding_and_drop_unknown_keys():
    ids = torch.tensor([[1, 2, 0, 0], [3, 1, 2, 0]])
    batch = {"input_ids": ids, "attention_mask": (ids != 0).long(), "idx": torch.tensor([0, 1])}
    r = measure(TinyText(), [batch], histogram=(10, -1.0, 1.0))
    assert r["dead_fwd/act"] == pytest.approx(2 / 3)  # unit 1 only fired on padded positions
    assert r["zero_rate/act"] == pytest.approx(2 / 3)
    assert sum(r["preact_hist"]["layers"]["act"]) == 5 * 3  # 5 real tokens x 3 features
    r = measure(TinyText(), [{"input_ids": ids}])  # no mask: padding counts
    assert r["dead_fwd/act"] == pytest.approx(1 / 3)


def test_aggregates_mean_over_layers_vs_weighted_over_units():
    """Layer A: 1 of 4 dead; layer B: 6 of 8 dead -> mean 0.5, weighted 7/12."""
    a = fixed_linear([ALIVE] * 3 + [DEAD])
    b = nn.Linear(4, 8)
    with torch.no_grad():
        b.weight.fill_(0.001)
        b.bias.copy_(torch.tensor([ALIVE] * 2 + [DEAD] * 6))
    r = measure(nn.Sequential(a, nn.ReLU(), b, nn.ReLU()), [inputs()])
    assert (r["dead_fwd/1"], r["dead_fwd/3"]) == (pytest.approx(0.25), pytest.approx(0.75))
    assert r["dead_fwd"] == pytest.approx(0.5) and r["dead_fwd_units"] == pytest.approx(7 / 12)
    assert r["dead_grad"] == pytest.approx(0.5) and r["dead_grad_units"] == pytest.approx(7 / 12)
    assert r["zero_rate"] == pytest.approx(0.5)


def test_histogram_clamps_into_edge_bins():
    model = one_layer(nn.ReLU(), [10.0, -10.0, 0.0])
    r = measure(model, [inputs(16)], histogram=(4, -1.0, 1.0))
    h = r["preact_hist"]
    assert h["edges"] == [-1.0, -0.5, 0.0, 0.5, 1.0] and h["margin"] is None and h["activation"] == "ReLU"
    assert h["layers"]["1"] == [16, 0, 16, 16]  # -10 -> first bin, 10 -> last bin, [0, 0.01] -> bin 2


def test_measure_is_pure():
    model = nn.Sequential(fixed_linear(BIASES), nn.BatchNorm1d(8), HeLU(0.05), nn.Dropout())
    model.train()
    model[3].eval()
    before = [m.training for m in model.modules()]
    running = model[1].running_mean.clone()
    measure(model, [inputs()])
    assert [m.training for m in model.modules()] == before
    assert torch.equal(model[1].running_mean, running)  # measured in eval mode
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_shared_module_registered_twice_is_rejected():
    act = nn.ReLU()
    model = nn.Sequential(fixed_linear([ALIVE] * 5), act, nn.Linear(5, 5), act)
    with pytest.raises(SharedActivationError, match=r"'1' and '3'.*actlab\.activations\.swap"):
        measure(model, [inputs()])
    assert measure(swap(model, "relu"), [inputs()])["dead_fwd/3"] >= 0  # swap splits it


def test_module_called_twice_per_forward_is_rejected():
    from torchvision.models.resnet import BasicBlock

    model = nn.Sequential(BasicBlock(4, 4))  # calls self.relu twice
    x = torch.randn(2, 4, 6, 6)
    with pytest.raises(SharedActivationError, match=r"'0\.relu' runs 2 times per forward.*swap"):
        measure(model, [x])
    r = measure(swap(model, "helu", margin=0.1), [x])
    assert {"dead_fwd/0.relu", "dead_fwd/0.relu2", "band/0.relu2"} <= set(r)


def test_inplace_relu_sees_the_input():
    r = measure(one_layer(nn.ReLU(inplace=True), BIASES), [inputs()])
    assert r["dead_fwd/1"] == r["zero_rate/1"] == pytest.approx(6 / 8)


def test_training_accumulation_follows_a_changing_margin():
    """Gradient "at least once": a band unit alive at margin 0.05 stays alive after the margin shrinks."""
    model = one_layer(HeLU(0.05), BIASES).train()
    with UnitStats(model) as stats:
        x = inputs().requires_grad_()
        model(x).sum().backward()
        model[1].margin = 0.01
        model(x).sum().backward()
        r = stats.rates(prefix="train_")
        assert r["train_dead_fwd"] == pytest.approx(6 / 8) and r["train_dead_grad"] == pytest.approx(3 / 8)
        assert r["train_zero_rate"] == pytest.approx(6 / 8)
        assert r["train_band"] == pytest.approx(3 / 16)  # band units in the band on the first pass only
        stats.reset()
        stats.sites[0].count_every = 2  # element counts on calls 1 and 3 only; dead_* on all three
        for margin in (0.05, 0.01, 0.01):
            model[1].margin = margin
            model(x).sum().backward()
        r = stats.rates(prefix="train_")
        assert r["train_dead_grad"] == pytest.approx(3 / 8) and r["train_band"] == pytest.approx(3 / 16)
    assert not model[1]._forward_pre_hooks


# -- Lightning -----------------------------------------------------------------------------------
L = pytest.importorskip("lightning.pytorch")


class TinyTask(L.LightningModule):
    def __init__(self, act: str = "helu", **kw):
        super().__init__()
        self.model = nn.Sequential(nn.Linear(6, 16), build(act, **kw), nn.Linear(16, 8), build(act, **kw),
                                   nn.Linear(8, 3))

    def forward(self, x):
        return self.model(x)

    def training_step(self, batch, _):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def validation_step(self, batch, _):
        x, y = batch
        self.log("val/loss", nn.functional.cross_entropy(self(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class TinyData(L.LightningDataModule):
    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(96, 6, generator=g), torch.randint(0, 3, (96,), generator=g)

    def train_dataloader(self):
        ds = torch.utils.data.TensorDataset(self.x[:64], self.y[:64])
        return torch.utils.data.DataLoader(ds, batch_size=16, shuffle=True)

    def val_dataloader(self):
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(self.x[64:], self.y[64:]), batch_size=12)


def fit(tmp_path, task, monitor, logger=False, max_epochs=2):
    trainer = L.Trainer(max_epochs=max_epochs, logger=logger, enable_checkpointing=False, accelerator="cpu",
                        callbacks=[monitor], default_root_dir=tmp_path, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(task, datamodule=TinyData())
    return trainer


def test_callback_in_a_real_training(tmp_path):
    from lightning.pytorch.loggers import CSVLogger

    from actlab.callbacks.monitor import DeadNeuronMonitor

    monitor = DeadNeuronMonitor(probe_size=20, hist_bins=200, hist_range=(-3, 3))
    task = TinyTask("helu", margin=0.05)
    trainer = fit(tmp_path, task, monitor, logger=CSVLogger(tmp_path / "logs"))
    state = monitor.state()
    assert set(state) == {"final", "history"} and [h["epoch"] for h in state["history"]] == [0, 1]
    json.dumps(state)  # goes into record.json as is
    for entry in state["history"]:
        for key in ("train_dead_fwd", "train_dead_grad", "train_zero_rate", "train_band", "dead_fwd",
                    "dead_grad", "band", "zero_rate", "dead_fwd_units", "train_dead_fwd/1", "dead_grad/3"):
            assert 0.0 <= entry[key] <= 1.0, key
    assert {"dead_fwd", "train_dead_fwd", "band/1"} <= set(state["final"])
    # the probe measurement of the last epoch is what final holds (same weights, same probe)
    assert state["final"]["dead_fwd/1"] == state["history"][-1]["dead_fwd/1"]

    hist_path = Path(trainer.log_dir) / "preact_hist.json"
    hist = json.loads(hist_path.read_text())
    assert len(hist["edges"]) == 201 and hist["edges"][0] == -3 and hist["edges"][-1] == 3
    assert hist["margin"] == pytest.approx(0.05) and hist["activation"] == "HeLU"
    assert set(hist["layers"]) == {"1", "3"}  # named relative to pl_module.model
    assert [len(c) for c in hist["layers"].values()] == [200, 200]
    assert sum(hist["layers"]["1"]) == 20 * 16 and sum(hist["layers"]["3"]) == 20 * 8  # probe = 20 examples
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in task.modules())

    header = (tmp_path / "logs" / "lightning_logs" / "version_0" / "metrics.csv").read_text().splitlines()[0]
    assert {"dead_fwd", "train_dead_grad", "band/1", "train_zero_rate/3"} <= set(header.split(","))


def test_callback_every_n_epochs_and_shared_module(tmp_path):
    from actlab.callbacks.monitor import DeadNeuronMonitor

    monitor = DeadNeuronMonitor(probe_size=8, every_n_epochs=2, log_per_layer=False, out_dir=str(tmp_path / "run"))
    fit(tmp_path, TinyTask("relu"), monitor, max_epochs=3)
    assert [h["epoch"] for h in monitor.history] == [1]
    assert "band/1" not in monitor.history[0] and monitor.history[0]["band"] == 0.0
    hist = json.loads((tmp_path / "run" / "preact_hist.json").read_text())
    assert hist["margin"] is None and sum(hist["layers"]["3"]) == 8 * 8

    task = TinyTask("relu")
    task.model[3] = task.model[1]  # one module at two call sites
    with pytest.raises(SharedActivationError, match="swap"):
        fit(tmp_path, task, DeadNeuronMonitor())


def test_callback_rejects_bad_arguments():
    from actlab.callbacks.monitor import DeadNeuronMonitor

    with pytest.raises(ValueError, match="hist_range"):
        DeadNeuronMonitor(hist_range=(1.0, -1.0))
    assert math.isclose(DeadNeuronMonitor().eps, 1e-6)
