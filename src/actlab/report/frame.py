"""Run records (record.json files, W&B offline runs, or a W&B project) -> one tidy pandas frame.

    from actlab.report.frame import load_frame
    df = load_frame("results/runs")          # one row per run, every status kept

Columns: run_id, status, error, source, kind (image | glue | mlm), dataset, model, activation, margin
(activation.margin), schedule (margin.name), seed, tags, the final metrics ("test/acc", ...), the final
dead rates (dead_fwd, dead_grad, band, zero_rate; per layer "dead_fwd/<layer>" with per_layer=True),
timings (wall_s, ...), git_commit, git_dirty, every other config key dotted ("optim.lr"), preact_hist
(absolute path or None) and path. Unreadable records become status "corrupt" rows. GLUE runs evaluated
by `actlab int8` add "fp32/test/acc", "int8/test/acc" and "int8_delta/test/acc" (INT8 minus fp32, a
fraction like the metric) for each of their test metrics.

Records are plain JSON (run.records): json.load reads one. Schema 1/2 records (per-epoch lists inside
record.json) are upgraded in memory by records.upgrade and give the same rows; `actlab migrate`
rewrites them on disk. Per-epoch series come from history.jsonl, and only with history=True.
"""

from __future__ import annotations

import json
import math
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


def _flatten_into(out: dict, d: dict, prefix: str) -> None:
    for k, v in d.items():
        t = type(v)  # exact type checks: this runs for every key of every record
        if t is dict:
            _flatten_into(out, v, f"{prefix}{k}.")
        elif t is list or t is tuple:
            out[prefix + k] = json.dumps(v)
        else:
            out[prefix + k] = v


def flatten(d: dict, prefix: str = "") -> dict:
    """{"optim": {"lr": 0.1}} -> {"optim.lr": 0.1}; lists become JSON text so columns stay hashable."""
    out: dict = {}
    _flatten_into(out, d, prefix)
    return out


def config_columns(config: dict) -> dict:
    """Flattened config with the SHORT keys renamed; tags joined by commas."""
    row: dict = {}
    _flatten_into(row, {k: v for k, v in config.items() if k != "tags"}, "")
    for long, short in SHORT.items():
        if long != short and long in row:
            row[short] = row.pop(long)
    tags = config.get("tags")
    row["tags"] = ",".join(map(str, tags)) if isinstance(tags, (list, tuple)) else tags
    return row


def is_layer_key(key: str) -> bool:
    """'dead_fwd/<layer>' or 'train_band/<layer>': a per-layer rate (kept only with per_layer=True)."""
    if "/" not in key:
        return False
    return key.partition("/")[0].removeprefix("train_") in DEAD_KEYS


def _summary_items(d: dict, per_layer: bool, keep: dict | None) -> dict:
    """`d` without per-layer rates (unless per_layer) and without the epoch counter.

    `keep` maps a key signature to its kept keys: the records of one model share one signature, so
    a load decides which of its hundreds of per-layer keys to drop once, not once per record."""
    if per_layer:
        return {k: v for k, v in d.items() if k != "epoch"}
    sig = tuple(d)
    kept = keep.get(sig) if keep is not None else None
    if kept is None:
        kept = tuple(k for k in sig if k != "epoch" and not is_layer_key(k))
        if keep is not None:
            keep[sig] = kept
    return {k: d[k] for k in kept}


def _histories(rows: list) -> tuple[list[dict], list[dict]]:
    """(training rows, dead-rate rows with "epoch") from per-epoch rows (records.merge_history's).

    An epoch the monitor measured but training did not log gets no training row: merging created it."""
    train, dead = records.split_history([r for r in rows if isinstance(r, dict)])
    train = [_finite(r) for r in train if len(r) > 1 or "epoch" not in r]
    return train, [_finite(r) for r in dead]


def _finite(d: dict) -> dict:
    """`d` with "nan"/"inf"/"-inf" strings as floats (see NONFINITE)."""
    return {k: NONFINITE.get(v, v) if type(v) is str else v for k, v in d.items()}


