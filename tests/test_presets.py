"""The issue-15 presets: the XOR ensemble (known answers against separately trained nets), gradual pruning
(schedule, masks, resume), and both presets end to end into their tables and figures."""

from __future__ import annotations

import json
import math

import lightning as L
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from actlab.activations import factory
from actlab.callbacks.prune import GradualPruning, cubic_sparsity, top_magnitude_mask
from actlab.data.xor import xor_points
from actlab.models.xor import XOREnsemble
from actlab.report import presets
from actlab.run import records, runid
from actlab.run.runner import run
from actlab.tasks.xor import XORTask

from compose import make_cfg

# --- XOR ensemble ---------------------------------------------------------------------------------------------

ACTS = [("relu", {}), ("prelu", {}), ("prelu", {"per_channel": True}), ("helu", {"margin": 0.5}),
        ("leaky_relu", {}), ("gelu", {})]


@pytest.mark.parametrize(("name", "kwargs"), ACTS, ids=[f"{n}{'-'.join(map(str, k.values()))}" for n, k in ACTS])
def test_ensemble_trains_each_net_exactly_as_alone(name, kwargs):
    """S nets trained as one ensemble (loss = sum of per-net mean BCE) end where S separately trained
    nn.Sequential(Linear, act, Linear) nets end: SGD with momentum, 30 full-batch steps, float64."""
    torch.manual_seed(0)
    nets, steps = 6, 30
    ens = XOREnsemble(nets=nets, act=factory(name, **kwargs)).double()
    alone = [ens.net(s) for s in range(nets)]
    x, y = (t.double() for t in xor_points())
    opt = torch.optim.SGD(ens.parameters(), lr=0.5, momentum=0.9)
    opts = [torch.optim.SGD(n.parameters(), lr=0.5, momentum=0.9) for n in alone]
    for _ in range(steps):
        opt.zero_grad()
        XORTask.net_losses(ens(x), y).sum().backward()
        opt.step()
        for n, o in zip(alone, opts):
            o.zero_grad()
            F.binary_cross_entropy_with_logits(n(x).squeeze(-1), y).backward()
            o.step()
    for s, n in enumerate(alone):
        got = ens.net(s)
        for (key, a), b in zip(n.state_dict().items(), got.state_dict().values()):
            torch.testing.assert_close(b.reshape(a.shape), a, rtol=0, atol=1e-12, msg=f"net {s} {key}")
    if name == "prelu":  # one slope per net (and per unit with per_channel), trained apart
        slopes = ens.act.weight
        assert slopes.shape == ((nets, 1, 2) if kwargs else (nets, 1, 1))
        assert len(torch.unique(slopes.detach())) > 1


def test_ensemble_init_is_the_same_for_every_activation():
    torch.manual_seed(3)
    a = XOREnsemble(nets=50, act=factory("prelu"))
    torch.manual_seed(3)
    b = XOREnsemble(nets=50, act=factory("relu"))
    for key in ("w1", "b1", "w2", "b2"):
        assert torch.equal(getattr(a, key), getattr(b, key))
    assert a.w1.abs().max() <= 1 / math.sqrt(2) and a.w2.abs().max() <= 1 / math.sqrt(2)  # torch's Linear init


def test_solved_means_all_four_points_right():
    ens = XOREnsemble(nets=2, act=factory("relu"))
    with torch.no_grad():  # net 0: the textbook solution; net 1: all zeros (every logit 0: nothing right)
        ens.w1[0] = torch.tensor([[1.0, 1.0], [1.0, 1.0]])
        ens.b1[0] = torch.tensor([[0.0, -1.0]])
        ens.w2[0] = torch.tensor([[1.0], [-2.0]])
        ens.b2[0] = -0.5
        for p in (ens.w1, ens.b1, ens.w2, ens.b2):
            p[1] = 0
    o = XORTask(ens, optimizer=torch.optim.SGD).evaluate(*xor_points())
    assert o["solved"].tolist() == [True, False] and o["acc"].tolist() == [1.0, 0.0]
    assert o["dead_units"].tolist() == [0, 2]  # net 1's units output 0 on all four points


