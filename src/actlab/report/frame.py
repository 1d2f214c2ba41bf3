"""Run records (record.json files, W&B offline runs, or a W&B project) -> one tidy pandas frame.

    from actlab.report.frame import load_frame
    df = load_frame("results/runs")          # one row per run, every status kept

Columns: run_id, status, error, source, dataset, model, activation, margin (activation.margin),
schedule (margin.name), seed, tags, the final metrics ("test/acc", ...), the final dead rates
(dead_fwd, dead_grad, band, zero_rate; per layer "dead_fwd/<layer>" with per_layer=True),
timings (wall_s, ...), git_commit, git_dirty, every other config key dotted ("optim.lr"),
preact_hist (absolute path or None) and path. Unreadable records become status "corrupt" rows.
GLUE runs evaluated by `actlab int8` add "fp32/test/acc", "int8/test/acc" and "int8_delta/test/acc"
(INT8 minus fp32, a fraction like the metric) for each of their test metrics.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
import zlib
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

RECORD_NAME = "record.json"
DEAD_KEYS = ("dead_fwd", "dead_grad", "band", "zero_rate")
TIMING_KEYS = ("started_at", "ended_at", "wall_s", "fit_s", "test_s", "s_per_epoch")
# Config paths promoted to short column names (what tables group by); every other key stays dotted.
SHORT = {"dataset.name": "dataset", "model.name": "model", "activation.name": "activation",
         "activation.margin": "margin", "margin.name": "schedule", "seed": "seed"}
CORE = ("run_id", "status", "error", "source", *SHORT.values(), "tags")
# record["int8"] part -> column prefix ("int8_delta/test/acc" = INT8 minus fp32 test accuracy).
INT8_PARTS = {"fp32": "fp32/", "int8": "int8/", "delta": "int8_delta/"}


def flatten(d: dict, prefix: str = "") -> dict:
    """{"optim": {"lr": 0.1}} -> {"optim.lr": 0.1}; lists become JSON text so columns stay hashable."""
    out: dict = {}
    for k, v in d.items():
        t = type(v)  # exact type checks: this runs for every key of every record
        if t is dict:
            out.update(flatten(v, f"{prefix}{k}."))
        elif t is list or t is tuple:
            out[prefix + k] = json.dumps(v)
        else:
            out[prefix + k] = v
    return out


def config_columns(config: dict) -> dict:
    """Flattened config with the SHORT keys renamed; tags joined by commas."""
    flat = flatten({k: v for k, v in config.items() if k != "tags"})
    row = {SHORT.get(k, k): v for k, v in flat.items()}
    tags = config.get("tags")
    row["tags"] = ",".join(map(str, tags)) if isinstance(tags, (list, tuple)) else tags
    return row


def is_layer_key(key: str) -> bool:
    """'dead_fwd/<layer>' or 'train_band/<layer>': a per-layer rate (kept only with per_layer=True)."""
    if "/" not in key:
        return False
    return key.partition("/")[0].removeprefix("train_") in DEAD_KEYS


_KEEP: dict[tuple, tuple] = {}  # key signature -> kept keys; records of one model share one signature


def _summary_items(d: dict, per_layer: bool) -> dict:
    """`d` without per-layer rates (unless per_layer) and without the epoch counter."""
    if per_layer:
        return {k: v for k, v in d.items() if k != "epoch"}
    sig = tuple(d)
    keep = _KEEP.get(sig)
    if keep is None:
        if len(_KEEP) > 10_000:
            _KEEP.clear()
        keep = _KEEP[sig] = tuple(k for k in sig if k != "epoch" and not is_layer_key(k))
    return {k: d[k] for k in keep}


def record_row(rec: dict, path: Path, per_layer: bool = False, history: bool = False) -> dict:
    """One frame row from a parsed record.json."""
    if not isinstance(rec, dict) or not isinstance(rec.get("config", {}), dict):
        raise ValueError("not a run record (expected a JSON object with a config object)")
    row = config_columns(rec.get("config") or {})
    row.update(_summary_items(rec.get("metrics") or {}, per_layer))
    dead = rec.get("dead") or {}
    row.update(_summary_items(dead.get("final") or {}, per_layer))
    row.update({k: v for k, v in (rec.get("timings") or {}).items() if not isinstance(v, (dict, list))})
    int8 = rec.get("int8")
    if isinstance(int8, dict):  # actlab int8: dev metrics in fp32 and INT8 on CPU, and their difference
        for part, prefix in INT8_PARTS.items():
            values = int8.get(part)
            row.update({prefix + k: v for k, v in values.items()} if isinstance(values, dict) else {})
    # the record's own fields win over config keys of the same name (the config holds run_id: null)
    row.update({"run_id": rec.get("run_id") or path.parent.name, "status": rec.get("status", "unknown"),
                "error": rec.get("error"), "source": "record"})
    git = rec.get("git") or {}
    row["git_commit"], row["git_dirty"] = git.get("commit"), git.get("dirty")
    hist = (rec.get("files") or {}).get("preact_hist")
    row["preact_hist"] = str(path.parent / hist) if hist else None
    row["path"] = str(path)
    if history:
        row["history"] = rec.get("history") or []
        row["dead_history"] = dead.get("history") or []
    return row


def problem_row(path: Path, status: str, error: str) -> dict:
    """A row for a run that could not be read: kept so tables count it instead of dropping it."""
    return {"run_id": path.parent.name, "status": status, "error": error, "source": "record", "path": str(path)}


def _drop_list(text: str, i: int, needle: str, indent: str) -> str | None:
    """`text` without the list member starting at i ("\n<indent>"key": [" found there), or None.

    Pretty-printed JSON puts raw newlines only between tokens (strings escape theirs), so the list's
    closing bracket is the first "\n<indent>]" after it: deeper lines carry more spaces. Needles end
    in a rare character ('[', ']') so str.find skips through the long lists quickly.
    """
    k = i + len(needle)
    if text.startswith("]", k):  # an empty list is printed inline: "[]"
        end = k + 1
    else:
        close = text.find(f"\n{indent}]", k)
        if close < 0:
            return None
        end = close + len(indent) + 2
    if text.startswith(",", end):  # drop the member and its trailing comma
        return text[:i] + text[end + 1:]
    if text[i - 1] == ",":  # the last member: drop the comma before it
        return text[:i - 1] + text[end:]
    return None


# A per-layer rate member with a scalar value, with the comma before it: removing the match leaves valid
# JSON. ",\n" only occurs between tokens, so a match never starts inside a string.
_LAYER_MEMBER = re.compile(r',\n *"(?:train_)?(?:' + "|".join(DEAD_KEYS)
                           + r')/[^"\\\n]*": (?:null|-?[0-9][0-9.eE+-]*)(?=,?\n)')


def _cut_schema2(text: str) -> str | None:
    """A schema-2 record (indent 1) without its top-level and dead histories, or None for any other
    layout. Schema 2 writes "history" and then "dead" (its "history" last) at the end: everything
    from the top-level history on is dropped except dead's leading members, without scanning the lists."""
    if not text.startswith('{\n "schema": 2,') or not text.rstrip().endswith("\n  ]\n }\n}"):
        return None
    h = text.find('\n "history": [')  # top level: deeper members carry more indent
    d = text.find('\n "dead": {', h)
    j = text.find('\n  "history": [', d)
    if h < 0 or d < 0 or j < 0 or text.find('\n "', d + 1, j) >= 0:  # no top-level member in between
        return None
    return text[:h] + text[d:j].rstrip(",") + "\n }\n}"


