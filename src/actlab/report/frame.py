"""Run records (record.json files, W&B offline runs, or a W&B project) -> one tidy pandas frame.

    from actlab.report.frame import load_frame
    df = load_frame("results/runs")          # one row per run, every status kept

Columns: run_id, status, error, source, kind (image | glue | mlm), dataset, model, activation, margin
(activation.margin), schedule (margin.name), seed, tags, the final metrics ("test/acc", ...), the final
dead rates (dead_fwd, dead_grad, band, zero_rate; per layer "dead_fwd/<layer>" with per_layer=True),
timings (wall_s, ...), git_commit, git_dirty, every other config key dotted ("optim.lr"), preact_hist
(absolute path or None) and path. GLUE runs evaluated by `actlab int8` add "fp32/test/acc",
"int8/test/acc" and "int8_delta/test/acc" (INT8 minus fp32, a fraction like the metric) for each of
their test metrics.

No wrong result enters as a result: a record that cannot be read, has no config, or holds text that is not
valid Unicode (a directory name that is not UTF-8, a lone surrogate escape) is a "corrupt" row (path and
error with \\x escapes); a "completed" run whose final metrics are not all finite (null, "nan", NaN: old
writers) is "failed". A W&B run that mirrors a record is dropped (the record wins; see _not_mirrored).

Records are plain JSON (run.records) read with json.loads; schema 1/2 ones (per-epoch lists inside
record.json) are upgraded in memory by records.upgrade and give the same rows (`actlab migrate` rewrites
them on disk). history.jsonl is read only with history=True, dead_layers.json only with per_layer=True.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from actlab.report import wandb_reader
from actlab.run import records

DEAD_KEYS = ("dead_fwd", "dead_grad", "band", "zero_rate")
TIMING_KEYS = ("started_at", "ended_at", "wall_s", "fit_s", "test_s", "s_per_epoch")
# Config paths promoted to short column names (what tables group by); every other key stays dotted.
SHORT = {"dataset.name": "dataset", "model.name": "model", "activation.name": "activation",
         "activation.margin": "margin", "margin.name": "schedule", "seed": "seed"}
CORE = ("run_id", "status", "error", "source", "kind", *SHORT.values(), "tags")
# record["int8"] part -> column prefix ("int8_delta/test/acc" = INT8 minus fp32 test accuracy).
INT8_PARTS = {"fp32": "fp32/", "int8": "int8/", "delta": "int8_delta/"}
_TAIL = ("git_commit", "git_dirty", "preact_hist", "path", "history", "dead_history")
# records.clean writes non-finite numbers as these strings (strict JSON has no NaN): numbers again here.
NONFINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
_PARTS = ("metrics", "dead", "timings", "git", "files", "int8")  # of a record, beside its config
_SHORT_OF = {long: short for long, short in SHORT.items() if long != short}  # the renamed ones
_SCALARS = frozenset({str, int, float, bool, type(None)})  # JSON leaves: a dict of only these is flattened in C
_NUMBERS = frozenset({float, int, bool})
_METRIC_PREFIXES = ("train/", "val/", "test/")
_EMPTY: dict = {}  # stands for a missing part; never written to
NOT_UTF8 = "path is not valid UTF-8 (shown with \\x escapes): rename the directory to read this run"


class NotARecord(ValueError):
    """What makes a parsed document no usable run record; its row is "corrupt" with this as the error."""


# --- row parts -------------------------------------------------------------------------------------------
def _flatten_into(out: dict, d: dict, prefix: str) -> None:
    for k, v in d.items():  # JSON objects: str keys
        t = type(v)  # exact type checks: this runs for every key of every record
        if t is dict:
            sub = f"{prefix}{k}."
            if _SCALARS.issuperset(map(type, v.values())):  # a group of plain values (the usual case): no loop
                out.update(zip(map(sub.__add__, v), v.values()))
            else:
                _flatten_into(out, v, sub)
        elif t is list or t is tuple:  # JSON text, so that columns stay hashable; the config's tags joined
            out[prefix + k] = json.dumps(v) if prefix or k != "tags" else ",".join(map(str, v))
        else:
            out[prefix + k] = v


def config_columns(config: dict) -> dict:
    """Flattened config with the SHORT keys renamed; tags joined by commas."""
    row: dict = {}
    _flatten_into(row, config, "")
    for long, short in _SHORT_OF.items():
        if long in row:
            row[short] = row.pop(long)
    row.setdefault("tags", None)
    return row


def is_layer_key(key: str) -> bool:
    """'dead_fwd/<layer>' or 'train_band/<layer>': a per-layer rate (kept only with per_layer=True)."""
    return "/" in key and key.partition("/")[0].removeprefix("train_") in DEAD_KEYS


def _rates(row: dict, d: dict, per_layer: bool, keep: dict) -> None:
    """Final metrics or dead rates `d` into `row`, but the epoch counter and (unless per_layer) per-layer rates.
    `keep`: key signature -> keys to drop; the records of one model share one, so each key is judged once."""
    if type(d) is not dict:
        raise NotARecord("not a run record (its metrics or dead rates are not a JSON object)")
    row.update(d)
    sig = tuple(d)
    drop = keep.get(sig)
    if drop is None:
        drop = keep[sig] = tuple(k for k in sig if k == "epoch" or (not per_layer and is_layer_key(k)))
    for k in drop:
        del row[k]


def non_finite(metrics: dict) -> list[str]:
    """"name=value" of the final metrics that are null (old writers' NaN), NONFINITE strings, NaN or inf."""
    bad = []
    for k, v in metrics.items():
        t = type(v)
        if v is None or (t is str and v in NONFINITE) or (t is float and not math.isfinite(v)):
            bad.append(f"{k}={'null' if v is None else v}")
    return bad


def _status(status, error, metrics: dict) -> tuple:
    """(status, error); "completed" with final metrics that are not all finite is "failed" (files unchanged)."""
    if status == "completed" and metrics:
        values = metrics.values()
        if not (_NUMBERS.issuperset(map(type, values)) and all(map(math.isfinite, values))):
            bad = non_finite(metrics)
            if bad:
                return "failed", f"non-finite final metrics ({', '.join(bad)})"
    return status, error


# --- records ------------------------------------------------------------------------------------------------
def _histories(rows: list) -> tuple[list[dict], list[dict]]:
    """(training rows, dead-rate rows with "epoch") from per-epoch rows (records.merge_history's); an epoch
    the monitor measured but training did not log gets no training row: merging created it."""
    train, dead = records.split_history([r for r in rows if isinstance(r, dict)])
    train = [_finite(r) for r in train if len(r) > 1 or "epoch" not in r]
    return train, [_finite(r) for r in dead]


def _finite(d: dict) -> dict:
    """`d` with "nan"/"inf"/"-inf" strings as floats (see NONFINITE)."""
    return {k: NONFINITE.get(v, v) if type(v) is str else v for k, v in d.items()}


def printable(text: str) -> str:
    """`text` as valid Unicode (what pandas, CSV and the console need): the surrogate escapes that stand
    for undecodable bytes in file names as \\xNN, other lone surrogates as \\udNNN."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return "".join(c if not "\ud800" <= c <= "\udfff" else f"\\x{ord(c) - 0xDC00:02x}"
                       if "\udc80" <= c <= "\udcff" else f"\\u{ord(c):04x}" for c in text)


def _invalid_text(doc) -> str | None:
    """Why `doc` cannot enter the frame (pandas keeps text as UTF-8), or None when it can."""
    try:
        json.dumps(doc, ensure_ascii=False, default=str).encode("utf-8")
    except UnicodeEncodeError as e:
        return f"holds text that is not valid Unicode ({printable(e.object[max(e.start - 20, 0):e.end + 20])!r})"
    return None


def problem_row(path: str | Path, status: str, error: str) -> dict:
    """A row for a run that could not be read: kept so tables count it instead of dropping it."""
    path = printable(os.fspath(path))
    return {"run_id": os.path.basename(os.path.dirname(path)), "status": status, "error": printable(error),
            "source": "record", "path": path}


def _parse(path: str) -> tuple[dict, tuple | None]:
    """(record, (history rows, per-layer rates) of an upgraded schema-1/2 record, else None) at `path`;
    NotARecord, OSError or ValueError when it is no usable record."""
    if not path.isascii() and printable(path) != path:
        raise NotARecord(NOT_UTF8)
    fd = os.open(path, os.O_RDONLY)  # open, one read, close: no buffer, no fstat (a record is ~2 KB)
    try:
        data = os.read(fd, 1 << 16)
        while len(data) % (1 << 16) == 0 and (more := os.read(fd, 1 << 16)):
            data += more
    finally:
        os.close(fd)
    try:
        rec = json.loads(data.decode())  # UTF-8, as records are written: no encoding to detect
    except ValueError:  # a BOM, UTF-16, bad bytes: json.loads says what it makes of them
        rec = json.loads(data)
    if type(rec) is not dict:
        raise NotARecord("not a run record (expected a JSON object with a config object)")
    config = rec.get("config")
    if type(config) is not dict or not config:
        raise NotARecord("no config" if not config else "not a run record (its config is not a JSON object)")
    # a \u escape of a surrogate (a pair decodes to one character, a lone one is text pandas refuses), or
    # the bytes of one (json.loads lets them pass)
    if b"\\ud" in data or b"\\uD" in data or b"\xed" in data:
        bad = _invalid_text({k: rec.get(k) for k in ("run_id", "status", "error", "kind", "config", *_PARTS)})
        if bad:
            raise NotARecord(f"record.json {bad}")
    if rec.get("schema") == records.SCHEMA:
        return rec, None
    rec, rows, layers = records.upgrade(rec)
    return rec, (rows, layers)


def _row(rec: dict, path: str, per_layer: bool, history: bool, keep: dict, old: tuple | None) -> dict:
    """The frame row of a parsed record (`old`: what records.upgrade took out of a schema-1/2 one)."""
    row = config_columns(rec["config"])
    metrics = rec.get("metrics") or _EMPTY
    _rates(row, metrics, per_layer, keep)
    _rates(row, (rec.get("dead") or _EMPTY).get("final") or _EMPTY, per_layer, keep)
    if per_layer:  # schema 3 keeps the final per-layer rates beside the record
        row.update(old[1] if old else records.read_dead_layers(Path(os.path.dirname(path))))
    timings = rec.get("timings") or _EMPTY
    if _SCALARS.issuperset(map(type, timings.values())):
        row.update(timings)
    else:
        row.update({k: v for k, v in timings.items() if type(v) not in (dict, list)})
    int8 = rec.get("int8")
    if isinstance(int8, dict):  # actlab int8: dev metrics in fp32 and INT8 on CPU, and their difference
        for part, prefix in INT8_PARTS.items():
            values = int8.get(part)
            row.update({prefix + k: v for k, v in values.items()} if isinstance(values, dict) else {})
    # the record's own fields win over config keys of the same name (the config holds run_id: null)
    rid = rec.get("run_id")
    row["run_id"] = rid if type(rid) is str and rid else str(rid) if rid else os.path.basename(os.path.dirname(path))
    row["status"], row["error"] = _status(rec.get("status", "unknown"), rec.get("error"), metrics)
    row["source"] = "record"
    row["kind"] = rec.get("kind") or records.kind_of(rec)
    git = rec.get("git") or _EMPTY
    row["git_commit"], row["git_dirty"] = git.get("commit"), git.get("dirty")
    hist = (rec.get("files") or _EMPTY).get("preact_hist")
    row["preact_hist"] = os.path.join(os.path.dirname(path), hist) if hist and type(hist) is str else None
    row["path"] = path
    if history:
        row["history"], row["dead_history"] = _histories(
            (old[0] if old else None) or records.read_history(Path(os.path.dirname(path))))
    return row


def _read_records(paths: list[str], per_layer: bool, history: bool) -> list[dict]:
    """A row per record.json: a "corrupt" one for each that is unreadable or no run record."""
    rows, keep = [], {}  # keep: shared by this load's rows (see _rates)
    for p in paths:
        try:
            rec, old = _parse(p)
            rows.append(_row(rec, p, per_layer, history, keep, old))
        except NotARecord as e:
            rows.append(problem_row(p, "corrupt", str(e)))
        except (OSError, ValueError, TypeError, AttributeError) as e:  # UnicodeDecodeError is a ValueError
            rows.append(problem_row(p, "corrupt", f"{type(e).__name__}: {e}"))
    return rows


def read_record(path: str | Path, per_layer: bool = False, history: bool = False) -> dict:
    """Row for one record.json; a corrupt or unreadable file gives a status "corrupt" row."""
    return _read_records([os.fspath(path)], per_layer, history)[0]


# --- W&B runs (wandb_reader parses them) -------------------------------------------------------------
Mirror = tuple[dict, str | None, str | None]  # a W&B row, the run_id its run logged, its W&B run id


def _wandb_row(run: dict, source: str, path: str, per_layer: bool) -> dict:
    """A row from wandb_reader's run: logged values never overwrite config-derived columns (margin)."""
    row = config_columns({k: v for k, v in run["config"].items() if k != "run_id"})
    row.update({k: v for k, v in run["values"].items() if k not in row and (per_layer or not is_layer_key(k))})
    row["run_id"], row["source"], row["path"] = str(run["run_id"]), source, path
    row["status"], row["error"] = _status(run["status"], run.get("error"),
                                          {k: v for k, v in row.items() if k.startswith(_METRIC_PREFIXES)})
    row["kind"] = records.kind_of({"config": run["config"]})
    return row


def _offline_row(run: dict, path: str | Path, per_layer: bool, history: bool) -> dict:
    row = _wandb_row(run, "wandb", os.fspath(path), per_layer)
    row["started_at"], row["wall_s"] = run["started_at"], run["wall_s"]
    if history:
        row["history"] = run["rows"]
        row["dead_history"] = [h for h in run["rows"] if any(k in h for k in DEAD_KEYS)]
    return row


def read_wandb_offline(path: str | Path, per_layer: bool = False, history: bool = False) -> dict:
    """Row for one offline W&B run: config, summary (else last history value), exit status."""
    return _offline_row(wandb_reader.read_offline(Path(path)), path, per_layer, history)


def _mirror(run: dict | None, row: dict) -> Mirror:
    """What load_frame matches records on; a row whose text is not valid Unicode becomes a corrupt row."""
    path = row.get("path") or ""
    bad = NOT_UTF8 if printable(path) != path else _invalid_text(row)
    if bad:
        return problem_row(path, "corrupt", bad) | {"source": row["source"]}, None, None
    logged = run.get("logged_run_id") if run else None
    return row, str(logged) if logged else None, run.get("wandb_id") if run else None


def _read_wandb(path: Path, per_layer: bool, history: bool) -> Mirror:
    try:
        run = wandb_reader.read_offline(path)
        return _mirror(run, _offline_row(run, path, per_layer, history))
    except Exception as e:  # noqa: BLE001 - any unreadable log is reported as a corrupt row
        return _mirror(None, problem_row(path, "corrupt", f"{type(e).__name__}: {e}") | {"source": "wandb"})


def _project_mirrors(project: str, per_layer: bool) -> list[Mirror]:
    return [_mirror(r, _wandb_row(r, "wandb-api", r["url"], per_layer)) for r in wandb_reader.project_runs(project)]


def load_wandb_project(project: str, per_layer: bool = False) -> list[dict]:
    """Rows from an online W&B project ("entity/project") through wandb.Api(); needs a server."""
    return [row for row, _, _ in _project_mirrors(project, per_layer)]


def _not_mirrored(ids: set, mirrors: list[Mirror]) -> list[dict]:
    """The W&B rows that mirror no record with a run_id in `ids` (the record wins). A W&B run logged with
    the run_id in its config matches on it; one logged before (config run_id null) on its W&B id, which
    is the record's run_id with "." and other characters as "_", cut to 64 (records.wandb_id)."""
    wids = {records.wandb_id(i) for i in ids} if any(logged is None for _, logged, _ in mirrors) else set()
    return [row for row, logged, wid in mirrors if (logged not in ids if logged else wid not in wids)]


# --- the frame -----------------------------------------------------------------------------------------
def _is_dead(col: str) -> bool:
    return col.split("/")[0].removeprefix("train_").removesuffix("_units") in DEAD_KEYS


def _numbers(df: pd.DataFrame) -> None:
    """Metric, dead-rate and duration columns that hold NONFINITE strings become numeric, in place
    (numeric columns are skipped: a load without a non-finite value costs next to nothing)."""
    for c in df.columns:
        if df[c].dtype.kind in "biufcmM" or not ("/" in c or _is_dead(c) or c in TIMING_KEYS[2:]):
            continue
        try:
            hit = df[c].isin(list(NONFINITE))
        except TypeError:  # unhashable values (a list logged as a metric): not numbers anyway
            continue
        if hit.any():
            fixed = df[c].mask(hit, df[c].map(NONFINITE))
            try:
                df[c] = pd.to_numeric(fixed)
            except (ValueError, TypeError):
                df[c] = fixed


def _order(df: pd.DataFrame) -> pd.DataFrame:
    """Core columns first, then metrics ("a/b"), dead rates, timings, dotted config, provenance."""
    cols = list(df.columns)
    core = [c for c in CORE if c in cols]
    tail = [c for c in _TAIL if c in cols]
    dead = [c for c in cols if _is_dead(c) and c not in core]
    timing = [c for c in TIMING_KEYS if c in cols]
    taken = set(core + tail + dead + timing)
    metrics = sorted(c for c in cols if "/" in c and c not in taken)
    rest = sorted(c for c in cols if c not in taken and c not in metrics)
    return df[core + metrics + dead + timing + rest + tail]


def load_frame(source: str | Path | Iterable[str | Path] = "results/runs", *, per_layer: bool = False,
               history: bool = False, wandb: bool = True, wandb_project: str | None = None) -> pd.DataFrame:
    """Read every run under `source` (a runs dir, a record.json, a .wandb file, or several of these).

    per_layer adds "dead_fwd/<layer>" columns; history adds object columns `history` and
    `dead_history` (lists of per-epoch dicts) for the figures. wandb=False ignores offline W&B runs.
    """
    sources = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    files: list[str] = []
    wandb_files: list[Path] = []
    for src in map(os.fspath, sources):
        if src.endswith(".wandb"):
            wandb_files.append(Path(src))
        elif src.endswith(".json"):
            files.append(src)
        else:  # one walk finds the records and the wandb folders outside run dirs
            dirs: list[str] = []
            files += records.find_paths(src, wandb_dirs=dirs if wandb else None)
            wandb_files += wandb_reader.offline_runs(Path(src), dirs) if wandb else []
    # Serial on purpose: forked readers were slower on a shared 2-core machine (pickling rows back)
    rows = _read_records(files, per_layer, history)
    mirrors = [_read_wandb(p, per_layer, history) for p in wandb_files]
    if wandb_project:
        mirrors += _project_mirrors(wandb_project, per_layer)
    if mirrors:  # a W&B run that mirrors a local record would be counted twice
        rows += _not_mirrored({r["run_id"] for r in rows}, mirrors)
    df = pd.DataFrame(rows) if rows else pd.DataFrame(columns=[*CORE, "path"])
    for c in CORE + (("history", "dead_history") if history else ()):
        if c not in df:
            df[c] = None
    df["margin"] = pd.to_numeric(df["margin"], errors="coerce").astype("float64")
    df["seed"] = pd.to_numeric(df["seed"], errors="coerce").astype("Int64")
    _numbers(df)
    return _order(df).sort_values("run_id", kind="stable", ignore_index=True)


def is_nan(x) -> bool:
    """True for None/NaN/NA (for margins, which are null for non-HeLU runs)."""
    return x is None or x is pd.NA or (isinstance(x, float) and math.isnan(x))
