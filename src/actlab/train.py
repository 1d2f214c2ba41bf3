"""The training entry: compose a config, build data + model + activation, fit, test, record.

    actlab-train                                     # Fashion-MNIST, small ResNet, ReLU, CPU
    actlab-train model=mlp activation=helu activation.margin=0.05 seed=1
    actlab-train -m activation=relu,gelu,helu seed=0,1,2     # a sweep (see hydra/launcher)
    actlab-train experiment=glue dataset=glue/sst2 model=minilm activation=helu   # GLUE fine-tune
    actlab-train experiment=mlm dataset=mlm/wikitext model=bert_small activation=relu  # MLM pre-train
    actlab-train --cfg job                           # print the composed config

Every run leaves `<paths.runs_dir>/<run_id>/record.json` (see actlab.records), whatever the logger.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from actlab import distributed, records, runid, sweep
from actlab.history import History
from actlab.margin import MarginScheduler

log = logging.getLogger("actlab")
runid.register_resolver()

# Errors that are the user's input, not a bug: reported in one line, without a traceback.
USER_ERRORS = (ValueError, FileNotFoundError, FloatingPointError, TypeError, KeyError)


class RunSkipped(Exception):
    """The run_id already completed (or runs elsewhere right now); nothing to do."""


def _build(node, **kwargs):
    """instantiate() a config node, minus its descriptive `name` key; None for an empty/none group."""
    if node is None or "_target_" not in node:
        return None
    spec = OmegaConf.to_container(node, resolve=True)  # resolved against the whole config
    if spec["_target_"] != "actlab.activations.factory":  # the factory's `name` is its argument
        spec.pop("name", None)
    # Not recursive: kwargs may carry plain dicts with `_target_` keys (the resolved config for loggers).
    spec["_recursive_"] = False
    # Plain lists/dicts, not ListConfig: Lightning appends its own callbacks (RichProgressBar) to the
    # callbacks list it is given, which a ListConfig rejects.
    spec["_convert_"] = "all"
    return instantiate(spec, **kwargs)


def unwrap(err: BaseException) -> BaseException:
    """The user's error inside Hydra's InstantiationException wrapper."""
    while isinstance(err, InstantiationException) and err.__cause__ is not None:
        err = err.__cause__
    return err


def _validate(cfg: DictConfig) -> None:
    if not isinstance(cfg.get("seed"), int) or isinstance(cfg.get("seed"), bool):
        raise ValueError(f"seed must be an integer, got {cfg.get('seed')!r}")


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


def _materialise(model: torch.nn.Module, example) -> None:
    """One eval-mode forward so lazy parameters (per-channel PReLU) exist before the optimizer."""
    from actlab.batches import forward

    was_training = model.training
    model.eval()
    with torch.no_grad():
        forward(model, example)
    model.train(was_training)


TEXT_MODELS = "minilm, bert_tiny, bert_small, bert_base"


def _check_fit(cfg: DictConfig) -> None:
    """The task and model must fit the data (images, GLUE, masked LM), and text data must use the
    model's tokenizer: one clear error each, before anything is built."""
    from hydra.utils import get_class

    kind = getattr(get_class(cfg.dataset._target_), "kind", "image")
    text_model = "tokenizer" in cfg.model
    if (kind != "image") != text_model:
        fix = f"a text model ({TEXT_MODELS})" if kind != "image" else "an image model (resnet_small, mlp, ...)"
        raise ValueError(f"model={cfg.model.get('name')} does not fit dataset={cfg.dataset.get('name')} "
                         f"({kind} data); use {fix}")
    task_kind = getattr(get_class(cfg.task._target_), "kind", "") if cfg.get("task") else ""
    if task_kind and task_kind != kind:
        fix = {"image": "task=classify", "glue": "experiment=glue (or task=glue)", "mlm": "experiment=mlm (or task=mlm)"}
        raise ValueError(f"task={cfg.task._target_.rsplit('.', 1)[-1]} does not fit dataset={cfg.dataset.get('name')} "
                         f"({kind} data); use {fix.get(kind, 'a matching task')}")
    if not text_model:
        return
    data_tok, model_tok = cfg.dataset.get("tokenizer"), cfg.model.get("tokenizer")
    if data_tok is not None and model_tok is not None and str(data_tok) != str(model_tok):
        raise ValueError(f"tokenizer/model mismatch: dataset.tokenizer={data_tok} but model={cfg.model.get('name')} "
                         f"uses {model_tok}; drop the dataset.tokenizer override or set model.tokenizer")


