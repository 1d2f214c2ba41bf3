"""Margin schedules (known values over progress) and the callback that applies them in training."""

from __future__ import annotations

import math

import pytest
import torch

from actlab.callbacks.margin import MarginScheduler
from actlab.margin import Constant, Cosine, Linear, Step, WarmupDecay
from actlab.run import records, runid
from actlab.run.lr_schedules import cosine, onecycle, step
from actlab.run.runner import run

from compose import fashion, make_cfg


@pytest.mark.parametrize(
    ("schedule", "points"),
    [
        (Constant(0.05), {0.0: 0.05, 0.5: 0.05, 1.0: 0.05}),
        (Linear(0.1, 0.0), {0.0: 0.1, 0.25: 0.075, 1.0: 0.0}),
        (Cosine(0.1, 0.0), {0.0: 0.1, 0.5: 0.05, 1.0: 0.0}),
        (Step(0.1, [0.5, 0.75], 0.1), {0.49: 0.1, 0.5: 0.01, 0.8: 0.001}),
        (WarmupDecay(peak=0.1, warmup=0.2), {0.0: 0.0, 0.1: 0.05, 0.2: 0.1, 0.6: 0.05, 1.0: 0.0}),
    ],
)
def test_schedule_values(schedule, points):
    for p, expected in points.items():
        assert math.isclose(schedule(p), expected, abs_tol=1e-12), (p, schedule(p), expected)


def test_bad_schedule_knobs_are_rejected():
    with pytest.raises(ValueError, match="margin.warmup"):
        MarginScheduler(WarmupDecay(peak=0.1, warmup=1.5))
    with pytest.raises(ValueError, match="margin.start"):
        MarginScheduler(Linear("big", 0.0))


def test_linear_schedule_moves_every_helu_during_training(tmp_path, fashion_dir):
    rec = run(make_cfg(tmp_path, *fashion(fashion_dir), "activation=helu", "activation.margin=0.2",
                       "margin=linear", "margin.end=0.0", "trainer.max_epochs=3"))
    history = records.read_history(tmp_path / "runs" / rec["run_id"])
    margins = [h["margin"] for h in history]  # epoch means of the per-step margin
    assert margins == sorted(margins, reverse=True) and margins[0] < 0.2 and margins[-1] > 0.0
    # 6 steps per epoch, 18 in all: the epoch-0 mean of 0.2 * (1 - s/18) for s = 0..5 is 0.2 * (1 - 2.5/18).
    assert math.isclose(margins[0], 0.2 * (1 - 2.5 / 18), rel_tol=1e-5)


def test_schedule_on_relu_is_normalised_away_and_says_so(tmp_path, fashion_dir, caplog):
    """ReLU has no margin: `margin=cosine` is dropped (with a message), so the run is plain ReLU's run_id."""
    caplog.set_level("INFO", logger="actlab")
    rec = run(make_cfg(tmp_path, *fashion(fashion_dir), "activation=relu", "margin=cosine", "trainer.max_epochs=1"))
    assert rec["status"] == "completed"
    assert "margin" not in records.read_history(tmp_path / "runs" / rec["run_id"])[0]
    assert sum("margin=cosine (only helu has a margin to schedule)" in r.message for r in caplog.records) == 1
    plain = make_cfg(tmp_path, *fashion(fashion_dir), "activation=relu", "trainer.max_epochs=1")
    assert rec["run_id"] == runid.run_id(plain) and rec["config"]["margin"] is None


def _lrs(make, total=10, **kw):
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched = make(opt, total_steps=total, **kw)
    out = []
    for _ in range(total):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_lr_schedules_known_values():
    assert _lrs(step, milestones=[0.5, 0.8], gamma=0.1) == pytest.approx([1] * 5 + [0.1] * 3 + [0.01] * 2)
    cos = _lrs(cosine, warmup=0.2)
    assert cos[:2] == pytest.approx([0.5, 1.0])  # warm-up over 2 steps
    assert cos[2] == pytest.approx(1.0) and cos[6] == pytest.approx(0.5)  # halfway through the 8 decay steps
    one = _lrs(onecycle, pct_start=0.3)
    assert max(one) == pytest.approx(1.0, rel=1e-3) and one[0] < 0.1 and one[-1] < 1e-3
