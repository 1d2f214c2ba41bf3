"""Monitor metrics beyond the dead rates: known answers on hand-built layers, and a real run checked against
independent reimplementations of the reference definitions (ReDo / dopamine, Dohare et al., Roy & Vetterli).

Run: .venv/bin/python -m pytest tests/test_monitor_metrics.py -q   (CPU, ~20 s)

Most layers here are a Linear with zero weights, so every unit's output is its bias (through the
activation) on every input: mean |h| and firing frequencies are then known by construction.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from actlab import dormancy
from actlab.layer_stats import GradNorms, weight_abs
from actlab.monitor import measure, resolve_metrics


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    """Every test of this module on one torch thread (conftest.one_thread)."""


def const_layer(biases: list[float], act: nn.Module | None = None, d_in: int = 3) -> nn.Sequential:
    """Linear(d_in, len(biases)) with zero weights -> act: unit j outputs act(b_j) for every input."""
    lin = nn.Linear(d_in, len(biases))
    with torch.no_grad():
        lin.weight.zero_()
        lin.bias.copy_(torch.tensor(biases))
    return nn.Sequential(lin, act if act is not None else nn.ReLU())


def x(n: int = 16, d_in: int = 3) -> torch.Tensor:
    return torch.rand(n, d_in, generator=torch.Generator().manual_seed(0))


# -- ReDo tau-dormant ------------------------------------------------------------------------------
# mean |h| = [1, 2, 0.05, 0.015, 0]; layer mean 0.613; scores [1.63, 3.26, 0.0816, 0.0245, 0]
REDO_BIASES = [1.0, 2.0, 0.05, 0.015, -1.0]


def test_redo_scores_by_hand():
    r = measure(const_layer(REDO_BIASES), [x()])
    assert r["dormant_redo@0/1"] == pytest.approx(1 / 5)  # only the unit with h = 0
    assert r["dormant_redo@0_025/1"] == pytest.approx(2 / 5)  # + 0.015 / 0.613 = 0.0245
    assert r["dormant_redo@0_1/1"] == pytest.approx(3 / 5)  # + 0.05 / 0.613 = 0.0816
    assert r["dormant_redo@0_025"] == r["dormant_redo_units@0_025"] == pytest.approx(2 / 5)  # one layer
    scores = dormancy.redo_scores(torch.tensor([1.0, 2.0, 0.05, 0.015, 0.0]))
    assert scores.tolist() == pytest.approx([1 / 0.613, 2 / 0.613, 0.05 / 0.613, 0.015 / 0.613, 0.0], rel=1e-6)


def test_redo_uses_the_output_magnitude_of_non_relu_activations():
    """LeakyReLU(0.1): |h| = 0.1 |b| for negative b; h < 0 still counts (E|h|, not E h)."""
    r = measure(const_layer([1.0, -1.0, -0.2, 0.0], nn.LeakyReLU(0.1)), [x()])
    # mean |h| = [1, 0.1, 0.02, 0] -> mean 0.28 -> scores [3.57, 0.357, 0.0714, 0]
    assert (r["dormant_redo@0/1"], r["dormant_redo@0_025/1"], r["dormant_redo@0_1/1"]) == (
        pytest.approx(1 / 4), pytest.approx(1 / 4), pytest.approx(2 / 4))


def test_redo_conv_unit_is_the_channel_mean_over_positions():
    """Channel 0: 1 everywhere; channel 1: 4 at one of 2 x (3 x 5) positions, else 0 (mean 4/30); channel
    2: 0. Layer mean 0.378, scores [2.65, 0.353, 0]: only channel 2 is dormant, at every tau."""
    conv = nn.Conv2d(1, 3, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([0.0, 4.0, 0.0]).view(3, 1, 1, 1))
        conv.bias.copy_(torch.tensor([1.0, 0.0, -1.0]))
    inp = torch.zeros(2, 1, 3, 5)
    inp[1, 0, 2, 4] = 1.0
    r = measure(nn.Sequential(conv, nn.ReLU()), [inp])
    mean_abs = torch.tensor([1.0, 4 / 30, 0.0])
    scores = mean_abs / (mean_abs.mean() + 1e-9)
    for tau, name in ((0.0, "0"), (0.025, "0_025"), (0.1, "0_1")):
        assert r[f"dormant_redo@{name}/1"] == pytest.approx(float((scores <= tau).double().mean()))
    assert r["dormant_redo@0_1/1"] == pytest.approx(1 / 3)
    # frequency: channel 1 fires on 1 of 30 elements = 3.3 % (not dormant), channel 2 on none
    assert r["dormant_freq/1"] == pytest.approx(1 / 3)


# -- frequency-dormant ------------------------------------------------------------------------------
def test_freq_dormant_fires_on_fewer_than_one_percent():
    """x = 0..199, weight 1: the unit with bias 0.5 - (200 - k) fires (z > 0) on exactly k inputs."""
    ks = [0, 1, 2, 3, 200]
    lin = nn.Linear(1, len(ks))
    with torch.no_grad():
        lin.weight.fill_(1.0)
        lin.bias.copy_(torch.tensor([0.5 - (200 - k) for k in ks]))
    inp = torch.arange(200.0).unsqueeze(1)
    r = measure(nn.Sequential(lin, nn.ReLU()), [inp[:120], inp[120:]])  # two batches: counts add up
    assert r["dormant_freq/1"] == pytest.approx(2 / 5)  # k = 0 (0 %) and k = 1 (0.5 %); k = 2 is 1 %: active
    assert r["dead_fwd/1"] == pytest.approx(1 / 5)  # only k = 0 never fires
    assert dormancy.freq_dormant(torch.tensor([0.0, 0.005, 0.01, 0.5])).tolist() == [True, True, False, False]


def test_freq_dormant_non_relu_counts_nonzero_outputs():
    """LeakyReLU: h != 0 wherever z != 0, so a unit with z < 0 everywhere is active, not dormant."""
    r = measure(const_layer([1.0, -1.0, 0.0], nn.LeakyReLU(0.1)), [x()])
    assert r["dormant_freq/1"] == pytest.approx(1 / 3)  # only z == 0 exactly gives h == 0


def test_aggregates_mean_over_layers_vs_pooled_units():
    """Layer A: 1 of 4 dormant; layer B: 6 of 8 -> mean over layers 0.5, pooled 7/12."""
    a = const_layer([1.0, 1.0, 1.0, -1.0])[0]
    b = nn.Linear(4, 8)
    with torch.no_grad():
        b.weight.zero_()
        b.bias.copy_(torch.tensor([1.0] * 2 + [-1.0] * 6))
    r = measure(nn.Sequential(a, nn.ReLU(), b, nn.ReLU()), [x()])
    assert r["dormant_freq"] == pytest.approx(0.5) and r["dormant_freq_units"] == pytest.approx(7 / 12)
    assert r["dormant_redo@0"] == pytest.approx(0.5) and r["dormant_redo_units@0"] == pytest.approx(7 / 12)


# -- ranks -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sv, erank, arank", [
    ([1.0, 1.0, 1.0, 1.0], 4.0, 4),
    ([5.0, 0.0, 0.0], 1.0, 1),
    ([3.0, 1.0], math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25))), 2),
    ([10.0, 1.0], math.exp(-(10 / 11 * math.log(10 / 11) + 1 / 11 * math.log(1 / 11))), 1),  # 100/101 >= .99
    ([10.0, 1.1], None, 2),  # 100 / 101.21 = 0.988 < 0.99
    ([0.0, 0.0], 0.0, 0),
])
def test_rank_formulas(sv, erank, arank):
    sv = torch.tensor(sv)
    if erank is not None:
        assert dormancy.effective_rank(sv) == pytest.approx(erank, rel=1e-12)
    assert dormancy.approx_rank(sv) == arank


def test_gram_singular_values_match_svd():
    f = torch.randn(50, 7, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    f[:, 3] = f[:, 0] * 2  # rank 6
    sv = dormancy.singular_values_from_gram(f.T @ f)
    assert sv.tolist() == pytest.approx(torch.linalg.svdvals(f).tolist(), abs=1e-6)


def rank_model(d: int = 4) -> nn.Sequential:
    """Identity Linear -> ReLU -> head: the head's input (the penultimate features) is relu(x)."""
    lin = nn.Linear(d, d)
    with torch.no_grad():
        lin.weight.copy_(torch.eye(d))
        lin.bias.zero_()
    return nn.Sequential(lin, nn.ReLU(), nn.Linear(d, 2))