# --- gradual pruning ------------------------------------------------------------------------------------------


def test_cubic_schedule_known_values():
    assert cubic_sparsity(0, 10, 20, 0.9) == 0.0 and cubic_sparsity(10, 10, 20, 0.9) == 0.0
    assert cubic_sparsity(15, 10, 20, 0.8) == pytest.approx(0.8 * (1 - 0.5**3))
    assert cubic_sparsity(20, 10, 20, 0.9) == 0.9 and cubic_sparsity(99, 10, 20, 0.9) == 0.9


def test_mask_keeps_exactly_the_largest_magnitudes():
    w = torch.tensor([[0.1, -5.0, 0.3], [2.0, -0.2, 4.0], [-1.0, 0.05, 3.0], [0.75, -0.5, 0.01]])
    mask = top_magnitude_mask(w, 0.5)  # 12 weights: keep the 6 largest |w|
    assert mask.sum() == 6
    assert set(w[mask.bool()].abs().tolist()) == {5.0, 2.0, 4.0, 1.0, 3.0, 0.75}
    assert top_magnitude_mask(w, 0.0).all() and top_magnitude_mask(w, 1 / 12).sum() == 11


class _Data(L.LightningDataModule):
    def train_dataloader(self):
        g = torch.Generator().manual_seed(0)
        x, y = torch.randn(64, 8, generator=g), torch.randint(0, 3, (64,), generator=g)
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)