def loads_summary(text: str, per_layer: bool = True) -> dict:
    """json.loads that skips the per-epoch `history` and `dead.history` of a pretty-printed record.

    Those lists are most of a record's bytes and summaries never read them: cutting them out as
    text before decoding makes big records load several times faster. Any other layout (compact
    JSON, a missing member) is decoded whole; the result is the same minus the two lists.
    per_layer=False also drops per-layer rates (not necessarily all: callers still filter).
    Schema-2 records (see records.SCHEMA) end with the lists, so the text is cut where they begin.
    """
    fast = _cut_schema2(text)
    if fast is not None:
        text = fast if per_layer else _LAYER_MEMBER.sub("", fast)
    elif text.startswith("{\n "):
        unit = " " * (len(text) - 2 - len(text[2:].lstrip(" ")))
        needle = f'\n{unit}"history": ['
        i = text.find(needle)
        cut = _drop_list(text, i, needle, unit) if i >= 0 else None
        text = cut if cut is not None else text
        d = text.find(f'\n{unit}"dead": {{')
        needle = f'\n{unit * 2}"history": ['
        i = text.find(needle, d) if d >= 0 else -1
        if i >= 0 and text.find(f"\n{unit}}}", d, i) < 0:  # no closing of dead in between: it is dead's
            cut = _drop_list(text, i, needle, unit * 2)
            text = cut if cut is not None else text
        if not per_layer:  # drop most per-layer rates as text: cheaper than decoding then dropping them
            text = _LAYER_MEMBER.sub("", text)
    rec = json.loads(text)
    if isinstance(rec, dict):
        rec.pop("history", None)
        if isinstance(rec.get("dead"), dict):
            rec["dead"].pop("history", None)
    return rec


