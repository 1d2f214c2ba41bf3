"""actlab-train end to end on tiny real data: records, determinism, skip, resume, failures."""

from __future__ import annotations

import json
import math

import lightning as L
import pytest

from actlab.callbacks.history import TIME_KEYS
from actlab.run import records, runid
from actlab.run.runner import RunSkipped, run

from compose import fashion, make_cfg


def _record(results, rid):
    return json.loads((results / "runs" / rid / "record.json").read_text())


def _history(results, rid):
    # without the wall-clock fields: they differ between otherwise identical runs
    return [{k: v for k, v in r.items() if k not in TIME_KEYS} for r in records.read_history(results / "runs" / rid)]


def test_run_writes_a_complete_record(tmp_path, fashion_dir):
    rec = run(make_cfg(tmp_path, *fashion(fashion_dir), "activation=helu", "activation.margin=0.05"))
    on_disk = _record(tmp_path, rec["run_id"])
    assert on_disk == json.loads(json.dumps(rec))
    assert on_disk["status"] == "completed" and on_disk["error"] is None
    assert on_disk["run_id"].startswith("fashion_mnist-mlp-helu-m0.05-s0-")
    assert {"test/acc", "test/loss", "val/acc", "train/loss"} <= set(on_disk["metrics"])
    assert 0.0 <= on_disk["metrics"]["test/acc"] <= 1.0
    assert on_disk["kind"] == "image" and on_disk["main_metric"] == "test/acc"
    assert "history" not in on_disk and on_disk["files"]["history"] == "history.jsonl"
    history = _history(tmp_path, rec["run_id"])
    assert [h["epoch"] for h in history] == [0, 1]
    assert all({"train/loss", "val/acc", "margin", "lr"} <= set(h) for h in history)
    assert all(math.isclose(h["margin"], 0.05, rel_tol=1e-6) for h in history)
    assert on_disk["config"]["activation"] == {"_target_": "actlab.activations.factory", "name": "helu",
                                              "margin": 0.05, "save": "bits"}
    assert on_disk["timings"]["epochs_run"] == 2 and on_disk["timings"]["s_per_epoch"] > 0
    assert on_disk["versions"]["torch"] and "commit" in on_disk["git"]
    assert (tmp_path / "runs" / rec["run_id"] / "checkpoints" / "last.ckpt").exists()


def test_same_config_gives_identical_metrics(tmp_path, fashion_dir):
    a = run(make_cfg(tmp_path / "a", *fashion(fashion_dir)))
    b = run(make_cfg(tmp_path / "b", *fashion(fashion_dir)))
    assert a["run_id"] == b["run_id"]
    assert a["metrics"] == b["metrics"]
    assert _history(tmp_path / "a", a["run_id"]) == _history(tmp_path / "b", b["run_id"])
    c = run(make_cfg(tmp_path / "c", *fashion(fashion_dir), "seed=1"))
    assert c["metrics"]["train/loss"] != a["metrics"]["train/loss"]


def test_completed_run_is_skipped_unless_forced(tmp_path, fashion_dir):
    cfg = make_cfg(tmp_path, *fashion(fashion_dir), "trainer.max_epochs=1")
    first = run(cfg)
    with pytest.raises(RunSkipped, match="already completed"):
        run(make_cfg(tmp_path, *fashion(fashion_dir), "trainer.max_epochs=1"))
    again = run(make_cfg(tmp_path, *fashion(fashion_dir), "trainer.max_epochs=1", "force=true"))
    assert again["run_id"] == first["run_id"] and again["metrics"] == first["metrics"]


class _CrashAtEpoch(L.Callback):
    """A real interruption: the process dies at the start of epoch `n` (after epoch n-1's checkpoint)."""

    def __init__(self, n: int):
        self.n = n

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.n:
            raise RuntimeError("simulated crash")


def test_interrupted_run_resumes_to_the_uninterrupted_result(tmp_path, fashion_dir):
    """torchtune-style: crash after epoch 2 of 3, relaunch, and end exactly where a clean run ends."""
    over = [*fashion(fashion_dir), "trainer.max_epochs=3", "activation=helu", "margin=linear"]
    clean = run(make_cfg(tmp_path / "clean", *over))

    with pytest.raises(RuntimeError, match="simulated crash"):
        run(make_cfg(tmp_path / "broken", *over), callbacks=[_CrashAtEpoch(2)])
    crashed = _record(tmp_path / "broken", clean["run_id"])
    assert crashed["status"] == "failed" and "simulated crash" in crashed["error"]
    assert len(_history(tmp_path / "broken", clean["run_id"])) == 2

    resumed = run(make_cfg(tmp_path / "broken", *over))
    assert resumed["timings"]["resumed_from"].endswith("last.ckpt")
    assert resumed["timings"]["epochs_run"] == 1
    assert _history(tmp_path / "broken", clean["run_id"]) == _history(tmp_path / "clean", clean["run_id"])
    assert resumed["metrics"] == clean["metrics"]