def test_measure_ranks_of_the_head_input():
    r = measure(rank_model(), [torch.eye(4)[:2], torch.eye(4)[2:]], metrics="all")  # F = I over two batches
    assert r["eff_rank"] == pytest.approx(4.0) and r["approx_rank"] == 4
    v = torch.tensor([1.0, 2.0, 0.5, 3.0])
    r = measure(rank_model(), [torch.outer(torch.arange(1.0, 9.0), v)], metrics="all")  # rank 1
    assert r["eff_rank"] == pytest.approx(1.0) and r["approx_rank"] == 1
    scaled = torch.diag(torch.tensor([3.0, 1.0, 0.0, 0.0]))  # singular values 3, 1
    r = measure(rank_model(), [scaled], metrics="all")
    assert r["eff_rank"] == pytest.approx(dormancy.effective_rank(torch.tensor([3.0, 1.0])))
    assert "eff_rank" not in measure(rank_model(), [scaled])  # not in the default set


class TokenHead(nn.Module):
    """(N, L, 2) -> Linear -> ReLU -> head, HF keyword style: padded tokens must not enter F."""

    def __init__(self):
        super().__init__()
        self.fc, self.act, self.head = nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1)
        with torch.no_grad():
            self.fc.weight.copy_(torch.eye(2))
            self.fc.bias.zero_()

    def forward(self, inputs_embeds, attention_mask=None):
        return self.head(self.act(self.fc(inputs_embeds)))


