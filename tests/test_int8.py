"""`actlab int8`: fp32 and dynamic-INT8 dev scores of fine-tuned GLUE runs, and Table 3 in summarize.

    .venv/bin/python -m pytest tests/test_int8.py -q
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn
from torch.ao.nn.quantized.dynamic import Linear as QLinear

from actlab.cli import main as cli
from actlab.quantize import quantize_int8
from actlab.report import int8 as int8_eval
from actlab.report import summarize as summ
from actlab.report.frame import load_frame
from actlab.run import records
from actlab.run.runner import run

from compose import make_cfg
from text_formats import data_files_override


@pytest.fixture(scope="module")
def trained(glue_files, tmp_path_factory) -> Path:
    """The runs dir of two tiny bert_tiny fine-tunes: sst2 (one dev set) and mnli (matched + mismatched).
    sst2 learns its cue word at this lr (dev acc ~0.96), so its scores are not chance's."""
    root = tmp_path_factory.mktemp("int8")
    score = {}
    for task in ("sst2", "mnli"):
        rec = run(make_cfg(root, "experiment=glue", f"dataset=glue/{task}", data_files_override(glue_files[task]),
                           "model=bert_tiny", "dataset.batch_size=8", "trainer.max_epochs=2", "optim.lr=3e-3"))
        assert rec["status"] == "completed"
        score[task] = rec["metrics"]["test/score"]
    assert score["sst2"] > 0.8
    return root / "runs"


@pytest.fixture
def runs(trained, tmp_path) -> Path:
    """A private copy of the trained runs (tests write into records)."""
    return Path(shutil.copytree(trained, tmp_path / "runs"))


def _records(runs: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(runs.glob("*/record.json"))}


def _int8_cli(*argv: str) -> int:
    p = argparse.ArgumentParser()
    int8_eval.add_arguments(p)
    return int8_eval.run(p.parse_args(list(argv)))


def test_fp32_reproduces_the_runs_own_scores_and_delta_is_int8_minus_fp32(runs):
    before = _records(runs)
    assert cli.main(["int8", str(runs)]) == 0  # registered as `actlab int8`
    after = _records(runs)
    assert set(after) == set(before) and len(after) == 2
    for rid, rec in after.items():
        rec = dict(rec)
        entry = rec.pop("int8")
        assert rec == before[rid]  # every other field kept as it was
        test = {k: v for k, v in rec["metrics"].items() if k.startswith("test/")}
        # Known answer: same weights, same dev data -> exactly the scores the run recorded.
        assert set(entry["fp32"]) == set(test) and entry["fp32"] == pytest.approx(test, abs=1e-6)
        assert set(entry["int8"]) == set(test)
        assert entry["delta"] == pytest.approx({k: entry["int8"][k] - entry["fp32"][k] for k in test}, abs=1e-12)
        # INT8 is a different model: its dev loss moves, if only a little.
        losses = [k for k in test if "loss" in k]
        assert any(entry["int8"][k] != entry["fp32"][k] for k in losses)
        assert entry["linear_layers"]["fp32"] == entry["linear_layers"]["int8"] > 0
        assert "quantize_dynamic" in entry["quantizer"] and entry["torch"] == torch.__version__
    mnli = next(r for r in after.values() if "mnli" in r["run_id"])
    assert {"test/acc_m", "test/acc_mm", "test/score"} <= set(mnli["int8"]["delta"])


def test_every_linear_becomes_a_dynamic_int8_linear(trained):
    run_dir = next(trained.glob("*sst2*"))
    dm, task = int8_eval.load_task(run_dir, records.read(run_dir))
    n_linear = int8_eval.count_modules(task.model, nn.Linear)
    q = quantize_int8(task.model)
    assert n_linear >= 14  # bert_tiny: 2 layers x 6 + pooler + classifier
    assert int8_eval.count_modules(q, QLinear) == n_linear
    assert int8_eval.count_modules(q, nn.Linear) == 0
    assert int8_eval.count_modules(task.model, nn.Linear) == n_linear  # the fp32 model is untouched


def test_rerun_skips_and_force_reevaluates(runs, capsys):
    assert _int8_cli(str(runs)) == 0
    first = _records(runs)
    assert _int8_cli(str(runs)) == 0
    assert _records(runs) == first  # nothing re-evaluated
    assert "0 evaluated, 2 already had an entry" in capsys.readouterr().out
    rid = next(iter(first))
    tampered = dict(first[rid], int8=dict(first[rid]["int8"], fp32={"test/acc": -1.0}))
    records.write_atomic(runs / rid / "record.json", tampered)
    assert _int8_cli(str(runs), "--force") == 0
    again = _records(runs)
    assert again[rid]["int8"]["fp32"] == pytest.approx(first[rid]["int8"]["fp32"], abs=1e-6)
    assert "2 evaluated" in capsys.readouterr().out


