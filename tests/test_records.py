"""Run records -> frame rows for every schema (1, 2: lists inside record.json; 3: history.jsonl), the kind
column, damaged files, and `actlab migrate` (old records upgraded in place, same frame before and after).

    .venv/bin/python -m pytest tests/test_records.py -q
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

import pandas as pd
import pytest

from actlab.cli import main as cli
from actlab.report import migrate
from actlab.report.frame import load_frame, read_record
from actlab.run import records

LAYERS = ("block1.0.act1", "block1.0.act2", "act")
EPOCHS = 3


def _dead(e: int, train: bool = True) -> dict:
    """Monitor rates of epoch e: overall and per layer, on the probe (and on train)."""
    d = {}
    for pre in ("", "train_") if train else ("",):
        for i, rate in enumerate(("dead_fwd", "dead_grad", "zero_rate", "band")):
            d[f"{pre}{rate}"] = 0.1 * i + 0.01 * e
            d |= {f"{pre}{rate}/{n}": 0.1 * i + 0.01 * e + 0.001 * j for j, n in enumerate(LAYERS)}
        d[f"{pre}dead_fwd_units"] = 0.05 + 0.01 * e
    return d


def _parts(status: str = "completed", task: str = "actlab.task.Classifier") -> tuple[dict, list, list]:
    """(record fields without per-epoch data, training rows, dead rows with "epoch") of one run.

    A failed run logged one epoch of training but the monitor measured all three (as old records show)."""
    train = [{"epoch": e, "step": 10 * (e + 1), "train/loss": 1.0 / (e + 1), "val/acc": 0.5 + 0.1 * e,
              "lr": 0.1, "margin": 0.05} for e in range(EPOCHS if status != "failed" else 1)]
    dead = [{"epoch": e, **_dead(e)} for e in range(EPOCHS)]
    base = {
        "run_id": "cifar10-wrn-helu-s0", "status": status,
        "error": "RuntimeError: boom" if status == "failed" else None,
        "config": {"seed": 0, "dataset": {"name": "cifar10", "batch_size": 128}, "model": {"name": "wrn40_4"},
                   "activation": {"name": "helu", "margin": 0.05}, "margin": {"name": "constant"},
                   "optim": {"name": "sgd", "lr": 0.1, "betas": [0.9, 0.99]}, "task": {"_target_": task},
                   "tags": ["a", "b"]},
        "metrics": {"test/acc": 0.9, "test/loss": 0.3} if status == "completed" else {},
        "dead": {"final": {"epoch": EPOCHS - 1, **_dead(EPOCHS - 1, train=False)}},
        "timings": {"started_at": "2025-01-01T00:00:00+00:00", "wall_s": 60.0, "s_per_epoch": 20.0},
        "versions": {"torch": "2.4"}, "git": {"commit": "abc", "dirty": True}, "host": {"cpu_count": 2},
        "files": {"preact_hist": "preact_hist.json"},
    }
    return base, train, dead


def write_schema1(run_dir: Path, base: dict, train: list, dead: list) -> None:
    """No "schema" key, lists anywhere (here: first)."""
    rec = {"history": train, "dead": {"history": dead, **base["dead"]}}
    rec |= {k: v for k, v in base.items() if k != "dead"}
    _write(run_dir / records.RECORD, json.dumps(rec, indent=2))


def write_schema2(run_dir: Path, base: dict, train: list, dead: list) -> None:
    """"schema": 2 first, the per-epoch lists last (dead's history last within dead)."""
    rec = {"schema": 2, **{k: v for k, v in base.items() if k != "dead"}, "history": train,
           "dead": {**base["dead"], "history": dead}}
    _write(run_dir / records.RECORD, json.dumps(rec, indent=1))


def write_schema3(run_dir: Path, base: dict, train: list, dead: list, kind: str = "image") -> None:
    """What the runner writes: a small record.json with kind and the aggregate final dead rates,
    dead_layers.json with the per-layer ones, and history.jsonl (dead rates under "dead")."""
    agg, layers = records.split_dead(base["dead"]["final"])
    rec = {"schema": 3, "kind": kind, **base, "dead": {"final": agg},
           "files": {**base["files"], "history": records.HISTORY, "dead_layers": records.DEAD_LAYERS}}
    _write(run_dir / records.RECORD, json.dumps(rec, indent=1))
    _write(run_dir / records.DEAD_LAYERS, json.dumps({"final": layers}))
    by_epoch = {r["epoch"]: dict(r) for r in train}
    for d in dead:
        rates = {k: v for k, v in d.items() if k != "epoch"}
        by_epoch.setdefault(d["epoch"], {"epoch": d["epoch"]})["dead"] = rates
    _write(run_dir / records.HISTORY, "".join(json.dumps(by_epoch[e]) + "\n" for e in sorted(by_epoch)))


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _frame(root: Path, **kw) -> pd.DataFrame:
    return load_frame(root, wandb=False, **kw).drop(columns=["path", "preact_hist"])


def _same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(a, b)


# --- frame rows from every schema ------------------------------------------------------------------------
@pytest.mark.parametrize("status", ["completed", "failed"])
def test_schemas_1_2_3_give_the_same_rows(tmp_path, status):
    base, train, dead = _parts(status)
    for schema, write in ((1, write_schema1), (2, write_schema2), (3, write_schema3)):
        write(tmp_path / f"s{schema}" / base["run_id"], base, train, dead)
    for kw in ({}, {"per_layer": True}, {"history": True}):
        one, two, three = (_frame(tmp_path / f"s{s}", **kw) for s in (1, 2, 3))
        _same(one, two)
        _same(one, three)
    row = _frame(tmp_path / "s1", history=True).iloc[0]
    got = (row["status"], row["kind"], row["dataset"], row["margin"], row["tags"])
    assert got == (status, "image", "cifar10", 0.05, "a,b")
    assert row["optim.betas"] == "[0.9, 0.99]" and row["dead_fwd"] == pytest.approx(0.02)
    assert row["history"] == train  # the training rows as logged: no rows for monitor-only epochs
    assert row["dead_history"] == dead
    assert "dead_fwd/act" not in row
    assert _frame(tmp_path / "s3", per_layer=True).iloc[0]["dead_fwd/act"] == pytest.approx(0.022)


def test_kind_column_from_the_record_or_the_legacy_task_class(tmp_path):
    legacy = {"actlab.task.Classifier": "image", "actlab.glue_task.GLUEClassifier": "glue",
              "actlab.mlm_task.MaskedLM": "mlm"}
    for i, task in enumerate(legacy):
        base, train, dead = _parts(task=task)
        write_schema2(tmp_path / "runs" / f"legacy{i}", dict(base, run_id=f"legacy{i}"), train, dead)
    base, train, dead = _parts(task="actlab.tasks.glue.GLUEClassifier")
    write_schema3(tmp_path / "runs" / "new", dict(base, run_id="new"), train, dead, kind="glue")
    df = load_frame(tmp_path / "runs")
    assert dict(zip(df["run_id"], df["kind"])) == {"legacy0": "image", "legacy1": "glue", "legacy2": "mlm",
                                                   "new": "glue"}
    assert list(df.columns[:5]) == ["run_id", "status", "error", "source", "kind"]


def test_damaged_history_and_records(tmp_path):
    base, train, dead = _parts()
    runs = tmp_path / "runs"
    for name in ("torn", "nohist", "junk"):
        write_schema3(runs / name, dict(base, run_id=name), train, dead)
    torn = runs / "torn" / records.HISTORY
    lines = torn.read_text().splitlines(keepends=True)
    torn.write_text(lines[0] + lines[1][: len(lines[1]) // 2])  # a copy taken mid-write: the last line cut
    (runs / "nohist" / records.HISTORY).unlink()
    (runs / "junk" / records.HISTORY).write_text(lines[0] + "7\n" + lines[1])  # a line that is no object
    _write(runs / "cut" / records.RECORD, (runs / "torn" / records.RECORD).read_text()[:-40])
    _write(runs / "array" / records.RECORD, "[1, 2]")
    _write(runs / "badconfig" / records.RECORD, json.dumps({"run_id": "badconfig", "config": [1]}))
    df = load_frame(runs, history=True).set_index("run_id")
    assert df.loc["torn", "status"] == "completed" and df.loc["torn", "history"] == train[:1]
    assert df.loc["torn", "dead_history"] == dead[:1]
    assert (df.loc["nohist", "history"], df.loc["nohist", "dead_history"]) == ([], [])
    assert df.loc["junk", "history"] == train[:2] and df.loc["junk", "test/acc"] == 0.9
    for bad in ("cut", "array", "badconfig"):
        assert df.loc[bad, "status"] == "corrupt", bad
    assert "JSONDecodeError" in df.loc["cut", "error"] and "not a run record" in df.loc["array", "error"]
    assert read_record(runs / "missing" / records.RECORD)["status"] == "corrupt"


# --- actlab migrate ------------------------------------------------------------------------------------
def _snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))
            if p.is_file()}


