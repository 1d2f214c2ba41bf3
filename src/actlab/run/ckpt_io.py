"""Checkpoints that are never half-written, and a run that survives one that is.

Lightning writes a checkpoint elsewhere and moves it (a copy when the temp dir is on another file
system), so a disk filling up mid-save leaves a truncated `last.ckpt`. AtomicCheckpointIO writes into
the checkpoint's own folder and renames (actlab.atomic). `unreadable` checks a checkpoint before a
resume; `set_aside` keeps a bad one under another name instead of deleting evidence.
"""

from __future__ import annotations

import io
from datetime import datetime
from pathlib import Path

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from actlab import atomic


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save into memory, then into a temp file beside the target, fsync, rename. Serialising first
    (as Lightning does) makes a full disk an OSError (ENOSPC) instead of torch's zip-writer RuntimeError."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        atomic.write_with(path, lambda f: f.write(buffer.getbuffer()))


def unreadable(path: Path) -> str | None:
    """Why `path` cannot be loaded as a checkpoint (one line), or None when it can."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception as e:  # noqa: BLE001 - any failure to load means: do not resume from it
        return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    return None if isinstance(ckpt, dict) and "state_dict" in ckpt else "not a Lightning checkpoint (no state_dict)"


def set_aside(path: Path) -> Path:
    """Rename a bad checkpoint to `<name>.unreadable-<time>` and return the new path."""
    path = Path(path)
    aside = path.with_name(f"{path.name}.unreadable-{datetime.now():%Y%m%d-%H%M%S}")
    path.rename(aside)
    return aside