def test_a_failing_run_is_reported_and_the_others_still_evaluated(runs, capsys):
    sst2 = next(runs.glob("*sst2*"))
    (sst2 / "checkpoints" / "last.ckpt").write_bytes(b"not a checkpoint")
    (runs / "broken").mkdir()
    (runs / "broken" / "record.json").write_text('{"run_id": "broken", "status": "compl')
    assert _int8_cli(str(runs)) == 1
    out = capsys.readouterr().out
    assert f"failed {sst2.name}" in out and "unreadable record.json" in out and "1 evaluated" in out
    shutil.rmtree(runs / "broken")
    recs = _records(runs)
    assert "int8" not in recs[sst2.name]  # no partial entry
    assert all("int8" in r for name, r in recs.items() if "mnli" in name)
    assert _int8_cli(str(runs.parent / "nowhere")) == 2


def _glue_record(runs: Path, task: str, activation: str, margin, seed: int, delta: dict) -> None:
    """A completed GLUE record carrying a hand-written int8 entry (only the fields summarize reads)."""
    rid = f"glue_{task}-bert_tiny-{activation}-s{seed}"
    fp32 = {k: 0.8 for k in delta} | {"test/score": 0.8}
    rec = {"schema": 3, "run_id": rid, "kind": "glue", "status": "completed", "metrics": dict(fp32),
           "config": {"seed": seed, "dataset": {"name": f"glue/{task}"}, "model": {"name": "bert_tiny"},
                      "activation": {"name": activation, "margin": margin}},
           "int8": {"fp32": fp32, "int8": {k: fp32[k] + d for k, d in delta.items()}, "delta": delta}}
    records.write_atomic(runs / rid / "record.json", rec)


def test_summarize_table3_cells_are_the_deltas_in_points(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "tables"
    _glue_record(runs, "sst2", "helu", 0.05, 0, {"test/acc": -0.01})
    _glue_record(runs, "sst2", "helu", 0.05, 1, {"test/acc": -0.02})
    _glue_record(runs, "mnli", "helu", 0.05, 0, {"test/acc_m": 0.004, "test/acc_mm": -0.0025})
    _glue_record(runs, "sst2", "relu", None, 0, {"test/acc": 0.0123})
    assert load_frame(runs)["int8_delta/test/acc"].dropna().tolist() == pytest.approx([-0.01, -0.02, 0.0123])
    p = argparse.ArgumentParser()
    summ.add_arguments(p)
    assert summ.run(p.parse_args([str(runs), "--metric", "test/score", "--out", str(out), "--paper"])) == 0
    ours = pd.read_csv(out / "summary_int8.csv").set_index("activation")
    assert ours.loc["helu", "sst2:mean"] == pytest.approx(-1.5)  # mean of -1 and -2 points
    assert ours.loc["helu", "sst2:std"] == pytest.approx(2**0.5 / 2)
    assert ours.loc["helu", "mnli_m:mean"] == pytest.approx(0.4)
    assert ours.loc["helu", "mnli_mm:mean"] == pytest.approx(-0.25)
    assert ours.loc["relu", "sst2:mean"] == pytest.approx(1.23) and ours.loc["relu", "n"] == 1
    assert "qqp_f1:mean" not in ours  # no run on it: no column
    assert "| helu | 0.05 | 3 | +0.40 | -0.25 | -1.50 ± 0.71 | — |" in (out / "summary.md").read_text()
    paper = pd.read_csv(out / "paper_table3.csv")
    cell = paper.query("activation == 'relu' and task == 'sst2'").iloc[0]
    assert (cell["paper"], cell["ours_mean"], cell["n"]) == (pytest.approx(0.4587), pytest.approx(1.23), 1)
    assert cell["delta"] == pytest.approx(1.23 - 0.4587)
    mm = paper.query("activation == 'helu' and task == 'mnli_mm'").iloc[0]  # mnli's acc_mm
    assert (mm["paper"], mm["ours_mean"]) == (pytest.approx(1.6273), pytest.approx(-0.25))
    avg = paper.query("activation == 'gelu' and task == 'avg'").iloc[0]
    assert avg["paper_reported"] == -0.2417 and avg["paper"] == pytest.approx(-0.2417, abs=1e-4)
    assert "paper_table3.md" in {f.name for f in out.iterdir()} and (out / "paper_table3.tex").is_file()


def test_no_table3_without_int8_data_or_without_paper_flag(tmp_path):
    runs = tmp_path / "runs"
    _glue_record(runs, "sst2", "relu", None, 0, {"test/acc": 0.01})
    p = argparse.ArgumentParser()
    summ.add_arguments(p)
    assert summ.run(p.parse_args([str(runs), "--out", str(tmp_path / "a")])) == 0  # no --paper
    assert (tmp_path / "a" / "summary_int8.csv").is_file() and not (tmp_path / "a" / "paper_table3.md").exists()
    rec = json.loads(next(runs.glob("*/record.json")).read_text())
    del rec["int8"]
    records.write_atomic(next(runs.glob("*/record.json")), rec)
    assert summ.run(p.parse_args([str(runs), "--out", str(tmp_path / "b"), "--paper"])) == 0
    names = {f.name for f in (tmp_path / "b").iterdir()}
    assert "summary_int8.csv" not in names and "paper_table3.md" not in names and "paper_table2.md" in names