def _migrate(root: Path) -> int:
    p = argparse.ArgumentParser()
    migrate.add_arguments(p)
    return migrate.run(p.parse_args([str(root)]))


def test_migrate_upgrades_in_place_and_keeps_the_frame(tmp_path, capsys):
    runs = tmp_path / "runs"
    parts = {"one": _parts(), "two": _parts("failed", task="actlab.glue_task.GLUEClassifier")}
    base, train, dead = parts["one"]
    write_schema1(runs / "one", dict(base, run_id="one"), train, dead)
    base, train, dead = parts["two"]
    write_schema2(runs / "sweep" / "0" / "two", dict(base, run_id="two"), train, dead)  # nested like multirun
    write_schema3(runs / "three", dict(base, run_id="three"), train, dead)
    _write(runs / "broken" / records.RECORD, '{"run_id": "broken", "status": "compl')
    frames = [load_frame(runs, **kw) for kw in ({}, {"per_layer": True}, {"history": True})]
    untouched = {k: v for k, v in _snapshot(runs).items() if k.startswith(("three", "broken"))}

    assert _migrate(runs) == 1  # the corrupt record failed
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1] == "migrated 2, already schema 3: 1, failed: 1"
    assert len(out) == 2 and str(runs / "broken" / records.RECORD) in out[0] and "JSONDecodeError" in out[0]
    for before, kw in zip(frames, ({}, {"per_layer": True}, {"history": True})):
        pd.testing.assert_frame_equal(load_frame(runs, **kw), before)
    for run_dir, name in ((runs / "one", "one"), (runs / "sweep" / "0" / "two", "two")):
        with open(run_dir / records.RECORD) as f:
            rec = json.load(f)  # plain JSON, the lists gone
        assert (rec["schema"], rec["run_id"], rec["files"]["history"]) == (3, name, records.HISTORY)
        assert "history" not in rec and list(rec["dead"]) == ["final"]
        assert list(rec)[:3] == ["schema", "run_id", "kind"]
        base, train, dead = parts[name]
        assert records.read_history(run_dir) == records.merge_history(train, dead)
        lines = (run_dir / records.HISTORY).read_text().splitlines()
        assert [json.loads(ln) for ln in lines] == records.merge_history(train, dead)
    assert json.load(open(runs / "sweep" / "0" / "two" / records.RECORD))["kind"] == "glue"
    assert {k: v for k, v in _snapshot(runs).items() if k.startswith(("three", "broken"))} == untouched

    snap = _snapshot(runs)
    assert cli.main(["migrate", str(runs)]) == 1  # again, through the CLI: nothing changes
    assert capsys.readouterr().out.strip().splitlines()[-1] == "migrated 0, already schema 3: 3, failed: 1"
    assert _snapshot(runs) == snap
    (runs / "broken" / records.RECORD).unlink()
    assert _migrate(runs) == 0 and _migrate(tmp_path / "nowhere") == 2


