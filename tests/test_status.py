"""`actlab status`: counts, epochs, ETAs, liveness and errors on hand-made run directories (known answers),
the CLI's output and exit codes, a --watch refresh in a real terminal (pty), and a real tiny run whose
history rows carry their wall-clock times through a crash and a resume."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pty
import select
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import lightning as L
import pytest

from actlab.callbacks.history import TIME_KEYS
from actlab.cli.main import main
from actlab.report import status
from actlab.run import records

from compose import fashion, make_cfg

HOST = socket.gethostname()
NOW = time.time()


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")


def _run_dir(sweep: Path, run_id: str, status_: str, epoch_s: list[float] = (), max_epochs: int = 10,
             lock: str | None = None, error: str | None = None, started: float = NOW, last: float = NOW) -> Path:
    """A run directory as the runner leaves it: record.json, history.jsonl (rows ending at `last`), .lock."""
    d = sweep / run_id
    d.mkdir(parents=True)
    rec = {"schema": 3, "run_id": run_id, "status": status_, "error": error,
           "config": {"trainer": {"max_epochs": max_epochs}, "seed": 0}, "metrics": {},
           "timings": {"started_at": _iso(started)}}
    (d / "record.json").write_text(json.dumps(rec))
    ends = [last - sum(epoch_s[i + 1:]) for i in range(len(epoch_s))]
    rows = [{"epoch": i, "step": 10 * (i + 1), "train/loss": 1.0, "time": t, "epoch_s": s}
            for i, (s, t) in enumerate(zip(epoch_s, ends))]
    records.write_history(d, rows)
    if lock is not None:
        (d / ".lock").write_text(lock + "\n")
    return d


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def sweep(tmp_path):
    """One sweep with a run in every state; returns (runs dir, sweep dir)."""
    s = tmp_path / "runs" / "demo"
    _run_dir(s, "done-a", "completed", [5, 5], max_epochs=2)
    _run_dir(s, "done-b", "completed", [5, 5], max_epochs=2)
    # alive on this host: 6 of 10 epochs; the last 5 have median 11 s (the slow first one, compiling, drops
    # out); 4 s into the seventh
    _run_dir(s, "live", "running", [30, 10, 12, 11, 11, 13], lock=f"{HOST}:{os.getpid()}", last=NOW - 4)
    _run_dir(s, "killed", "running", [7, 7, 7, 7, 7], lock=f"{HOST}:{_dead_pid()}", last=NOW - 500)
    (s / "killed" / "checkpoints").mkdir()
    (s / "killed" / "checkpoints" / "last.ckpt").write_bytes(b"ckpt")
    # this pid is alive but started after the record: a reused pid, not the run
    _run_dir(s, "reused", "running", [3], lock=f"{HOST}:{os.getpid()}", started=NOW - 10 * 86400)
    # 20 s epochs, heartbeat 100 s ago: within 3 epochs + 60 s, so not called dead
    remote = _run_dir(s, "remote", "running", [20, 20], max_epochs=4, lock="gpu-node-7:4242", last=NOW - 100)
    for name in ("record.json", "history.jsonl"):
        os.utime(remote / name, (NOW - 100, NOW - 100))
    _run_dir(s, "nan", "failed", [5], error="FloatingPointError: loss is nan at step 12: lower optim.lr\n"
                                            "Traceback (most recent call last): ...")
    _run_dir(s, "term", "interrupted", [5, 5], error="interrupted by SIGTERM")
    (s / "garbage").mkdir()
    (s / "garbage" / "record.json").write_text("{not json")
    (s / "alist").mkdir()
    (s / "alist" / "record.json").write_text("[1, 2]")
    (s / "_sweeps").mkdir()
    (s / "_sweeps" / "20240101-000000-1.jsonl").write_text(
        '{"run_id": "old", "status": "completed", "error": null}\n')
    (s / "_sweeps" / "20240102-000000-2.jsonl").write_text(
        '{"run_id": "done-a", "status": "completed", "error": null}\n'
        '{"run_id": "?", "status": "failed", "error": "ConfigCompositionException: no model=foo"}\nnot json\n'
        '{"run_id": "done-b", "status": "skipped", "error": null}\n')
    return tmp_path / "runs", s


def test_counts_epochs_eta_liveness_and_errors(sweep):
    root, s = sweep
    (found,) = status.scan(root, now=NOW)
    assert found.directory == str(s)
    runs = {r.run_id: r for r in found.runs}
    assert {st: found.count(st) for st in status.ORDER} == {
        "completed": 2, "running": 2, "stale": 2, "interrupted": 1, "failed": 2, "unreadable": 2}

    live = runs["live"]
    assert (live.status, live.done, live.total, live.epoch_s) == ("running", 6, 10, 11)
    assert live.eta_s == pytest.approx(4 * 11 - 4)
    assert live.note == f"pid {os.getpid()}" and not live.remote

    killed = runs["killed"]
    assert (killed.status, killed.done, killed.eta_s) == ("stale", 5, None)
    assert "is gone" in killed.note and "relaunch the same command to resume from its last checkpoint" in killed.note
    assert runs["reused"].status == "stale" and "belongs to a later process" in runs["reused"].note
    assert runs["reused"].note.endswith("resume from the start")  # no checkpoint there

    remote = runs["remote"]
    assert (remote.status, remote.remote, remote.done, remote.total) == ("running", True, 2, 4)
    assert remote.eta_s == pytest.approx(2 * 20 - 20)  # 100 s since the last epoch ended: at most one epoch off
    assert "running on gpu-node-7? (pid 4242" in remote.note and "last heartbeat 1m 40s ago" in remote.note
    assert "probably dead" not in remote.note

    assert runs["nan"].note == "FloatingPointError: loss is nan at step 12: lower optim.lr"
    assert runs["term"].note == "interrupted by SIGTERM; relaunch the same command to resume from the start"
    assert runs["garbage"].status == runs["alist"].status == "unreadable"
    assert runs["?"].status == "failed" and runs["?"].note.endswith("ConfigCompositionException: no model=foo")
    assert found.log == "latest sweep log 20240102-000000-2.jsonl: 3 jobs finished (1 completed, 1 failed, 1 skipped)"

    line = status.eta_line(found)
    assert line.startswith("ETA: 40s until the 2 running run(s) with epoch times finish (longest; 1m 00s ")
    assert "runs not started yet" in line and "stale and interrupted runs until relaunched" in line


def test_the_sweeps_job_count_gives_jobs_not_started_and_a_gone_launcher(sweep):
    root, s = sweep
    meta = s / "_sweeps" / "20240102-000000-2.json"  # beside the latest log: 3 of its jobs finished
    meta.write_text(json.dumps({"jobs": 10, "host": HOST, "pid": os.getpid(), "started_at": _iso(NOW)}))
    (found,) = status.scan(root, now=NOW)
    assert found.log == ("latest sweep log 20240102-000000-2.jsonl: 3 of 10 jobs finished "
                         "(1 completed, 1 failed, 1 skipped)")
    assert "; not counted: 5 job(s) of the latest sweep not started yet, the test pass" in status.eta_line(found)

    meta.write_text(json.dumps({"jobs": 10, "host": HOST, "pid": _dead_pid()}))
    (found,) = status.scan(root, now=NOW)
    assert found.log.endswith("3 of 10 jobs finished (1 completed, 1 failed, 1 skipped); its launching process "
                              f"(pid {json.loads(meta.read_text())['pid']}) has ended: relaunch the same command "
                              "to run the rest (completed runs are skipped)")
    assert "runs not started yet (records appear only when a run starts)" in status.eta_line(found)

    stop = meta.with_suffix(".stop")  # what a stopped parallel sweep's launcher leaves (actlab.run.sweep_stop)
    meta.write_text(json.dumps({"jobs": 10, "host": HOST, "pid": os.getpid()}))  # still alive: the marker decides
    for text, name in (("2\n", "SIGINT"), ("15", "SIGTERM"), ("garbage", "a signal")):
        stop.write_text(text)
        (found,) = status.scan(root, now=NOW)
        assert found.log.endswith(f"3 of 10 jobs finished (1 completed, 1 failed, 1 skipped); stopped by {name}: "
                                  "relaunch the same command to run the rest (completed runs are skipped)")
        assert "runs not started yet (records appear only when a run starts)" in status.eta_line(found)
    stop.unlink()

    for bad in ("{not json", "[1]", json.dumps({"jobs": "ten", "host": 3, "pid": -1})):
        meta.write_text(bad)
        (found,) = status.scan(root, now=NOW)
        assert found.log.startswith("latest sweep log 20240102-000000-2.jsonl: 3 jobs finished")


def test_a_relaunch_holding_the_lock_is_running_and_an_old_heartbeat_is_probably_dead(tmp_path):
    s = tmp_path / "runs"
    d = _run_dir(s, "relaunched", "running", [3], lock=f"{HOST}:{os.getpid()}", started=NOW - 10 * 86400)
    far = _run_dir(s, "far", "running", [20, 20], max_epochs=4, lock="gpu-node-7:4242")
    for name in ("record.json", "history.jsonl"):
        os.utime(far / name, (NOW - 1000, NOW - 1000))
    fd = os.open(d / ".lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a relaunched run holds it before rewriting its record
        runs = {r.run_id: r for r in status.scan(s, now=NOW)[0].runs}
    finally:
        os.close(fd)
    assert runs["relaunched"].status == "running" and "relaunched, starting" in runs["relaunched"].note
    assert runs["far"].status == "running" and "last heartbeat 16m 40s ago" in runs["far"].note
    assert "probably dead" in runs["far"].note


@pytest.mark.parametrize("old", ["failed", "interrupted"])
def test_a_relaunched_failed_run_is_running_while_it_holds_the_lock(tmp_path, old):
    s = tmp_path / "runs"
    d = _run_dir(s, "again", old, [3], lock=f"{HOST}:{os.getpid()}", error="RuntimeError: boom")
    assert status.scan(s, now=NOW)[0].runs[0].status == old  # the pid is alive but holds no lock: not a relaunch
    fd = os.open(d / ".lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        (run,) = status.scan(s, now=NOW)[0].runs
    finally:
        os.close(fd)
    assert (run.status, run.note) == ("running", f"pid {os.getpid()}: relaunched after it {old}, starting "
                                                 "(record not rewritten yet)")
    (d / ".lock").write_text("gpu-node-7:4242\n")  # another host: not checkable, the record's word stands
    assert status.scan(s, now=NOW)[0].runs[0].status == old


def test_nested_sweeps_are_grouped_by_the_directory_holding_their_runs(tmp_path):
    root = tmp_path / "runs"
    _run_dir(root / "demo" / "activations", "a1", "completed", [1])
    _run_dir(root / "demo" / "activations", "a2", "failed", [1], error="boom")
    _run_dir(root / "demo" / "margins", "m1", "completed", [1])
    _run_dir(root / "solo", "s1", "completed", [1])
    (root / "demo" / "wandb" / "offline-run-x").mkdir(parents=True)
    (root / "solo" / "s1" / "checkpoints").mkdir()
    (root / "broken" / "_sweeps").mkdir(parents=True)  # every job failed before writing a record
    (root / "broken" / "_sweeps" / "20240101-000000-1.jsonl").write_text(
        '{"run_id": "?", "status": "failed", "error": "MissingConfigException: no model=foo"}\n')
    sweeps = status.scan(root, now=NOW)
    assert [(Path(sw.directory).relative_to(root).as_posix(), sorted(r.run_id for r in sw.runs)) for sw in sweeps] == [
        ("broken", ["?"]), ("demo/activations", ["a1", "a2"]), ("demo/margins", ["m1"]), ("solo", ["s1"])]
    assert sweeps[0].runs[0].status == "failed" and "MissingConfigException" in sweeps[0].runs[0].note
    (single,) = status.scan(root / "solo" / "s1", now=NOW)  # a run directory itself
    assert [r.run_id for r in single.runs] == ["s1"]


def test_cli_prints_the_table_and_exits_0_or_1_for_a_missing_dir(sweep, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")
    root, s = sweep
    assert main(["status", str(root)]) == 0
    out = capsys.readouterr().out
    assert f"{s}: 11 runs: 2 completed, 2 running, 2 stale, 1 interrupted, 2 failed, 2 unreadable" in out
    assert "FloatingPointError: loss is nan at step 12: lower optim.lr" in out and "Traceback" not in out
    assert "6/10" in out and "relaunch the same command to resume" in out
    assert main(["status", str(tmp_path / "nowhere")]) == 1
    err = capsys.readouterr().out.strip()
    assert err.count("\n") == 0 and "nowhere is not a directory" in err
    monkeypatch.setenv("COLUMNS", "70")  # too narrow for a table with whole run ids: plain lines
    assert main(["status", str(root)]) == 0
    assert "  nan: failed (epoch 1/10, 5.0 s/epoch, FloatingPointError" in capsys.readouterr().out.replace("\n", " ")
    (tmp_path / "empty").mkdir()
    assert main(["status", str(tmp_path / "empty")]) == 0
    assert "no runs under" in capsys.readouterr().out


def test_hostile_records_and_names_are_listed_not_fatal(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")
    s = tmp_path / "runs"
    _run_dir(s, "ok", "completed", [1])
    (s / "shape").mkdir()
    (s / "shape" / "record.json").write_text('{"status": "running", "timings": [1], "config": "x"}')
    (s / "odd").mkdir()
    (s / "odd" / "record.json").write_text('{"status": "exploded", "error": "\\udc80"}')
    bad = os.path.join(os.fsencode(s), b"bad\xffname")
    os.mkdir(bad)
    with open(os.path.join(bad, b"record.json"), "w") as f:
        f.write('{"status": "failed", "error": "lone \\udc80 surrogate", "config": {}}')
    runs = {r.run_id: r for r in status.scan(s, now=NOW)[0].runs}
    assert runs["shape"].status == runs["odd"].status == "unreadable"
    assert runs["odd"].note == "unknown status 'exploded' in record.json"
    assert runs[os.fsdecode(b"bad\xffname")].status == "failed"
    assert main(["status", str(s)]) == 0
    out = capsys.readouterr().out
    assert "4 runs: 1 completed, 0 running, 1 failed, 2 unreadable" in out
    assert "bad\\udcffname" in out and "lone \\udc80 surrogate" in out


def _read_until(fd: int, needle: str, timeout: float, times: int = 1) -> str:
    buf, end = b"", time.time() + timeout
    while time.time() < end and buf.count(needle.encode()) < times:
        if select.select([fd], [], [], 0.2)[0]:
            with contextlib.suppress(OSError):
                buf += os.read(fd, 65536)
    return buf.decode(errors="replace")


def test_watch_refreshes_in_a_terminal_and_ctrl_c_exits_0(tmp_path):
    s = tmp_path / "runs"
    d = _run_dir(s, "r1", "running", [1], max_epochs=5, lock=f"{HOST}:{_dead_pid()}")
    master, slave = pty.openpty()
    env = os.environ | {"COLUMNS": "200", "LINES": "50", "TERM": "xterm"}
    proc = subprocess.Popen([sys.executable, "-m", "actlab.cli.main", "status", str(s), "--watch", "0.2"],
                            stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    try:
        first = _read_until(master, "1 stale", 60)
        assert "1 stale" in first, first[-2000:]
        rec = json.loads((d / "record.json").read_text())
        records.write_atomic(d / "record.json", rec | {"status": "completed"})
        assert "1 runs: 1 completed" in _read_until(master, "1 runs: 1 completed", 30)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)


def test_watch_into_a_pipe_prints_a_block_per_refresh(tmp_path):
    s = tmp_path / "runs"
    _run_dir(s, "r1", "completed", [1])
    proc = subprocess.Popen([sys.executable, "-m", "actlab.cli.main", "status", str(s), "--watch", "0.1"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=os.environ | {"COLUMNS": "300"})
    try:
        out = _read_until(proc.stdout.fileno(), "1 runs: 1 completed", 60, times=3)
        assert out.count("1 runs: 1 completed") >= 3, out[-2000:]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()


class _CrashAtEpoch(L.Callback):
    def __init__(self, n: int):
        self.n = n

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.n:
            raise RuntimeError("simulated crash")


def test_real_run_rows_carry_times_through_a_crash_and_resume(tmp_path, fashion_dir, capsys, monkeypatch):
    from actlab.report.frame import load_frame
    from actlab.run.runner import run

    over = [*fashion(fashion_dir), "trainer.max_epochs=2"]
    t0 = time.time()
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(make_cfg(tmp_path, *over), callbacks=[_CrashAtEpoch(1)])
    (sw,) = status.scan(tmp_path / "runs")
    (crashed,) = sw.runs
    assert (crashed.status, crashed.done, crashed.total) == ("failed", 1, 2)
    assert crashed.note == "RuntimeError: simulated crash"
    run_dir = tmp_path / "runs" / crashed.run_id
    (first,) = records.read_history(run_dir)
    assert t0 < first["time"] <= time.time() and 0 < first["epoch_s"] < first["time"] - t0

    rec = run(make_cfg(tmp_path, *over))
    assert rec["status"] == "completed" and rec["timings"]["epochs_run"] == 1
    rows = records.read_history(run_dir)
    assert [r["epoch"] for r in rows] == [0, 1]
    assert rows[0] == first  # carried over from the checkpoint with the first process's times
    assert rows[1]["time"] > first["time"] and rows[1]["epoch_s"] > 0
    assert {"train/loss", "val/acc", "lr"} <= set(rows[1]) and not set(TIME_KEYS) & set(rec["metrics"])
    df = load_frame(tmp_path / "runs", history=True, wandb=False)
    assert not set(TIME_KEYS) & set(df.columns)

    monkeypatch.setenv("COLUMNS", "300")
    assert main(["status", str(tmp_path / "runs")]) == 0
    assert f"{tmp_path / 'runs'}: 1 runs: 1 completed, 0 running, 0 failed" in capsys.readouterr().out
