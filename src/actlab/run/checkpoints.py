"""Find the pre-trained model a fine-tune starts from: `model.checkpoint=<run_id | run dir | folder | auto>`.

`auto` picks the newest completed masked-LM run under the runs dir with the same model and the same
activation (name and margin), so the paper's pipeline is two sweeps:

    actlab-train -m experiment=paper_glue_pretrain activation=gelu,relu,helu activation.margin=0.05,1,2
    actlab-train -m experiment=paper_glue dataset=glue/sst2,glue/rte activation=gelu,relu,helu \\
        activation.margin=0.05,1,2 model.checkpoint=auto
"""

from __future__ import annotations

import logging
from pathlib import Path

from actlab.run import records

log = logging.getLogger(__name__)
AUTO = "auto"


def _activation(config: dict) -> tuple:
    act = config.get("activation") or {}
    return act.get("name"), act.get("margin")


def _exported(run_dir: Path, rec: dict | None) -> Path | None:
    if rec and rec.get("status") == "completed" and rec.get("files", {}).get("hf_model"):
        return run_dir / rec["files"]["hf_model"]
    return None


def find_pretrained(runs_dir: Path, model_name: str, activation: tuple) -> Path:
    """The newest completed MLM export in `runs_dir` for this model name and (activation, margin)."""
    found = []
    for path in Path(runs_dir).glob(f"*/{records.RECORD}"):
        rec = records.read(path.parent)
        folder = _exported(path.parent, rec)
        if folder is None:
            continue
        cfg = rec.get("config", {})
        if (cfg.get("model") or {}).get("name") == model_name and _activation(cfg) == activation:
            found.append((rec.get("timings", {}).get("ended_at") or "", folder))
    if not found:
        name, margin = activation
        act = name if margin is None else f"{name} margin {margin:g}"
        raise FileNotFoundError(f"model.checkpoint=auto: no completed masked-LM run of model={model_name} with "
                                f"{act} under {runs_dir}; pre-train it first (experiment=paper_glue_pretrain)")
    found.sort()
    if len(found) > 1:
        log.info("model.checkpoint=auto: %d candidates, using the newest (%s)", len(found), found[-1][1])
    return found[-1][1]


def resolve(spec: str, runs_dir: Path, model_name: str, activation: tuple) -> tuple[Path, tuple | None]:
    """(folder to load, activation it was pre-trained with or None if unknown) for a checkpoint spec."""
    if spec == AUTO:
        folder = find_pretrained(runs_dir, model_name, activation)
        return folder, activation
    for run_dir in (Path(spec).expanduser(), Path(runs_dir) / spec):
        rec = records.read(run_dir) if run_dir.is_dir() else None
        if rec is not None:
            folder = _exported(run_dir, rec)
            if folder is None:
                raise ValueError(f"model.checkpoint {run_dir}: run status {rec.get('status')!r} and no exported "
                                 f"model; only completed masked-LM runs can be fine-tuned")
            return folder, _activation(rec.get("config", {}))
    folder = Path(spec).expanduser()
    if (folder / "config.json").is_file():
        return folder, None
    raise FileNotFoundError(f"model.checkpoint {spec!r} is neither a run_id under {runs_dir}, a run dir, nor a "
                            f"folder with config.json; give one of those or auto")