def test_non_finite_values_come_back_as_numbers(tmp_path):
    """records.clean writes NaN/inf as "nan"/"inf"/"-inf" (strict JSON): the frame has floats again."""
    base, train, dead = _parts()
    for i, loss in enumerate([math.nan, 0.5]):
        run_dir = tmp_path / "runs" / f"r{i}"
        records.write_atomic(run_dir / records.RECORD, dict(base, schema=3, run_id=f"r{i}",
                                                            metrics={"test/acc": 0.9, "test/loss": loss}))
        records.write_history(run_dir, records.merge_history([dict(train[0], **{"train/loss": math.inf})], dead))
    assert '"test/loss": "nan"' in (tmp_path / "runs" / "r0" / records.RECORD).read_text()
    base["dead"]["final"]["dead_fwd"] = -math.inf
    records.write_atomic(tmp_path / "all" / "x" / records.RECORD, dict(base, schema=3, metrics={"test/loss": math.nan}))
    df = load_frame(tmp_path / "runs", history=True)
    assert df["test/loss"].dtype == "float64" and math.isnan(df["test/loss"][0]) and df["test/loss"][1] == 0.5
    assert df["history"][0][0]["train/loss"] == math.inf and df["dead_history"][0] == dead
    one = load_frame(tmp_path / "all")  # every value non-finite: still a float column
    assert one["test/loss"].dtype == "float64" and one["dead_fwd"].tolist() == [-math.inf]