class _Task(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))

    def training_step(self, batch, batch_idx):
        return F.cross_entropy(self.model(batch[0]), batch[1])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class _Masks(L.Callback):
    def __init__(self):
        self.seen = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):  # after GradualPruning's (listed first)
        self.seen.append([m.weight_mask.clone() for m in (pl_module.model[0], pl_module.model[2])])


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_pruning_reaches_the_target_at_end_epoch_and_never_regrows(scope):
    prune_cb, masks = GradualPruning(0.75, start_epoch=1, end_epoch=3, every_n_steps=3, scope=scope), _Masks()
    trainer = L.Trainer(max_epochs=5, callbacks=[prune_cb, masks], logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    trainer.fit(_Task(), datamodule=_Data())
    per_epoch = 8
    zero = [1 - sum(float(m.sum()) for m in ms) / sum(m.numel() for m in ms) for ms in masks.seen]
    assert all(z == 0 for z in zero[:per_epoch + 1])  # dense through the first step of the ramp (s = 0 there)
    assert zero[3 * per_epoch] == pytest.approx(0.75, abs=1 / 16) and zero[-1] == zero[3 * per_epoch]
    assert zero[20] < 0.75  # s = 0.75 (1 - (1 - 12/16)^3) = 0.738 at step 20
    for before, after in zip(masks.seen, masks.seen[1:]):  # a pruned weight never comes back
        assert all(bool((a <= b).all()) for b, a in zip(before, after))
    if scope == "layer":
        assert [int(m.sum()) for m in masks.seen[-1]] == [32, 12]  # exactly 25 % of 128 and of 48
    assert float(trainer.callback_metrics["train/sparsity"]) == pytest.approx(zero[-1])


# --- the presets end to end -----------------------------------------------------------------------------------

XOR_TINY = ["model.nets=40", "dataset.steps_per_epoch=60", "trainer.max_epochs=2"]


def _prune_tiny(fashion_dir):
    return [f"dataset.data_dir={fashion_dir}", "dataset.batch_size=32", "model.width=16", "trainer.max_epochs=3",
            "callbacks.prune.start_epoch=1", "callbacks.prune.end_epoch=2", "callbacks.prune.every_n_steps=2",
            "monitor.probe_size=64"]


class _CrashAtEpoch(L.Callback):
    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == 2:
            raise RuntimeError("simulated crash")


def test_pruned_run_resumes_with_its_masks_to_the_uninterrupted_result(tmp_path, fashion_dir):
    over = ["experiment=prune_dnr", *_prune_tiny(fashion_dir), "activation=helu", "activation.margin=0.05",
            "callbacks.prune.end_epoch=2"]
    clean = run(make_cfg(tmp_path / "clean", *over, fast=False))
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(make_cfg(tmp_path / "broken", *over, fast=False), callbacks=[_CrashAtEpoch()])
    ckpt = torch.load(tmp_path / "broken" / "runs" / "prune_dnr" / clean["run_id"] / "checkpoints" / "last.ckpt", weights_only=False)
    mask = ckpt["state_dict"]["model.hidden.1.fc.weight_mask"]
    assert 0 < 1 - float(mask.mean()) < 0.9  # saved mid-ramp, with its mask
    resumed = run(make_cfg(tmp_path / "broken", *over, fast=False))
    assert resumed["timings"]["resumed_from"].endswith("last.ckpt")
    assert resumed["metrics"] == clean["metrics"]
    assert resumed["metrics"]["train/sparsity"] == pytest.approx(0.9, abs=2e-3)


def test_both_presets_end_to_end_into_tables_and_figures(tmp_path, fashion_dir):
    runs = tmp_path / "results" / "runs"
    for act in ("relu", "prelu", "helu"):
        rec = run(make_cfg(tmp_path / "results", "experiment=xor_prelu", f"activation={act}", *XOR_TINY, fast=False))
        assert rec["status"] == "completed" and 0 <= rec["metrics"]["test/solved"] <= 1
        nets = json.loads((runs / "xor_prelu" / rec["run_id"] / "xor_nets.json").read_text())
        assert len(nets["solved"]) == 40 and sum(nets["solved"]) == round(40 * rec["metrics"]["test/solved"])
        if act == "prelu":
            assert len(nets["act_params"]["weight"]) == 40
    zero = make_cfg(tmp_path / "results", "experiment=xor_prelu", "activation=helu", "activation.margin=0", *XOR_TINY,
                    fast=False)
    helu0 = run(zero)
    relu = records.read(runs / "xor_prelu" / runid.run_id(make_cfg(tmp_path / "results", "experiment=xor_prelu", "activation=relu",
                                                     *XOR_TINY, fast=False)))
    assert helu0["metrics"]["test/solved"] == relu["metrics"]["test/solved"]  # HeLU(0) is ReLU
    for act, target in (("relu", 0), ("relu", 0.9), ("gelu", 0.9)):
        rec = run(make_cfg(tmp_path / "results", "experiment=prune_dnr", *_prune_tiny(fashion_dir),
                           f"activation={act}", f"callbacks.prune.target_sparsity={target}", fast=False))
        rows = records.read_history(runs / "prune_dnr" / rec["run_id"])
        assert [r["train/sparsity"] for r in rows][0] == 0.0 and "dead_fwd" in rows[-1]["dead"]
        assert rows[-1]["train/sparsity"] == pytest.approx(target, abs=2e-3)

    tables, figures = tmp_path / "tables", tmp_path / "figures"
    args = presets.argparse.Namespace(presets=[], runs=str(runs), tables=str(tables), figures=str(figures))
    assert presets.run(args) == 0
    xor = (tables / "xor_prelu.md").read_text()
    assert "| ReLU " in xor and "| PReLU " in xor and "Wilson" in xor and "| 40 " in xor
    assert xor.count("\n| HeLU ") == 2  # margins 0 and 0.05
    prune = (tables / "prune_dnr.md").read_text()
    assert "| GELU " in prune and "| 0.9 " in prune
    for stem in ("xor_prelu", "prune_dnr"):
        assert (figures / f"{stem}.png").stat().st_size > 0 and (figures / f"{stem}.pdf").exists()
        assert (tables / f"{stem}.csv").exists()
