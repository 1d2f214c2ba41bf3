"""Run identity: what in a resolved config defines a run, and the run_id derived from it.

run_id = readable slug (dataset-model-activation[-m<margin>]-s<seed>) + 8 hex digits of a hash of
the config's identity, so the same config always maps to the same run directory: a re-launched
sweep finds its completed runs and its interrupted ones. Keys that do not change what is computed
(paths, logging, progress bars, force/resume) are left out of the hash.
"""

from __future__ import annotations

import hashlib
import json

from omegaconf import DictConfig, OmegaConf, open_dict

# Top-level keys that never change results.
NOT_IDENTITY = {"paths", "force", "resume", "run_id", "logger", "tags", "hydra", "objective"}
# Nested keys (under a dotted group) that never change results.
_MONITOR_REPORTING = {"metrics", "log_per_layer", "hist_bins", "hist_range", "hist_linear_width", "out_dir"}
NOT_IDENTITY_NESTED = {
    "trainer": {"enable_progress_bar", "log_every_n_steps", "enable_model_summary"},
    # which metrics the monitor computes and how its final histogram is binned: more or finer numbers in
    # the record, the same training (preact_hist.json stores its edges, record.json the settings used).
    # The monitor group is also interpolated into callbacks.monitor, so both places drop them.
    "monitor": _MONITOR_REPORTING,
    "callbacks.monitor": _MONITOR_REPORTING,
}


def normalise(cfg: DictConfig) -> list[str]:
    """Drop settings that do not apply (a margin or a margin schedule for a non-HeLU activation); return
    what was dropped.

    This is how a sweep `activation=relu,helu activation.margin=0.01,0.1` collapses: both ReLU jobs
    normalise to the same config, hence the same run_id, and the second finds the first's record; so
    does `activation=relu margin=cosine`, which computes exactly what plain ReLU computes.
    """
    dropped = []
    act = cfg.get("activation")
    if act is None or act.get("name") == "helu":
        return dropped
    with open_dict(cfg):
        if act.get("margin") is not None:
            dropped.append(f"activation.margin={act.margin} (only helu uses a margin)")
            act.margin = None
        sched = cfg.get("margin")
        if sched is not None:
            if _name(sched) not in ("constant", "none"):
                dropped.append(f"margin={_name(sched)} (only helu has a margin to schedule)")
            cfg.margin = None
    return dropped


def identity(cfg: DictConfig) -> dict:
    """The resolved config minus keys that do not change results.

    Values derived from the run directory (`${paths.run_dir}/checkpoints`) resolve against a fixed
    placeholder: the directory is named after this identity, so it cannot be part of it. actlab's own
    `_target_`s count by name only (`Classifier`, not its module path): moving code does not rename runs.
    """
    cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k not in ("hydra",)])
    with open_dict(cfg):
        cfg.setdefault("paths", {})["run_dir"] = "<run_dir>"
    data = OmegaConf.to_container(cfg, resolve=True)
    data = {k: v for k, v in data.items() if k not in NOT_IDENTITY}
    for group, keys in NOT_IDENTITY_NESTED.items():
        node = data
        for part in group.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):  # data is a fresh container: dropping in place touches nothing else
            for k in keys:
                node.pop(k, None)
    return short_targets(data)


def short_targets(node):
    if isinstance(node, dict):
        return {k: (v.rsplit(".", 1)[-1] if k == "_target_" and isinstance(v, str) and v.startswith("actlab.")
                    else short_targets(v)) for k, v in node.items()}
    if isinstance(node, list):
        return [short_targets(v) for v in node]
    return node


def _name(node) -> str:
    if node is None:
        return "none"
    if isinstance(node, (dict, DictConfig)):
        return str(node.get("name") or "custom")
    return str(node)


def slug(cfg: DictConfig) -> str:
    parts = [_name(cfg.get("dataset")).replace("/", "_"), _name(cfg.get("model")), _name(cfg.get("activation"))]
    margin = cfg.get("activation", {}).get("margin") if cfg.get("activation") is not None else None
    if margin is not None:
        parts.append(f"m{margin:g}" if isinstance(margin, (int, float)) else f"m{margin}")  # validate() names a bad one
    sched = cfg.get("margin")
    if margin is not None and sched is not None and _name(sched) not in ("constant", "none"):
        parts.append(_name(sched))
    parts.append(f"s{cfg.get('seed', 0)}")
    return "-".join(parts)


def run_id(cfg: DictConfig) -> str:
    """The configured run_id, else slug + hash of the identity of a normalised copy of `cfg`."""
    if cfg.get("run_id"):
        return str(cfg.run_id)
    cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    normalise(cfg)
    digest = hashlib.sha1(json.dumps(identity(cfg), sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{slug(cfg)}-{digest}"


def _resolver(*, _root_: DictConfig) -> str:
    """Never raises (Hydra would print a 100-line traceback): a config that cannot name its run gets a
    placeholder directory for Hydra's logs, and run.build.validate then says what is wrong in one line."""
    try:
        rid = run_id(_root_)
    except Exception:  # noqa: BLE001 - reported by validate() with the key to fix
        return "_invalid_config"
    return rid if rid and "/" not in rid and not rid.startswith(".") else "_invalid_config"


def register_resolver() -> None:
    """`${actlab_run_id:}` in Hydra's output dirs, so each run's Hydra dir is its run dir."""
    if not OmegaConf.has_resolver("actlab_run_id"):
        OmegaConf.register_new_resolver("actlab_run_id", _resolver)
