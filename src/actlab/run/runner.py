"""One run: lock its directory, write its record, resume or start, fit, test, finish the record.

    from actlab.run.runner import run
    record = run(cfg)              # cfg composed by Hydra (actlab-train) or by tests/compose.py

Every run leaves `<paths.runs_dir>/<run_id>/record.json` and `history.jsonl` (see run.records),
whatever the logger; image classifiers also `predictions.npy` (the test set's predicted classes). Raises RunSkipped when the run_id already completed or another process holds it.
"""

from __future__ import annotations

import errno
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path

import lightning as L
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig, OmegaConf

from actlab.callbacks.history import epoch_metrics
from actlab.run import ckpt_io, distributed, interrupt, lock, records, runid
from actlab.run.build import build, build_callbacks, build_logger, instantiate_node, unwrap, validate

log = logging.getLogger("actlab")
runid.register_resolver()

# Errors that are the user's input, not a bug: reported in one line, without a traceback. Lightning's
# MisconfigurationException covers trainer settings this machine cannot honour (accelerator=gpu on a CPU).
USER_ERRORS = (ValueError, FileNotFoundError, FloatingPointError, TypeError, KeyError, MisconfigurationException)
# OSErrors of the machine, not of actlab: one line with the path, too.
DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


def is_user_error(err: BaseException) -> bool:
    return isinstance(err, USER_ERRORS) or (isinstance(err, OSError) and err.errno in DISK_ERRNOS)


class RunSkipped(Exception):
    """Nothing to do here: the run_id already completed (reason "completed"), or another live process
    holds it (reason "locked")."""

    def __init__(self, message: str, reason: str = "completed"):
        super().__init__(message)
        self.reason = reason


def run(cfg: DictConfig, callbacks: Sequence[L.Callback] = (), overrides: Sequence[str] = ()) -> dict:
    """Train and test one configuration; returns its record (also written to disk).

    `callbacks` are added to the trainer's (for scripts and tests; configs cannot reach them);
    `overrides` (the command line's) are kept in the record.
    """
    for d in runid.normalise(cfg):  # its own logger: a sweep's console leaves these to train.log
        logging.getLogger("actlab.config").info("ignoring %s", d)
    validate(cfg)
    rid = runid.run_id(cfg)
    run_dir = Path(cfg.paths.runs_dir) / rid
    _skip_if_completed(cfg, rid, run_dir)

    config = OmegaConf.to_container(cfg, resolve=True)
    with distributed.scope(), interrupt.during_run():
        if distributed.rank() != 0:  # DDP ranks > 0 share rank 0's run dir; only rank 0 locks and writes the record
            return _fit(cfg, rid, run_dir, config, records.read(run_dir), list(callbacks), overrides)
        try:
            with lock.hold(run_dir):
                previous = _skip_if_completed(cfg, rid, run_dir)  # again: it may have completed while we waited
                return _fit(cfg, rid, run_dir, config, previous, list(callbacks), overrides)
        except lock.Locked as e:
            raise RunSkipped(str(e), reason="locked") from None


def _skip_if_completed(cfg: DictConfig, rid: str, run_dir: Path) -> dict | None:
    """The run's previous record (None if none); RunSkipped if it completed and force is off."""
    previous = records.read(run_dir)
    if previous and previous.get("status") == "completed" and not cfg.force:
        raise RunSkipped(f"{rid} already completed ({run_dir / records.RECORD}); force=true reruns it")
    return previous


