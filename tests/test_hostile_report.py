"""Report inputs a hostile (or just unlucky) results folder holds: no wrong result may enter a table silently.

Each case puts one bad run beside good ones and checks what the frame says about the bad one (its status
and error) and that the good ones still summarize: W&B mirrors of local runs (counted once), W&B metric
names (as records name them), directory names that are not UTF-8, records without a config, and old
records whose "completed" results are not finite numbers.

    .venv/bin/python -m pytest tests/test_hostile_report.py -q
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import pandas as pd
import pytest

from actlab.cli import main as cli
from actlab.report import wandb_reader
from actlab.report.frame import load_frame, read_wandb_offline
from actlab.run import records

CONFIG = {"seed": 0, "dataset": {"name": "cifar10", "batch_size": 128}, "model": {"name": "mlp"},
          "activation": {"name": "helu", "margin": 0.05}, "margin": {"name": "constant"},
          "optim": {"name": "sgd", "lr": 0.1}, "tags": ["t"]}


def write_record(runs: Path, run_id: str | None, schema: int = 3, status: str = "completed", seed: int = 0,
                 metrics: dict | None = None, dir_name: str | bytes | None = None, **fields) -> Path:
    """A record.json as the runner writes it (schema 3), or as old writers did (1, 2: no kind); returns it."""
    rec = {"schema": schema, "run_id": run_id, "kind": "image", "status": status, "error": None,
           "config": dict(CONFIG, seed=seed),
           "metrics": {"test/acc": 0.9 + 0.01 * seed, "test/loss": 0.3} if metrics is None else metrics,
           "dead": {"final": {"dead_fwd": 0.1, "dead_grad": 0.05}},
           "timings": {"wall_s": 60.0}, "git": {"commit": "abc", "dirty": False}, "files": {}} | fields
    if schema != 3:
        rec.pop("kind")
        if schema == 1:
            rec.pop("schema")
        rec["history"] = [{"epoch": 0, "train/loss": 1.0}]
    run_dir = os.path.join(os.fsencode(runs), os.fsencode(dir_name if dir_name is not None else run_id))
    os.makedirs(run_dir)
    path = os.path.join(run_dir, b"record.json")
    with open(path, "w") as f:
        json.dump(rec, f, indent=1)
    return Path(os.fsdecode(path))


def summarize_cli(runs: Path, out: Path) -> pd.DataFrame:
    """`actlab summarize RUNS --out OUT` must succeed; the main table's csv."""
    assert cli.main(["summarize", str(runs), "--out", str(out), "--no-wandb"]) == 0
    return pd.read_csv(out / "summary.csv")


def counted(stats: pd.DataFrame) -> tuple[list, int]:
    """(n of the good runs' group (cifar10, helu, 0.05), runs counted corrupt in any group): a corrupt run
    knows no group, so it may sit in a row of its own."""
    good = stats[stats["dataset"] == "cifar10"]
    return good["n"].tolist(), int(stats["n_corrupt"].sum())


def _good(df: pd.DataFrame, n: int = 2) -> None:
    """The good runs (seeds 0..n-1) are all there and completed."""
    good = df[df["run_id"].str.startswith("good")]
    assert sorted(good["run_id"]) == [f"good{s}" for s in range(n)]
    assert (good["status"] == "completed").all() and good["test/acc"].notna().all()


def _goods(runs: Path, n: int = 2) -> None:
    for s in range(n):
        write_record(runs, f"good{s}", seed=s)