def _build_model(cfg: DictConfig, dm, act):
    """The model for this data: the data module says what its inputs/outputs are (model_kwargs)."""
    kwargs = dict(dm.model_kwargs())
    spec = cfg.model.get("checkpoint")
    if spec:
        from actlab import checkpoints

        want = (cfg.activation.get("name"), cfg.activation.get("margin")) if cfg.activation else (None, None)
        folder, trained = checkpoints.resolve(str(spec), Path(cfg.paths.runs_dir), cfg.model.get("name"), want)
        if trained is not None and trained != want:
            log.warning("model.checkpoint was pre-trained with %s but this run uses %s", trained, want)
        kwargs["checkpoint"] = str(folder)
    try:
        return _build(cfg.model, act=act, **kwargs)
    except InstantiationException as e:
        err = unwrap(e)
        if isinstance(err, TypeError) and "unexpected keyword" in str(err):
            raise ValueError(f"model={cfg.model.get('name')} does not fit dataset={cfg.dataset.get('name')} "
                             f"({getattr(dm, 'kind', 'image')} data): {err}") from None
        raise


def build(cfg: DictConfig):
    """(data module, model, task) of a composed or recorded config, untrained: what a run fits, and
    what `actlab int8` loads a run's checkpoint into (OmegaConf.create(record["config"]) rebuilds it)."""
    _check_fit(cfg)
    dm = _build(cfg.dataset)
    act = _build(cfg.activation)
    model = _build_model(cfg, dm, act)
    _materialise(model, dm.example_input())
    task = _build(cfg.task, model=model, optimizer=_build(cfg.optim), scheduler=_build(cfg.scheduler),
                  **dm.task_kwargs())
    return dm, model, task


def run(cfg: DictConfig, callbacks: Sequence[L.Callback] = ()) -> dict:
    """Train and test one configuration; returns its record (also written to disk).

    `callbacks` are added to the trainer's (for scripts and tests; configs cannot reach them).
    """
    dropped = runid.normalise(cfg)
    for d in dropped:
        log.info("ignoring %s", d)
    _validate(cfg)
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
    record = records.RunRecord(run_dir, rid, config)
    if rank_zero:
        record.save()
    t0 = time.perf_counter()
    logger = None
    try:
        L.seed_everything(cfg.seed, workers=True, verbose=False)
        dm, model, task = build(cfg)

        history = History(on_epoch=lambda rows: record.update(history=rows, dead=_dead(monitor)))
        monitor = _build(cfg.monitor, out_dir=str(run_dir))
        ckpt_dir = run_dir / "checkpoints"
        callbacks = [
            MarginScheduler(_build(cfg.margin)),
            history,
            L.pytorch.callbacks.ModelCheckpoint(dirpath=ckpt_dir, filename="last", save_top_k=1,
                                                enable_version_counter=False),
        ]
        if monitor is not None:
            callbacks.append(monitor)
        callbacks += extra
        logger = _build(cfg.logger, save_dir=str(run_dir), run_id=rid, hparams=config,
                        **({"tags": list(cfg.tags)} if cfg.logger and "_target_" in cfg.logger else {}))
        trainer = _build(cfg.trainer, callbacks=callbacks, logger=logger or False, default_root_dir=str(run_dir))

        last = ckpt_dir / "last.ckpt"
        # Resume only what was interrupted; force=true starts over.
        interrupted = previous is not None and previous.get("status") != "completed"
        resume_from = str(last) if cfg.resume and not cfg.force and interrupted and last.exists() else None
        if resume_from:
            log.info("resuming %s from %s", rid, last)
        t_fit = time.perf_counter()
        trainer.fit(task, datamodule=dm, ckpt_path=resume_from, weights_only=False)
        fit_s = time.perf_counter() - t_fit
        metrics = final_metrics(trainer.callback_metrics)  # train/* and val/* of the last epoch
        t_test = time.perf_counter()
        trainer.test(task, datamodule=dm, verbose=False)
        test_s = time.perf_counter() - t_test
        metrics.update(final_metrics(trainer.callback_metrics))
        timings = {**record.data["timings"], "wall_s": time.perf_counter() - t0, "fit_s": fit_s, "test_s": test_s,
                   "epochs_run": history.epochs_run,
                   "s_per_epoch": fit_s / history.epochs_run if history.epochs_run else None,
                   "resumed_from": resume_from}
        files = {"checkpoint": "checkpoints/last.ckpt"}
        if (run_dir / "preact_hist.json").exists():
            files["preact_hist"] = "preact_hist.json"
        if rank_zero and hasattr(task, "export"):  # masked LM: the model fine-tuning starts from
            files.update(task.export(run_dir, dm, activation=config.get("activation")))
        if rank_zero:
            record.finish("completed", metrics=metrics, history=history.rows, dead=_dead(monitor),
                          timings=timings, files=files)
        _finish_wandb(logger, 0)
        return record.data
    except BaseException as e:  # KeyboardInterrupt too: the record must say the run did not finish
        err = unwrap(e)
        if rank_zero:
            record.data["timings"]["wall_s"] = time.perf_counter() - t0
            record.finish("failed", error=f"{type(err).__name__}: {err}")
        _finish_wandb(logger, 1)
        if err is not e:
            raise err from None
        raise