def _fit(cfg: DictConfig, rid: str, run_dir: Path, config: dict, previous: dict | None,
         extra: list[L.Callback], overrides: Sequence[str] = ()) -> dict:
    rank_zero = distributed.rank() == 0
    record = None
    t0 = time.perf_counter()
    logger = None
    try:
        L.seed_everything(cfg.seed, workers=True, verbose=False)
        dm, model, task = build(cfg)
        record = records.RunRecord(run_dir, rid, config, kind=task.kind, main_metric=task.main_metric)
        record.data["overrides"] = list(overrides)
        if rank_zero:
            record.save()
        named = build_callbacks(cfg)
        history, monitor = named.get("history"), named.get("monitor")
        if history is not None and rank_zero:
            history.on_epoch = lambda rows: record.write_history(
                records.merge_history(rows, getattr(monitor, "history", [])))
        resume_from = _resume_point(cfg, run_dir, previous, record)
        if resume_from:
            log.info("resuming %s from %s", rid, resume_from)
        # the real run_id in the logger config (the config's own run_id is null unless set): W&B runs de-duplicate on it
        logger = build_logger(cfg, run_dir, rid, {**config, "run_id": rid}, resuming=resume_from is not None)
        trainer = instantiate_trainer(cfg, [*named.values(), *extra], logger, run_dir)

        t_fit = time.perf_counter()
        trainer.fit(task, datamodule=dm, ckpt_path=resume_from, weights_only=False)
        fit_s = time.perf_counter() - t_fit
        metrics = epoch_metrics(trainer.callback_metrics)  # train/* and val/* of the last epoch
        t_test = time.perf_counter()
        trainer.test(task, datamodule=dm, verbose=False)
        test_s = time.perf_counter() - t_test
        metrics.update(epoch_metrics(trainer.callback_metrics))
        _check_result(trainer, metrics)
        epochs_run = history.epochs_run if history is not None else 0
        timings = {**record.data["timings"], "wall_s": time.perf_counter() - t0, "fit_s": fit_s, "test_s": test_s,
                   "epochs_run": epochs_run, "s_per_epoch": fit_s / epochs_run if epochs_run else None,
                   "resumed_from": resume_from}
        files = {"checkpoint": "checkpoints/last.ckpt"}
        if (run_dir / "preact_hist.json").exists():
            files["preact_hist"] = "preact_hist.json"
        if rank_zero and getattr(task, "test_predictions", None) is not None:  # image classifiers (disagreement)
            files["predictions"] = records.write_predictions(run_dir, task.test_predictions)
        if rank_zero and hasattr(task, "export"):  # masked LM: the model fine-tuning starts from
            files.update(task.export(run_dir, dm, activation=config.get("activation")))
        if rank_zero:
            if history is not None:
                history.on_epoch(history.rows)  # the last epoch's monitor rates are complete only now
            record.write_dead(getattr(monitor, "final", {}))
            record.finish("completed", metrics=metrics, timings=timings, files={**record.data["files"], **files})
        _finish_wandb(logger, 0)
        return record.data
    except BaseException as e:  # signals and Ctrl-C too: the record must say the run did not finish
        interrupt.hold()  # a second signal must not cut the record
        err = interrupt.from_exception(e) or unwrap(e)
        if rank_zero:
            record = record or records.RunRecord(run_dir, rid, config, kind=_kind_of_config(cfg))
            record.data["timings"]["wall_s"] = time.perf_counter() - t0
            status = "interrupted" if isinstance(err, interrupt.RunInterrupted) else "failed"
            try:
                record.finish(status, error=f"{type(err).__name__}: {err}")
            except OSError as write_err:  # a full or read-only disk: the last record on disk stays as it was
                log.warning("could not write %s (%s); it still says %r", record.path, write_err,
                            (records.read(run_dir) or {}).get("status"))
        _finish_wandb(logger, 1)
        if err is not e:
            raise err from None
        raise


def _kind_of_config(cfg: DictConfig) -> str:
    """The task's kind when the task could not be built (the failed record still says what it was)."""
    from actlab.run.build import _target

    try:
        return getattr(_target(cfg.get("task")), "kind", "image")
    except Exception:  # noqa: BLE001 - an unknown task target: the error itself is what the record keeps
        return "image"


def instantiate_trainer(cfg: DictConfig, callbacks: list, logger, run_dir: Path) -> L.Trainer:
    plugins = [] if cfg.trainer.get("plugins") else [ckpt_io.AtomicCheckpointIO()]
    try:
        return instantiate_node(cfg.trainer, callbacks=callbacks, logger=logger or False,
                                default_root_dir=str(run_dir), **({"plugins": plugins} if plugins else {}))
    except Exception as e:
        err = unwrap(e)
        if isinstance(err, (MisconfigurationException, RuntimeError)) and "accelerator" in cfg.trainer:
            acc = cfg.trainer.get("accelerator")
            raise ValueError(f"trainer.accelerator={acc} cannot run here ({str(err).strip().splitlines()[0]}); "
                             "use trainer.accelerator=cpu (or auto)") from None
        raise


def _resume_point(cfg: DictConfig, run_dir: Path, previous: dict | None, record) -> str | None:
    """last.ckpt of an interrupted or failed run (force=true and resume=false start over). An unreadable
    checkpoint is set aside and the run starts over, said in one line and in the record."""
    last = run_dir / "checkpoints" / "last.ckpt"
    if not (cfg.resume and not cfg.force and previous is not None and previous.get("status") != "completed"
            and last.exists()):
        return None
    why = ckpt_io.unreadable(last)
    if why is None:
        return str(last)
    aside = ckpt_io.set_aside(last)
    log.warning("checkpoint %s is unreadable (%s); kept as %s; starting over from epoch 0", last, why, aside.name)
    if record is not None:
        record.data["recovery"] = {"unreadable_checkpoint": str(aside.relative_to(run_dir)), "error": why,
                                   "action": "restarted from epoch 0"}
    return None


def _check_result(trainer: L.Trainer, metrics: dict) -> None:
    """A run counts only if it trained and its numbers are finite: otherwise it fails, it is never completed."""
    if trainer.global_step == 0:
        raise ValueError("no training step was taken (trainer.max_epochs, max_steps or limit_train_batches is 0, "
                         "or the training set is empty); nothing to record as a result")
    bad = {k: v for k, v in metrics.items() if not math.isfinite(v)}
    if bad:
        shown = ", ".join(f"{k}={v}" for k, v in sorted(bad.items()))
        raise FloatingPointError(f"final metrics are not finite ({shown}): the run diverged; lower optim.lr "
                                 "or try another margin")


def _finish_wandb(logger, exit_code: int) -> None:
    """Close the W&B run on every exit path (failures and multirun jobs included)."""
    if logger is None or type(logger).__name__ != "WandbLogger":
        return
    import wandb

    if wandb.run is not None:
        wandb.finish(exit_code=exit_code)
