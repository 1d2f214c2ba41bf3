"""Sweeps through the real CLI: crash isolation, collapse of meaningless grid points, resume after a
kill, the joblib launcher, and DDP with two CPU processes (gloo)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from actlab.run import records
from actlab.run.distributed import LAUNCH_ENV

BASE = ["logger=none", "monitor=none", "trainer=cpu", "trainer.enable_progress_bar=false", "model=mlp",
        "model.depth=3", "model.width=16", "dataset.batch_size=32", "scheduler=none"]


def _cmd(results: Path, data: Path, *args: str) -> list[str]:
    flags = [a for a in args if a.startswith("-")]  # Hydra wants -m before the overrides
    rest = [a for a in args if not a.startswith("-")]
    return [sys.executable, "-m", "actlab.cli.train", *flags, *BASE, f"paths.results_dir={results}",
            f"dataset.data_dir={data}", *rest]


def _records(results: Path) -> dict[str, dict]:
    out = {}
    for path in (results / "runs").glob("*/record.json"):
        rec = json.loads(path.read_text())
        out[rec["run_id"]] = rec
    return out


@pytest.mark.slow
def test_failing_job_is_recorded_and_the_sweep_finishes_the_rest(tmp_path, fashion_dir):
    out = subprocess.run(_cmd(tmp_path, fashion_dir, "-m", "activation=relu,helu", "optim.lr=0.01,1e30",
                              "trainer.max_epochs=1"), capture_output=True, text=True, timeout=600)
    recs = _records(tmp_path)
    by_status = sorted((r["config"]["activation"]["name"], r["config"]["optim"]["lr"], r["status"]) for r in recs.values())
    assert by_status == [("helu", 0.01, "completed"), ("helu", 1e30, "failed"),
                         ("relu", 0.01, "completed"), ("relu", 1e30, "failed")]
    assert out.returncode == 1, out.stderr[-2000:]
    assert "2 completed, 0 skipped (already completed or duplicate), 0 locked (running elsewhere), 0 interrupted, 2 failed" in out.stderr
    failed = [rid for rid, r in recs.items() if r["status"] == "failed"]
    assert all(rid in out.stderr for rid in failed)
    assert all("FloatingPointError" in recs[rid]["error"] for rid in failed)


@pytest.mark.slow
def test_relaunched_sweep_skips_completed_and_resumes_the_killed_run(tmp_path, fashion_dir):
    args = ["-m", "activation=relu,helu", "activation.margin=0.01,0.1", "trainer.max_epochs=25"]
    proc = subprocess.Popen(_cmd(tmp_path, fashion_dir, *args), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    # Kill the whole sweep once the first HeLU run has checkpointed an epoch (relu ran first, to the end).
    deadline = time.time() + 400
    victim = None
    while time.time() < deadline and victim is None:
        hits = list((tmp_path / "runs").glob("*helu-m0.01*/checkpoints/last.ckpt"))
        victim = hits[0].parents[1] if hits else None
        time.sleep(0.05)
    assert victim is not None, "the sweep never reached the HeLU run"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert json.loads((victim / "record.json").read_text())["status"] == "running"  # killed: no chance to say more

    out = subprocess.run(_cmd(tmp_path, fashion_dir, *args), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    recs = _records(tmp_path)
    assert len(recs) == 3  # relu at two margins collapsed into one run
    assert all(r["status"] == "completed" for r in recs.values())
    resumed = recs[victim.name]
    assert resumed["timings"]["resumed_from"].endswith("last.ckpt") and resumed["timings"]["epochs_run"] < 25
    assert len(records.read_history(victim)) == 25
    assert "2 skipped" in out.stderr  # relu (done before the kill) and its duplicate at the other margin


@pytest.mark.slow
def test_joblib_launcher_runs_jobs_in_parallel_processes(tmp_path, fashion_dir):
    out = subprocess.run(_cmd(tmp_path, fashion_dir, "-m", "hydra/launcher=local", "hydra.launcher.n_jobs=2",
                              "seed=0,1", "trainer.max_epochs=1"), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    recs = _records(tmp_path)
    assert sorted(r["config"]["seed"] for r in recs.values()) == [0, 1]
    assert all(r["status"] == "completed" for r in recs.values())


def _listen_port() -> int:
    """A free TCP port below Linux's ephemeral range (32768-60999): Lightning's own pick is an ephemeral
    port it binds, closes and binds again, and an outgoing connection may take it in between."""
    import random
    import socket

    for port in random.sample(range(20_000, 32_000), 200):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 20000-32000")


def _run_ranks(cmd: list[str], env: dict, timeout: float) -> tuple[int | None, str]:
    """Run a DDP command in its own process group; past `timeout`, SIGABRT every rank so that
    faulthandler prints where each one hung (a hang otherwise says nothing), then kill the group."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env | {"PYTHONFAULTHANDLER": "1"}, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGABRT)
        time.sleep(5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        stacks = "\n".join(line for line in out.splitlines() if "(total: " not in line)  # not the module lists
        return None, f"timed out after {timeout} s; stacks of the ranks:\n{stacks}"


def _run_ddp(cmd: list[str], timeout: float, pick_port: bool = False) -> tuple[int | None, str]:
    """A DDP command in the environment a fresh shell has (no launch variables); pick_port gives it a
    MASTER_PORT outside the ephemeral range. A port taken between pick and bind: up to 3 tries."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_ENV}
    for _attempt in range(3):
        rc, out = _run_ranks(cmd, env | ({"MASTER_PORT": str(_listen_port())} if pick_port else {}), timeout)
        if rc == 0 or "EADDRINUSE" not in out:
            break
    return rc, out


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_writes_one_record(tmp_path, fashion_dir):
    cmd = _cmd(tmp_path, fashion_dir, "trainer=ddp", "trainer.devices=2", "trainer.accelerator=cpu", "trainer.max_epochs=1")
    rc, stderr = _run_ddp(cmd, timeout=300, pick_port=True)
    assert rc == 0, stderr[-8000:]
    recs = _records(tmp_path)
    assert len(recs) == 1
    (rec,) = recs.values()
    assert rec["status"] == "completed" and rec["config"]["trainer"]["strategy"] == "ddp"
    assert 0.0 <= rec["metrics"]["test/acc"] <= 1.0
    for lock_file in (tmp_path / "runs").glob("*/.lock"):  # the file stays; no process holds its flock
        with open(lock_file) as f:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    assert stderr.count("actlab-train: ") == 1  # rank 0 reports; rank 1 has no final metrics to show


@pytest.mark.slow
def test_ddp_jobs_of_a_multirun_each_get_their_ranks(tmp_path, fashion_dir):
    """Job 2 runs in the process job 1 used: it must launch its own rank 1 (not wait for one), and the
    sweep counts each job once although two ranks ran it."""
    cmd = _cmd(tmp_path, fashion_dir, "-m", "seed=0,1", "trainer=ddp", "trainer.devices=2", "trainer.accelerator=cpu",
               "trainer.max_epochs=1")
    rc, out = _run_ddp(cmd, timeout=400)  # each job picks its own port: Lightning's pick
    assert rc == 0, out[-8000:]
    recs = _records(tmp_path)
    assert sorted(r["config"]["seed"] for r in recs.values()) == [0, 1]
    assert all(r["status"] == "completed" for r in recs.values())
    assert "sweep: 2 jobs: 2 completed" in out


def test_a_ddp_run_leaves_no_process_group_or_launch_variables_behind(tmp_path, fashion_dir, monkeypatch):
    """Lightning's launcher leaves LOCAL_RANK, MASTER_PORT, ... and the process group behind; the next
    run in the same process (a basic-launcher multirun job) would then wait forever for ranks that
    nobody launches, and child processes would inherit a port still held (both seen in CI)."""
    import torch.distributed as dist

    from actlab.run.runner import run

    from compose import make_cfg

    for key in LAUNCH_ENV:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("NODE_RANK", "0")  # one the user set: must survive as it was
    over = ["trainer=ddp", "trainer.devices=1", "trainer.accelerator=cpu", "trainer.fast_dev_run=true",
            "model=mlp", "model.depth=2", "model.width=8", "dataset.batch_size=4", f"dataset.data_dir={fashion_dir}"]
    for seed in (0, 1):  # the second run is the one that used to inherit the first one's state
        rec = run(make_cfg(tmp_path, *over, f"seed={seed}"))
        assert rec["status"] == "completed" and rec["config"]["trainer"]["strategy"] == "ddp"
        assert not dist.is_initialized()
        assert {k: os.environ.get(k) for k in LAUNCH_ENV} == {k: "0" if k == "NODE_RANK" else None for k in LAUNCH_ENV}


def test_job_result_is_a_float_only_when_it_has_an_objective():
    import math
    import pickle

    from actlab.run.sweep import JobResult

    done = JobResult(0.75, "r1", "completed", shown={"metric": "test/acc", "value": 0.7, "seconds": 3.0})
    assert float(done) == 0.75 and done > 0.5
    back = pickle.loads(pickle.dumps(done))  # joblib and submitit pickle results back to the launcher
    assert float(back) == 0.75 and back.outcome() == done.outcome() == {
        "run_id": "r1", "status": "completed", "error": None, "metric": "test/acc", "value": 0.7, "seconds": 3.0}
    failed = JobResult(None, "r2", "failed", "FloatingPointError: diverged")
    assert math.isnan(failed) and math.isnan(pickle.loads(pickle.dumps(failed)))
    # Optuna's sweeper calls float(): a failed job must fail the cast (a FAIL trial), never be a NaN value
    with pytest.raises(TypeError, match="r2: failed, no objective"):
        float(failed)


def test_a_signal_outranks_a_failure_in_the_sweeps_exit_code(tmp_path, capsys):
    """A chained script stops on 128 + N; with no signal, a failure gives 1 (and never 0)."""
    from actlab.run.sweep import report

    log = tmp_path / "runs" / "_sweeps" / "20260101-000000-1.jsonl"
    log.parent.mkdir(parents=True)
    failed = {"run_id": "a", "status": "failed", "error": "RuntimeError: boom"}
    stopped = {"run_id": "b", "status": "interrupted", "error": "RunInterrupted: interrupted by SIGINT", "exit_code": 130}
    log.write_text(json.dumps(failed) + "\n" + json.dumps(stopped) + "\n")
    assert report(log) == 130
    log.write_text(json.dumps(failed) + "\n" + json.dumps({"run_id": "c", "status": "completed", "error": None}) + "\n")
    assert report(log) == 1
    assert "1 failed" in capsys.readouterr().err


# --- the sweep log itself: Hydra turns a callback's exception into a warning, so these must exit 1 --------
def test_a_sweep_whose_log_cannot_be_written_exits_1_before_any_job(tmp_path, fashion_dir):
    (tmp_path / "file").write_text("not a directory")
    out = subprocess.run(_cmd(tmp_path, fashion_dir, "-m", "seed=0,1", "trainer.max_epochs=1",
                              f"paths.runs_dir={tmp_path / 'file' / 'runs'}"), capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 1, out.stderr[-2000:]
    (line,) = [ln for ln in out.stderr.splitlines() if "actlab-train: error:" in ln]
    assert "cannot write the sweep log" in line and "(Not a directory)" in line and "no job was started" in line
    assert "Traceback" not in out.stderr and "[1/2]" not in out.stdout


def _finished_sweep(tmp_path: Path, lines: list[str], total: int):
    from omegaconf import OmegaConf

    from actlab.run.sweep import SweepLog

    log = tmp_path / "runs" / "_sweeps" / "20260101-000000-1.jsonl"
    log.parent.mkdir(parents=True)
    log.write_text("".join(x + "\n" for x in lines))
    cb = SweepLog()
    cb.path, cb.pid, cb.total = str(log), os.getpid(), total
    return cb, OmegaConf.create({"paths": {"runs_dir": str(tmp_path / "runs")}}), log


def test_jobs_missing_from_the_log_or_an_unreadable_log_exit_1(tmp_path, capsys):
    done = json.dumps({"run_id": "a", "status": "completed", "error": None})
    cb, cfg, log = _finished_sweep(tmp_path, [done, done], total=3)  # one job's line lost (a full disk)
    with pytest.raises(SystemExit) as e:
        cb.on_multirun_end(cfg)
    assert e.value.code == 1 and "1 of the sweep's 3 jobs left no line in its log" in capsys.readouterr().err
    cb.total = 2
    cb.on_multirun_end(cfg)  # all there: exit 0 (no SystemExit)
    log.unlink()
    with pytest.raises(SystemExit) as e:
        cb.on_multirun_end(cfg)
    assert e.value.code == 1 and "cannot be read (No such file or directory)" in capsys.readouterr().err


def test_a_cut_log_line_counts_as_a_failed_job(tmp_path, capsys):
    from actlab.run.sweep import report

    done = json.dumps({"run_id": "a", "status": "completed", "error": None})
    _, _, log = _finished_sweep(tmp_path, [done, done[:17]], total=2)
    assert report(log) == 1
    err = capsys.readouterr().err
    assert "2 jobs: 1 completed" in err and "1 failed" in err and "unreadable sweep log line" in err
