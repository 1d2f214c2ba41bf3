"""W&B runs as plain data: offline `run-<id>.wandb` transaction logs (parsed here) and online projects.

    run = read_offline(Path("wandb/offline-run-x/run-x.wandb"))  # {"run_id", "status", "config", ...}
    paths = find_wandb_offline(Path("results/runs"))              # offline runs without a local record

Knows the W&B formats, not the frame's columns: frame.py turns these dicts into rows (read_wandb_offline,
load_wandb_project). wandb >= 0.19 moved its own log reader into Go, so the log is parsed here.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterable
from pathlib import Path

from actlab.run.records import RECORD

# A run-<id>.wandb file is a 7-byte header (":W&B", magic 0xBEE1, version) and then LevelDB-log
# blocks of 32 KiB: each chunk has a 7-byte header (crc32, length, type FULL/FIRST/MIDDLE/LAST) and
# the chunks join into protobuf `Record`s.
_BLOCK, _HEADER = 32768, 7
_FULL, _FIRST, _LAST = 1, 2, 4  # MIDDLE (3) chunks just accumulate
# Online run states -> record statuses.
STATES = {"finished": "completed", "failed": "failed", "crashed": "failed", "running": "running"}


def wandb_records(path: Path) -> Iterable:
    """Yield the `wandb_internal_pb2.Record`s of an offline .wandb file; stops at a torn tail."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path}: not a W&B transaction log (bad header {data[:4]!r})")
    i, parts = _HEADER, []
    while i + _HEADER <= len(data):
        left = _BLOCK - i % _BLOCK
        if left < _HEADER:  # block trailer: zero padding
            i += left
            continue
        crc, n, kind = struct.unpack_from("<IHB", data, i)
        chunk = data[i + _HEADER:i + _HEADER + n]
        i += _HEADER + n
        if kind == 0 or len(chunk) < n or zlib.crc32(chunk, zlib.crc32(bytes([kind]))) != crc:
            return  # a run killed mid-write leaves a partial chunk; what came before is still good
        parts.append(chunk)
        if kind in (_FULL, _LAST):
            rec = pb.Record()
            rec.ParseFromString(b"".join(parts))
            parts = []
            yield rec
        elif kind == _FIRST:
            parts = [chunk]


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)


def _item_value(item):
    """A config/summary/history item's value: value_json, or (HistoryItem, wandb >= 0.2x) the typed oneof."""
    if item.value_json:
        return json.loads(item.value_json)
    kind = item.WhichOneof("value") if item.DESCRIPTOR.oneofs_by_name.get("value") else None
    if kind == "json":
        return json.loads(item.json)
    return getattr(item, kind) if kind and kind != "none" else None


def read_offline(path: Path) -> dict:
    """One offline run: {"run_id", "status", "error", "config", "summary", "history", "started_at", "wall_s"}.

    config without W&B's "_wandb"; summary as logged; history: the logged rows in order (private "_"
    keys included). Status from the exit record: none yet is "running", exit code 0 "completed".
    """
    config, summary, hist = {}, {}, []
    run_id, exit_code, start, runtime = Path(path).stem.removeprefix("run-"), None, None, None
    for rec in wandb_records(path):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            run_id = rec.run.run_id or run_id
            start = rec.run.start_time.ToDatetime().isoformat() if rec.run.HasField("start_time") else None
            config.update({_key(u): _item_value(u) for u in rec.run.config.update})
        elif kind == "config":
            config.update({_key(u): _item_value(u) for u in rec.config.update})
        elif kind == "summary":
            summary.update({_key(u): _item_value(u) for u in rec.summary.update})
        elif kind == "history":
            hist.append({_key(it): _item_value(it) for it in rec.history.item})
        elif kind == "exit":
            exit_code, runtime = rec.exit.exit_code, rec.exit.runtime
    config.pop("_wandb", None)
    # offline runs often exit with runtime 0: fall back to the largest logged "_runtime"
    runtimes = [h.get("_runtime") for h in [*hist, summary] if isinstance(h.get("_runtime"), (int, float))]
    return {
        "run_id": config.get("run_id") or run_id,
        "status": "running" if exit_code is None else ("completed" if exit_code == 0 else "failed"),
        "error": None if exit_code in (None, 0) else f"exit code {exit_code}",
        "config": config, "summary": summary, "history": hist,
        "started_at": start, "wall_s": runtime or max(runtimes, default=None),
    }


def find_wandb_offline(root: Path, max_depth: int = 3) -> list[Path]:
    """offline-run-*/run-*.wandb files under root's wandb/ folders, not inside run dirs with a record."""
    root = Path(root)
    if root.suffix == ".wandb":
        return [root]
    patterns = ["wandb/offline-run-*/run-*.wandb", "offline-run-*/run-*.wandb"]
    patterns += [("*/" * d) + "wandb/offline-run-*/run-*.wandb" for d in range(1, max_depth)]
    out = set()
    for pat in patterns:
        for p in root.glob(pat):
            run_dir = p.parents[2]
            if not (run_dir / RECORD).exists():  # the local record is authoritative
                out.add(p)
    return sorted(out)


def project_runs(project: str) -> list[dict]:
    """The runs of an online W&B project ("entity/project") through wandb.Api(); needs a server.

    Each as {"run_id", "status", "config", "summary", "url"}: state finished -> completed,
    failed/crashed -> failed, running -> running (the mapping read_offline's exit codes give).
    Not exercised by the offline tests.
    """
    import wandb

    out = []
    for run in wandb.Api().runs(project):
        config = {k: v for k, v in dict(run.config).items() if not k.startswith("_")}
        out.append({"run_id": config.get("run_id") or run.id, "status": STATES.get(run.state, run.state),
                    "config": config, "summary": dict(run.summary), "url": run.url})
    return out