def test_ranks_skip_padded_tokens():
    emb = torch.tensor([[[1.0, 0.0], [2.0, 0.0], [0.0, 5.0]]])  # the last token is padding
    batch = {"inputs_embeds": emb, "attention_mask": torch.tensor([[1, 1, 0]])}
    assert measure(TokenHead(), [batch], metrics="all")["approx_rank"] == 1  # rows (1, 0), (2, 0)
    assert measure(TokenHead(), [{"inputs_embeds": emb}], metrics="all")["approx_rank"] == 2


# -- revival ----------------------------------------------------------------------------------------
def test_revived_and_still_dead_across_measurements():
    """Layer A: dead {1, 2, 3} -> {0, 2, 3} (1 revived, 2 still dead, 0 newly dead); layer B: {0} -> {}."""
    a, b = const_layer([1.0, -1.0, -1.0, -1.0])[0], const_layer([-1.0, 1.0], d_in=4)[0]
    model = nn.Sequential(a, nn.ReLU(), b, nn.ReLU())
    prev: dict = {}
    r = measure(model, [x()], previous=prev)
    assert not any(k.startswith(("revived", "still_dead")) for k in r)  # nothing to compare with yet
    assert [m.tolist() for m in prev.values()] == [[False, True, True, True], [True, False]]
    with torch.no_grad():
        a.bias.copy_(torch.tensor([-1.0, 1.0, -1.0, -1.0]))
        b.bias.copy_(torch.tensor([1.0, 1.0]))
    r = measure(model, [x()], previous=prev)
    assert r["still_dead/1"] == pytest.approx(2 / 3) and r["revived/1"] == pytest.approx(1 / 3)
    assert r["still_dead/3"] == 0.0 and r["revived/3"] == 1.0
    assert r["still_dead"] == pytest.approx(2 / 4) and r["revived"] == pytest.approx(2 / 4)  # pooled: 4 before
    r = measure(model, [x()], previous=prev)  # unchanged weights: every dead unit stays dead
    assert r["still_dead/1"] == 1.0 and r["revived/1"] == 0.0
    assert r["still_dead/3"] == 0.0 and r["revived/3"] == 0.0  # no dead unit before: 0.0, as dopamine logs
    assert "revived" not in measure(model, [x()])  # no `previous`: no revival keys
    before, now = torch.tensor([True, True, False]), torch.tensor([True, False, True])
    assert dormancy.revival(before, now).tolist() == [2, 1, 1]


# -- weights and gradients -----------------------------------------------------------------------------
def test_w_abs_per_layer_and_pooled():
    lin = nn.Linear(2, 4)
    conv = nn.Conv2d(1, 3, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, -2.0], [3.0, -4.0]]).repeat(2, 1))  # sum |w| 20 over 8
        lin.bias.fill_(100.0)  # biases are not weights here
        conv.weight.fill_(-0.5)  # sum |w| 6 over 12
    model = nn.Sequential(lin, nn.ReLU(), nn.Unflatten(1, (1, 2, 2)), conv)
    r = weight_abs(model)
    assert r == {"w_abs/0": pytest.approx(2.5), "w_abs/3": pytest.approx(0.5), "w_abs": pytest.approx(26 / 20)}
    assert measure(model, [x(4, 2)])["w_abs/0"] == pytest.approx(2.5)  # in the default set


