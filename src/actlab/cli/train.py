"""`actlab-train`: the Hydra main. Composes a config, runs it (actlab.run.runner), prints the result.

    actlab-train                                     # Fashion-MNIST, small ResNet, ReLU, CPU
    actlab-train model=mlp activation=helu activation.margin=0.05 seed=1
    actlab-train -m activation=relu,gelu,helu seed=0,1,2     # a sweep (see hydra/launcher)
    actlab-train experiment=glue dataset=glue/sst2 model=minilm activation=helu   # GLUE fine-tune
    actlab-train experiment=mlm dataset=mlm/wikitext model=bert_small activation=relu  # MLM pre-train
    actlab-train --cfg job                           # print the composed config

A single run exits 1 on failure; a sweep's jobs each return a JobResult, and the sweep exits 1 when
any failed (actlab.run.sweep, through Hydra's callbacks).
"""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from actlab.callbacks.epoch_line import EpochLine
from actlab.run import console, distributed, records, runid, sweep, sweep_stop
from actlab.run.build import CONF_DIR, unwrap
from actlab.run.interrupt import RunInterrupted
from actlab.run.runner import RunSkipped, is_user_error, run
from actlab.run.sweep import JobResult, objective_value, shown

log = logging.getLogger("actlab")


def _is_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig

    try:
        return HydraConfig.get().mode.name == "MULTIRUN"
    except ValueError:
        return False


# Exit codes (README): 0 completed or already completed, 1 failed, 75 (EX_TEMPFAIL) locked by another live
# run, 128 + N stopped by signal N (143 SIGTERM, 130 Ctrl-C). A sweep exits with the worst of its jobs'.
EXIT_LOCKED = 75


@hydra.main(config_path=CONF_DIR, config_name="train", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> JobResult:
    multirun = _is_multirun()
    console.install(sweep=multirun)
    progress = console.line_per_epoch(sys.stdout.isatty(), multirun)
    if progress != "bar":  # not part of the run identity
        cfg.trainer.enable_progress_bar = False
    rid = "?"
    if multirun and sweep_stop.requested():  # a parallel sweep that is stopping starts no further run
        return JobResult(None, rid, sweep.NOT_STARTED)
    try:
        rid = runid.run_id(cfg)
        rec = run(cfg, callbacks=[EpochLine()] if progress == "lines" else (), overrides=_overrides())
    except RunSkipped as e:
        if not multirun:  # a sweep's job line says it
            print(f"actlab-train: {'locked' if e.reason == 'locked' else 'skipped'}: {e}", file=sys.stderr)
        if e.reason == "locked" and not multirun:
            sys.exit(EXIT_LOCKED)
        if e.reason == "locked":
            return JobResult(None, rid, "locked", str(e))
        # a completed run still answers a sweeper with its recorded objective (Optuna must not see NaN)
        done = records.read(Path(cfg.paths.runs_dir) / rid) or {}
        try:
            return JobResult(objective_value(cfg, done), rid, "skipped", str(e), shown=shown(done))
        except ValueError as bad:
            return _bad_objective(bad, rid, multirun)
    except RunInterrupted as e:  # the record says interrupted; a relaunch resumes
        if not multirun:  # a sweep's job line says it
            print(f"actlab-train: {rid}: {e}", file=sys.stderr)
            sys.exit(e.exit_code)
        return JobResult(None, rid, "interrupted", f"{type(e).__name__}: {e}", exit_code=e.exit_code)
    except Exception as e:  # the record already says failed, with the error
        err = unwrap(e)
        if is_user_error(err):
            if not multirun:  # a sweep's job line says it
                print(f"actlab-train: error: {_one_line(err)}", file=sys.stderr)
        elif multirun:  # crash isolation: keep the traceback in the log, let the sweep go on
            log.exception("run %s failed", rid)
        else:
            raise
        if multirun:
            return JobResult(None, rid, "failed", f"{type(err).__name__}: {_one_line(err)}")
        sys.exit(1)
    metrics = rec.get("metrics", {})
    main = rec.get("main_metric") or "test/loss"
    if distributed.rank() == 0 and not multirun:  # rank 0 reports the run; a sweep prints a line per job
        print(f"actlab-train: {rec['run_id']} {main}={metrics.get(main, float('nan')):.4f} "
              f"record: {Path(cfg.paths.runs_dir) / rec['run_id'] / records.RECORD}")
    try:
        return JobResult(objective_value(cfg, rec), rec["run_id"], "completed", shown=shown(rec))
    except ValueError as bad:
        return _bad_objective(bad, rec["run_id"], multirun)


def _bad_objective(err: ValueError, rid: str, multirun: bool) -> JobResult:
    """A misnamed objective fails the sweep's job (its run itself is complete); a single run ignores it."""
    if not multirun:
        return JobResult(None, rid, "completed")
    print(f"actlab-train: error: {err}", file=sys.stderr)
    return JobResult(None, rid, "failed", f"ValueError: {err}")


def _overrides() -> list[str]:
    """This job's command-line overrides (kept in the record: the command that reproduces the run)."""
    from hydra.core.hydra_config import HydraConfig

    try:
        return list(HydraConfig.get().overrides.task)
    except ValueError:
        return []


def _one_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def main() -> None:
    """Console entry point `actlab-train`."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.raiseExceptions = False  # a read-only or full disk must not print logging tracebacks for train.log
    try:
        _hydra_main()
    except KeyboardInterrupt as e:  # outside a run's own handling: a joblib sweep's launcher waiting on its jobs
        # SweepStopped carries SIGTERM, and whether every started job logged its outcome
        sys.exit(sweep.stopped(getattr(e, "signum", signal.SIGINT), gentle=getattr(e, "gentle", False)))


if __name__ == "__main__":
    main()