def record_row(rec: dict, path: Path, per_layer: bool = False, history: bool = False,
               keep: dict | None = None) -> dict:
    """One frame row from a parsed record.json at `path` (any schema; 1/2 are upgraded first).

    history=True reads the per-epoch rows: an old record's own lists, else history.jsonl beside it.
    `keep`: a cache shared by the rows of one load (see _summary_items)."""
    if not isinstance(rec, dict) or not isinstance(rec.get("config", {}), dict):
        raise ValueError("not a run record (expected a JSON object with a config object)")
    rows, layers = None, None
    if rec.get("schema") != records.SCHEMA:
        rec, rows, layers = records.upgrade(rec)
    row = config_columns(rec.get("config") or {})
    row.update(_summary_items(rec.get("metrics") or {}, per_layer, keep))
    row.update(_summary_items((rec.get("dead") or {}).get("final") or {}, per_layer, keep))
    if per_layer:  # schema 3 keeps the final per-layer rates beside the record
        row.update(layers if layers is not None else records.read_dead_layers(Path(path).parent))
    row.update({k: v for k, v in (rec.get("timings") or {}).items() if not isinstance(v, (dict, list))})
    int8 = rec.get("int8")
    if isinstance(int8, dict):  # actlab int8: dev metrics in fp32 and INT8 on CPU, and their difference
        for part, prefix in INT8_PARTS.items():
            values = int8.get(part)
            row.update({prefix + k: v for k, v in values.items()} if isinstance(values, dict) else {})
    # the record's own fields win over config keys of the same name (the config holds run_id: null)
    row.update({"run_id": rec.get("run_id") or path.parent.name, "status": rec.get("status", "unknown"),
                "error": rec.get("error"), "source": "record", "kind": records.kind_of(rec)})
    git = rec.get("git") or {}
    row["git_commit"], row["git_dirty"] = git.get("commit"), git.get("dirty")
    hist = (rec.get("files") or {}).get("preact_hist")
    row["preact_hist"] = str(path.parent / hist) if hist else None
    row["path"] = str(path)
    if history:
        row["history"], row["dead_history"] = _histories(rows or records.read_history(path.parent))
    return row


def problem_row(path: Path, status: str, error: str) -> dict:
    """A row for a run that could not be read: kept so tables count it instead of dropping it."""
    return {"run_id": path.parent.name, "status": status, "error": error, "source": "record", "path": str(path)}


def read_record(path: Path, per_layer: bool = False, history: bool = False, keep: dict | None = None) -> dict:
    """Row for one record.json; a corrupt or unreadable file gives a status "corrupt" row."""
    path = Path(path)
    try:
        with open(path, "rb", buffering=0) as f:  # one read of the whole file: no buffer to fill first
            rec = json.load(f)
        return record_row(rec, path, per_layer, history, keep)
    except (OSError, ValueError, TypeError, AttributeError) as e:  # UnicodeDecodeError is a ValueError
        return problem_row(path, "corrupt", f"{type(e).__name__}: {e}")


# --- W&B runs (wandb_reader parses them) -------------------------------------------------------------
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


def _wandb_row(run: dict, source: str, values: dict, per_layer: bool) -> dict:
    config = run["config"]
    row = {"run_id": run["run_id"], "status": run["status"], "error": run.get("error"), "source": source,
           "kind": records.kind_of({"config": config})}
    row.update(config_columns({k: v for k, v in config.items() if k != "run_id"}))
    row.update(_metric_columns(values, per_layer, row))
    return row


def read_wandb_offline(path: Path, per_layer: bool = False, history: bool = False) -> dict:
    """Row for one offline W&B run: config, summary (else last history value), exit status."""
    run = wandb_reader.read_offline(path)
    hist = run["history"]
    values = {k: v for h in [*hist, run["summary"]] for k, v in h.items()}  # summary, else last logged value
    row = _wandb_row(run, "wandb", values, per_layer)
    row["started_at"], row["wall_s"] = run["started_at"], run["wall_s"]
    row["path"] = str(path)
    if history:
        row["history"] = [{k: v for k, v in h.items() if not k.startswith("_")} for h in hist]
        row["dead_history"] = [h for h in row["history"] if any(k in h for k in DEAD_KEYS)]
    return row


def load_wandb_project(project: str, per_layer: bool = False) -> list[dict]:
    """Rows from an online W&B project ("entity/project") through wandb.Api(); needs a server."""
    rows = []
    for run in wandb_reader.project_runs(project):
        row = _wandb_row(run, "wandb-api", run["summary"], per_layer)
        row["path"] = run["url"]
        rows.append(row)
    return rows


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
    keep: dict = {}  # per-layer key filter, shared by this load's rows
    for src in map(Path, sources):
        if src.suffix == ".wandb":
            files, wandb_files = [], [src]
        elif src.suffix == ".json":
            files, wandb_files = [src], []
        else:
            files = records.find(src)
            wandb_files = wandb_reader.find_wandb_offline(src) if wandb else []
        # Serial on purpose: forked readers were slower on a shared 2-core machine (pickling rows back)
        rows += [read_record(p, per_layer, history, keep) for p in files]
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
    _numbers(df)
    return _order(df).sort_values("run_id", kind="stable", ignore_index=True)


def is_nan(x) -> bool:
    """True for None/NaN/NA (for margins, which are null for non-HeLU runs)."""
    return x is None or x is pd.NA or (isinstance(x, float) and math.isnan(x))