def test_grad_norms_mean_over_steps_and_skip_non_finite():
    lin1, lin2 = nn.Linear(2, 1, bias=False), nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        lin1.weight.fill_(1.0)
        lin2.weight.fill_(2.0)
    model = nn.Sequential(lin1, nn.ReLU(), lin2)
    norms = GradNorms(model)
    # loss = 2 * (3 + 4) = 14: dL/dW1 = 2 * x = (6, 8) -> 10; dL/dW2 = h = 7 -> 7; global sqrt(149)
    model(torch.tensor([[3.0, 4.0]])).sum().backward()
    norms.accumulate()
    model.zero_grad()
    model(torch.tensor([[0.0, 1.0]])).sum().backward()  # (0, 2) -> 2; h = 1 -> 1; global sqrt(5)
    norms.accumulate()
    lin1.weight.grad.fill_(math.inf)  # an AMP step GradScaler skips: not counted
    norms.accumulate()
    r = norms.rates()
    assert r["grad_norm/0"] == pytest.approx(6.0) and r["grad_norm/2"] == pytest.approx(4.0)
    assert r["grad_norm"] == pytest.approx((math.sqrt(149) + math.sqrt(5)) / 2)
    g = dormancy.grad_norms([torch.tensor([3.0, 4.0]), None, torch.tensor([12.0])])
    assert g.tolist() == pytest.approx([5.0, 0.0, 12.0, 13.0])


# -- metric sets -----------------------------------------------------------------------------------
def test_metric_sets():
    assert resolve_metrics("basic") == frozenset()
    assert resolve_metrics("default") == {"redo", "freq", "revival", "w_abs"}
    assert resolve_metrics("all") == {"redo", "freq", "revival", "w_abs", "rank", "grad_norm"}
    assert resolve_metrics(["basic", "rank"]) == {"rank"}
    with pytest.raises(ValueError, match="unknown monitor metrics 'svd'"):
        resolve_metrics("svd")
    model = rank_model()
    basic = measure(model, [x(8, 4)], metrics="basic")
    assert set(basic) == {"dead_fwd", "dead_grad", "zero_rate", "band", "dead_fwd_units", "dead_grad_units",
                          "dead_fwd/1", "dead_grad/1", "zero_rate/1"}  # what measure gave before
    r = measure(model, [x(8, 4)], metrics=["rank"])
    assert set(r) - set(basic) == {"eff_rank", "approx_rank"}


# -- a real run against the reference definitions -----------------------------------------------------
L = pytest.importorskip("lightning.pytorch")


class Reference(L.Callback):
    """Recomputes every monitor metric with plain hooks on the same probe, straight from the definitions:
    ReDo as dopamine's estimate_neuron_score, frequency as Dohare et al.'s post_run_analysis, ranks from
    an SVD of the stacked head inputs. Placed after the monitor, so it sees the same weights."""

    def __init__(self, probe_size: int):
        self.probe_size, self.epochs, self.prev_dead, self.steps = probe_size, {}, None, []

    def on_train_epoch_start(self, trainer, pl_module):
        self.steps = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.steps.append({p: m.weight.grad.norm().item() for p, m in pl_module.model.named_modules()
                           if isinstance(m, nn.Linear)})

    def on_train_epoch_end(self, trainer, pl_module):
        e = self.epochs.setdefault(trainer.current_epoch, {})
        for p in self.steps[0]:
            e[f"grad_norm/{p}"] = sum(s[p] for s in self.steps) / len(self.steps)

    def on_validation_epoch_end(self, trainer, pl_module):
        if trainer.sanity_checking:
            return
        from actlab.batches import first_examples

        model = pl_module.model
        outs, head_in, handles = {}, [], []
        for p, m in model.named_modules():
            if p.endswith(".act"):  # the MLP's activation sites (ReLU here)
                handles.append(m.register_forward_hook(lambda mod, a, o, p=p: outs.setdefault(p, []).append(o)))
        handles.append(model.head.register_forward_pre_hook(lambda mod, a: head_in.append(a[0])))
        model.eval()
        with torch.no_grad():
            for xb, *_ in first_examples(trainer.datamodule.val_dataloader(), self.probe_size):
                model(xb)
        model.train()
        for h in handles:
            h.remove()
        e = self.epochs.setdefault(trainer.current_epoch, {})
        dead = {}
        for p, chunks in outs.items():
            h = torch.cat(chunks)  # (N, D)
            score = h.abs().mean(0)
            score = score / (score.mean() + 1e-9)  # dopamine estimate_neuron_score
            for tau, name in ((0.0, "0"), (0.025, "0_025"), (0.1, "0_1")):
                e[f"dormant_redo@{name}/{p}"] = (score <= tau).float().mean().item()
            e[f"dormant_freq/{p}"] = ((h != 0).float().mean(0) < 0.01).float().mean().item()  # Dohare et al.
            dead[p] = h.abs().amax(0) <= 1e-6
            if self.prev_dead is not None:
                was = self.prev_dead[p]
                n = int(was.sum())
                e[f"still_dead/{p}"] = int((was & dead[p]).sum()) / n if n else 0.0
                e[f"revived/{p}"] = int((was & ~dead[p]).sum()) / n if n else 0.0
        self.prev_dead = dead
        sv = torch.linalg.svdvals(torch.cat(head_in).double())
        p = sv / sv.sum()
        e["eff_rank"] = math.exp(-float((p[p > 0] * p[p > 0].log()).sum()))
        cum = (sv**2).cumsum(0) / (sv**2).sum()
        e["approx_rank"] = int((cum < 0.99).sum()) + 1
        for name, m in model.named_modules():
            if isinstance(m, nn.Linear):
                e[f"w_abs/{name}"] = m.weight.abs().mean().item()


