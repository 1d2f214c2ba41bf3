"""Config -> objects: the one place where a composed config meets code.

    dm, model, task = build(cfg)                  # untrained, what a run fits (actlab int8 reuses it)
    callbacks = build_callbacks(cfg)              # the `callbacks` group: margin schedule, monitor, ...

Cross-group checks ask the objects: a data module's `model_kind` must equal the model's `kind`, and
the task's `kind` the data module's `kind`, so a new model or data set needs no list edited here.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
from hydra.errors import InstantiationException
from hydra.utils import get_class, get_method, instantiate
from omegaconf import DictConfig, OmegaConf

from actlab.batches import forward

log = logging.getLogger("actlab")

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")  # src/actlab/conf (a symlink to conf/ in a checkout)
_NAMED_ARG = ("actlab.activations.factory",)  # targets whose `name` key is an argument, not a label


def _strip_names(spec):
    """Drop descriptive `name` keys of nested `_target_` nodes (they label a group choice, not an argument)."""
    if isinstance(spec, dict):
        if "_target_" in spec and spec["_target_"] not in _NAMED_ARG:
            spec.pop("name", None)
        for v in spec.values():
            _strip_names(v)
    elif isinstance(spec, list):
        for v in spec:
            _strip_names(v)
    return spec


def instantiate_node(node, recursive: bool = False, **kwargs):
    """instantiate() a config node (resolved against the whole config), minus descriptive `name` keys;
    None for an empty group (`monitor=none`). Not recursive by default: kwargs may carry plain dicts
    with `_target_` keys (the resolved config handed to loggers)."""
    if node is None or "_target_" not in node:
        return None
    spec = _strip_names(OmegaConf.to_container(node, resolve=True))
    spec["_recursive_"] = recursive
    # Plain lists/dicts, not ListConfig: Lightning appends its own callbacks to the list it is given.
    spec["_convert_"] = "all"
    return instantiate(spec, **kwargs)


def unwrap(err: BaseException) -> BaseException:
    """The user's error inside Hydra's InstantiationException wrapper."""
    while isinstance(err, InstantiationException) and err.__cause__ is not None:
        err = err.__cause__
    return err


def validate(cfg: DictConfig) -> None:
    """Refuse what cannot give a valid result, before anything is built: one line naming the key and the fix."""
    if not isinstance(cfg.get("seed"), int) or isinstance(cfg.get("seed"), bool):
        raise ValueError(f"seed must be an integer, got {cfg.get('seed')!r}")
    rid = cfg.get("run_id")
    if rid is not None and (not isinstance(rid, str) or not rid or "/" in rid or "\\" in rid or rid.startswith(".")):
        raise ValueError(f"run_id={rid!r} must be a plain directory name (no '/', not starting with '.'): "
                         "records live in paths.runs_dir; set paths.runs_dir to choose where")
    margin = (cfg.get("activation") or {}).get("margin")
    if margin is not None and (isinstance(margin, bool) or not isinstance(margin, (int, float))):
        raise ValueError(f"activation.margin must be a number, got {margin!r}")
    for key, value in _numbers(OmegaConf.to_container(cfg, resolve=True)):
        if not math.isfinite(value):
            raise ValueError(f"{key}={value} is not a finite number; set a finite value")
    trainer = cfg.get("trainer") or {}
    for key in ("max_epochs", "max_steps", "limit_train_batches"):
        if trainer.get(key) == 0:
            raise ValueError(f"trainer.{key}=0 trains nothing, so the run would give no result; "
                             f"drop the override or set trainer.{key} >= 1")


def _numbers(node, prefix: str = ""):
    """(dotted key, float) for every float in a resolved config (ints are always finite)."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _numbers(v, f"{prefix}{k}.")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _numbers(v, f"{prefix}{i}.")
    elif isinstance(node, float):
        yield prefix.rstrip("."), node


def _target(node):
    """The class or function a `_target_` node names (for its `kind`), or None."""
    if node is None or "_target_" not in node:
        return None
    try:
        return get_class(node._target_)
    except (ValueError, ImportError):
        return get_method(node._target_)


def _choices_of_kind(group: str, attr: str, kind: str) -> str:
    """The choices in conf/<group>/ whose target's `attr` is `kind`: what an error suggests instead."""
    names = []
    for path in sorted((Path(CONF_DIR) / group).glob("*.yaml")):
        try:
            target = _target(OmegaConf.load(path))
        except Exception:  # noqa: BLE001 - a choice that cannot be loaded is simply not suggested
            continue
        if getattr(target, attr, None) == kind:
            names.append(path.stem)
    return ", ".join(names) or "none available"


