"""Upgrade old run records to schema 3 in place: `actlab migrate [RUNS_DIR]`.

    actlab migrate results/runs        # "migrated 120, already schema 3: 4, failed: 0"

Schema 1/2 records kept the per-epoch lists (`history`, `dead.history`) inside record.json; schema 3
keeps them in history.jsonl beside it (run.records). Each old record is rewritten atomically: first
history.jsonl, then the small record.json, so a crash in between leaves the old record, which a
second run migrates again. Schema-3 records are not touched, so migrating twice changes nothing.
load_frame reads either schema the same way; migrating makes `json.load(record.json)` small and fast.
A record that cannot be read is reported in one line and left as it is (exit code 1).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from actlab.run import records


def migrate_record(path: Path) -> bool:
    """Upgrade the record at `path` in place; False if it already was schema 3. Raises on a record that
    cannot be read or is not a run record (OSError, ValueError, TypeError, AttributeError)."""
    path = Path(path)
    with open(path, "rb") as f:
        rec = json.load(f)
    if not isinstance(rec, dict) or not isinstance(rec.get("config", {}), dict):
        raise ValueError("not a run record (expected a JSON object with a config object)")
    if rec.get("schema") == records.SCHEMA:
        return False
    new, rows, layers = records.upgrade(rec)
    if rows:
        records.write_history(path.parent, rows)
    if layers:
        records.atomic.write_json(path.parent / records.DEAD_LAYERS, {"final": records.clean(layers)}, indent=1)
    records.write_atomic(path, new)
    return True


def migrate(root: Path, say=print) -> dict[str, list[str]]:
    """Migrate every record under root; {"migrated", "current", "failed"}: record paths ("<path>: <error>"
    for failed ones, each also said in one line)."""
    out: dict[str, list[str]] = {"migrated": [], "current": [], "failed": []}
    for path in records.find(Path(root)):
        try:
            out["migrated" if migrate_record(path) else "current"].append(str(path))
        except (OSError, ValueError, TypeError, AttributeError) as e:  # UnicodeDecodeError is a ValueError
            line = f"{path}: {type(e).__name__}: {e}"
            out["failed"].append(line)
            say(f"failed {line}")
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs_dir", nargs="?", default="results/runs", help="folder of run directories")


def run(args: argparse.Namespace) -> int:
    root = Path(args.runs_dir)
    if not root.exists():
        print(f"no such folder: {root}")
        return 2
    out = migrate(root)
    print(f"migrated {len(out['migrated'])}, already schema {records.SCHEMA}: {len(out['current'])}, "
          f"failed: {len(out['failed'])}")
    return 1 if out["failed"] else 0