def final_metrics(callback_metrics: dict) -> dict:
    """Epoch-level `stage/name` metrics as floats (`*_step` values dropped, `_epoch` suffixes removed)."""
    out = {}
    for k, v in callback_metrics.items():
        # Per-layer dead rates also carry "/", but they belong to record["dead"], not here.
        if k.startswith(("train/", "val/", "test/")) and not k.endswith("_step"):
            out[k.removesuffix("_epoch")] = float(v)
    return out


def _dead(monitor) -> dict:
    return monitor.state() if monitor is not None and hasattr(monitor, "state") else {}


def _finish_wandb(logger, exit_code: int) -> None:
    """Close the W&B run on every exit path (failures and multirun jobs included)."""
    if logger is None or type(logger).__name__ != "WandbLogger":
        return
    import wandb

    if wandb.run is not None:
        wandb.finish(exit_code=exit_code)


# An absolute path works for an editable install (conf/ via the src/actlab/conf symlink) and a wheel.
CONF_DIR = str(Path(__file__).resolve().parent / "conf")


@hydra.main(config_path=CONF_DIR, config_name="train", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> float | None:
    multirun = _is_multirun()
    rid = None
    try:
        rid = runid.run_id(cfg)
        with _job_context(multirun):
            rec = run(cfg)
    except RunSkipped as e:
        print(f"actlab-train: skipped: {e}", file=sys.stderr)
        sweep.note(rid, "skipped")
        return None
    except Exception as e:  # the record already says failed, with the error
        err = unwrap(e)
        sweep.note(rid or "?", "failed", f"{type(err).__name__}: {err}")
        if isinstance(err, USER_ERRORS):
            print(f"actlab-train: error: {err}", file=sys.stderr)
        elif multirun:  # crash isolation: keep the traceback in the log, let the sweep go on
            log.exception("run %s failed", rid)
        else:
            raise
        if multirun:
            return None
        sys.exit(1)
    sweep.note(rec["run_id"], "completed")
    metrics = rec.get("metrics", {})
    main = next((k for k in MAIN_METRICS if k in metrics), "test/acc")
    if distributed.rank() != 0:  # rank 0 reports the run (ranks > 0 hold no final metrics)
        return metrics.get(main)
    print(f"actlab-train: {rec['run_id']} {main}={metrics.get(main, float('nan')):.4f} "
          f"record: {Path(cfg.paths.runs_dir) / rec['run_id'] / records.RECORD}")
    return metrics.get(main)


# The metric a run reports on the command line (and returns to a Hydra sweeper), first one present.
MAIN_METRICS = ("test/score", "test/acc", "test/loss")


@contextlib.contextmanager
def _job_context(multirun: bool):
    """Per-job settings of a sweep: torch threads shared fairly between parallel jobs, and a sys.argv
    holding only this job's overrides, because Lightning's DDP launcher re-runs sys.argv for ranks > 0
    (with the sweep's `-m a=1,2` it would start the whole sweep again in every rank)."""
    if not multirun:
        yield
        return
    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.get()
    n_jobs = hc.launcher.get("n_jobs") if "joblib" in str(hc.launcher.get("_target_", "")) else None
    threads = torch.get_num_threads()
    if n_jobs and n_jobs > 0:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // n_jobs))
    argv = sys.argv
    sys.argv = [argv[0], *hc.overrides.task]
    try:
        yield
    finally:
        sys.argv = argv
        torch.set_num_threads(threads)


def _is_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig

    try:
        return HydraConfig.get().mode.name == "MULTIRUN"
    except ValueError:
        return False


def main() -> None:
    """Console entry point `actlab-train`; a sweep (-m) exits non-zero when any of its runs failed."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not sweep.is_multirun_argv() or distributed.rank() != 0:
        _hydra_main()
        return
    runs_dir = _runs_dir_from_argv(sys.argv[1:])
    path = sweep.start(runs_dir)
    _hydra_main()
    sys.exit(sweep.report(path))


def _runs_dir_from_argv(argv: list[str]) -> str:
    """Where the sweep log goes: paths.runs_dir / paths.results_dir overrides, else results/runs."""
    values = dict(a.split("=", 1) for a in argv if "=" in a and not a.startswith("-"))
    if "paths.runs_dir" in values:
        return values["paths.runs_dir"]
    return str(Path(values.get("paths.results_dir", "results")) / "runs")


if __name__ == "__main__":
    main()