def check_fit(cfg: DictConfig) -> None:
    """The model and task must fit the data (images, GLUE, masked LM), and text data must use the
    model's tokenizer: one clear error each, before anything is built."""
    data_cls = _target(cfg.dataset)
    data_kind, wants = getattr(data_cls, "kind", "image"), getattr(data_cls, "model_kind", "image")
    model_kind = getattr(_target(cfg.model), "kind", None)
    if model_kind is not None and model_kind != wants:
        article = "an" if wants[0] in "aeiou" else "a"
        raise ValueError(f"model={cfg.model.get('name')} does not fit dataset={cfg.dataset.get('name')} "
                         f"({data_kind} data); use {article} {wants} model ({_choices_of_kind('model', 'kind', wants)})")
    task_kind = getattr(_target(cfg.get("task")), "kind", "")
    if task_kind and task_kind != data_kind:
        tasks = _choices_of_kind("task", "kind", data_kind)
        fix = f"experiment={tasks} (or task={tasks})" if (Path(CONF_DIR) / "experiment" / f"{tasks}.yaml").exists() \
            else f"task={tasks}"
        raise ValueError(f"task={cfg.task._target_.rsplit('.', 1)[-1]} does not fit dataset={cfg.dataset.get('name')} "
                         f"({data_kind} data); use {fix}")
    data_tok, model_tok = cfg.dataset.get("tokenizer"), cfg.model.get("tokenizer")
    if data_tok is not None and model_tok is not None and str(data_tok) != str(model_tok):
        raise ValueError(f"tokenizer/model mismatch: dataset.tokenizer={data_tok} but model={cfg.model.get('name')} "
                         f"uses {model_tok}; drop the dataset.tokenizer override or set model.tokenizer")


def _materialise(model: torch.nn.Module, example) -> None:
    """One eval-mode forward so lazy parameters (per-channel PReLU) exist before the optimizer."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        forward(model, example)
    model.train(was_training)


def _build_model(cfg: DictConfig, dm, act):
    """The model for this data: the data module says what its inputs/outputs are (model_kwargs)."""
    kwargs = dict(dm.model_kwargs())
    spec = cfg.model.get("checkpoint")
    if spec:
        from actlab.run import checkpoints

        want = (cfg.activation.get("name"), cfg.activation.get("margin")) if cfg.activation else (None, None)
        folder, trained = checkpoints.resolve(str(spec), Path(cfg.paths.runs_dir), cfg.model.get("name"), want)
        if trained is not None and trained != want:
            log.warning("model.checkpoint was pre-trained with %s but this run uses %s", trained, want)
        kwargs["checkpoint"] = str(folder)
    try:
        return instantiate_node(cfg.model, act=act, **kwargs)
    except InstantiationException as e:
        err = unwrap(e)
        if isinstance(err, TypeError) and "unexpected keyword" in str(err):
            raise ValueError(f"model={cfg.model.get('name')} does not fit dataset={cfg.dataset.get('name')} "
                             f"({getattr(dm, 'kind', 'image')} data): {err}") from None
        raise


def _channels_last_inputs(module, args):
    return tuple(a.contiguous(memory_format=torch.channels_last) if isinstance(a, torch.Tensor) and a.dim() == 4
                 else a for a in args)


def speed_up(model: torch.nn.Module, channels_last: bool = False, compile: bool | str = False) -> None:
    """The GPU fast path's model knobs, in place. channels_last: weights and 4-d inputs (a forward
    pre-hook) in NHWC, what tensor-core convolutions want. compile: torch.compile (true = Inductor, or a
    backend name) through Module.compile(), so state_dict keys, checkpoints and hooks stay as they are."""
    if channels_last:
        model.to(memory_format=torch.channels_last)
        model.register_forward_pre_hook(_channels_last_inputs)
    if compile:
        if not isinstance(compile, (bool, str)):
            raise ValueError(f"compile must be true, false or a torch.compile backend name, got {compile!r}")
        model.compile(**({} if compile is True else {"backend": compile}))


def build(cfg: DictConfig):
    """(data module, model, task) of a composed or recorded config, untrained: what a run fits, and
    what `actlab int8` loads a run's checkpoint into (OmegaConf.create(record["config"]) rebuilds it)."""
    check_fit(cfg)
    dm = instantiate_node(cfg.dataset)
    act = instantiate_node(cfg.activation)
    model = _build_model(cfg, dm, act)
    _materialise(model, dm.example_input())
    speed_up(model, channels_last=bool(cfg.get("channels_last")), compile=cfg.get("compile") or False)
    task = instantiate_node(cfg.task, model=model, optimizer=instantiate_node(cfg.optim),
                            scheduler=instantiate_node(cfg.scheduler), **dm.task_kwargs())
    return dm, model, task


def build_callbacks(cfg: DictConfig) -> dict:
    """{name: callback} of the `callbacks` group, in config order; empty entries (monitor=none) left out."""
    out = {}
    for name, node in (cfg.get("callbacks") or {}).items():
        cb = instantiate_node(node, recursive=True)
        if cb is not None:
            out[name] = cb
    return out


def build_logger(cfg: DictConfig, run_dir: Path, run_id: str, config: dict, resuming: bool = False):
    """The experiment logger (W&B, CSV) or None for logger=none; `resuming` keeps what it logged before."""
    if not cfg.get("logger") or "_target_" not in cfg.logger:
        return None
    return instantiate_node(cfg.logger, save_dir=str(run_dir), run_id=run_id, hparams=config,
                            tags=list(cfg.get("tags") or []), resuming=resuming)