# --- W&B: mirrors of local runs, metric names ---------------------------------------------------------------
def wandb_id(run_id: str) -> str:
    """The W&B run id the runner's logger gives a run (run.loggers.wandb)."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in run_id)[-64:]


OLD = "cifar10-mlp-helu-m0.05-s0-" + "x" * 50  # a "." and over 64 characters: its W&B id differs
NEW = "cifar10-mlp-helu-m0.05-s1-abc"


@pytest.fixture(scope="module")
def wandb_runs(tmp_path_factory) -> Path:
    """runs/ with the records of OLD and NEW and, in runs/wandb/, their offline W&B runs: OLD's logged before
    the runner put the run_id into the W&B config (config run_id null), NEW's after. OLD logs as Lightning
    does with on_step=True, on_epoch=True ("train/loss_step", "train/loss_epoch")."""
    wandb = pytest.importorskip("wandb")
    runs = tmp_path_factory.mktemp("wandb") / "runs"
    runs.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        for k, v in {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DIR": str(runs)}.items():
            mp.setenv(k, v)
        for i, (rid, config_id) in enumerate(((OLD, None), (NEW, NEW))):
            write_record(runs, rid, seed=i)
            run = wandb.init(mode="offline", dir=str(runs), project="actlab-test", id=wandb_id(rid),
                             config=dict(CONFIG, seed=i, run_id=config_id))
            for epoch in range(2):
                run.log({"train/loss_step": 2.0 - epoch, "epoch": epoch})
                run.log({"train/loss_epoch": 1.0 - 0.1 * epoch, "val/acc": 0.8 + 0.01 * epoch, "epoch": epoch})
            run.summary["test/acc"] = 0.9 + 0.01 * i
            run.finish()
        wandb.teardown()
    logs = sorted(runs.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(logs) == 2
    deadline = time.monotonic() + 20  # wandb-core may still be flushing the exit record
    while any(read_wandb_offline(p)["status"] == "running" for p in logs) and time.monotonic() < deadline:
        time.sleep(0.1)
    return runs


def test_wandb_mirror_of_a_record_is_counted_once(wandb_runs, tmp_path):
    df = load_frame(wandb_runs)
    assert sorted(df["run_id"]) == sorted([OLD, NEW])  # one row each, not a W&B twin with id OLD_05-...
    assert set(df["source"]) == {"record"}
    stats = summarize_cli(wandb_runs, tmp_path / "tables")  # (W&B ignored there: the frame is what counts)
    assert stats["n"].tolist() == [2]
    # without the records, both W&B runs are rows of their own
    only = load_frame(sorted(wandb_runs.glob("wandb/offline-run-*/run-*.wandb")))
    assert sorted(only["run_id"]) == sorted([wandb_id(OLD), NEW]) and set(only["source"]) == {"wandb"}


def test_wandb_project_mirror_of_a_record_is_counted_once(tmp_path, monkeypatch):
    """The same matching for runs read from an online project (wandb.Api replaced by what it would give)."""
    runs = tmp_path / "runs"
    write_record(runs, OLD)
    write_record(runs, NEW, seed=1)

    def run(wid: str, logged: str | None) -> dict:
        return {"run_id": logged or wid, "wandb_id": wid, "logged_run_id": logged, "status": "completed",
                "config": dict(CONFIG, run_id=logged), "summary": {"test/acc": 0.5}, "values": {"test/acc": 0.5},
                "url": f"https://wandb.ai/e/p/runs/{wid}"}

    api = [run(wandb_id(OLD), None), run(wandb_id(NEW), NEW), run("other", None)]
    monkeypatch.setattr(wandb_reader, "project_runs", lambda project: api)
    df = load_frame(runs, wandb_project="e/p").set_index("run_id")
    assert sorted(df.index) == sorted([OLD, NEW, "other"])
    assert df.loc[OLD, "source"] == df.loc[NEW, "source"] == "record" and df.loc["other", "source"] == "wandb-api"


def test_wandb_metric_names_match_the_records(wandb_runs):
    log = next(p for p in wandb_runs.glob("wandb/offline-run-*/run-*.wandb") if wandb_id(OLD) in p.name)
    row = read_wandb_offline(log, history=True)
    assert row["train/loss"] == pytest.approx(0.9) and row["val/acc"] == pytest.approx(0.81)
    assert not [k for k in row if k.endswith(("_step", "_epoch"))]
    assert [h.get("train/loss") for h in row["history"]] == pytest.approx([1.0, 0.9])
    assert not [k for h in row["history"] for k in h if k.endswith(("_step", "_epoch"))]


# --- paths and records that are not what they should be -----------------------------------------------------
def test_non_utf8_directory_name_is_a_corrupt_row(tmp_path):
    runs = tmp_path / "runs"
    _goods(runs)
    write_record(runs, "cafe", dir_name=b"caf\xe9")  # e.g. copied from a Latin-1 machine
    write_record(runs, None, dir_name=b"ghost\xff")  # no run_id: named after its directory
    df = load_frame(runs)
    _good(df)
    bad = df[~df["run_id"].str.startswith("good")]
    assert len(bad) == 2 and (bad["status"] == "corrupt").all()
    assert bad["error"].str.contains("not valid UTF-8").all()
    assert bad["path"].str.contains(r"caf\xe9", regex=False).any()  # shown escaped, printable
    for col in ("run_id", "path", "error"):
        df[col].str.encode("utf-8")  # every string is valid Unicode: writable as CSV, printable
    assert counted(summarize_cli(runs, tmp_path / "tables")) == ([2], 2)
    excluded = pd.read_csv(tmp_path / "tables" / "summary_excluded.csv")
    assert len(excluded) == 2 and excluded["error"].str.contains("not valid UTF-8").all()
    assert cli.main(["figures", str(runs), "--out", str(tmp_path / "fig"), "--no-wandb",
                     "--bench-dir", str(tmp_path / "nobench")]) == 0


def test_lone_surrogate_escape_in_a_record_is_a_corrupt_row(tmp_path):
    runs = tmp_path / "runs"
    _goods(runs)
    write_record(runs, "lone", config=dict(CONFIG, model={"name": "mlp\udce9"}))  # json writes "\udce9"
    assert "\\udce9" in (runs / "lone" / records.RECORD).read_text()
    df = load_frame(runs)
    _good(df)
    bad = df.set_index("run_id").loc["lone"]
    assert bad["status"] == "corrupt" and "not valid Unicode" in bad["error"]
    assert counted(summarize_cli(runs, tmp_path / "tables")) == ([2], 1)


def test_record_without_config_is_a_corrupt_row(tmp_path):
    runs = tmp_path / "runs"
    _goods(runs)
    (runs / "x").mkdir()
    (runs / "x" / records.RECORD).write_text(
        json.dumps({"run_id": "x", "status": "completed", "metrics": {"test/acc": 0.9}}))
    write_record(runs, "nullconfig", config=None)
    df = load_frame(runs)
    _good(df)
    bad = df.set_index("run_id").loc[["x", "nullconfig"]]
    assert bad["status"].tolist() == ["corrupt", "corrupt"] and bad["error"].tolist() == ["no config"] * 2
    assert counted(summarize_cli(runs, tmp_path / "tables")) == ([2], 2)


@pytest.mark.parametrize("schema", [1, 2])
def test_old_completed_record_with_non_finite_metrics_is_failed(tmp_path, schema):
    runs = tmp_path / "runs"
    _goods(runs)
    paths = [write_record(runs, "nulls", schema, metrics={"test/acc": None, "test/loss": 0.3}),  # NaN -> null
             write_record(runs, "nans", schema, metrics={"test/acc": "nan", "test/loss": "inf"}),
             write_record(runs, "bare", schema, metrics={"test/acc": 0.9, "test/loss": math.nan})]  # NaN literal
    before = [p.read_bytes() for p in paths]
    df = load_frame(runs).set_index("run_id")
    _good(df.reset_index())
    bad = df.loc[["nulls", "nans", "bare"]]
    assert bad["status"].tolist() == ["failed"] * 3
    assert bad["error"].str.startswith("non-finite final metrics (").all()
    assert "test/acc" in bad.loc["nulls", "error"] and "test/loss" not in bad.loc["nulls", "error"]
    assert "test/acc" in bad.loc["nans", "error"] and "test/loss" in bad.loc["nans", "error"]
    assert [p.read_bytes() for p in paths] == before  # the files are left as they are
    stats = summarize_cli(runs, tmp_path / "tables")
    assert stats["n"].tolist() == [2] and stats["n_failed"].tolist() == [3]
    assert stats["test/acc:mean"].iloc[0] == pytest.approx(0.905)