def read_record(path: Path, per_layer: bool = False, history: bool = False) -> dict:
    """Row for one record.json; a corrupt or unreadable file gives a status "corrupt" row."""
    try:
        with open(path, "rb") as f:
            text = f.read().decode()
        rec = json.loads(text) if history else loads_summary(text, per_layer)
        return record_row(rec, path, per_layer, history)
    except (OSError, ValueError, TypeError, AttributeError) as e:  # UnicodeDecodeError is a ValueError
        return problem_row(path, "corrupt", f"{type(e).__name__}: {e}")


def find_records(root: Path, max_depth: int = 3) -> list[Path]:
    """record.json files at most `max_depth` directories below root (Hydra multirun nests runs).

    A directory holding a record.json is a run directory: its checkpoints and wandb files are not
    searched, which keeps 10,000 runs fast.
    """
    found: list[str] = []

    def walk(d: str, depth: int) -> None:
        try:
            entries = list(os.scandir(d))
        except OSError:
            return
        for e in entries:
            if e.is_dir(follow_symlinks=False):
                rec = os.path.join(e.path, RECORD_NAME)
                if os.path.exists(rec):
                    found.append(rec)
                elif depth > 1 and e.name != "wandb":
                    walk(e.path, depth - 1)

    if (root / RECORD_NAME).is_file():
        return [root / RECORD_NAME]
    walk(str(root), max_depth)
    return [Path(p) for p in sorted(found)]  # sorting str, not Path: 10x faster for 10k paths


# --- W&B offline runs ------------------------------------------------------------------------------
# A run-<id>.wandb file is a 7-byte header (":W&B", magic 0xBEE1, version) and then LevelDB-log
# blocks of 32 KiB: each chunk has a 7-byte header (crc32, length, type FULL/FIRST/MIDDLE/LAST) and
# the chunks join into protobuf `Record`s. wandb >= 0.19 moved its own reader into Go, so we parse it.
_BLOCK, _HEADER = 32768, 7
_FULL, _FIRST, _LAST = 1, 2, 4  # MIDDLE (3) chunks just accumulate


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


def _metric_columns(values: dict, per_layer: bool, taken: dict) -> dict:
    """Scalar logged values as frame columns: "dead/" prefix dropped, private "_" keys skipped,
    per-layer dead rates only with per_layer, and config-derived columns (e.g. margin) never overwritten."""
    out = {}
    for k, v in values.items():
        if k.startswith("_") or isinstance(v, (dict, list)):
            continue
        k = k.removeprefix("dead/")
        if (not per_layer and is_layer_key(k)) or k in taken:
            continue
        out[k] = v
    return out


def read_wandb_offline(path: Path, per_layer: bool = False, history: bool = False) -> dict:
    """Row for one offline W&B run: config, summary (else last history value), exit status."""
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
    values = {k: v for h in [*hist, summary] for k, v in h.items()}  # summary, else last logged value
    status = "running" if exit_code is None else ("completed" if exit_code == 0 else "failed")
    row = {"run_id": config.get("run_id") or run_id, "status": status,
           "error": None if exit_code in (None, 0) else f"exit code {exit_code}", "source": "wandb"}
    row.update(config_columns({k: v for k, v in config.items() if k not in ("run_id",)}))
    row.update(_metric_columns(values, per_layer, row))
    # offline runs often exit with runtime 0: fall back to the largest logged "_runtime"
    runtimes = [h.get("_runtime") for h in [*hist, summary] if isinstance(h.get("_runtime"), (int, float))]
    row["started_at"], row["wall_s"] = start, runtime or max(runtimes, default=None)
    row["path"] = str(path)
    if history:
        row["history"] = [{k: v for k, v in h.items() if not k.startswith("_")} for h in hist]
        row["dead_history"] = [h for h in row["history"] if any(k in h for k in DEAD_KEYS)]
    return row


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
            if not (run_dir / RECORD_NAME).exists():  # the local record is authoritative
                out.add(p)
    return sorted(out)


