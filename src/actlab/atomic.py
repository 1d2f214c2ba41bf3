"""Atomic file writes: a temp file in the target's folder, fsync, then rename, so a reader (or a crash)
never sees half a file. The one writer behind run records, histories, histograms, bench results and
the data cache."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO


def write_with(path: str | os.PathLike, fill: Callable[[IO[bytes]], None], mode: int = 0o644) -> Path:
    """Create `path` atomically from what `fill(f)` writes to a binary file object; returns the path.

    The temp name is unique (mkstemp), so concurrent writers of the same path each rename a complete
    file of their own and the last one wins; on any error the temp file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.close(fd)
        os.chmod(tmp, mode)  # mkstemp makes 0600; results are meant to be shared
        with open(tmp, "wb") as f:
            fill(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_with(path, lambda f: f.write(text.encode()))


def write_json(path: str | os.PathLike, data, indent: int | None = None, **dump_kwargs) -> Path:
    """Strict JSON (no NaN: clean values first) plus a trailing newline."""
    text = json.dumps(data, indent=indent, allow_nan=dump_kwargs.pop("allow_nan", False), **dump_kwargs)
    return write_text(path, text + "\n")


def copy(src: str | os.PathLike, dest: str | os.PathLike, *, gunzip: bool = False) -> Path:
    """Copy (or gunzip) src to dest so dest never exists half-written."""
    import gzip

    def fill(fout):
        with gzip.open(src, "rb") if gunzip else open(src, "rb") as fin:
            shutil.copyfileobj(fin, fout, 1 << 20)

    return write_with(dest, fill)
