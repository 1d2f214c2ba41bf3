"""The quiet console: dependency chatter goes to train.log, not the screen; one line per epoch of a single
run writing to a pipe; one numbered line per finished job of a sweep."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from actlab.run.sweep_console import _BASIC, append, job_count, job_line

TINY = ["logger=csv", "trainer=cpu", "model=mlp", "model.depth=2", "model.width=8", "dataset.subset=256",
        "dataset.eval_subset=128", "dataset.batch_size=64", "trainer.max_epochs=2"]
# What must never reach the console (Lightning's banner and tips, dependencies' warnings).
NOISE = ("GPU available", "TPU available", "Tip:", "Warning", "deprecated", "srun", "[HYDRA]", "Loading `train")


def _train(tmp_path: Path, data: Path, *args: str) -> subprocess.CompletedProcess:
    flags = [a for a in args if a.startswith("-")]
    rest = [a for a in args if not a.startswith("-")]
    env = {**os.environ, "WANDB_MODE": "disabled"}
    env.pop("ACTLAB_VERBOSE", None)
    return subprocess.run([sys.executable, "-m", "actlab.cli.train", *flags, *TINY,
                           f"paths.results_dir={tmp_path}", f"dataset.data_dir={data}", *rest],
                          capture_output=True, text=True, env=env, timeout=600)


def _sweep_config(params: dict, task: list[str], target: str = _BASIC, **sweeper):
    return OmegaConf.create({"hydra": {"sweeper": {"_target_": target, "params": params, **sweeper},
                                       "overrides": {"task": task}}})


def test_job_count_is_the_product_of_the_sweeps_value_lists():
    cfg = _sweep_config({"activation": "relu,gelu", "seed": "0,1,2"}, ["model=mlp", "activation.margin=0,0.1"])
    assert job_count(cfg) == 2 * 3 * 2
    # the command line replaces a preset's list for the same key (as Hydra's basic sweeper does)
    cfg = _sweep_config({"activation": "relu,gelu", "seed": "0,1,2"}, ["activation=helu", "seed=range(4)"])
    assert job_count(cfg) == 1 * 4
    assert job_count(_sweep_config({}, ["seed=0"])) == 1
    optuna = "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    assert job_count(_sweep_config({"activation.margin": "interval(0,1)"}, [], optuna, n_trials=7)) == 7
    assert job_count(_sweep_config({}, [], "some.other.Sweeper")) is None


def _append_many(path: str, n: int, q) -> None:
    q.put([append(path, json.dumps({"pid": os.getpid(), "i": i})) for i in range(n)])


def test_appended_lines_are_numbered_by_their_place_in_the_file_even_from_parallel_processes(tmp_path):
    path = str(tmp_path / "log.jsonl")
    assert [append(path, f"line {i}") for i in range(3)] == [1, 2, 3]
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_append_many, args=(path, 100, q)) for _ in range(2)]
    for p in procs:
        p.start()
    positions = q.get(timeout=60) + q.get(timeout=60)
    for p in procs:
        p.join()
    assert sorted(positions) == list(range(4, 204))  # every line has its own number, none lost or shared
    lines = Path(path).read_text().splitlines()
    assert len(lines) == 203 and all(json.loads(x)["i"] in range(100) for x in lines[3:])


def test_job_lines_say_what_happened():
    done = {"run_id": "r-s1", "status": "completed", "metric": "test/acc", "value": 0.76123, "seconds": 37.6}
    assert job_line(7, 21, done) == "[7/21] r-s1 test/acc=0.7612 (38 s)"
    assert job_line(2, None, {**done, "status": "skipped"}) == "[2] r-s1 already done test/acc=0.7612"
    failed = {"run_id": "r-s2", "status": "failed", "error": "FloatingPointError: not finite\ntraceback..."}
    assert job_line(8, 21, failed) == "[8/21] r-s2 FAILED: FloatingPointError: not finite"
    assert "resumable" in job_line(1, 2, {"run_id": "r", "status": "interrupted", "error": "SIGTERM"})


@pytest.mark.slow
def test_a_single_run_prints_one_line_per_epoch_and_the_result_and_logs_the_rest(tmp_path, fashion_dir):
    out = _train(tmp_path, fashion_dir, "activation=helu", "activation.margin=0.05")
    assert out.returncode == 0, out.stderr[-2000:]
    console = (out.stdout + out.stderr).splitlines()
    assert [ln.split()[:2] for ln in console[:2]] == [["epoch", "1/2"], ["epoch", "2/2"]], console
    assert console[2].startswith("actlab-train: fashion_mnist-mlp-helu-m0.05-s0-") and "test/acc=" in console[2]
    assert len(console) == 3, console
    assert not [ln for ln in console if any(n in ln for n in NOISE)]
    log = next((tmp_path / "runs").glob("*/train.log")).read_text()
    assert "GPU available" in log and "epoch 2/2" in log  # nothing is lost, it is in the run's log


@pytest.mark.slow
def test_a_sweep_prints_one_numbered_line_per_job_and_its_summary(tmp_path, fashion_dir):
    out = _train(tmp_path, fashion_dir, "-m", "trainer.max_epochs=1", "activation=relu,helu",
                 "activation.margin=0,0.05")
    assert out.returncode == 0, out.stderr[-2000:]
    console = [ln for ln in (out.stdout + out.stderr).splitlines() if ln.strip()]
    jobs = [ln for ln in console if ln.startswith("[")]
    # relu at margins 0 and 0.05 is one run (the margin does not apply): the second is already done
    assert [ln.split()[0] for ln in jobs] == ["[1/4]", "[2/4]", "[3/4]", "[4/4]"], console
    assert "fashion_mnist-mlp-relu-s0-" in jobs[0] and "test/acc=" in jobs[0] and jobs[0].endswith(" s)")
    assert "already done" in jobs[1] and jobs[1].split()[1] == jobs[0].split()[1]
    assert "-helu-m0-" in jobs[2] and "-helu-m0.05-" in jobs[3]
    rest = [ln for ln in console if not ln.startswith("[")]
    assert len(rest) == 1 and rest[0].startswith("sweep: 4 jobs: 3 completed, 1 skipped"), console
    log = next((tmp_path / "runs" / "_sweeps").glob("*.jsonl")).read_text().splitlines()
    shown = [json.loads(x) for x in log]
    assert [o["status"] for o in shown] == ["completed", "skipped", "completed", "completed"]
    assert all(o["metric"] == "test/acc" and 0 <= o["value"] <= 1 for o in shown)
    # beside the log, what `actlab status` cannot read from its lines: the job count and the launcher
    meta = json.loads(next((tmp_path / "runs" / "_sweeps").glob("*.json")).read_text())
    assert (meta["jobs"], meta["host"]) == (4, socket.gethostname()) and meta["pid"] != os.getpid()