def load_wandb_project(project: str, per_layer: bool = False) -> list[dict]:
    """Rows from an online W&B project ("entity/project") through wandb.Api(); needs a server.

    Not exercised by the offline tests: the mapping mirrors read_wandb_offline (state finished ->
    completed, failed/crashed -> failed, running -> running).
    """
    import wandb

    states = {"finished": "completed", "failed": "failed", "crashed": "failed", "running": "running"}
    rows = []
    for run in wandb.Api().runs(project):
        config = {k: v for k, v in dict(run.config).items() if not k.startswith("_")}
        row = {"run_id": config.pop("run_id", None) or run.id, "status": states.get(run.state, run.state),
               "error": None, "source": "wandb-api"}
        row.update(config_columns(config))
        row.update(_metric_columns(dict(run.summary), per_layer, row))
        row["path"] = run.url
        rows.append(row)
    return rows


def _order(df: pd.DataFrame) -> pd.DataFrame:
    """Core columns first, then metrics ("a/b"), dead rates, timings, dotted config, provenance."""
    cols = list(df.columns)
    core = [c for c in CORE if c in cols]
    tail = [c for c in ("git_commit", "git_dirty", "preact_hist", "path", "history", "dead_history") if c in cols]
    dead = [c for c in cols if c.split("/")[0].removeprefix("train_").removesuffix("_units") in DEAD_KEYS
            and c not in core]
    timing = [c for c in TIMING_KEYS if c in cols]
    taken = set(core + tail + dead + timing)
    metrics = sorted(c for c in cols if "/" in c and c not in taken)
    rest = sorted(c for c in cols if c not in taken and c not in metrics)
    return df[core + metrics + dead + timing + rest + tail]


def load_frame(
    source: str | Path | Iterable[str | Path] = "results/runs",
    *,
    per_layer: bool = False,
    history: bool = False,
    wandb: bool = True,
    wandb_project: str | None = None,
) -> pd.DataFrame:
    """Read every run under `source` (a runs dir, a record.json, a .wandb file, or several of these).

    per_layer adds "dead_fwd/<layer>" columns; history adds object columns `history` and
    `dead_history` (lists of per-epoch dicts) for the figures. wandb=False ignores offline W&B runs.
    """
    sources = [source] if isinstance(source, (str, Path)) else list(source)
    rows: list[dict] = []
    for src in map(Path, sources):
        if src.suffix == ".wandb":
            files, wandb_files = [], [src]
        elif src.suffix == ".json":
            files, wandb_files = [src], []
        else:
            files = find_records(src)
            wandb_files = find_wandb_offline(src) if wandb else []
        # Serial on purpose: forked readers were slower on a shared 2-core machine (pickling rows back)
        rows += [read_record(p, per_layer, history) for p in files]
        for p in wandb_files:
            try:
                rows.append(read_wandb_offline(p, per_layer, history))
            except Exception as e:  # noqa: BLE001 - any unreadable log is reported as a corrupt row
                rows.append(problem_row(p, "corrupt", f"{type(e).__name__}: {e}") | {"source": "wandb"})
    if wandb_project:
        rows += load_wandb_project(wandb_project, per_layer)
    # A W&B run that mirrors a local record (same run_id) would be counted twice: the record wins.
    seen = {r["run_id"] for r in rows if r.get("source") == "record"}
    rows = [r for r in rows if r.get("source") == "record" or r["run_id"] not in seen]
    df = pd.DataFrame(rows, columns=list(CORE) + ["path"]) if not rows else pd.DataFrame(rows)
    for c in CORE + (("history", "dead_history") if history else ()):
        if c not in df:
            df[c] = None
    df["margin"] = pd.to_numeric(df["margin"], errors="coerce").astype("float64")
    df["seed"] = pd.to_numeric(df["seed"], errors="coerce").astype("Int64")
    return _order(df).sort_values("run_id", kind="stable", ignore_index=True)


def is_nan(x) -> bool:
    """True for None/NaN/NA (for margins, which are null for non-HeLU runs)."""
    return x is None or x is pd.NA or (isinstance(x, float) and math.isnan(x))
