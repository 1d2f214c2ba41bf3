"""One run: lock its directory, write its record, resume or start, fit, test, finish the record.

    from actlab.run.runner import run
    record = run(cfg)              # cfg composed by Hydra (actlab-train) or by tests/compose.py

Every run leaves `<paths.runs_dir>/<run_id>/record.json` and `history.jsonl` (see run.records),
whatever the logger. Raises RunSkipped when the run_id already completed or another process holds it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Sequence
from pathlib import Path

import lightning as L
from omegaconf import DictConfig, OmegaConf

from actlab.callbacks.history import epoch_metrics
from actlab.run import distributed, records, runid
from actlab.run.build import build, build_callbacks, build_logger, unwrap, validate

log = logging.getLogger("actlab")
runid.register_resolver()

# Errors that are the user's input, not a bug: reported in one line, without a traceback.
USER_ERRORS = (ValueError, FileNotFoundError, FloatingPointError, TypeError, KeyError)


class RunSkipped(Exception):
    """The run_id already completed (or runs elsewhere right now); nothing to do."""


@contextlib.contextmanager
def _lock(run_dir: Path):
    """Hold `<run_dir>/.lock` while running, so two sweep jobs with one run_id never run it twice."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / ".lock"
    me = f"{socket.gethostname()}:{os.getpid()}"
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        owner = path.read_text().strip() if path.exists() else ""
        host, _, pid = owner.partition(":")
        alive = host == socket.gethostname() and pid.isdigit() and _alive(int(pid))
        if alive or (host and host != socket.gethostname()):
            raise RunSkipped(f"{run_dir.name} is running in {owner}") from None
        path.unlink(missing_ok=True)  # stale lock of a killed process on this host
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    os.write(fd, me.encode())
    os.close(fd)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run(cfg: DictConfig, callbacks: Sequence[L.Callback] = ()) -> dict:
    """Train and test one configuration; returns its record (also written to disk).

    `callbacks` are added to the trainer's (for scripts and tests; configs cannot reach them).
    """
    for d in runid.normalise(cfg):
        log.info("ignoring %s", d)
    validate(cfg)
    rid = runid.run_id(cfg)
    run_dir = Path(cfg.paths.runs_dir) / rid
    previous = records.read(run_dir)
    if previous and previous.get("status") == "completed" and not cfg.force:
        raise RunSkipped(f"{rid} already completed ({run_dir / records.RECORD}); force=true reruns it")

    config = OmegaConf.to_container(cfg, resolve=True)
    with distributed.scope():
        if distributed.rank() != 0:  # DDP ranks > 0 share rank 0's run dir; only rank 0 locks and writes the record
            return _fit(cfg, rid, run_dir, config, previous, list(callbacks))
        with _lock(run_dir):
            return _fit(cfg, rid, run_dir, config, previous, list(callbacks))


def _fit(cfg: DictConfig, rid: str, run_dir: Path, config: dict, previous: dict | None,
         extra: list[L.Callback]) -> dict:
    rank_zero = distributed.rank() == 0
    record = None
    t0 = time.perf_counter()
    logger = None
    try:
        L.seed_everything(cfg.seed, workers=True, verbose=False)
        dm, model, task = build(cfg)
        record = records.RunRecord(run_dir, rid, config, kind=task.kind, main_metric=task.main_metric)
        if rank_zero:
            record.save()
        named = build_callbacks(cfg)
        history, monitor = named.get("history"), named.get("monitor")
        if history is not None and rank_zero:
            history.on_epoch = lambda rows: record.write_history(
                records.merge_history(rows, getattr(monitor, "history", [])))
        logger = build_logger(cfg, run_dir, rid, config)
        trainer = instantiate_trainer(cfg, [*named.values(), *extra], logger, run_dir)

        last = run_dir / "checkpoints" / "last.ckpt"
        # Resume only what was interrupted; force=true starts over.
        interrupted = previous is not None and previous.get("status") != "completed"
        resume_from = str(last) if cfg.resume and not cfg.force and interrupted and last.exists() else None
        if resume_from:
            log.info("resuming %s from %s", rid, last)
        t_fit = time.perf_counter()
        trainer.fit(task, datamodule=dm, ckpt_path=resume_from, weights_only=False)
        fit_s = time.perf_counter() - t_fit
        metrics = epoch_metrics(trainer.callback_metrics)  # train/* and val/* of the last epoch
        t_test = time.perf_counter()
        trainer.test(task, datamodule=dm, verbose=False)
        test_s = time.perf_counter() - t_test
        metrics.update(epoch_metrics(trainer.callback_metrics))
        epochs_run = history.epochs_run if history is not None else 0
        timings = {**record.data["timings"], "wall_s": time.perf_counter() - t0, "fit_s": fit_s, "test_s": test_s,
                   "epochs_run": epochs_run, "s_per_epoch": fit_s / epochs_run if epochs_run else None,
                   "resumed_from": resume_from}
        files = {"checkpoint": "checkpoints/last.ckpt"}
        if (run_dir / "preact_hist.json").exists():
            files["preact_hist"] = "preact_hist.json"
        if rank_zero and hasattr(task, "export"):  # masked LM: the model fine-tuning starts from
            files.update(task.export(run_dir, dm, activation=config.get("activation")))
        if rank_zero:
            if history is not None:
                history.on_epoch(history.rows)  # the last epoch's monitor rates are complete only now
            files.update({k: v for k, v in record.data["files"].items() if k == "history"})
            record.finish("completed", metrics=metrics, dead={"final": getattr(monitor, "final", {})},
                          timings=timings, files=files)
        _finish_wandb(logger, 0)
        return record.data
    except BaseException as e:  # KeyboardInterrupt too: the record must say the run did not finish
        err = unwrap(e)
        if rank_zero:
            record = record or records.RunRecord(run_dir, rid, config, kind=_kind_of_config(cfg))
            record.data["timings"]["wall_s"] = time.perf_counter() - t0
            record.finish("failed", error=f"{type(err).__name__}: {err}")
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
    from actlab.run.build import instantiate_node

    return instantiate_node(cfg.trainer, callbacks=callbacks, logger=logger or False, default_root_dir=str(run_dir))


def _finish_wandb(logger, exit_code: int) -> None:
    """Close the W&B run on every exit path (failures and multirun jobs included)."""
    if logger is None or type(logger).__name__ != "WandbLogger":
        return
    import wandb

    if wandb.run is not None:
        wandb.finish(exit_code=exit_code)