# --- reading many records: one walk, no sidecar files unless asked --------------------------------------------
def test_find_paths_is_find_as_strings_and_collects_wandb_folders(tmp_path):
    base, train, dead = _parts()
    runs = tmp_path / "runs"
    for rel in ("a", "sweep/0/b", "sweep/1/c", "deep/1/2/3/d"):  # d is deeper than max_depth=3
        write_schema3(runs / rel, dict(base, run_id=rel), train, dead)
    for rel in ("wandb", "sweep/wandb", "a/wandb", "sweep/0/b/wandb"):  # the last two inside run dirs
        (runs / rel / "offline-run-x").mkdir(parents=True)
    dirs: list[str] = []
    found = records.find_paths(runs, wandb_dirs=dirs)
    assert found == [str(p) for p in records.find(runs)]
    assert found == [str(runs / r / records.RECORD) for r in ("a", "sweep/0/b", "sweep/1/c")]
    assert sorted(dirs) == [str(runs / "sweep" / "wandb"), str(runs / "wandb")]
    assert records.find_paths(runs / "a") == [str(runs / "a" / records.RECORD)]
    assert records.find_paths(tmp_path / "nowhere") == []


def test_summaries_read_only_record_json(tmp_path, monkeypatch):
    """A table's load reads record.json and nothing else: no history.jsonl, no dead_layers.json."""
    base, train, dead = _parts()
    for i in range(3):
        write_schema3(tmp_path / "runs" / f"r{i}", dict(base, run_id=f"r{i}"), train, dead)
    expected = load_frame(tmp_path / "runs")
    opened = []

    def spy(real):
        def opener(file, *args, **kwargs):
            opened.append(str(file))
            return real(file, *args, **kwargs)
        return opener

    monkeypatch.setattr("builtins.open", spy(open))
    monkeypatch.setattr(os, "open", spy(os.open))
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: pytest.fail(f"read {self}"))
    df = load_frame(tmp_path / "runs")
    assert opened and all(p.endswith(records.RECORD) for p in opened), opened
    pd.testing.assert_frame_equal(df, expected)
    assert not [c for c in df.columns if "/" in c and c.split("/")[0] in ("dead_fwd", "band")]
