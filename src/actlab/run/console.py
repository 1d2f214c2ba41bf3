"""A quiet console for actlab's runs: what a researcher needs on screen, everything else in `train.log`.

The console keeps actlab's own messages (logger `actlab`), errors from anyone, the progress bar or one line
per epoch, and the result line. Lightning's INFO chatter ("GPU available: False", tips, "Trainer.fit
stopped") and Python warnings from dependencies (deprecations, "srun is available", small-batch hints) go
only to the run's `train.log` (Hydra's file handler). `ACTLAB_VERBOSE=1` shows everything again.
"""

from __future__ import annotations

import logging
import os

# Loggers that set up their own console handler at import (when the root logger had none yet).
_SELF_HANDLED = ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning_fabric")


class ConsoleFilter(logging.Filter):
    """Pass actlab's records and anyone's errors; drop dependencies' info and warnings (train.log keeps them).
    In a sweep also actlab's per-job config notes (`actlab.config`: "ignoring activation.margin=0.1 ..."),
    which every ReLU job of a margin grid would print."""

    def __init__(self, sweep: bool = False):
        super().__init__()
        self.sweep = sweep

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            return True
        if self.sweep and record.name == "actlab.config" and record.levelno < logging.WARNING:
            return False
        return record.name == "actlab" or record.name.startswith("actlab.")


def _is_console(handler: logging.Handler) -> bool:
    return isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)


def install(sweep: bool = False) -> None:
    """Route dependency logs and warnings to the file handlers only (call once Hydra has set up logging).
    Idempotent: a basic launcher runs several jobs in one process (Hydra rebuilds the handlers per job)."""
    if os.environ.get("ACTLAB_VERBOSE"):
        return
    for name in _SELF_HANDLED:  # hand their records to the root handlers (console filtered, train.log whole)
        lg = logging.getLogger(name)
        for h in list(lg.handlers):
            if _is_console(h):
                lg.removeHandler(h)
        lg.propagate = True
    root = logging.getLogger()
    for h in root.handlers:
        if _is_console(h):
            for f in [f for f in h.filters if isinstance(f, ConsoleFilter)]:
                h.removeFilter(f)
            h.addFilter(ConsoleFilter(sweep))
    logging.captureWarnings(True)  # warnings -> logger py.warnings -> train.log, filtered off the console


def line_per_epoch(interactive: bool, multirun: bool) -> str:
    """How a run shows progress: "bar" (an interactive single run), "lines" (one line per epoch: a single run
    writing to a file or pipe), "none" (a multirun job: its sweep prints one line per finished job)."""
    if multirun:
        return "none"
    return "bar" if interactive else "lines"
