"""hydra/launcher=slurm: Hydra's submitit SLURM launcher, with sweeps that end the way the runs' records say.

    actlab-train -m hydra/launcher=slurm hydra.launcher.partition=gpu activation=relu,helu seed=0,1,2

Hydra accepts launcher classes only under the `hydra_plugins` namespace: the config names
hydra_plugins.actlab_launchers.slurm.SlurmLauncher, a subclass of this one. Hydra imports it while it
scans plugins at every start, hence the imports inside functions. Changes to hydra-submitit-launcher's SlurmLauncher, each for a way a SLURM job ends:
- In the job, a run stopped by a signal (its record says `interrupted`) leaves no result file, so the
  launching process keeps waiting while SLURM brings the job back: SIGUSR2 (submitit's
  `--signal=USR2@<signal_delay_s>` before the time limit) goes on to submitit's checkpoint-and-requeue;
  SIGTERM (`scancel`, `scontrol requeue`, preemption) exits 143 and SLURM's state says the rest (PENDING
  again, or CANCELLED).
- A failed run exits its job 1 (SLURM says FAILED, not COMPLETED); its result still reaches the sweep.
- The launching process waits on result files and `squeue`, not on `sacct` (which needs SLURM's
  accounting database): a job that ended without a result (cancelled, killed, out of memory, node
  failure) becomes an outcome read from its run's record, the sweep log gets its line, and the sweep
  ends with its summary and exit code, not with a hang or a traceback.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher import submitit_launcher
from omegaconf import OmegaConf

log = logging.getLogger(__name__)

# squeue states of a job that will not run again (anything else: it is queued, running or coming back).
ENDED = {"COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "OUT_OF_MEMORY",
         "BOOT_FAIL", "DEADLINE", "SPECIAL_EXIT"}
POLL_S = 2.0


class SlurmLauncher(submitit_launcher.SlurmLauncher):
    """One SLURM job per run (see the module docstring for what differs from Hydra's)."""

    def __call__(self, *args: Any, **kwargs: Any) -> JobReturn:  # runs inside the SLURM job
        from actlab.run.sweep import SLURM_JOB_ENV, JobResult

        os.environ[SLURM_JOB_ENV] = "1"  # SweepLog leaves an interrupted job's line to the requeued job or the launcher
        ret = super().__call__(*args, **kwargs)
        result = ret._return_value if ret.status == JobStatus.COMPLETED else None
        if isinstance(result, JobResult) and result.status == "interrupted":
            usr2 = getattr(signal, "SIGUSR2", None)
            handler = signal.getsignal(usr2) if usr2 is not None else None
            if usr2 is not None and result.exit_code == 128 + usr2 and callable(handler):
                try:
                    handler(usr2, None)  # submitit: checkpoint, `scontrol requeue`, SystemExit
                except Exception as e:  # noqa: BLE001 - it may not (timed out max_num_timeout times): the sweep hears why
                    log.warning("not requeued: %s", e)
                    return ret
            raise SystemExit(result.exit_code or 143)
        if isinstance(result, JobResult) and result.status == "failed":
            atexit.register(_exit_failed)  # registered last, so it runs first, after submitit wrote the result
        return ret

    def launch(self, job_overrides, initial_job_idx: int) -> list[JobReturn]:
        """hydra-submitit-launcher 1.2's launch, waiting through `_wait` instead of `job.results()`."""
        import submitit
        from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

        assert self.config is not None and len(job_overrides) > 0
        init_keys = {"submitit_folder", "max_num_timeout"}
        executor = submitit.AutoExecutor(cluster="slurm", folder=self.params["submitit_folder"],
                                         slurm_max_num_timeout=self.params.get("max_num_timeout", 0))
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in self.params.items()
                                      if k not in init_keys})
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if "mode" in self.config.hydra.sweep:
            os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))
        params = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.debug(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            params.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state()))
        jobs = executor.map_array(self, *zip(*params))
        log.info("submitted SLURM jobs %s (squeue -j %s)", ", ".join(j.job_id for j in jobs),
                 jobs[0].job_id.split("_")[0])
        try:
            return [self._wait(job, list(p[0])) for job, p in zip(jobs, params)]
        except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (interrupt.SweepStopped)
            array = jobs[0].job_id.split("_")[0]
            print(f"actlab-train: stopped waiting; the sweep's SLURM jobs go on (squeue -j {array}, scancel {array} "
                  "stops them); relaunching the sweep skips the runs that completed", file=sys.stderr)
            raise SystemExit(128 + getattr(e, "signum", signal.SIGINT)) from None

    def _wait(self, job, overrides: list[str]) -> JobReturn:
        """The job's own result, or, once SLURM says it ended without one, an outcome from its record."""
        ended = 0
        while not job.paths.result_pickle.exists():
            state = slurm_state(job.job_id)
            ended = ended + 1 if state is None or state in ENDED else 0
            if ended == 2:  # twice, POLL_S apart (not a passing state), and no result written in between
                return self._ended_without_result(job, overrides, state or "(gone from squeue)", None)
            time.sleep(POLL_S)
        try:
            return job.results()[0]
        except Exception as e:  # noqa: BLE001 - submitit's own error, its traceback in the job's log
            return self._ended_without_result(job, overrides, slurm_state(job.job_id) or "", _last_error(str(e)))

    def _ended_without_result(self, job, overrides: list[str], state: str, error: str | None) -> JobReturn:
        from actlab.run import records, runid
        from actlab.run.sweep import JobResult, SweepLog, objective_value, shown

        runid.register_resolver()
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        rid = runid.run_id(cfg)
        rec = records.read(Path(cfg.paths.runs_dir) / rid) or {}
        said = rec.get("status", "no record")
        if said == "running":  # killed without a chance to write (SIGKILL, out of memory, node failure)
            said = "still says running (killed before it could write; a relaunch resumes from its last checkpoint)"
        recorded = (rec.get("error") or "").split(";")[0]  # its first clause: the summary shows 200 characters
        why = (f"SLURM job {job.job_id} ended{' ' + state if state else ''} without a result{' (' + error + ')' if error else ''}; "
               f"record: {said}{' (' + recorded + ')' if recorded else ''}; job log: {job.paths.stderr}")
        if said == "interrupted":
            result = JobResult(None, rid, "interrupted", why, exit_code=128 + signal.SIGTERM)
        elif said == "completed":
            result = JobResult(objective_value(cfg, rec), rid, "completed", shown=shown(rec))
        else:
            result = JobResult(None, rid, "failed", why)
        for cb in getattr(self.hydra_context.callbacks, "callbacks", []):
            if isinstance(cb, SweepLog):
                cb.append(result.outcome())
        print(f"actlab-train: {rid}: {why}", file=sys.stderr)
        ret = JobReturn(overrides=overrides, cfg=cfg, hydra_cfg=cfg.get("hydra"))
        ret.status, ret.return_value = JobStatus.COMPLETED, result
        return ret


def slurm_state(job_id: str) -> str | None:
    """SLURM's state of a job (RUNNING, PENDING, CANCELLED, ...) from squeue; None when squeue no longer
    knows it (it ended more than MinJobAge ago) or cannot be asked."""
    try:
        out = subprocess.run(["squeue", "-h", "-r", "-t", "all", "-j", job_id, "-o", "%i|%T"],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        log.warning("squeue failed (%s); waiting for job %s's result file", e, job_id)
        return "UNKNOWN"
    if out.returncode != 0 and "Invalid job id" not in out.stderr:
        log.warning("squeue failed (%s); waiting for job %s's result file", out.stderr.strip(), job_id)
        return "UNKNOWN"
    for line in out.stdout.splitlines():
        jid, _, state = line.partition("|")
        if jid == job_id:
            return state.split()[0] if state else None
    return None


def _last_error(text: str) -> str:
    """The `SomeError: message` line of a traceback submitit passes on (else its first line)."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    errors = [line for line in lines if re.match(r"^[\w.]*(Error|Exception|Exit)\b", line)]
    return (errors or lines or ["no message"])[-1 if errors else 0]


def _exit_failed() -> None:
    """Exit 1 at interpreter exit: the job's run failed (submitit itself would exit 0)."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)
