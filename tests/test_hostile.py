"""actlab-train used as a hostile user would: bad knobs, bad files, signals, locks, broken checkpoints, full
and read-only disks. Every case checks the exit code, that the message is one line without a traceback,
and what the run's record says afterwards (never `completed` for a run that gave no valid result)."""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from actlab.run import records

BASE = ["logger=none", "monitor=none", "trainer=cpu", "trainer.enable_progress_bar=false", "model=mlp",
        "model.depth=3", "model.width=16", "dataset.batch_size=32", "scheduler=none", "trainer.max_epochs=1"]


def _cmd(results: Path, data: Path, *args: str) -> list[str]:
    flags = [a for a in args if a.startswith("-")]
    rest = [a for a in args if not a.startswith("-")]
    base = BASE if not any(a.startswith("model=") for a in rest) else [b for b in BASE if not b.startswith("model")]
    return [sys.executable, "-m", "actlab.cli.train", *flags, *base, f"paths.results_dir={results}",
            f"dataset.data_dir={data}", *rest]


def _train(results: Path, data: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(_cmd(results, data, *args), capture_output=True, text=True, timeout=timeout)


def _records(results: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in (results / "runs").glob("*/record.json")}


def _one_line_error(out: subprocess.CompletedProcess, pattern: str) -> str:
    """The `actlab-train: error:` line; fails on a traceback or a message spread over several lines."""
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    lines = [line for line in out.stderr.splitlines() if line.startswith("actlab-train: error:")]
    assert len(lines) == 1, out.stderr[-3000:]
    assert pattern in lines[0], lines[0]
    return lines[0]


# --- knobs that can never give a valid result: refused before anything runs, nothing recorded ------------
REFUSED = [
    (["activation=helu", "activation.margin=nan"], "activation.margin=nan is not a finite number"),
    (["activation=helu", "activation.margin=inf"], "activation.margin=inf is not a finite number"),
    (["activation=helu", "activation.margin=-inf"], "activation.margin=-inf is not a finite number"),
    (["activation=helu", "margin=linear", "margin.end=nan"], "margin.end=nan is not a finite number"),
    (["activation=helu", "activation.margin=abc"], "activation.margin must be a number, got 'abc'"),
    (["optim.lr=nan"], "optim.lr=nan is not a finite number"),
    (["trainer.max_epochs=0"], "trainer.max_epochs=0 trains nothing"),
    (["trainer.limit_train_batches=0"], "trainer.limit_train_batches=0 trains nothing"),
    (["+trainer.max_steps=0"], "trainer.max_steps=0 trains nothing"),
    (["run_id=/tmp/elsewhere"], "must be a plain directory name"),
    (["run_id=../escape"], "must be a plain directory name"),
    (["run_id=.hidden"], "must be a plain directory name"),
    (["seed=abc"], "seed must be an integer"),
]


@pytest.mark.parametrize(("args", "message"), REFUSED, ids=[" ".join(a) for a, _ in REFUSED])
def test_knobs_without_a_valid_result_are_refused_in_one_line(tmp_path, fashion_dir, args, message):
    out = _train(tmp_path, fashion_dir, *args)
    assert out.returncode == 1
    _one_line_error(out, message)
    assert _records(tmp_path) == {}  # nothing that a table could count
    assert not list(tmp_path.glob("**/elsewhere")) and not (tmp_path / "escape").exists()


# --- bad combinations found while building: a failed record with the same one line ----------------------
FAILED = [
    (["activation=helu", "margin=step", "margin.milestones=abc"], "margin.milestones must be a list of numbers"),
    (["trainer.accelerator=gpu"], "trainer.accelerator=gpu cannot run here"),
    (["model=minilm"], "does not fit dataset=fashion_mnist (image data)"),
    (["task=glue"], "task=GLUEClassifier does not fit dataset=fashion_mnist"),
    (["dataset.batch_size=-1"], "batch_size"),
    (["optim.lr=1e30"], "lower optim.lr"),  # a real divergence: NaN loss
]


@pytest.mark.parametrize(("args", "message"), FAILED, ids=[" ".join(a) for a, _ in FAILED])
def test_bad_combinations_fail_in_one_line_and_are_recorded_failed(tmp_path, fashion_dir, args, message):
    out = _train(tmp_path, fashion_dir, *args)
    assert out.returncode == 1
    line = _one_line_error(out, message)
    recs = _records(tmp_path)
    assert all(r["status"] == "failed" for r in recs.values())  # never completed
    for r in recs.values():
        assert line.removeprefix("actlab-train: error: ") in r["error"]


@pytest.mark.parametrize(("args", "message"), [(["model=nonexistent"], "Could not find 'model/nonexistent'"),
                                               (["foo=1"], "Key 'foo' is not in struct")])
def test_unknown_choices_and_keys_get_hydras_message_not_a_traceback(tmp_path, fashion_dir, args, message):
    out = _train(tmp_path, fashion_dir, *args)
    assert out.returncode == 1 and message in out.stderr and "Traceback" not in out.stderr
    assert _records(tmp_path) == {}


@pytest.mark.parametrize("packed", ["gz", "raw"])
def test_a_truncated_data_file_is_one_line(tmp_path, fashion_dir, packed):
    import gzip
    import shutil

    bad = tmp_path / "data"
    shutil.copytree(fashion_dir, bad)
    images = bad / "train-images-idx3-ubyte.gz"
    if packed == "gz":
        images.write_bytes(images.read_bytes()[:200])
    else:  # uncompressed IDX files, the images cut short
        for gz in bad.glob("*.gz"):
            gz.with_suffix("").write_bytes(gzip.decompress(gz.read_bytes()))
            gz.unlink()
        raw = bad / "train-images-idx3-ubyte"
        raw.write_bytes(raw.read_bytes()[:3000])
    out = _train(tmp_path, bad)
    assert out.returncode == 1
    _one_line_error(out, "train-images-idx3-ubyte" if packed == "gz" else "not a valid IDX file")
    assert [r["status"] for r in _records(tmp_path).values()] == ["failed"]


def test_a_margin_schedule_on_relu_is_not_a_new_replicate(tmp_path, fashion_dir):
    """ReLU with a margin schedule computes exactly plain ReLU: same run_id, so it is skipped, not counted twice."""
    assert _train(tmp_path, fashion_dir, "activation=relu").returncode == 0
    out = _train(tmp_path, fashion_dir, "activation=relu", "margin=cosine")
    assert out.returncode == 0 and "skipped" in out.stderr and "already completed" in out.stderr
    assert len(_records(tmp_path)) == 1


# --- records --------------------------------------------------------------------------------------------
def test_a_garbage_record_is_replaced_by_a_real_run(tmp_path, fashion_dir):
    first = _train(tmp_path, fashion_dir)
    (run_dir,) = (tmp_path / "runs").glob("*/record.json")
    run_dir.write_bytes(b"\x00\xffnot json")
    out = _train(tmp_path, fashion_dir)
    assert first.returncode == 0 and out.returncode == 0
    assert records.read(run_dir.parent)["status"] == "completed"


def test_non_finite_values_stay_visible_in_records(tmp_path):
    records.write_atomic(tmp_path / "record.json", {"metrics": {"a": float("nan"), "b": float("inf"),
                                                                 "c": float("-inf"), "d": 1.5}})
    assert json.loads((tmp_path / "record.json").read_text())["metrics"] == {"a": "nan", "b": "inf",
                                                                          "c": "-inf", "d": 1.5}


# --- signals --------------------------------------------------------------------------------------------
def _start_long_run(results: Path, data: Path, *args: str) -> tuple[subprocess.Popen, Path]:
    proc = subprocess.Popen(_cmd(results, data, "trainer.max_epochs=40", *args), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline:
        hits = list((results / "runs").glob("*/checkpoints/last.ckpt"))
        if hits:
            return proc, hits[0].parents[1]
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("the run never wrote a checkpoint")


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_exits_non_zero_and_the_run_resumes(tmp_path, fashion_dir, sig, code):
    proc, run_dir = _start_long_run(tmp_path, fashion_dir)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err[-3000:]
    rec = records.read(run_dir)
    assert rec["status"] == "interrupted" and signal.Signals(sig).name in rec["error"]
    assert "Traceback" not in err
    out = _train(tmp_path, fashion_dir, "trainer.max_epochs=40")
    assert out.returncode == 0, out.stderr[-3000:]
    rec = records.read(run_dir)
    assert rec["status"] == "completed" and rec["timings"]["resumed_from"].endswith("last.ckpt")


@pytest.mark.slow
def test_sigterm_stops_a_sweep_and_still_writes_its_log(tmp_path, fashion_dir):
    proc = subprocess.Popen(_cmd(tmp_path, fashion_dir, "-m", "seed=0,1,2", "trainer.max_epochs=200"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and not list((tmp_path / "runs").glob("*/checkpoints/last.ckpt")):
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-3000:]
    assert "1 interrupted" in err
    (log,) = (tmp_path / "runs" / "_sweeps").glob("*.jsonl")
    (line,) = [json.loads(x) for x in log.read_text().splitlines()]
    assert line["status"] == "interrupted" and line["exit_code"] == 143
    assert [r["status"] for r in _records(tmp_path).values()] == ["interrupted"]  # the other seeds never started


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # as a terminal's foreground job has it (xdist ignores it)


def _parallel_sweep_training(results: Path, data: Path) -> subprocess.Popen:
    """A joblib sweep of 4 seeds, 2 at a time, once both running jobs have written a checkpoint."""
    proc = subprocess.Popen(_cmd(results, data, "-m", "hydra/launcher=local", "seed=0,1,2,3", "trainer.max_epochs=5000"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=_default_sigint)
    deadline = time.time() + 240
    while len(list((results / "runs").glob("*/checkpoints/last.ckpt"))) < 2:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        if time.time() > deadline:
            proc.kill()
            pytest.fail(f"the sweep's jobs wrote no checkpoints in 240 s: {proc.communicate()[1][-3000:]}")
        time.sleep(0.1)
    return proc


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code", "group"), [(signal.SIGINT, 130, True), (signal.SIGTERM, 143, True),
                                                    (signal.SIGTERM, 143, False), (signal.SIGINT, 130, False)])
def test_a_signal_stops_a_parallel_sweep_and_every_started_run_records_it(tmp_path, fashion_dir, sig, code, group):
    """Ctrl-C (the signal to the whole process group) or SIGTERM to the joblib launcher alone (`kill`): the
    running jobs record their runs as interrupted (the launcher passes the signal on and waits for them),
    the queued jobs never start, and the launcher prints the summary and a line on resuming and exits
    128 + N. Before, the launcher's abort killed the workers, so a run could be left `running`."""
    proc = _parallel_sweep_training(tmp_path, fashion_dir)
    if group:
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err[-3000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
    assert f"stopping on {sig.name}" in err
    assert re.search(r"^sweep: 2 jobs: 0 completed, 0 skipped .*, 2 interrupted, 0 failed", err, re.M), err[-3000:]
    assert "sweep: 2 of 4 jobs not run\n" in err  # every job that started logged its outcome
    assert err.rstrip().endswith(f"actlab-train: interrupted by {sig.name}; relaunch the same command to resume "
                                 "(completed runs are skipped)")
    recs = _records(tmp_path)  # seeds 2 and 3 never started: no record
    assert sorted(r["config"]["seed"] for r in recs.values()) == [0, 1]
    assert all(r["status"] == "interrupted" and sig.name in r["error"] for r in recs.values()), recs
    (log,) = (tmp_path / "runs" / "_sweeps").glob("*.jsonl")
    assert sorted(json.loads(x)["status"] for x in log.read_text().splitlines()) == ["interrupted"] * 2
    assert log.with_suffix(".stop").read_text() == f"{int(sig)}\n"


@pytest.mark.slow
def test_a_second_ctrl_c_stops_a_parallel_sweep_at_once(tmp_path, fashion_dir):
    """The second signal does not wait for the jobs: joblib kills its workers. A run killed before it recorded
    stays `running`, which `actlab status` shows as stale (resumable), never as running."""
    proc = _parallel_sweep_training(tmp_path, fashion_dir)
    proc.send_signal(signal.SIGINT)
    deadline = time.time() + 60
    while not list((tmp_path / "runs" / "_sweeps").glob("*.stop")):  # the first was handled (two at once are one)
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        if time.time() > deadline:
            proc.kill()
            pytest.fail(f"no stop marker 60 s after Ctrl-C: {proc.communicate()[1][-3000:]}")
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
    assert re.search(r"^sweep: [2-4] of 4 jobs not run \(not started, or stopped before they could record", err, re.M)
    recs = _records(tmp_path)
    assert len(recs) == 2 and {r["status"] for r in recs.values()} <= {"interrupted", "running"}, \
        [(r["status"], r.get("error")) for r in recs.values()]
    from actlab.report import status

    time.sleep(1)  # the killed workers' pids are gone once reaped
    assert {r.status for r in status.scan(tmp_path / "runs")[0].runs} <= {"interrupted", "stale"}


def test_an_experiment_script_stops_at_a_signal_and_goes_on_after_a_failure(tmp_path):
    """scripts/sweep.sh: a sweep that exits 128 + N ends the script with that code before the next sweep; one
    that exits 1 (a failed run) sets status=1 and the script goes on. actlab-train is a stand-in here that
    exits with the code its arguments name (the real exits are the test above and test_sweeps')."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "actlab-train").write_text('#!/bin/sh\necho "$@" >> "$CALLS"\nexit "${2#rc=}"\n')
    (bin_dir / "actlab-train").chmod(0o755)
    script = tmp_path / "scripts" / "exp.sh"
    script.parent.mkdir()
    (tmp_path / "scripts" / "sweep.sh").write_text((Path(__file__).parents[1] / "scripts" / "sweep.sh").read_text())
    script.write_text('cd "$(dirname "$0")/.."\nstatus=0\nsource scripts/sweep.sh\nsweep rc=$FIRST\nsweep rc=0\n'
                      'echo tables\nexit $status\n')
    for first, code, calls, tables in (("0", 0, 2, True), ("1", 1, 2, True), ("130", 130, 1, False),
                                       ("143", 143, 1, False)):
        env = {**os.environ, "BIN": str(bin_dir), "FIRST": first, "CALLS": str(tmp_path / f"calls{first}")}
        out = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == code, out.stderr
        assert len((tmp_path / f"calls{first}").read_text().splitlines()) == calls
        assert ("tables" in out.stdout) == tables
        if code >= 128:
            assert out.stderr.strip() == f"exp.sh: stopped (exit {code}); rerun it to resume (completed runs are skipped)"


# --- locks ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("owner", ["some-other-host:123", f"{os.uname().nodename}:1", "garbage", ""])
def test_a_leftover_lock_file_never_blocks_a_run(tmp_path, fashion_dir, owner):
    """Only a live holder of the flock counts: a lock file left by a dead process, another host or a reused
    PID does not make the run skipped forever."""
    out = _train(tmp_path, fashion_dir, "seed=5")
    (run_dir,) = [p.parent for p in (tmp_path / "runs").glob("*/record.json")]
    rec = records.read(run_dir)
    rec["status"] = "running"
    records.write_atomic(run_dir / "record.json", rec)
    (run_dir / ".lock").write_text(owner)
    out = _train(tmp_path, fashion_dir, "seed=5")
    assert out.returncode == 0, out.stderr[-3000:]
    assert records.read(run_dir)["status"] == "completed"


def test_a_live_lock_exits_75_and_touches_nothing(tmp_path, fashion_dir):
    first = _train(tmp_path, fashion_dir, "seed=6", "force=true")
    (run_dir,) = [p.parent for p in (tmp_path / "runs").glob("*/record.json")]
    before = (run_dir / "record.json").read_bytes()
    with open(run_dir / ".lock", "a+") as held:  # another live run holds it
        fcntl.flock(held, fcntl.LOCK_EX)
        out = _train(tmp_path, fashion_dir, "seed=6", "force=true")
    assert first.returncode == 0 and out.returncode == 75
    assert "locked:" in out.stderr and "Traceback" not in out.stderr
    assert (run_dir / "record.json").read_bytes() == before


@pytest.mark.slow
def test_four_launches_at_once_train_the_run_exactly_once(tmp_path, fashion_dir):
    procs = [subprocess.Popen(_cmd(tmp_path, fashion_dir, "seed=7", "trainer.max_epochs=3"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outs = [(p.wait(timeout=600), "".join(p.communicate())) for p in procs]
    assert all("Traceback" not in err for _, err in outs), [e[-2000:] for _, e in outs]
    trained = [out for code, out in outs if code == 0 and "test/acc=" in out]
    assert len(trained) == 1
    assert all(code in (0, 75) for code, _ in outs)
    assert [r["status"] for r in _records(tmp_path).values()] == ["completed"]


# --- checkpoints and disks ------------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_an_unreadable_checkpoint_is_set_aside_and_the_run_starts_over(tmp_path, fashion_dir, damage):
    out = _train(tmp_path, fashion_dir, "seed=8", "trainer.max_epochs=2")
    (run_dir,) = [p.parent for p in (tmp_path / "runs").glob("*/record.json")]
    clean = records.read(run_dir)
    rec = dict(clean, status="interrupted")
    records.write_atomic(run_dir / "record.json", rec)
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 3] if damage == "truncate" else b"PK\x03\x04garbage")
    out = _train(tmp_path, fashion_dir, "seed=8", "trainer.max_epochs=2")
    assert out.returncode == 0, out.stderr[-3000:]
    warning = [line for line in (out.stdout + out.stderr).splitlines() if "is unreadable" in line]
    assert len(warning) == 1 and "starting over from epoch 0" in warning[0]
    rec = records.read(run_dir)
    assert rec["status"] == "completed" and rec["timings"]["resumed_from"] is None
    assert rec["recovery"]["action"] == "restarted from epoch 0"
    assert (run_dir / rec["recovery"]["unreadable_checkpoint"]).exists()  # kept aside, not deleted
    assert rec["metrics"] == clean["metrics"]  # same seed, same data: the restart reproduces the clean run


def test_checkpoints_are_written_in_place_atomically(tmp_path):
    import torch

    from actlab.run.ckpt_io import AtomicCheckpointIO

    path = tmp_path / "ckpt" / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(3)}}, path)
    assert torch.load(path)["state_dict"]["w"].sum() == 3
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]  # no temp file left behind


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    try:
        return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                              capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def test_a_completed_run_under_a_read_only_dir_is_skipped(tmp_path, fashion_dir):
    """A read-only file system (root ignores permission bits, so a remounted tmpfs stands in for one)."""
    disk = tmp_path / "ro-disk"
    if not _mount_tmpfs(disk, "64m"):
        pytest.skip("cannot mount a tmpfs here (needs root and mount permission in this container)")
    try:
        assert _train(disk, fashion_dir).returncode == 0
        remount = subprocess.run(["mount", "-o", "remount,ro", str(disk)], capture_output=True, timeout=30)
        if remount.returncode != 0:
            pytest.skip(f"cannot remount the tmpfs read-only: {remount.stderr.decode().strip()}")
        out = _train(disk, fashion_dir)
        assert out.returncode == 0 and "skipped" in out.stderr, out.stderr[-3000:]
        # A new run must create its directory, which Hydra does before actlab runs: Hydra's own short
        # report (its frames stripped) names the path; exit 1, and nothing is written.
        new = _train(disk, fashion_dir, "seed=3")
        assert new.returncode == 1 and "Read-only file system" in new.stderr, new.stderr[-3000:]
        assert len(_records(disk)) == 1
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True, timeout=30)


def test_a_full_disk_fails_in_one_line_and_loses_no_record(tmp_path, fashion_dir):
    disk = tmp_path / "small-disk"
    if not _mount_tmpfs(disk, "96k"):
        pytest.skip("cannot mount a small tmpfs here (needs root and mount permission in this container)")
    try:
        out = _train(disk, fashion_dir, "model.width=256", "model.depth=4", "trainer.max_epochs=2")
        assert out.returncode == 1, out.stderr[-3000:]
        _one_line_error(out, "No space left on device")
        for rec in _records(disk).values():  # whatever got written is a valid record that is not completed
            assert rec["status"] in ("running", "failed")
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True, timeout=30)
