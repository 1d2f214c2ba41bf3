"""The Optuna margin search (experiment=tune_margin) through the real CLI, and `actlab tune`'s table on
hand-made records with known answers."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from actlab.report import tuning
from actlab.report.frame import load_frame
from actlab.run import records
from actlab.run import search as search_space

optuna = pytest.importorskip("optuna", reason="the Optuna sweeper is an extra: pip install actlab[launchers]")

TINY = ["model=mlp", "model.depth=2", "model.width=8", "dataset.subset=256", "dataset.eval_subset=128",
        "trainer.max_epochs=1", "trainer=cpu", "logger=none", "hydra.sweeper.n_trials=4", "hydra.sweeper.n_jobs=1"]


def _search(runs: Path, data: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "actlab.cli.train", "-m", "experiment=tune_margin", *TINY,
           f"paths.runs_dir={runs}", f"dataset.data_dir={data}"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def _records(runs: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in runs.glob("*/record.json")}


@pytest.fixture(scope="module")
def search(tmp_path_factory, fashion_dir):
    """One tiny search of 4 trials: (runs dir, the process, records, record mtimes, optimization_results)."""
    runs = tmp_path_factory.mktemp("tune") / "runs"
    out = _search(runs, fashion_dir)
    assert out.returncode == 0, out.stderr[-3000:]
    mtimes = {p.parent.name: p.stat().st_mtime_ns for p in runs.glob("*/record.json")}
    best = yaml.safe_load((runs / tuning.OPTUNA_RESULTS).read_text())
    return runs, out, _records(runs), mtimes, best


def _run_of(params: dict, recs: dict[str, dict]) -> str:
    """The run a set of Optuna params trained (trial 0's activation=relu, else its margin)."""
    if params.get("activation") == "relu":
        hits = [r for r, rec in recs.items() if rec["config"]["activation"]["name"] == "relu"]
    else:
        hits = [r for r, rec in recs.items() if rec["config"]["activation"].get("margin") == params["activation.margin"]]
    assert len(hits) == 1, (params, list(recs))
    return hits[0]


@pytest.mark.slow
def test_search_trains_margin_zero_first_then_log_uniform_and_reports_the_best(search, tmp_path):
    runs, out, recs, _, best = search
    assert len(recs) == 4 and all(r["status"] == "completed" for r in recs.values())
    acts = sorted(r["config"]["activation"]["name"] for r in recs.values())
    assert acts == ["helu", "helu", "helu", "relu"]  # trial 0: margin 0; three distinct log-uniform margins
    margins = [r["config"]["activation"]["margin"] for r in recs.values() if r["config"]["activation"]["name"] == "helu"]
    assert len(set(margins)) == 3 and all(search_space.LOW <= m <= search_space.HIGH for m in margins)
    assert all(r["config"]["objective"] == "val/acc" for r in recs.values())
    # Optuna optimised the validation accuracy: its best is the records' best val/acc
    val = {rid: r["metrics"]["val/acc"] for rid, r in recs.items()}
    assert best["best_value"] == max(val.values())
    optuna_run = _run_of(best["best_params"], recs)
    assert val[optuna_run] == max(val.values())

    tables, figures = tmp_path / "tables", tmp_path / "figures"
    rep = subprocess.run([sys.executable, "-m", "actlab.cli.main", "tune", str(runs), "--tables", str(tables),
                          "--figures", str(figures), "--name", "t"], capture_output=True, text=True, timeout=120)
    assert rep.returncode == 0, rep.stderr[-2000:]
    t = pd.read_csv(tables / "t.csv")
    assert len(t) == 4 and t["best"].sum() == 1
    assert t.loc[t["best"], "run_id"].item() == optuna_run  # the same run as Optuna's best (ties: the first trial)
    assert dict(zip(t["run_id"], t["objective"])) == pytest.approx(val)
    assert t.loc[t["activation"] == "relu", "order"].item() == 1 and t.loc[t["activation"] == "relu", "margin"].item() == 0
    assert list(t["objective"]) == sorted(t["objective"], reverse=True)
    assert "It differs" not in (tables / "t.md").read_text()  # agrees with optimization_results.yaml
    assert all((figures / f"t.{ext}").stat().st_size > 1000 for ext in ("png", "pdf"))


@pytest.mark.slow
@pytest.mark.slow
def test_ctrl_c_on_a_parallel_search_records_its_trials_and_launches_no_further_batch(tmp_path, fashion_dir):
    """Optuna launches trials in batches of n_jobs: after Ctrl-C the running batch records its runs as
    interrupted and the launcher starts no later batch (actlab.run.local_launcher)."""
    runs = tmp_path / "runs"
    cmd = [sys.executable, "-m", "actlab.cli.train", "-m", "experiment=tune_margin", "hydra/launcher=local",
           *[t for t in TINY if not t.startswith(("trainer.max_epochs", "hydra.sweeper.n_"))],
           "trainer.max_epochs=5000", "hydra.sweeper.n_trials=6", "hydra.sweeper.n_jobs=2",
           f"paths.runs_dir={runs}", f"dataset.data_dir={fashion_dir}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 240
    while time.time() < deadline and len(list(runs.glob("*/checkpoints/last.ckpt"))) < 2:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert [r["status"] for r in _records(runs).values()] == ["interrupted"] * 2  # trials 3-6 never ran
    assert "sweep: 4 of 6 jobs not run\n" in err


def test_relaunch_skips_completed_trials_and_optuna_still_gets_their_values(search, fashion_dir):
    runs, _, recs, mtimes, best = search
    again = _search(runs, fashion_dir)
    # A NaN objective would crash Optuna's sweeper (study.tell raises): exit 0 says every trial had a value.
    assert again.returncode == 0, again.stderr[-3000:]
    assert "0 completed, 4 skipped" in again.stderr
    assert again.stdout.count(" already done val/acc=") == 0  # the job line shows the main metric (test/acc)
    assert again.stdout.count(" already done test/acc=") == 4
    assert {p.parent.name: p.stat().st_mtime_ns for p in runs.glob("*/record.json")} == mtimes
    assert {rid: r["timings"] for rid, r in _records(runs).items()} == {rid: r["timings"] for rid, r in recs.items()}
    assert yaml.safe_load((runs / tuning.OPTUNA_RESULTS).read_text()) == best  # same trials, same values


def test_search_space_puts_margin_zero_first_and_the_rest_on_a_log_scale():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    params = []
    for _ in range(40):
        trial = study.ask()
        search_space.margin_space(None, trial)
        params.append(trial.params)
        study.tell(trial, 0.0)
    assert params[0] == {"activation": "relu"}
    margins = [p["activation.margin"] for p in params[1:]]
    assert all(set(p) == {"activation.margin"} for p in params[1:])
    assert all(search_space.LOW <= m <= search_space.HIGH for m in margins)
    logs = [math.log10(m) for m in margins]  # log-uniform: about as many below 1e-2 as above
    assert 10 <= sum(x < -2 for x in logs) <= 29


# --- the table on hand-made records ----------------------------------------------------------------------
def _record(runs: Path, rid: str, act: str, margin, status: str, started: str, metrics: dict | None = None,
            dead: tuple | None = None, error: str | None = None, depth: int = 16, val_split: float = 0.1) -> None:
    config = {"dataset": {"name": "fashion_mnist", "val_split": val_split}, "model": {"name": "mlp", "depth": depth},
              "activation": {"name": act, "margin": margin}, "seed": 0, "objective": "val/acc"}
    rec = {"schema": records.SCHEMA, "run_id": rid, "kind": "image", "main_metric": "test/acc", "status": status,
           "error": error, "config": config, "metrics": metrics or {},
           "dead": {"final": {"dead_fwd": dead[0], "dead_grad": dead[1]}} if dead else {},
           "timings": {"started_at": started}}
    (runs / rid).mkdir(parents=True)
    (runs / rid / "record.json").write_text(json.dumps(rec))


@pytest.fixture
def made(tmp_path) -> Path:
    runs = tmp_path / "runs"
    _record(runs, "relu", "relu", None, "completed", "2026-01-01T10:00:00+00:00",
            {"val/acc": 0.80, "test/acc": 0.78}, (0.20, 0.20))
    _record(runs, "h0.01", "helu", 0.01, "completed", "2026-01-01T10:00:01+00:00",
            {"val/acc": 0.85, "test/acc": 0.84}, (0.10, 0.05))
    _record(runs, "h0.1", "helu", 0.1, "completed", "2026-01-01T10:00:02+00:00",
            {"val/acc": 0.85, "test/acc": 0.86}, (0.08, 0.02))
    _record(runs, "h1", "helu", 1.0, "failed", "2026-01-01T10:00:03+00:00",
            {"val/acc": 0.90, "test/acc": 0.90}, (0.5, 0.5), error="FloatingPointError: loss is nan at step 3")
    _record(runs, "h0.001", "helu", 0.001, "interrupted", "2026-01-01T10:00:04+00:00")
    _record(runs, "gelu", "gelu", None, "completed", "2026-01-01T10:00:05+00:00", {"val/acc": 0.99, "test/acc": 0.99})
    return runs


def _write(runs: Path, out: Path, **kw):
    return tuning.write_tuning(load_frame(runs, wandb=False), runs, out / "tables", out / "figures", "k",
                               "val/acc", **kw)


def test_table_known_answer(made, tmp_path):
    (made / tuning.OPTUNA_RESULTS).write_text("name: optuna\nbest_params:\n  activation.margin: 0.01\nbest_value: 0.85\n")
    paths, md, t = _write(made, tmp_path)
    assert list(t["run_id"]) == ["h0.01", "h0.1", "relu", "h1", "h0.001"]  # by val/acc, then runs without one
    assert list(t["order"]) == [2, 3, 1, 4, 5]  # order trained (started_at without sweep logs)
    assert list(t["best"]) == [True, False, False, False, False]  # the tie at 0.85: the first trained
    assert list(t["margin"]) == [0.01, 0.1, 0.0, 1.0, 0.001]
    csv = pd.read_csv(tmp_path / "tables" / "k.csv")
    assert csv["objective"].tolist()[:3] == [0.85, 0.85, 0.80] and csv["objective"][3:].isna().all()
    assert csv["test"].tolist()[:3] == [0.84, 0.86, 0.78] and csv["test"][3:].isna().all()
    assert csv["dead_fwd"].tolist()[:3] == [0.10, 0.08, 0.20] and csv["dead_fwd"][3:].isna().all()
    lines = md.splitlines()
    assert "| **2** | **HeLU** | **0.01** | **85.00** | **84.00** | **10.0** | **5.0** | **completed** | **best** | **h0.01** |" in lines
    assert "| 1 | ReLU | 0 | 80.00 | 78.00 | 20.0 | 20.0 | completed |  | relu |" in lines
    assert "| 4 | HeLU | 1 | — | — | — | — | failed: FloatingPointError: loss is nan at step 3 |  | h1 |" in lines
    assert "| 5 | HeLU | 0.001 | — | — | — | — | interrupted |  | h0.001 |" in lines
    assert "90.00" not in md and "99.00" not in md  # the failed run's last numbers, the GELU run
    assert "left out 1 run(s) of other activations (gelu)" in md
    assert "best val/acc = 0.85" in md and "It differs" not in md
    assert [p.name for p in paths] == ["k.md", "k.csv", "k.png", "k.pdf"]


def test_sweep_log_orders_trials_and_breaks_ties_like_optuna(made, tmp_path):
    (made / "_sweeps").mkdir()
    (made / "_sweeps" / "20260101-100000-1.jsonl").write_text(
        "".join(json.dumps({"run_id": r, "status": "completed"}) + "\n" for r in ("h0.1", "relu", "h0.01", "h0.1")))
    (made / tuning.OPTUNA_RESULTS).write_text("best_params:\n  activation.margin: 0.01\nbest_value: 0.9\n")
    _, md, t = _write(made, tmp_path)
    assert t.set_index("run_id")["order"].to_dict() == {"h0.1": 1, "relu": 2, "h0.01": 3, "h1": 4, "h0.001": 5}
    assert t.loc[t["best"], "run_id"].item() == "h0.1"  # launched first, so Optuna's first best
    assert "It differs from the table's best (0.85)" in md


def test_mixed_searches_and_tuning_on_test_are_refused(made, tmp_path):
    _record(made, "deep", "helu", 0.05, "completed", "2026-01-01T11:00:00+00:00", {"val/acc": 0.5}, depth=32)
    with pytest.raises(tuning.TuneError, match=r"differ in model.depth .*--where model.depth=VALUE"):
        _write(made, tmp_path)
    _, _, t = _write(made, tmp_path, where=["model.depth=32"])
    assert list(t["run_id"]) == ["deep"] and t["best"].item()
    _record(made, "on_test", "helu", 0.2, "completed", "2026-01-01T12:00:00+00:00", {"val/acc": 0.7}, val_split=0)
    with pytest.raises(tuning.TuneError, match=r"measured on the test set \(dataset.val_split=0"):
        _write(made, tmp_path, where=["model.depth=16"])


def test_cli_errors_are_one_line(tmp_path):
    out = subprocess.run([sys.executable, "-m", "actlab.cli.main", "tune", str(tmp_path / "nope")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "is not a folder" in out.stdout and "Traceback" not in out.stdout + out.stderr
