"""Report: run records -> frame -> tables (known answers), paper-vs-ours, W&B offline, figures.

    .venv/bin/python -m pytest tests/test_report.py -q
"""

from __future__ import annotations

import argparse
import json
import math
import time
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from actlab.report import figures, paper
from actlab.report import summarize as summ
from actlab.report.frame import load_frame, read_wandb_offline


def write_run(runs: Path, dataset: str, activation: str, margin, seed: int, acc: float | None,
              status: str = "completed", epochs: int = 3, hist: bool = False, metrics: dict | None = None,
              dead0: float | None = None) -> str:
    """A realistic record.json (as the training entry writes it); returns the run_id."""
    run_id = f"{dataset}-mlp-{activation}-m{margin}-s{seed}-{zlib.crc32(repr(margin).encode()):08x}"
    d = runs / run_id
    d.mkdir(parents=True)
    dead0 = dead0 if dead0 is not None else {"relu": 0.20, "gelu": 0.0, "helu": 0.10}.get(activation, 0.05)
    history = [{"epoch": e, "step": 100 * (e + 1), "train/loss": 1.0 / (e + 1), "val/acc": 0.5 + 0.1 * e,
                "val/loss": 1.2 / (e + 1), "margin": margin} for e in range(epochs)]
    dead_hist = [{"epoch": e, "dead_fwd": dead0 + 0.02 * e + 0.01 * seed, "dead_grad": dead0 / 2 + 0.01 * e,
                  "band": 0.03, "zero_rate": 0.5, "train_dead_fwd": dead0, "train_dead_grad": dead0,
                  "dead_fwd/net.1": dead0, "dead_fwd/net.3": dead0} for e in range(epochs)]
    rec = {
        "schema": 1, "run_id": run_id, "status": status,
        "error": "RuntimeError: CUDA out of memory\nTraceback ..." if status == "failed" else None,
        "config": {"seed": seed, "dataset": {"name": dataset, "data_dir": "data", "batch_size": 128},
                   "model": {"name": "mlp", "hidden": [256, 256]},
                   "activation": {"name": activation, "margin": margin},
                   "margin": {"name": "constant"}, "optim": {"name": "sgd", "lr": 0.01, "momentum": 0.9},
                   "trainer": {"max_epochs": epochs}, "tags": ["test", activation]},
        "metrics": {} if acc is None else {"train/loss": 0.3, "val/acc": acc - 0.01, "val/loss": 0.4,
                                           "test/acc": acc, "test/loss": 0.35, **(metrics or {})},
        "history": history if status != "failed" else history[:1],
        "dead": {"final": {k: v for k, v in dead_hist[-1].items() if k != "epoch"}, "history": dead_hist},
        "timings": {"started_at": "2025-01-01T00:00:00+00:00", "ended_at": "2025-01-01T00:01:00+00:00",
                    "wall_s": 60.0, "fit_s": 55.0, "test_s": 5.0, "s_per_epoch": 55.0 / epochs},
        "versions": {"torch": "2.14.1"}, "git": {"commit": "abc123", "dirty": False}, "host": {"cpu_count": 2},
        "files": {},
    }
    if hist:
        edges = np.linspace(-3, 3, 201)
        centers = (edges[:-1] + edges[1:]) / 2
        counts = (1e4 * np.exp(-centers**2 / 2)).astype(int)
        (d / "preact_hist.json").write_text(json.dumps({
            "edges": edges.tolist(), "margin": margin, "activation": activation,
            "layers": {"net.1": counts.tolist(), "net.3": (counts // 2).tolist()}}))
        rec["files"]["preact_hist"] = "preact_hist.json"
    (d / "record.json").write_text(json.dumps(rec, indent=1))
    return run_id


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    """cifar10: ReLU/HeLU 0.05 seeds 0-2 (paired), GELU seeds 0-1 (Welch), HeLU 0.1 with one completed,
    one failed, one running seed; fashion_mnist: one seed each; plus one corrupt record."""
    r = tmp_path / "runs"
    for seed, acc in enumerate([0.90, 0.92, 0.94]):
        write_run(r, "cifar10", "relu", None, seed, acc)
    for seed, acc in enumerate([0.91, 0.94, 0.95]):
        write_run(r, "cifar10", "helu", 0.05, seed, acc, hist=seed == 0)
    for seed, acc in enumerate([0.93, 0.95]):
        write_run(r, "cifar10", "gelu", None, seed, acc)
    write_run(r, "cifar10", "helu", 0.1, 0, 0.89)
    write_run(r, "cifar10", "helu", 0.1, 1, None, status="failed")
    write_run(r, "cifar10", "helu", 0.1, 2, None, status="running")
    write_run(r, "fashion_mnist", "relu", None, 0, 0.85)
    write_run(r, "fashion_mnist", "helu", 0.05, 0, 0.86)
    (r / "broken-run").mkdir()
    (r / "broken-run" / "record.json").write_text('{"run_id": "broken-run", "status": "compl')
    return r


def row(stats_df: pd.DataFrame, dataset, activation, margin=None) -> pd.Series:
    m = (stats_df["dataset"] == dataset) & (stats_df["activation"] == activation)
    m &= stats_df["margin"].isna() if margin is None else np.isclose(stats_df["margin"].astype(float), margin)
    assert m.sum() == 1, stats_df[["dataset", "activation", "margin"]]
    return stats_df[m].iloc[0]


# --- frame ---------------------------------------------------------------------------------------------
def test_frame_keeps_every_status_and_flattens_config(runs):
    df = load_frame(runs)
    assert len(df) == 14
    assert df["status"].value_counts().to_dict() == {"completed": 11, "failed": 1, "running": 1, "corrupt": 1}
    bad = df[df["status"] == "corrupt"].iloc[0]
    assert bad["run_id"] == "broken-run" and "JSONDecodeError" in bad["error"]
    assert df["margin"].dtype == "float64" and str(df["seed"].dtype) == "Int64"
    ok = df[df["status"] == "completed"]
    for col in ("dataset", "model", "activation", "schedule", "optim.lr", "trainer.max_epochs", "test/acc",
                "dead_fwd", "dead_grad", "wall_s", "git_commit", "path"):
        assert ok[col].notna().all(), col
    assert not any(c.startswith("dead_fwd/") for c in df.columns)  # per-layer only on request
    assert set(ok["schedule"]) == {"constant"} and "test" in ok["tags"].iloc[0]
    assert "dead_fwd/net.1" in load_frame(runs, per_layer=True).columns
    with_hist = load_frame(runs, history=True)
    assert len(with_hist.loc[with_hist["status"] == "completed", "dead_history"].iloc[0]) == 3


# --- statistics: known answers -------------------------------------------------------------------------
def test_mean_std_n_and_ci(runs):
    s = summ.summarize(load_frame(runs))
    relu = row(s.stats, "cifar10", "relu")
    assert relu["n"] == 3
    assert relu["test/acc:mean"] * 100 == pytest.approx(92.00)
    assert relu["test/acc:std"] * 100 == pytest.approx(2.00)
    half = stats.t.ppf(0.975, 2) * 0.02 / math.sqrt(3)  # Student t (the CI method changed from BCa bootstrap)
    assert (relu["test/acc:ci_low"], relu["test/acc:ci_high"]) == (pytest.approx(0.92 - half), pytest.approx(0.92 + half))
    table, _ = summ.display_table(s)
    shown = table[(s.stats["dataset"] == "cifar10") & (s.stats["activation"] == "relu")].iloc[0]
    assert shown["test/acc (%)"] == "92.00 ± 2.00" and shown["n"] == "3"


def test_bootstrap_small_n_is_graceful():
    assert all(math.isnan(v) for v in summ.bootstrap_ci(np.array([0.9])))
    lo, hi = summ.bootstrap_ci(np.array([0.90, 0.92]))
    assert 0.90 - 1e-9 <= lo <= hi <= 0.92 + 1e-9
    assert summ.bootstrap_ci(np.array([0.5, 0.5, 0.5])) == (0.5, 0.5)


def test_paired_difference_to_relu(runs):
    s = summ.summarize(load_frame(runs))
    helu = row(s.stats, "cifar10", "helu", 0.05)
    # seed-wise differences 0.01, 0.02, 0.01: mean 1/75, sd 1/(100 sqrt 3) -> t = 4 on 2 dof,
    # two-sided p = 1 - 4/sqrt(18) for Student's t with 2 dof.
    assert helu["test/acc:diff"] * 100 == pytest.approx(4 / 3)
    assert helu["test/acc:test"] == "paired"
    assert helu["test/acc:p"] == pytest.approx(1 - 4 / math.sqrt(18))
    gelu = row(s.stats, "cifar10", "gelu")  # seeds {0, 1} vs {0, 1, 2}: Welch
    assert gelu["test/acc:test"] == "welch"
    assert gelu["test/acc:diff"] * 100 == pytest.approx(2.0)
    welch = stats.ttest_ind([0.93, 0.95], [0.90, 0.92, 0.94], equal_var=False).pvalue
    assert gelu["test/acc:p"] == pytest.approx(welch)
    fm = row(s.stats, "fashion_mnist", "helu", 0.05)  # n=1 each: a difference, no test
    assert fm["test/acc:diff"] * 100 == pytest.approx(1.0) and math.isnan(fm["test/acc:p"])
    assert math.isnan(row(s.stats, "cifar10", "relu")["test/acc:diff"])


def test_failed_running_corrupt_are_counted_and_listed(runs):
    s = summ.summarize(load_frame(runs))
    h = row(s.stats, "cifar10", "helu", 0.1)
    assert (h["n"], h["n_failed"], h["n_running"], h["n_corrupt"]) == (1, 1, 1, 0)
    assert s.stats["n_corrupt"].sum() == 1 and s.stats["n_failed"].sum() == 1
    assert sorted(s.excluded["status"]) == ["corrupt", "failed", "running"]
    assert "out of memory" in summ.excluded_markdown(s.excluded)


def test_best_is_marked_per_dataset(runs):
    s = summ.summarize(load_frame(runs))
    best = s.stats[s.stats["test/acc:best"]]
    assert sorted(zip(best["dataset"], best["activation"])) == [("cifar10", "gelu"), ("fashion_mnist", "helu")]
    table, bold = summ.display_table(s)
    col = list(table.columns).index("test/acc (%)")
    assert sorted(table.iloc[:, col][bold[:, col]]) == ["86.00", "94.00 ± 1.41"]
    assert not bold[:, col + 1:].any()  # only metric cells are ever bold


def test_tables_written_and_parseable(runs, tmp_path):
    out = tmp_path / "tables"
    paths, md = summ.write_summary(load_frame(runs), out, "cmp")
    names = {p.name for p in paths}
    assert {"cmp.md", "cmp.tex", "cmp.csv", "cmp_dead.csv", "cmp_dead.tex", "cmp_excluded.csv"} <= names
    csv = pd.read_csv(out / "cmp.csv")
    assert len(csv) == 7 and {"test/acc:mean", "test/acc:p", "n_failed"} <= set(csv.columns)
    tex = (out / "cmp.tex").read_text()
    assert r"\toprule" in tex and r"\bottomrule" in tex and r"\textbf{94.00 $\pm$ 1.41}" in tex
    assert tex.count(r"\\") == 8  # header + 7 groups
    table = [ln for ln in (out / "cmp.md").read_text().splitlines() if ln.startswith("|")]
    assert len({ln.count("|") for ln in table[:9]}) == 1  # every row has the header's column count
    assert "**94.00 ± 1.41**" in md and "Dead-neuron rates" in md and "broken-run" in md
    dead = pd.read_csv(out / "cmp_dead.csv")
    relu = row(dead, "cifar10", "relu")
    assert relu["dead_fwd:mean"] == pytest.approx(0.24 + 0.01)  # 0.20 + 0.02*2 epochs + mean seed 0.01


def test_cli_summarize(runs, tmp_path, capsys):
    p = argparse.ArgumentParser()
    summ.add_arguments(p)
    out = tmp_path / "t"
    args = p.parse_args([str(runs), "--by", "dataset,activation", "--metric", "test/acc", "val/acc",
                         "--out", str(out), "--name", "x"])
    assert summ.run(args) == 0
    assert (out / "x.md").is_file() and (out / "paper_table1.csv").is_file()  # cifar10 is a paper dataset
    bad = p.parse_args([str(runs), "--by", "nope", "--out", str(out)])
    assert summ.run(bad) == 2 and "unknown --by" in capsys.readouterr().out


# --- paper ---------------------------------------------------------------------------------------------
def test_paper_numbers_and_average_check():
    t1 = paper.load_paper("table1")
    assert len(t1) == 21
    assert t1.query("activation == 'gelu' and dataset == 'cifar10'")["acc_mean"].item() == 96.11
    t2 = paper.check_averages(paper.load_paper("table2"), list(paper.GLUE_COLUMNS))
    flagged = t2[t2["avg_mismatch"]]
    assert list(zip(flagged["activation"], flagged["margin"])) == [("helu", 0.05)]
    assert flagged["avg_computed"].item() == pytest.approx(78.11, abs=0.005)


def test_paper_vs_ours_vision(tmp_path):
    r = tmp_path / "runs"
    for seed, acc in enumerate([0.92, 0.93]):
        write_run(r, "cifar10", "relu", None, seed, acc)
    write_run(r, "CIFAR-10", "helu", 0.05000000001, 0, 0.95)  # float noise in the margin still matches
    write_run(r, "cifar10", "helu", 0.5, 0, 0.90)  # not in the paper: appended
    t = paper.vision_table(load_frame(r))
    relu = t.query("dataset == 'cifar10' and activation == 'relu'").iloc[0]
    assert (relu["paper_mean"], relu["paper_pm"], relu["n"]) == (92.84, 0.34, 2)
    assert relu["ours_mean"] == pytest.approx(92.5) and relu["delta"] == pytest.approx(92.5 - 92.84)
    helu = t[(t["dataset"] == "cifar10") & np.isclose(t["margin"].fillna(-1), 0.05)].iloc[0]
    assert helu["paper_mean"] == 95.31 and helu["n"] == 1
    extra = t[np.isclose(t["margin"].fillna(-1), 0.5)].iloc[0]
    assert math.isnan(extra["paper_mean"]) and extra["ours_mean"] == pytest.approx(90.0)
    assert t.query("dataset == 'cifar100'")["n"].sum() == 0
    paths = paper.write_paper_tables(load_frame(r), tmp_path / "tables")
    assert [p.name for p in paths] == ["paper_table1.md", "paper_table1.tex", "paper_table1.csv"]
    assert "92.84 ± 0.34" in paths[0].read_text()
    # --paper on vision-only records: still no GLUE table (its ours column would be empty); no records: both
    forced = paper.write_paper_tables(load_frame(r), tmp_path / "forced", force=True)
    assert {p.stem for p in forced} == {"paper_table1"}
    fm = tmp_path / "fm"
    write_run(fm, "fashion_mnist", "relu", None, 0, 0.9)
    assert {p.stem for p in paper.write_paper_tables(load_frame(fm), tmp_path / "fm_t", force=True)} == {"paper_table1"}
    empty = paper.write_paper_tables(load_frame(r).iloc[0:0], tmp_path / "empty", force=True)
    assert {p.stem for p in empty} == {"paper_table1", "paper_table2"}


def test_paper_vs_ours_glue(tmp_path):
    r = tmp_path / "runs"
    write_run(r, "glue_sst2", "helu", 0.05, 42, None, metrics={}, epochs=1)
    rec_path = next(r.glob("*/record.json"))
    rec = json.loads(rec_path.read_text())
    rec["metrics"] = {"val/acc": 0.905, "val/loss": 0.3}
    rec_path.write_text(json.dumps(rec))
    t = paper.glue_table(load_frame(r))
    cell = t.query("activation == 'helu' and task == 'sst2_acc'").iloc[0]
    assert cell["paper"] == 90.6 and cell["ours_mean"] == pytest.approx(90.5) and cell["n"] == 1
    avg = t.query("activation == 'helu' and margin == 0.05 and task == 'avg'").iloc[0]
    assert avg["paper_reported"] == 78.02 and "78.11" in avg["note"]
    paths = paper.write_paper_tables(load_frame(r), tmp_path / "tables")
    assert {p.name for p in paths} == {"paper_table2.md", "paper_table2.tex", "paper_table2.csv"}
    forced = paper.write_paper_tables(load_frame(r), tmp_path / "forced", force=True)
    assert {p.stem for p in forced} == {"paper_table2"}  # GLUE-only records: no empty vision table


# --- W&B offline -----------------------------------------------------------------------------------------
def test_wandb_offline_round_trip(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    config = {"seed": 3, "run_id": "fm-helu-s3", "dataset": {"name": "fashion_mnist"},
              "activation": {"name": "helu", "margin": 0.05}, "optim": {"name": "sgd", "lr": 0.01}}
    run = wandb.init(mode="offline", dir=str(tmp_path), project="actlab-test", config=config)
    for epoch in range(3):
        run.log({"epoch": epoch, "val/acc": 0.80 + 0.01 * epoch, "dead_fwd": 0.1 - 0.01 * epoch,
                 "dead_grad": 0.05, "margin": 0.5})
    run.summary["test/acc"] = 0.875
    run.finish()
    # wandb-core may still be flushing the .wandb file when finish() returns (seen under load):
    # stop the service, then wait for the exit record rather than racing it.
    wandb.teardown()
    wb = next(tmp_path.glob("wandb/offline-run-*/run-*.wandb"))
    deadline = time.monotonic() + 20
    while read_wandb_offline(wb)["status"] == "running" and time.monotonic() < deadline:
        time.sleep(0.1)
    df = load_frame(tmp_path, history=True)
    assert len(df) == 1
    r = df.iloc[0]
    assert (r["run_id"], r["status"], r["source"]) == ("fm-helu-s3", "completed", "wandb")
    assert (r["dataset"], r["activation"], r["margin"], r["seed"]) == ("fashion_mnist", "helu", 0.05, 3)
    assert r["optim.lr"] == 0.01 and r["test/acc"] == 0.875
    assert r["val/acc"] == pytest.approx(0.82) and r["dead_fwd"] == pytest.approx(0.08)
    assert [h["epoch"] for h in r["dead_history"]] == [0, 1, 2]
    # A torn tail (killed writer) keeps what came before; a file that is not a W&B log is a corrupt row.
    torn = tmp_path / "torn" / "wandb" / "offline-run-x" / "run-x.wandb"
    torn.parent.mkdir(parents=True)
    torn.write_bytes(wb.read_bytes()[:-40])
    assert read_wandb_offline(torn)["dataset"] == "fashion_mnist"
    torn.write_bytes(b"not a wandb file")
    assert load_frame(tmp_path / "torn")["status"].tolist() == ["corrupt"]


# --- figures ---------------------------------------------------------------------------------------------
def test_figures_skip_without_data(tmp_path):
    empty = load_frame(tmp_path / "none", history=True)
    out = tmp_path / "fig"
    for fn, reason in ((figures.fig_preact_hist, "preact_hist"), (figures.fig_acc_vs_margin, "test/acc"),
                       (figures.fig_dead_curves, "dead-neuron history")):
        with pytest.raises(figures.Skip, match=reason):
            fn(empty, out)
    with pytest.raises(figures.Skip, match="bench"):
        figures.fig_bench(tmp_path / "nobench", out)
    assert not out.exists()


def test_bench_figures_hook_calls_fig4_with_the_payload(tmp_path, monkeypatch):
    import sys
    import types

    import actlab.report

    calls = []

    def fig4(payload, out):
        calls.append(payload)
        path = Path(out) / "fig4_inference.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"png")
        return [path]

    fake = types.SimpleNamespace(fig4=fig4, fig3=fig4)
    monkeypatch.setitem(sys.modules, "actlab.report.bench_figures", fake)
    monkeypatch.setattr(actlab.report, "bench_figures", fake, raising=False)
    (tmp_path / "inference.json").write_text(json.dumps({"models": {"bert": {}}}))
    assert figures.fig_bench(tmp_path, tmp_path / "out") == [tmp_path / "out" / "fig4_inference.png"]
    assert calls == [{"models": {"bert": {}}}]


def test_fig2_derivatives_come_from_the_activation_modules():
    pytest.importorskip("actlab.activations")
    z, curves = figures._derivative_curves(1.0)
    relu_y, relu_g = curves["relu"]
    helu_y, helu_g = curves["helu"]
    assert np.array_equal(relu_y, helu_y)  # HeLU's forward is ReLU
    assert np.all(helu_g[z > -1.0 + 1e-9] == 1) and np.all(helu_g[z <= -1.0] == 0)
    assert np.all(relu_g[z < 0] == 0) and np.all(relu_g[z > 0] == 1)


def test_cli_figures_writes_every_figure(runs, tmp_path, capsys):
    p = argparse.ArgumentParser()
    figures.add_arguments(p)
    out = tmp_path / "figs"
    assert figures.run(p.parse_args([str(runs), "--out", str(out), "--bench-dir", str(tmp_path)])) == 0
    text = capsys.readouterr().out
    assert "skipped fig3/fig4 (bench)" in text and "wrote" in text
    stems = ["fig1b_preact_hist", "acc_vs_margin", "dead_curves"]
    try:
        import actlab.activations  # noqa: F401

        stems.append("fig2_activations")
    except ImportError:
        assert "skipped fig2_activations" in text
    for stem in stems:
        assert (out / f"{stem}.png").stat().st_size > 1000 and (out / f"{stem}.pdf").stat().st_size > 1000


def test_bench_summarize_small(tmp_path):
    from actlab.bench import summarize as bench

    p = argparse.ArgumentParser()
    bench.add_arguments(p)
    assert bench.run(p.parse_args(["--n", "200", "--repeats", "1", "--layers", "0,4", "--out", str(tmp_path)])) == 0
    res = json.loads((tmp_path / "summarize.json").read_text())
    assert [r["layers"] for r in res["shapes"]] == [0, 4]
    assert all(r["n_records"] == 200 and r["load_s"]["median"] > 0 for r in res["shapes"])
    assert "| 4 |" in (tmp_path / "summarize.md").read_text() and res["target_s"] == 1.0
    # the synthetic runs are laid out as the runner writes them: schema 3, per-epoch rows in history.jsonl
    bench.write_runs(tmp_path / "runs", 3, epochs=2, layers=37)
    df = load_frame(tmp_path / "runs", per_layer=True, history=True)
    assert len(df) == 3 and (df["kind"] == "image").all() and "dead_fwd/block3.5.act2" in df.columns
    assert [len(h) for h in df["dead_history"]] == [2, 2, 2] and "val/acc" in df["history"].iloc[0][0]


@pytest.mark.parametrize("metric, scale, higher", [
    ("test/acc", 100, True), ("test/score", 100, True), ("test/mcc", 100, True), ("test/acc_mm", 100, True),
    ("dead_fwd", 100, False), ("test/loss", 1, False), ("val/perplexity", 1, False), ("wall_s", 1, False),
])
def test_fractions_are_shown_in_percent_and_losses_as_they_are(metric, scale, higher):
    # GLUE's per-task score is a mean of [0, 1] metrics, so it is a percentage like them.
    assert summ.scale_of(metric) == scale and summ.higher_is_better(metric) is higher


# --- figures worth looking at (issue 17) ---------------------------------------------------------------
def test_view_range_holds_the_central_share_and_zero():
    edges = np.linspace(-10, 10, 201)  # 0.1 wide bins
    share = np.zeros(200)
    share[100:110] = 10.0  # all mass in [0, 1)
    assert figures.view_range(edges, share, cover=99.5) == pytest.approx((0.0, 1.0))
    share[150] = 0.1  # a tail bin at [5, 5.1) with 0.1 % of the mass: inside the 99.5 % only when it must be
    lo, hi = figures.view_range(edges, share, cover=99.5)
    assert lo == pytest.approx(0.0) and hi == pytest.approx(1.0)
    lo, hi = figures.view_range(edges, share, cover=99.99)
    assert hi == pytest.approx(5.1)


def test_fig1b_draws_the_helu_run_with_the_largest_margin(tmp_path):
    r = tmp_path / "runs"
    write_run(r, "cifar10", "relu", None, 0, 0.9, hist=True)
    small = write_run(r, "cifar10", "helu", 0.05, 0, 0.9, hist=True)
    big = write_run(r, "cifar10", "helu", 0.5, 0, 0.9, hist=True)
    write_run(r, "cifar10", "helu", 1.0, 0, None, status="failed", hist=True)  # not finished: not drawn
    df = load_frame(r)
    assert figures._pick_hist_run(df, None)["run_id"] == big
    assert figures._pick_hist_run(df, small)["run_id"] == small  # --run-id still chooses


def test_acc_vs_margin_marks_only_holm_significant_differences(tmp_path):
    r = tmp_path / "runs"
    base = [0.80, 0.81, 0.79, 0.80, 0.82, 0.78]
    for seed, acc in enumerate(base):
        write_run(r, "cifar10", "relu", None, seed, acc)
        write_run(r, "cifar10", "helu", 0.5, seed, acc + 0.05 + 0.001 * seed)  # clearly higher, paired
        write_run(r, "cifar10", "helu", 0.05, seed, acc + (0.01 if seed % 2 else -0.01))  # no difference
    sig = figures.significance(load_frame(r), "test/acc")
    assert sig[("cifar10", "helu", 0.5)] < 0.05 <= sig[("cifar10", "helu", 0.05)]
    # the paired t-test by hand for HeLU 0.5, Holm with m = 2: the smaller p is doubled
    d = np.array([0.05 + 0.001 * s for s in range(6)])
    p = 2 * stats.t.sf(d.mean() / (d.std(ddof=1) / np.sqrt(6)), 5)
    assert sig[("cifar10", "helu", 0.5)] == pytest.approx(min(1.0, 2 * p), rel=1e-6)