def test_real_run_matches_reference_definitions(tmp_path, fashion_dir):
    from actlab.run import records
    from actlab.run.runner import run

    from compose import fashion, make_cfg

    ref = Reference(probe_size=40)
    cfg = make_cfg(tmp_path, *fashion(fashion_dir), "monitor=dead_neurons", "monitor.probe_size=40",
                   "monitor.metrics=all", "optim.lr=0.2")  # a large step: units die, some revive
    rec = run(cfg, callbacks=[ref])
    assert rec["status"] == "completed"
    run_dir = tmp_path / "runs" / rec["run_id"]
    final = rec["dead"]["final"]
    for key in ("dormant_redo@0", "dormant_redo@0_025", "dormant_redo@0_1", "dormant_redo_units@0_1",
                "dormant_freq", "dormant_freq_units", "eff_rank", "approx_rank", "revived", "still_dead", "w_abs",
                "grad_norm", "dead_fwd"):
        assert math.isfinite(final[key]), key
    # not a trivial case: units die and revive, and the thresholds tell units apart
    assert 0 < final["revived"] < 1 and final["dead_fwd"] < final["dormant_redo@0_1"]
    rows = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1]
    assert "revived" not in rows[0]["dead"] and "revived" in rows[1]["dead"]  # the first has no previous
    for row in rows:
        expected = ref.epochs[row["epoch"]]
        got = {k: row["dead"][k] for k in expected}  # every reference key is in the history
        assert got == pytest.approx(expected, rel=1e-5, abs=1e-7), row["epoch"]
    assert {k for k in ref.epochs[1] if k.startswith(("grad_norm/", "w_abs/"))} == {
        f"{m}/{p}" for m in ("grad_norm", "w_abs")
        for p in ("hidden.0.fc", "hidden.1.fc", "hidden.2.fc", "head")}
    layers = records.read_dead_layers(run_dir)  # final per-layer values beside the record
    assert layers["w_abs/head"] == pytest.approx(ref.epochs[1]["w_abs/head"])
    assert final["eff_rank"] == pytest.approx(ref.epochs[1]["eff_rank"], rel=1e-6)


def test_callback_metric_knob_and_resume_state():
    from actlab.callbacks.monitor import DeadNeuronMonitor

    with pytest.raises(ValueError, match="unknown monitor metrics"):
        DeadNeuronMonitor(metrics="everything")
    assert DeadNeuronMonitor(metrics=["basic", "rank"]).groups == {"rank"}
    monitor = DeadNeuronMonitor()
    monitor._dead_masks = {"1": torch.tensor([True, False])}
    state = monitor.state_dict()
    assert set(monitor.state()) == {"final", "history"}  # the record's part holds no masks
    resumed = DeadNeuronMonitor()
    resumed.load_state_dict(json.loads(json.dumps(state)))  # checkpoints keep plain lists
    assert resumed._dead_masks["1"].tolist() == [True, False]  # revival compares across the resume