def test_nan_loss_fails_with_a_clear_message_and_a_failed_record(tmp_path, fashion_dir):
    cfg = make_cfg(tmp_path, *fashion(fashion_dir), "optim.lr=1e30", "scheduler=none")
    rid = runid.run_id(cfg)
    with pytest.raises(FloatingPointError, match="lower optim.lr"):
        run(cfg)
    rec = _record(tmp_path, rid)
    assert rec["status"] == "failed" and rec["error"].startswith("FloatingPointError: loss is")


def test_bad_dataset_knob_is_a_one_line_error_and_a_failed_record(tmp_path, fashion_dir):
    cfg = make_cfg(tmp_path, *fashion(fashion_dir), "dataset.batch_size=-4")
    with pytest.raises(ValueError, match="dataset.batch_size") as err:
        run(cfg)
    assert "\n" not in str(err.value)
    assert records.read(tmp_path / "runs" / runid.run_id(cfg))["status"] == "failed"


def test_wrong_type_seed_is_rejected(tmp_path, fashion_dir):
    with pytest.raises(ValueError, match="seed must be an integer"):
        run(make_cfg(tmp_path, *fashion(fashion_dir), "seed=abc"))


def test_margin_for_relu_is_collapsed(tmp_path, fashion_dir):
    """A sweep crossing relu with margins maps every relu job to one run_id."""
    ids = {runid.run_id(make_cfg(tmp_path, *fashion(fashion_dir), "activation=relu", f"activation.margin={m}"))
           for m in (0.001, 0.05)}
    ids.add(runid.run_id(make_cfg(tmp_path, *fashion(fashion_dir), "activation=relu")))
    assert len(ids) == 1
    helu = {runid.run_id(make_cfg(tmp_path, *fashion(fashion_dir), "activation=helu", f"activation.margin={m}"))
            for m in (0.001, 0.05)}
    assert len(helu) == 2


def test_run_id_ignores_presentation_keys(tmp_path):
    base = runid.run_id(make_cfg(tmp_path))
    assert runid.run_id(make_cfg(tmp_path / "elsewhere", "trainer.enable_progress_bar=true", "logger=csv")) == base
    assert runid.run_id(make_cfg(tmp_path, "optim.lr=0.02")) != base
    # the monitor's reporting (which metrics, the histogram's bins) is not what a run computes; its threshold is
    mon = runid.run_id(make_cfg(tmp_path, "monitor=dead_neurons"))
    assert runid.run_id(make_cfg(tmp_path, "monitor=dead_neurons", "monitor.metrics=all", "monitor.hist_bins=10",
                                 "monitor.hist_range=[-1,1]", "monitor.hist_linear_width=null")) == mon
    assert runid.run_id(make_cfg(tmp_path, "monitor=dead_neurons", "monitor.eps=0.1")) != mon


def test_default_trainer_with_its_progress_bar_runs(tmp_path, fashion_dir):
    """The CLI default keeps Lightning's progress bar, which Lightning appends to the callbacks list:
    a Hydra ListConfig there rejected it ("RichProgressBar is not a supported primitive type")."""
    rec = run(make_cfg(tmp_path, *fashion(fashion_dir), "trainer=default", "trainer.max_epochs=1",
                       "trainer.enable_progress_bar=true", "trainer.accelerator=cpu"))
    assert rec["status"] == "completed"


def test_record_stays_small_and_the_series_go_to_history_jsonl(tmp_path, fashion_dir):
    """A 16-layer MLP over 3 epochs with the monitor on: record.json stays under 12 KB (plain json.load);
    the final per-layer rates go to dead_layers.json, every epoch's to one line of history.jsonl."""
    rec = run(make_cfg(tmp_path, f"dataset.data_dir={fashion_dir}", "model=mlp", "model.depth=16",
                       "trainer.max_epochs=3", "monitor=dead_neurons", "monitor.probe_size=16"))
    run_dir = tmp_path / "runs" / rec["run_id"]
    assert (run_dir / "record.json").stat().st_size < 12_000
    layers = {f"hidden.{i}.act" for i in range(16)}
    assert {"dead_fwd", "dead_grad", "train_dead_fwd"} <= set(rec["dead"]["final"])  # aggregates in the record
    assert not any("/" in k for k in rec["dead"]["final"])
    per_layer = records.read_dead_layers(run_dir)  # per-layer final rates beside it
    assert {k.split("/", 1)[1] for k in per_layer if k.startswith("dead_fwd/")} == layers
    lines = (run_dir / "history.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [0, 1, 2]
    for line in lines:  # the probe's and the training batches' rates of that epoch, per layer
        dead = json.loads(line)["dead"]
        assert {f"dead_fwd/{name}" for name in layers} <= set(dead)
        assert {f"train_dead_fwd/{name}" for name in layers} <= set(dead)


def test_csv_logger_keeps_the_rows_logged_before_an_interruption(tmp_path, fashion_dir):
    import csv

    over = [*fashion(fashion_dir), "trainer.max_epochs=3", "logger=csv"]
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(make_cfg(tmp_path, *over), callbacks=[_CrashAtEpoch(2)])
    rec = run(make_cfg(tmp_path, *over))
    with open(tmp_path / "runs" / rec["run_id"] / "csv" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    epochs = sorted({int(float(r["epoch"])) for r in rows if r.get("val/acc")})
    assert epochs == [0, 1, 2]  # epochs 0 and 1 ran before the crash, epoch 2 after the resume
