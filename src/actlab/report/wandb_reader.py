"""W&B runs as plain data: offline `run-<id>.wandb` transaction logs (parsed here) and online projects.

    run = read_offline(Path("wandb/offline-run-x/run-x.wandb"))  # {"run_id", "status", "config", ...}
    paths = find_wandb_offline(Path("results/runs"))              # offline runs without a local record

Knows the W&B formats, not the frame's columns: frame.py turns these dicts into rows (read_wandb_offline,
load_wandb_project). wandb >= 0.19 moved its own log reader into Go, so the log is parsed here. Metric
names are given as records give them (`epoch_names`): Lightning's "train/loss_epoch" is "train/loss".
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterable
from pathlib import Path

from actlab.run import records

# A run-<id>.wandb file is a 7-byte header (":W&B", magic 0xBEE1, version) and then LevelDB-log
# blocks of 32 KiB: each chunk has a 7-byte header (crc32, length, type FULL/FIRST/MIDDLE/LAST) and
# the chunks join into protobuf `Record`s.
_BLOCK, _HEADER = 32768, 7
_FULL, _FIRST, _LAST = 1, 2, 4  # MIDDLE (3) chunks just accumulate
# Online run states -> record statuses.
STATES = {"finished": "completed", "failed": "failed", "crashed": "failed", "running": "running"}
_METRIC_PREFIXES = ("train/", "val/", "test/")
_COUNTERS = frozenset({"epoch", "step", "trainer/global_step"})  # a logged row of only these has no metric


def epoch_names(values: dict) -> dict:
    """Logged values under the names records use (callbacks.history.epoch_metrics's rule, values kept as
    logged): `train/`, `val/`, `test/` metrics logged per step ("*_step") dropped, "_epoch" suffixes removed.
    Lightning logs `self.log(..., on_step=True, on_epoch=True)` as "train/loss_step" and "train/loss_epoch"."""
    out = {}
    for k, v in values.items():
        if k.startswith(_METRIC_PREFIXES):
            if k.endswith("_step"):
                continue
            k = k.removesuffix("_epoch")
        out[k] = v
    return out


def scalars(values: dict) -> dict:
    """The logged values that can be frame cells: private "_" keys and dicts/lists dropped, the monitor's
    "dead/" prefix too ("dead/dead_fwd" is a record's "dead_fwd")."""
    return {k.removeprefix("dead/"): v for k, v in values.items()
            if not k.startswith("_") and not isinstance(v, (dict, list))}


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
    """One offline run: {"run_id", "wandb_id", "logged_run_id", "status", "error", "config", "summary",
    "history", "values", "rows", "started_at", "wall_s"}.

    run_id: the actlab run_id the runner puts in the W&B config ("logged_run_id"; None in runs logged
    before it did), else W&B's own id ("wandb_id": records.wandb_id of the run_id). config without W&B's
    "_wandb"; summary and history (the logged rows in order, private "_" keys included) with epoch_names;
    values: the final scalars (summary, else the last logged value); rows: the history rows that log a
    metric, without private keys. Status from the exit record: none yet is "running", exit code 0
    "completed".
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
            hist.append(epoch_names({_key(it): _item_value(it) for it in rec.history.item}))
        elif kind == "exit":
            exit_code, runtime = rec.exit.exit_code, rec.exit.runtime
    config.pop("_wandb", None)
    # offline runs often exit with runtime 0: fall back to the largest logged "_runtime"
    runtimes = [h.get("_runtime") for h in [*hist, summary] if isinstance(h.get("_runtime"), (int, float))]
    logged, summary = config.get("run_id"), epoch_names(summary)
    rows = [{k: v for k, v in h.items() if not k.startswith("_")} for h in hist]
    return {
        "run_id": logged or run_id, "wandb_id": run_id, "logged_run_id": logged,
        "status": "running" if exit_code is None else ("completed" if exit_code == 0 else "failed"),
        "error": None if exit_code in (None, 0) else f"exit code {exit_code}",
        "config": config, "summary": summary, "history": hist,
        "values": scalars({k: v for h in [*hist, summary] for k, v in h.items()}),
        "rows": [r for r in rows if not r.keys() <= _COUNTERS],
        "started_at": start, "wall_s": runtime or max(runtimes, default=None),
    }


def find_wandb_offline(root: Path, max_depth: int = 3) -> list[Path]:
    """offline-run-*/run-*.wandb files under root's wandb/ folders, not inside run dirs with a record."""
    if str(root).endswith(".wandb"):
        return [Path(root)]
    dirs: list[str] = []
    records.find_paths(root, max_depth, wandb_dirs=dirs)
    return offline_runs(root, dirs)


def offline_runs(root: Path, wandb_dirs: list[str]) -> list[Path]:
    """The offline-run-*/run-*.wandb files in `wandb_dirs` (records.find_paths's, met outside run dirs)
    and directly in root (a wandb folder itself), unless root's parent is a run dir (the local record is
    authoritative)."""
    out = [p for d in wandb_dirs for p in Path(d).glob("offline-run-*/run-*.wandb")]
    root = Path(root)
    if not (root.parent / records.RECORD).exists():
        out += root.glob("offline-run-*/run-*.wandb")
    return sorted(set(out))


def project_runs(project: str) -> list[dict]:
    """The runs of an online W&B project ("entity/project") through wandb.Api(); needs a server.

    Each as {"run_id", "wandb_id", "logged_run_id", "status", "config", "summary", "values", "url"} (as
    read_offline's): state finished -> completed, failed/crashed -> failed, running -> running (the
    mapping read_offline's exit codes give). Not exercised by the offline tests.
    """
    import wandb

    out = []
    for run in wandb.Api().runs(project):
        config = {k: v for k, v in dict(run.config).items() if not k.startswith("_")}
        logged, summary = config.get("run_id"), epoch_names(dict(run.summary))
        out.append({"run_id": logged or run.id, "wandb_id": run.id, "logged_run_id": logged,
                    "status": STATES.get(run.state, run.state), "config": config, "summary": summary,
                    "values": scalars(summary), "url": run.url})
    return out
