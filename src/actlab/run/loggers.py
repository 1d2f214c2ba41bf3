"""Experiment loggers from config: W&B (offline unless logged in) and CSV. `logger=none` for neither."""

from __future__ import annotations

import csv as _csv
import os
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger, WandbLogger

from actlab.run import records


def wandb_mode(mode: str | None = None) -> str:
    """online/offline/disabled: explicit > $WANDB_MODE > online when an API key is known > offline."""
    if mode:
        return mode
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    netrc = Path.home() / ".netrc"
    try:
        if "api.wandb.ai" in netrc.read_text():
            return "online"
    except OSError:
        pass
    return "offline"


def wandb(*, save_dir: str, run_id: str, hparams: dict, project: str = "actlab", entity: str | None = None,
          mode: str | None = None, tags: list | None = None, resuming: bool = False) -> WandbLogger:
    """A WandbLogger whose run id follows run_id, so a resumed run continues the same W&B run."""
    wid = records.wandb_id(run_id)
    return WandbLogger(
        project=project, entity=entity, name=run_id, id=wid, resume="allow", save_dir=save_dir,
        mode=wandb_mode(mode), config=hparams, tags=list(tags or []),
    )


def csv(*, save_dir: str, run_id: str, hparams: dict, tags: list | None = None, resuming: bool = False) -> CSVLogger:
    """metrics.csv under `<run dir>/csv/`. Lightning's CSV writer deletes an existing metrics.csv when it
    starts; a resumed run keeps the rows of the epochs before its interruption (they are re-logged first)."""
    logger = CSVLogger(save_dir=save_dir, name="csv", version="")
    path = Path(logger.log_dir) / "metrics.csv"
    old_rows = []
    if resuming and path.is_file():
        with open(path, newline="") as f:
            old_rows = list(_csv.DictReader(f))
    writer = logger.experiment  # creating the writer is what deletes the old file
    writer.metrics = [{k: v for k, v in row.items() if v != ""} for row in old_rows] + writer.metrics
    logger.log_hyperparams(hparams)
    return logger
