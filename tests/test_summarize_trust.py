"""Trust in `actlab summarize`'s numbers: true replicates only, Student-t CIs, non-finite values, speed.

    .venv/bin/python -m pytest tests/test_summarize_trust.py -q
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from actlab.report import summarize as summ
from actlab.report.frame import load_frame
from actlab.run import records


def run_row(i: int, activation: str = "relu", margin=None, seed: int = 0, acc: float = 0.9, model: str = "mlp",
            status: str = "completed", **config) -> dict:
    """One row as load_frame returns it for a record (core columns, metrics, dead rates, timings, the
    dotted config, provenance). Keys that do not change results differ from run to run on purpose."""
    rid = f"cifar10-{model}-{activation}-s{seed}-{i:08x}"
    run_dir = f"/scratch/u{i % 3}/runs/{rid}"
    row = {"run_id": rid, "status": status, "error": None, "source": "record", "kind": "image",
           "dataset": "cifar10", "model": model, "activation": activation, "margin": margin,
           "schedule": "constant" if activation == "helu" else None, "seed": seed, "tags": f"sweep{i % 2}",
           "test/acc": acc if status == "completed" else np.nan, "val/acc": acc - 0.01, "dead_fwd": 0.1,
           "wall_s": 60.0 + i, "activation.save": "bits" if activation == "helu" else None,
           "callbacks.checkpoint.dirpath": f"{run_dir}/checkpoints", "force": bool(i % 2),
           "logger.project": f"p{i % 2}", "margin.value": margin, "model.width": 16 if model == "mlp" else 64,
           "monitor.out_dir": run_dir, "optim.lr": 0.1, "optim.name": "sgd", "paths.run_dir": run_dir,
           "resume": True, "task._target_": "actlab.tasks.classify.Classifier" if i % 2 else "actlab.task.Classifier",
           "trainer.enable_progress_bar": bool(i % 2), "trainer.max_epochs": 10, "git_commit": f"{i:040x}",
           "git_dirty": False, "preact_hist": None, "path": f"{run_dir}/record.json"}
    return row | config


def frame(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    df["margin"] = pd.to_numeric(df["margin"], errors="coerce").astype("float64")
    df["seed"] = pd.to_numeric(df["seed"], errors="coerce").astype("Int64")
    return df.sort_values("run_id", kind="stable", ignore_index=True)


def two_models() -> pd.DataFrame:
    """ReLU and HeLU 0.05, each on an MLP and a ResNet, seeds 0-2: one --by group holds two models."""
    accs = {("relu", "mlp"): [0.90, 0.92, 0.94], ("relu", "resnet"): [0.80, 0.82, 0.84],
            ("helu", "mlp"): [0.91, 0.94, 0.95], ("helu", "resnet"): [0.79, 0.81, 0.83]}
    rows = []
    for (act, model), values in accs.items():
        for seed, acc in enumerate(values):
            rows.append(run_row(len(rows), act, 0.05 if act == "helu" else None, seed, acc, model))
    return frame(rows)


def pick(s: pd.DataFrame, **keys) -> pd.Series:
    m = np.ones(len(s), dtype=bool)
    for k, v in keys.items():
        m &= (s[k].isna() if v is None else s[k] == v).to_numpy(dtype=bool)
    assert m.sum() == 1, s[list(keys)]
    return s[m].iloc[0]


# --- 1. a row pools true replicates only ------------------------------------------------------------------
def test_two_models_under_one_activation_are_split_with_n_per_model():
    s = summ.summarize(two_models())
    assert len(s.stats) == 4 and s.split == ["model"] and s.by == ["dataset", "activation", "margin", "model"]
    assert s.stats["n"].tolist() == [3, 3, 3, 3]
    relu_mlp = pick(s.stats, activation="relu", model="mlp")
    assert relu_mlp["test/acc:mean"] == pytest.approx(0.92) and relu_mlp["test/acc:std"] == pytest.approx(0.02)
    assert pick(s.stats, activation="relu", model="resnet")["test/acc:mean"] == pytest.approx(0.82)
    # the paired test pairs HeLU-MLP with ReLU-MLP only (seed-wise differences 0.01, 0.02, 0.01)
    helu_mlp = pick(s.stats, activation="helu", model="mlp")
    assert helu_mlp["test/acc:diff"] * 100 == pytest.approx(4 / 3) and helu_mlp["test/acc:test"] == "paired"
    assert helu_mlp["test/acc:p"] == pytest.approx(1 - 4 / math.sqrt(18))
    assert pick(s.stats, activation="helu", model="resnet")["test/acc:diff"] * 100 == pytest.approx(-1.0)
    # one line naming the key that differs; keys that do not change results (paths, logger, run-dir
    # derived callbacks/monitor paths, tags, force/resume, progress bar, _target_ module paths) never split
    assert len(s.notes) == 1 and "model.name" in s.notes[0] and "\n" not in s.notes[0]
    for quiet in ("paths", "logger", "dirpath", "out_dir", "tags", "force", "resume", "progress", "_target_"):
        assert quiet not in s.notes[0]
    table, _ = summ.display_table(s)
    assert list(table.columns[:5]) == ["Dataset", "Activation", "α", "Model", "n"]


def test_baseline_is_matched_on_every_key_but_activation_and_seed():
    rows = [run_row(i, "relu", None, i, 0.90 + 0.01 * i) for i in range(3)]
    rows += [run_row(3 + i, "helu", 0.05, i, 0.91 + 0.01 * i, **{"optim.lr": 0.01}) for i in range(3)]
    s = summ.summarize(frame(rows))
    helu = pick(s.stats, activation="helu")  # ReLU ran at another learning rate: no comparison
    assert math.isnan(helu["test/acc:diff"]) and math.isnan(helu["test/acc:p"]) and helu["test/acc:test"] == ""
    assert len(s.stats) == 2 and s.split == []  # (no --by group mixes configs)
    assert any("relu" in n and "optim.lr" not in n for n in s.notes)  # "no relu row with the same config"
    # HeLU at ReLU's learning rate too: split by optim.lr, and only that row is compared
    rows += [run_row(6 + i, "helu", 0.05, i, 0.92 + 0.01 * i) for i in range(3)]
    s = summ.summarize(frame(rows))
    assert s.split == ["optim.lr"] and s.stats["n"].tolist() == [3, 3, 3]
    assert pick(s.stats, activation="helu", **{"optim.lr": 0.1})["test/acc:diff"] == pytest.approx(0.02)
    assert math.isnan(pick(s.stats, activation="helu", **{"optim.lr": 0.01})["test/acc:diff"])
    assert any("optim.lr" in n for n in s.notes)


def _record(runs: Path, i: int, activation: str, margin, seed: int, metrics: dict, model: str = "mlp",
            status: str = "completed") -> None:
    rid = f"cifar10-{model}-{activation}-s{seed}-{i:04d}"
    run_dir = runs / rid
    rec = {"schema": records.SCHEMA, "run_id": rid, "kind": "image", "status": status, "error": None,
           "config": {"seed": seed, "dataset": {"name": "cifar10"}, "model": {"name": model},
                      "activation": {"name": activation, "margin": margin}, "optim": {"name": "sgd", "lr": 0.1},
                      "trainer": {"max_epochs": 3, "enable_progress_bar": bool(i % 2)},
                      "callbacks": {"checkpoint": {"dirpath": f"{run_dir}/checkpoints"}},
                      "paths": {"run_dir": str(run_dir)}, "tags": [f"t{i}"]},
           "metrics": metrics}
    records.write_atomic(run_dir / records.RECORD, rec)


def test_cli_prints_the_split_and_the_markdown_notes_it(tmp_path, capsys):
    runs, out = tmp_path / "runs", tmp_path / "tables"
    i = 0
    for model, base in (("mlp", 0.90), ("resnet", 0.80)):
        for act in ("relu", "helu"):
            for seed in range(3):
                _record(runs, i, act, 0.05 if act == "helu" else None, seed, {"test/acc": base + 0.01 * seed}, model)
                i += 1
    p = argparse.ArgumentParser()
    summ.add_arguments(p)
    assert summ.run(p.parse_args([str(runs), "--out", str(out), "--no-wandb"])) == 0
    printed = capsys.readouterr().out.splitlines()  # (the Markdown's paragraphs are wrapped, the note is not)
    assert any(ln.startswith("note: model.name differs") and "split" in ln and ln.endswith("seed)") for ln in printed)
    md = (out / "summary.md").read_text().splitlines()
    table_end = max(j for j, ln in enumerate(md) if ln.startswith("|") and "resnet" in ln)
    assert md[table_end + 1] == "" and "model.name" in md[table_end + 2]  # a paragraph under the table
    csv = pd.read_csv(out / "summary.csv")
    assert sorted(csv["model"]) == ["mlp", "mlp", "resnet", "resnet"] and csv["n"].tolist() == [3, 3, 3, 3]


# --- 2. Student-t confidence intervals ---------------------------------------------------------------------
def test_t_interval_known_answer_and_method_in_the_header():
    rows = [run_row(i, "relu", None, i, acc) for i, acc in enumerate([0.90, 0.92, 0.94])]
    s = summ.summarize(frame(rows))
    r = s.stats.iloc[0]
    # mean 0.92, s = 0.02, n = 3: 0.92 ± t_{0.975, 2} * 0.02 / sqrt(3) = 0.92 ± 4.302653 * 0.011547
    half = 4.302652729749462 * 0.02 / math.sqrt(3)
    assert (r["test/acc:ci_low"], r["test/acc:ci_high"]) == (pytest.approx(0.92 - half), pytest.approx(0.92 + half))
    lo, hi = stats.t.interval(0.95, 2, loc=0.92, scale=stats.sem([0.90, 0.92, 0.94]))
    assert (r["test/acc:ci_low"], r["test/acc:ci_high"]) == (pytest.approx(lo), pytest.approx(hi))
    table, _ = summ.display_table(s)
    assert "95% CI (t)" in table.columns and table["95% CI (t)"].iloc[0] == "[87.03, 96.97]"
    boot = summ.summarize(frame(rows), ci="bootstrap")
    table, _ = summ.display_table(boot)
    assert "95% CI (bootstrap)" in table.columns
    assert boot.stats["test/acc:ci_low"].iloc[0] == summ.bootstrap_ci(np.array([0.90, 0.92, 0.94]))[0]


def test_t_ci_small_samples_and_cli_option(tmp_path):
    assert all(math.isnan(v) for v in summ.t_ci(np.array([0.9])))
    assert summ.t_ci(np.array([0.5, 0.5, 0.5])) == (0.5, 0.5)
    lo, hi = summ.t_ci(np.array([0.90, 0.92]))  # t_{0.975, 1} = 12.706: wide, as it should be at n = 2
    assert (lo, hi) == (pytest.approx(0.91 - 12.706204736 * 0.01), pytest.approx(0.91 + 12.706204736 * 0.01))
    p = argparse.ArgumentParser()
    summ.add_arguments(p)
    assert p.parse_args([]).ci == "t" and p.parse_args(["--ci", "bootstrap"]).ci == "bootstrap"
    rows = [run_row(i, "relu", None, i, acc) for i, acc in enumerate([0.90, 0.92, 0.94])]
    _, md = summ.write_summary(frame(rows), tmp_path, "b", ci="bootstrap")
    assert "95% CI (bootstrap)" in md and "95% CI (t)" not in md
    assert "CI (bootstrap)" in (tmp_path / "b.tex").read_text()


# --- 3. non-finite values ----------------------------------------------------------------------------------
def test_nonfinite_metrics_are_excluded_with_a_reason(tmp_path):
    accs = [0.90, 0.92, math.inf, math.nan, 0.94, -math.inf]
    rows = [run_row(i, "relu", None, i, acc) for i, acc in enumerate(accs)]
    rows += [run_row(10 + i, "helu", 0.05, i, acc) for i, acc in enumerate([0.91, 0.94, 0.95, 0.96, 0.97, 0.98])]
    for r in rows:  # val/acc is recorded by no run: a metric not recorded is no reason to exclude a run
        r["val/acc"] = np.nan
    s = summ.summarize(frame(rows), metrics=("test/acc", "val/acc"))
    relu = pick(s.stats, activation="relu")
    assert (relu["n"], relu["n_nonfinite"]) == (3, 3)
    assert relu["test/acc:mean"] == pytest.approx(0.92) and relu["test/acc:std"] == pytest.approx(0.02)
    assert np.isfinite([relu["test/acc:ci_low"], relu["test/acc:ci_high"]]).all()
    helu = pick(s.stats, activation="helu")
    assert (helu["n"], helu["n_nonfinite"]) == (6, 0)
    assert helu["test/acc:test"] == "welch"  # ReLU's seeds are {0, 1, 4} now, HeLU's 0-5
    bad = s.excluded[s.excluded["status"] == "completed"].set_index("run_id")["reason"]
    assert len(bad) == 3 and all("test/acc" in r for r in bad)
    assert sorted(r.split("=")[1].split()[0] for r in bad) == ["-inf", "inf", "nan"]
    paths, md = summ.write_summary(frame(rows), tmp_path, "nf")
    listed = pd.read_csv(tmp_path / "nf_excluded.csv")
    assert set(listed["run_id"]) == set(bad.index) and listed["reason"].str.contains("test/acc").all()
    assert "non-finite" in md and md.count("test/acc = ") == 3


def test_nonfinite_strings_from_a_record_are_excluded_not_averaged(tmp_path):
    runs = tmp_path / "runs"
    for seed, acc in enumerate([0.90, 0.92, 0.94, math.inf]):  # write_atomic stores inf as "inf"
        _record(runs, seed, "relu", None, seed, {"test/acc": acc})
    assert '"inf"' in next(p for p in runs.glob("*/record.json") if "-s3-" in str(p)).read_text()
    s = summ.summarize(load_frame(runs, wandb=False))
    assert s.stats["n"].tolist() == [3] and s.stats["test/acc:mean"].iloc[0] == pytest.approx(0.92)
    # the frame may already call such a record failed (its error names the metric): listed either way
    (reason,) = s.excluded["reason"]
    assert "test/acc" in reason and "inf" in reason


# --- speed ------------------------------------------------------------------------------------------------
def big_frame(n: int = 10_000, groups: int = 50) -> pd.DataFrame:
    """n runs in `groups` groups (5 datasets x 10 activations/margins), 2 % failed, 1 % running."""
    rng = np.random.default_rng(0)
    acts = [("relu", np.nan), ("gelu", np.nan), ("elu", np.nan)] + [("helu", m) for m in
                                                                    (0.001, 0.005, 0.01, 0.05, 0.1, 0.2, 0.5)]
    i = np.arange(n)
    g = i % groups
    status = np.where(i % 50 == 7, "failed", np.where(i % 100 == 3, "running", "completed"))
    done = status == "completed"
    rid = np.array([f"run-{k:06d}" for k in i])
    df = pd.DataFrame({
        "run_id": rid, "status": status, "error": np.where(status == "failed", "RuntimeError: oom", None),
        "source": "record", "kind": "image", "dataset": np.array(["a", "b", "c", "d", "e"])[g % 5],
        "model": "wrn40_4", "activation": [acts[k // 5][0] for k in g], "margin": [acts[k // 5][1] for k in g],
        "schedule": "constant", "seed": pd.array(i // groups, dtype="Int64"), "tags": "bench"})
    for m in ("test/acc", "test/acc_top5", "test/loss", "train/loss", "val/acc", "val/loss"):
        df[m] = np.where(done, 0.9 + 0.05 * rng.random(n), np.nan)
    for m in ("dead_fwd", "dead_grad", "zero_rate", "band", "train_dead_fwd", "train_dead_grad"):
        df[m] = rng.random(n) * 0.3
    for m in ("wall_s", "fit_s", "test_s", "s_per_epoch"):
        df[m] = 3600.0 * rng.random(n)
    cfg = {"dataset.batch_size": 128, "dataset.data_dir": "data", "model.depth": 40, "model.widen": 4,
           "optim.lr": 0.01, "optim.momentum": 0.9, "optim.name": "sgd", "optim.weight_decay": 5e-4,
           "scheduler.name": "cosine", "task._target_": "actlab.tasks.classify.Classifier",
           "trainer.max_epochs": 10, "trainer.precision": "32"}
    for k, v in cfg.items():
        df[k] = v
    df["callbacks.checkpoint.dirpath"] = [f"results/runs/{r}/checkpoints" for r in rid]
    df["paths.run_dir"] = [f"results/runs/{r}" for r in rid]
    df["git_commit"], df["path"] = "0" * 40, [f"results/runs/{r}/record.json" for r in rid]
    return df


def test_write_summary_of_10000_runs_in_50_groups(tmp_path):
    """Correctness at the benchmark's size (its speed is measured by `actlab bench summarize`, not here)."""
    df = big_frame()
    summ.write_summary(df, tmp_path, "big")
    assert len(pd.read_csv(tmp_path / "big.csv")) == 50


def test_paper_table_flags_a_cell_that_pools_two_models(tmp_path):
    from actlab.report import paper

    t = paper.vision_table(two_models())
    relu = t.query("dataset == 'cifar10' and activation == 'relu'").iloc[0]
    assert relu["n"] == 6 and "model.name" in relu["note"]  # the paper has one row: ours is flagged, not hidden
    one = paper.vision_table(two_models().query("model == 'mlp'"))
    assert one.query("dataset == 'cifar10' and activation == 'relu'").iloc[0]["note"] == ""
    cells = paper.vision_display(t)
    assert "Note" in cells.columns and "Note" not in paper.vision_display(one).columns


def test_p_values_below_0001_keep_the_p_column_right_aligned():
    from actlab.report import tables

    t = pd.DataFrame({"p": ["<0.001 (paired)", "0.423 (welch)", "—"]})
    assert tables.right_aligned(t) == [True]
