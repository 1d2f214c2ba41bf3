"""hydra/launcher=slurm against a real SLURM controller (scripts/slurm_local_cluster.sh, `make slurm`):
a sweep completes, a requeued job resumes to the uninterrupted result, a failing job is failed (in its
record, the sweep's summary and SLURM's state), and a cancelled job leaves a record a relaunch resumes.

Skipped, with the reason, where no SLURM node is up (`make slurm` starts one on a root machine with apt).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest

from actlab.run import records

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

TESTS = Path(__file__).resolve().parent
COMPLETION_LOG = Path(os.environ.get("ACTLAB_SLURM_DIR", "/tmp/actlab-slurm")) / "log" / "jobcomp.log"
# 3 epochs of 200 images, batches of 8: each job is mostly Python start-up. The pause callback is inert
# unless $ACTLAB_TEST_PAUSE is set; it is in every job so the sweep's runs are the requeue test's references.
BASE = ["logger=none", "monitor=none", "trainer=cpu", "model=mlp", "model.depth=2", "model.width=8",
        "dataset.batch_size=8", "scheduler=none", "trainer.max_epochs=3",
        "+callbacks.pause._target_=test_slurm.PauseAtEpoch"]


class PauseAtEpoch(L.Callback):
    """Test hook, inert unless $ACTLAB_TEST_PAUSE names a folder: on a SLURM job's first attempt, at the
    start of epoch `epoch` (the previous epoch's checkpoint is on disk), it writes <folder>/<job id>
    (holding the run dir) and waits while that file exists (120 s at most): the job is mid-run for as
    long as the test needs to requeue, signal or cancel it."""

    def __init__(self, epoch: int = 1):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module):
        folder = os.environ.get("ACTLAB_TEST_PAUSE")
        if not folder or trainer.current_epoch != self.epoch or os.environ.get("SLURM_RESTART_COUNT", "0") != "0":
            return
        # <array job>_<task>: a bare SLURM_JOB_ID of an array's first job names the whole array to scontrol
        array = os.environ.get("SLURM_ARRAY_JOB_ID")
        job = f"{array}_{os.environ['SLURM_ARRAY_TASK_ID']}" if array else os.environ["SLURM_JOB_ID"]
        marker = Path(folder) / job
        marker.write_text(str(trainer.default_root_dir))
        deadline = time.time() + 120
        while marker.exists() and time.time() < deadline:
            time.sleep(0.2)


def _partition() -> str:
    """The default partition of a SLURM cluster whose node is up; skips (with the reason) otherwise."""
    if shutil.which("sinfo") is None:
        pytest.skip("no SLURM here (sinfo not found): `make slurm` installs and starts a one-node cluster (root, apt)")
    out = subprocess.run(["sinfo", "-h", "-o", "%P %T"], capture_output=True, text=True, timeout=30)
    rows = [line.split() for line in out.stdout.splitlines() if line.strip()]
    if out.returncode != 0 or not rows:
        pytest.skip(f"SLURM controller not answering ({out.stderr.strip() or 'sinfo lists nothing'}): "
                    "bash scripts/slurm_local_cluster.sh start")
    up = [p for p, state in rows if state.rstrip("*~#") in ("idle", "mixed", "allocated", "completing")]
    if not up:
        pytest.skip(f"no SLURM node is up (sinfo: {out.stdout.strip()}); see bash scripts/slurm_local_cluster.sh status")
    default = [p for p in up if p.endswith("*")]
    return (default or up)[0].rstrip("*")


@pytest.fixture(scope="module")
def partition() -> str:
    return _partition()


def _sweep(partition: str, results: Path, data: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "actlab.cli.train", "-m", "hydra/launcher=slurm",
            f"hydra.launcher.partition={partition}", "hydra.launcher.gpus_per_node=0",
            "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=10",
            f"hydra.launcher.submitit_folder={results}/submitit/%j", *BASE, f"paths.results_dir={results}",
            f"dataset.data_dir={data}", *args]


def _env(pause: Path | None = None) -> dict:
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    return env | {"ACTLAB_TEST_PAUSE": str(pause)} if pause else env


def _records(results: Path) -> dict[str, dict]:
    return {(r := json.loads(p.read_text()))["config"]["seed"]: r for p in (results / "runs").glob("*/record.json")}


def _history(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in row.items() if "time" not in k and not k.endswith("_s")}
            for row in records.read_history(run_dir)]


FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED"}


def _slurm_states(job_ids: list[str], n_final: int | None = None, timeout: float = 60) -> list[str]:
    """States in SLURM's completion log (jobcomp/filetxt), oldest first, of these jobs (ids as SLURM_JOB_ID
    or as submitit's <array job>_<task>). slurmctld writes a job's line after the job's result file is
    already there for submitit (CI saw a sweep end one COMPLETED line early), so this waits up to `timeout`
    s for `n_final` final lines (default: one per job)."""
    n_final = len(job_ids) if n_final is None else n_final
    deadline = time.time() + timeout
    while True:
        states = []
        if COMPLETION_LOG.exists():
            for line in COMPLETION_LOG.read_text().splitlines():
                f = dict(field.split("=", 1) for field in line.split() if "=" in field)
                if f.get("JobId") in job_ids or f"{f.get('ArrayJobId')}_{f.get('ArrayTaskId')}" in job_ids:
                    states.append(f.get("JobState", "?"))
        if sum(s in FINAL_STATES for s in states) >= n_final or time.time() > deadline:
            return states
        time.sleep(0.5)


def _job_ids(results: Path) -> list[str]:
    """The sweep's SLURM jobs as submitit names them: <array job>_<task> (a one-job sweep is one plain job)."""
    return sorted("_".join(p.name.split("_")[:-2]) for p in (results / "submitit").glob("*/*_log.out"))


def _paused(folder: Path, n: int, proc: subprocess.Popen, timeout: float = 150) -> list[Path]:
    """The markers of `n` jobs paused mid-run (their SLURM job id, <array job>_<task>, is the file name)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = sorted(folder.iterdir())
        if len(found) >= n:
            return found
        if proc.poll() is not None:
            pytest.fail(f"the sweep ended (exit {proc.returncode}) before {n} job(s) paused: {proc.stderr.read()[-3000:]}")
        time.sleep(0.2)
    pytest.fail(f"{n} job(s) never reached the pause (squeue: {subprocess.getoutput('squeue')})")


def _release_when_requeued(job_id: str, timeout: float = 60) -> None:
    """SLURM holds a requeued batch job for 2 minutes (BeginTime); as an admin would, start it now."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        state = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True).stdout.strip()
        if state == "PENDING":
            subprocess.run(["scontrol", "update", f"jobid={job_id}", "starttime=now"], check=True, timeout=30)
            return
        time.sleep(0.2)
    pytest.fail(f"job {job_id} was not requeued (squeue says {state!r})")


@pytest.fixture(autouse=True)
def _cancel_leftovers(tmp_path):
    """A test that failed half-way leaves no job of its own queued or paused for the next one."""
    yield
    ids = _job_ids(tmp_path)
    if ids:
        subprocess.run(["scancel", *ids], capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def reference(partition, tmp_path_factory, fashion_dir) -> tuple[subprocess.CompletedProcess, Path]:
    """A 3-job sweep run uninterrupted: test (a), and the reference metrics of the other tests."""
    results = tmp_path_factory.mktemp("slurm-reference")
    out = subprocess.run(_sweep(partition, results, fashion_dir, "seed=0,1,2"), capture_output=True, text=True,
                         timeout=400, cwd=results, env=_env())
    return out, results


def test_sweep_of_three_jobs_completes(reference):
    out, results = reference
    assert out.returncode == 0, out.stderr[-3000:]
    recs = _records(results)
    assert sorted(recs) == [0, 1, 2]
    assert all(r["status"] == "completed" and r["timings"]["resumed_from"] is None for r in recs.values())
    assert all(0.0 <= r["metrics"]["test/acc"] <= 1.0 and r["timings"]["epochs_run"] == 3 for r in recs.values())
    assert len({r["metrics"]["train/loss"] for r in recs.values()}) == 3  # three seeds, three results
    (log,) = (results / "runs" / "_sweeps").glob("*.jsonl")
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert sorted(o["run_id"] for o in lines) == sorted(r["run_id"] for r in recs.values())
    assert all(o["status"] == "completed" for o in lines)
    assert "3 jobs: 3 completed, 0 skipped" in out.stderr and "0 failed" in out.stderr
    assert _slurm_states(_job_ids(results)) == ["COMPLETED"] * 3


def test_requeued_jobs_resume_to_the_uninterrupted_result(partition, reference, tmp_path, fashion_dir):
    """Job 0 is requeued by `scontrol requeue` (SIGTERM, as preemption does), job 1 by USR2 (what SLURM
    sends before the time limit, `--signal=USR2@<s>`; submitit then requeues it), both mid-epoch 1."""
    pause = tmp_path / "pause"
    pause.mkdir()
    proc = subprocess.Popen(_sweep(partition, tmp_path, fashion_dir, "seed=0,1"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=_env(pause))
    try:
        markers = _paused(pause, 2, proc)
        by_seed = {json.loads((Path(m.read_text()) / records.RECORD).read_text())["config"]["seed"]: m.name
                   for m in markers}
        subprocess.run(["scontrol", "requeue", by_seed[0]], check=True, timeout=30)
        subprocess.run(["scancel", "--signal=USR2", by_seed[1]], check=True, timeout=30)
        for job_id in by_seed.values():
            _release_when_requeued(job_id)
        _, stderr = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr[-3000:]
    assert "2 jobs: 2 completed" in stderr
    refs, recs = _records(reference[1]), _records(tmp_path)
    for seed in (0, 1):
        rec = recs[seed]
        assert rec["status"] == "completed" and rec["run_id"] == refs[seed]["run_id"]
        assert rec["timings"]["resumed_from"].endswith("checkpoints/last.ckpt")
        assert rec["timings"]["epochs_run"] == 2  # epoch 0 came from the checkpoint
        assert rec["metrics"] == refs[seed]["metrics"]
        assert _history(tmp_path / "runs" / rec["run_id"]) == _history(reference[1] / "runs" / rec["run_id"])
    states = _slurm_states(list(by_seed.values()))
    assert states.count("COMPLETED") == 2 and "CANCELLED" not in states and "FAILED" not in states, states


def test_failing_job_is_failed_in_its_record_the_summary_and_slurm(partition, tmp_path, fashion_dir):
    out = subprocess.run(_sweep(partition, tmp_path, fashion_dir, "optim.lr=1e30", "trainer.max_epochs=1"),
                         capture_output=True, text=True, timeout=300, cwd=tmp_path, env=_env())
    assert out.returncode == 1, out.stderr[-3000:]
    (rec,) = _records(tmp_path).values()
    assert rec["status"] == "failed" and rec["error"].startswith("FloatingPointError")
    assert "1 jobs: 0 completed" in out.stderr and "1 failed" in out.stderr
    assert f"  {rec['run_id']}: FloatingPointError" in out.stderr  # the summary's line for the run
    job_ids = _job_ids(tmp_path)
    assert len(job_ids) == 1, job_ids
    assert _slurm_states(job_ids) == ["FAILED"]  # the job exits 1, not COMPLETED


def test_cancelled_job_leaves_a_record_that_a_relaunch_resumes(partition, reference, tmp_path, fashion_dir):
    pause = tmp_path / "pause"
    pause.mkdir()
    args = _sweep(partition, tmp_path, fashion_dir, "seed=2")
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                            env=_env(pause))
    try:
        (marker,) = _paused(pause, 1, proc)
        subprocess.run(["scancel", marker.name], check=True, timeout=30)
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    (rec,) = _records(tmp_path).values()
    assert rec["status"] == "interrupted" and "SIGTERM" in rec["error"], rec
    assert proc.returncode == 143, stderr[-3000:]  # 128 + SIGTERM: the sweep was stopped, not failed
    assert "1 jobs: 0 completed" in stderr and "1 interrupted" in stderr
    assert "CANCELLED" in stderr and rec["run_id"] in stderr
    assert _slurm_states([marker.name]) == ["CANCELLED"]

    again = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=tmp_path, env=_env())
    assert again.returncode == 0, again.stderr[-3000:]
    (rec,) = _records(tmp_path).values()
    assert rec["status"] == "completed" and rec["timings"]["resumed_from"].endswith("last.ckpt")
    assert rec["metrics"] == _records(reference[1])[2]["metrics"]
