"""`actlab report`: the Markdown report from run records, checked against hand computations.

    .venv/bin/python -m pytest tests/test_report_document.py -q

Records are written as the training entry writes them (schema 3: record.json, history.jsonl, predictions.npy)
with known accuracies, so every effect, CI, p-value, Holm adjustment and detectable difference in the report
can be recomputed here from the formulas (numpy, scipy.stats, scipy.optimize), not from the code under test.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from scipy import optimize, stats

from actlab.cli import main as cli
from actlab.report import comparisons as cmp
from actlab.report import document
from actlab.report.frame import load_frame
from actlab.report.summarize import summarize

RELU = [0.80, 0.81, 0.79, 0.80]
HELU = [0.85, 0.85, 0.83, 0.86]  # per-seed differences 0.05 0.04 0.04 0.06: mean 4.75 points
GELU = [0.80, 0.82, 0.78, 0.80]  # differences 0 +0.01 -0.01 0: no difference
HELU_05 = [0.81, 0.84, 0.80, 0.82]  # differences 0.01 0.03 0.01 0.02: raw p < 0.05, Holm-adjusted p > 0.05
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def write_run(runs: Path, activation: str, margin, seed: int, acc: float | None, status: str = "completed",
              dataset: str = "fashion_mnist", model: str = "mlp", commit: str = COMMIT, error: str | None = None,
              predictions: list[int] | None = None) -> str:
    """A schema-3 run directory as actlab-train leaves it; returns the run_id."""
    tag = zlib.crc32(repr((dataset, model, activation, margin, seed, status)).encode())
    run_id = f"{dataset}-{model}-{activation}{'' if margin is None else f'-m{margin}'}-s{seed}-{tag:08x}"
    d = runs / run_id
    d.mkdir(parents=True)
    dead = 0.10 + 0.01 * seed if activation == "relu" else 0.02
    rec = {
        "schema": 3, "run_id": run_id, "kind": "image", "main_metric": "test/acc", "status": status, "error": error,
        "config": {"seed": seed, "dataset": {"name": dataset, "data_dir": "data", "batch_size": 128},
                   "model": {"name": model, "width": 16}, "activation": {"name": activation, "margin": margin},
                   "margin": {"name": "constant"}, "optim": {"name": "sgd", "lr": 0.01},
                   "trainer": {"max_epochs": 2}, "tags": ["test"], "paths": {"runs_dir": str(runs)}},
        "metrics": {} if acc is None else {"test/acc": acc, "test/loss": 0.5, "val/acc": acc},
        "dead": {"final": {} if acc is None else {"dead_fwd": dead, "dead_grad": dead, "dormant_redo@0_025": 2 * dead,
                                                   "eff_rank": 10.0 + seed}},
        "timings": {"started_at": "2026-01-01T00:00:00+00:00", "wall_s": 10.0},
        "versions": {"actlab": "0.1.0"}, "git": {"commit": commit, "dirty": False},
        "host": {"hostname": "test", "cpu_count": 2}, "files": {"history": "history.jsonl"},
    }
    (d / "history.jsonl").write_text("".join(json.dumps(
        {"epoch": e, "step": 10 * (e + 1), "train/loss": 1.0 / (e + 1), "val/acc": 0.7,
         "dead": {"dead_fwd": dead + 0.01 * e, "dead_grad": dead}}) + "\n" for e in range(2)))
    if predictions is not None:
        np.save(d / "predictions.npy", np.asarray(predictions, dtype=np.uint8))
        rec["files"]["predictions"] = "predictions.npy"
    (d / "record.json").write_text(json.dumps(rec, indent=1))
    return run_id


# pd of the ReLU row by hand: the 6 pairs of these 4 runs disagree on 1/4, 2/4, 3/4, 1/4, 2/4, 1/4 of the examples
PREDICTIONS = [[0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 1], [0, 1, 1, 1]]


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    """Fashion-MNIST MLP: ReLU, HeLU 0.05, GELU, HeLU 0.5 and HeLU 0 (= ReLU) on seeds 0-3, plus a failed and
    an interrupted ReLU run (seeds 4, 5) and one run at a second commit."""
    r = tmp_path / "runs"
    for seed in range(4):
        write_run(r, "relu", None, seed, RELU[seed], predictions=PREDICTIONS[seed])
        write_run(r, "helu", 0.05, seed, HELU[seed], commit=COMMIT if seed else "f" * 40)
        write_run(r, "gelu", None, seed, GELU[seed])
        write_run(r, "helu", 0.5, seed, HELU_05[seed])
        write_run(r, "helu", 0.0, seed, RELU[seed])
    write_run(r, "relu", None, 4, None, status="failed", error="RuntimeError: boom\nTraceback ...")
    write_run(r, "relu", None, 5, None, status="interrupted")
    return r


def paired_by_hand(ours: list[float], base: list[float]) -> tuple[float, tuple[float, float], float]:
    """(mean difference, 95 % t interval, two-sided p) of a paired t-test, from the formulas."""
    d = np.array(ours) - np.array(base)
    n, mean, sd = len(d), d.mean(), d.std(ddof=1)
    se = sd / np.sqrt(n)
    half = stats.t.ppf(0.975, n - 1) * se
    return mean, (mean - half, mean + half), 2 * stats.t.sf(abs(mean / se), n - 1)


def holm_by_hand(p: list[float]) -> list[float]:
    """Sorted p times (m - rank), running maximum, capped at 1, back in the original order."""
    m, order = len(p), np.argsort(p)
    out, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, p[i] * (m - rank)))
        out[i] = running
    return out


def mdd_by_hand(sd: float, df: int, scale_n: float) -> float:
    """The difference a two-sided t-test (α 0.05) detects with power 0.8: noncentral t with noncentrality
    delta / sd * scale_n (paired: sqrt(n); two-sample: sqrt(n1 n2 / (n1 + n2))), solved with brentq."""
    crit = stats.t.ppf(0.975, df)

    def power(effect: float) -> float:
        nc = effect * scale_n
        # the lower tail is ~1e-10 here (scipy returns NaN for it far out): it still counts, as two-sided
        return stats.nct.sf(crit, df, nc) + np.nan_to_num(stats.nct.cdf(-crit, df, nc)) - 0.8

    return optimize.brentq(power, 1e-6, 6.0, xtol=1e-12) * sd


def section_comparisons(runs: Path):
    df = load_frame(runs, wandb=False)
    s = summarize(df, document.group_keys(df), ["test/acc"], "relu")
    found, unmatched = cmp.comparisons(df, s, "test/acc")
    return {c.label: c for c in found}, unmatched


# --- statistics ------------------------------------------------------------------------------------------------
def test_known_difference_gives_effect_ci_paired_p_and_sentence(runs):
    found, unmatched = section_comparisons(runs)
    assert unmatched == 0 and set(found) == {"HeLU α=0.05", "GELU", "HeLU α=0.5", "HeLU α=0"}
    c = found["HeLU α=0.05"]
    diff, ci, p = paired_by_hand(HELU, RELU)
    assert diff == pytest.approx(0.0475) and ci == pytest.approx((0.0475 - 0.015235, 0.0475 + 0.015235), abs=1e-5)
    assert (c.test, c.n) == ("paired", 4)
    assert c.diff == pytest.approx(diff) and c.ci == pytest.approx(ci) and c.p == pytest.approx(p, rel=1e-9)
    text = cmp.sentence(c)
    assert text.startswith("HeLU α=0.05 vs ReLU: test/acc higher by 4.75 points (95 % CI [3.23, 6.27]; paired t-test")
    assert f"p = {p:.3f}" in text and "significant at α = 0.05 after the correction" in text


def test_holm_over_the_three_tested_comparisons_matches_a_hand_computation(runs):
    found, _ = section_comparisons(runs)
    tested = ["HeLU α=0.05", "GELU", "HeLU α=0.5"]
    raw = [stats.ttest_rel(ours, RELU).pvalue for ours in (HELU, GELU, HELU_05)]
    adjusted = holm_by_hand(raw)
    assert raw[2] < 0.05 < adjusted[2]  # significant alone, not after the correction
    for label, p, q in zip(tested, raw, adjusted):
        assert found[label].p == pytest.approx(p, rel=1e-9)
        assert found[label].p_holm == pytest.approx(q, rel=1e-9) and found[label].m == 3
        assert f"Holm-adjusted p = {q:.3f}" in cmp.sentence(found[label])
    # HeLU α=0 equals ReLU on every seed: no test, so it is not in the family of m = 3
    assert np.isnan(found["HeLU α=0"].p) and "identical on each of the n = 4 seeds" in cmp.sentence(found["HeLU α=0"])
    assert cmp.sentence(found["GELU"]).startswith("GELU vs ReLU: no significant difference at n = 4 (")
    assert "no significant difference at n = 4" in cmp.sentence(found["HeLU α=0.5"])
    # the cap at 1 and the running maximum
    assert cmp.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert cmp.holm([0.5, 0.6, 0.001, np.nan]) == pytest.approx([1.0, 1.0, 0.003, np.nan], nan_ok=True)


def test_minimum_detectable_difference_paired_matches_the_noncentral_t(runs):
    found, _ = section_comparisons(runs)
    c = found["HeLU α=0.05"]
    d = np.array(HELU) - np.array(RELU)
    # statsmodels and brentq solve the same exact noncentral-t equation; only the root finders' tolerances
    # differ (statsmodels' is ~1e-8 on the effect size), so 1e-5 relative is ample and still catches a wrong df,
    # a one-sided test (about 20 % smaller) or the normal approximation (about 30 % smaller at n = 4).
    expected = mdd_by_hand(d.std(ddof=1), 3, np.sqrt(4))
    assert c.mdd == pytest.approx(expected, rel=1e-5)
    shown = re.search(r"detectable with 80 % power: ([\d.]+) points", cmp.sentence(c))
    assert shown and float(shown.group(1)) == pytest.approx(expected * 100, abs=0.006)


def test_welch_when_seeds_differ_ci_p_and_two_sample_mdd(tmp_path):
    r = tmp_path / "runs"
    relu, helu = [0.80, 0.81, 0.79, 0.80], [0.84, 0.86, 0.85]
    for seed, acc in enumerate(relu):
        write_run(r, "relu", None, seed, acc)
    for seed, acc in zip((10, 11, 12), helu):
        write_run(r, "helu", 0.05, seed, acc)
    (c,) = section_comparisons(r)[0].values()
    a, b = np.array(helu), np.array(relu)
    va, vb = a.var(ddof=1) / 3, b.var(ddof=1) / 4
    nu = (va + vb) ** 2 / (va**2 / 2 + vb**2 / 3)
    half = stats.t.ppf(0.975, nu) * np.sqrt(va + vb)
    diff = a.mean() - b.mean()
    assert (c.test, c.n, c.n_base) == ("welch", 3, 4)
    assert c.ci == pytest.approx((diff - half, diff + half)) and c.p == pytest.approx(
        stats.ttest_ind(a, b, equal_var=False).pvalue, rel=1e-9)
    pooled = np.sqrt((2 * a.var(ddof=1) + 3 * b.var(ddof=1)) / 5)
    assert c.mdd == pytest.approx(mdd_by_hand(pooled, 5, np.sqrt(3 * 4 / 7)), rel=1e-5)
    assert "Welch t-test" in cmp.sentence(c) and "n = 3 vs 4" in cmp.sentence(c)


def test_group_keys_add_the_identity_keys_that_vary(tmp_path):
    r = tmp_path / "runs"
    for model in ("mlp", "resnet_small"):
        for seed in range(2):
            write_run(r, "relu", None, seed, 0.8 + 0.01 * seed, model=model)
            write_run(r, "helu", 0.05, seed, 0.81 + 0.01 * seed, model=model)
    assert document.group_keys(load_frame(r, wandb=False)) == ["model", "activation", "margin"]
    found, _ = section_comparisons(r)
    assert len(found) == 1  # both HeLU rows carry the same label; each is compared within its model
    df = load_frame(r, wandb=False)
    s = summarize(df, document.group_keys(df), ["test/acc"], "relu")
    contexts = [c.context for c in cmp.comparisons(df, s, "test/acc")[0]]
    assert contexts == ["model=mlp", "model=resnet_small"]


def test_a_repeated_seed_is_noted_and_averaged_before_the_paired_test(runs, tmp_path):
    src = next(runs.glob("*-helu-m0.05-s1-*"))
    copy = runs / f"{src.name}-copy"
    rec = json.loads((src / "record.json").read_text())
    rec["run_id"], rec["metrics"]["test/acc"] = copy.name, 0.87  # seed 1 again: 0.85 and 0.87 average to 0.86
    copy.mkdir()
    (copy / "record.json").write_text(json.dumps(rec))
    df = load_frame(runs, wandb=False)
    s = summarize(df, document.group_keys(df), ["test/acc"], "relu")
    (note,) = document.duplicate_seeds(df, s)
    assert "activation=helu, margin=0.05 counts 5 runs over 4 seeds" in note
    c = {c.label: c for c in cmp.comparisons(df, s, "test/acc")[0]}["HeLU α=0.05"]
    helu = [0.85, 0.86, 0.83, 0.86]
    assert c.n == 4 and c.diff == pytest.approx(paired_by_hand(helu, RELU)[0])
    assert c.p == pytest.approx(paired_by_hand(helu, RELU)[2], rel=1e-9)


# --- the document ----------------------------------------------------------------------------------------------
def test_report_states_records_exclusions_commits_tables_and_paper_claim(runs, tmp_path):
    out = tmp_path / "rep" / "REPORT.md"
    (sec,) = document.write_report([str(runs)], out, draw=False)
    text = out.read_text()
    assert (sec.n_records, sec.n_counted, sec.n_excluded) == (22, 20, 2)
    assert "Records read: 22 (20 completed, 1 failed, 1 interrupted); counted: 20; not counted: 2" in text
    assert f"`{COMMIT[:12]}` (21 records)" in text and f"`{'f' * 12}` (1 record)" in text
    failed = [line for line in text.splitlines() if "-relu-s4-" in line]
    assert failed and "failed — RuntimeError: boom" in failed[-1]
    assert any("-relu-s5-" in line and "interrupted" in line for line in text.splitlines())
    # the ReLU row counts its 4 completed seeds only
    relu_row = next(line for line in text.splitlines() if line.startswith("| relu | — | 4 | 80.00 ± 0.82 |"))
    assert "| 1 | 0 | 0 |" in relu_row  # failed, running, corrupt
    # dead and dormancy rates (ReLU dead_fwd 0.10 + 0.01 seed: 11.50 ± 1.29 %), eff_rank as it is, pd by hand
    pairs = [0.25, 0.5, 0.75, 0.25, 0.5, 0.25]
    relu_rates = next(line for line in text.splitlines() if line.startswith("| relu | — | 4 | 11.50 ± 1.29 |"))
    assert f"{np.mean(pairs) * 100:.2f} ± {np.std(pairs, ddof=1) * 100:.2f}" in relu_rates  # 41.67 ± 20.41
    assert "| 23.00 ± 2.58 | 11.50 ± 1.29 |" in relu_rates  # dormant_redo@0_025, then eff_rank 10..13
    assert "eff_rank |" in text and "eff_rank (%)" not in text
    # the sentences, then the paper's Table 1 beside HeLU 0.05 and GELU (not beside HeLU 0.5: not in the paper)
    assert "- HeLU α=0.05 vs ReLU: test/acc higher by 4.75 points" in text
    assert "Holm-adjusted over the m = 3 tested comparisons of test/acc" in text
    claim = ("  - Paper, Table 1 (HeLU α=0.05 vs ReLU; the paper's setting, not ours: WRN-40-4 on its datasets; ours "
             "is fashion_mnist): CIFAR-10 (100 epochs) 95.31 ± 0.73 vs 92.84 ± 0.34, +2.47 points;")
    assert claim in text and "GELU vs ReLU; the paper's setting" in text and "HeLU α=0.5 vs ReLU; the paper" not in text


def test_paper_claim_on_a_paper_dataset_shows_that_dataset_only(tmp_path):
    r = tmp_path / "runs"
    for seed in range(2):
        write_run(r, "relu", None, seed, 0.90 + 0.01 * seed, dataset="cifar10")
        write_run(r, "helu", 0.1, seed, 0.92 + 0.01 * seed, dataset="cifar10")
    (c,) = section_comparisons(r)[0].values()
    assert cmp.paper_claim(c) == ("Paper, Table 1 (HeLU α=0.1 vs ReLU; the paper's setting, not ours: WRN-40-4 on "
                                  "the same dataset): CIFAR-10 (100 epochs) 95.10 ± 0.77 vs 92.84 ± 0.34, +2.26 points.")


def test_cli_writes_report_with_figures_and_exits_0(runs, tmp_path, capsys):
    out = tmp_path / "tmp" / "REPORT.md"
    assert cli.main(["report", str(runs), "--out", str(out)]) == 0
    text = out.read_text()
    links = re.findall(r"!\[\w+\]\(([^)]+\.png)\)", text)
    assert len(links) == 2 and all((out.parent / link).is_file() for link in links)  # acc_vs_margin, dead_curves
    assert "- fig1b_preact_hist: not drawn (no preact_hist.json found)" in text  # these records have none
    printed = capsys.readouterr().out
    assert "detectable with 80 % power" in printed and f"wrote {out}" in printed


def test_cli_missing_or_empty_dir_exits_1_with_one_line(tmp_path, capsys):
    out = tmp_path / "REPORT.md"
    assert cli.main(["report", str(tmp_path / "nope"), "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no such runs dir" in err and not out.exists()
    (tmp_path / "empty").mkdir()
    assert cli.main(["report", str(tmp_path / "empty"), "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no run records" in err and not out.exists()


def test_entry_point_missing_dir(tmp_path):
    p = subprocess.run([str(Path(sys.executable).parent / "actlab"), "report", str(tmp_path / "nope"),
                        "--out", str(tmp_path / "R.md")], capture_output=True, text=True, timeout=120)
    assert p.returncode == 1 and p.stderr.strip().startswith("actlab report: no such runs dir")
    assert len(p.stderr.strip().splitlines()) == 1


def test_figure_folders_are_named_for_the_experiment_and_never_shared():
    from actlab.report.document import _slug

    taken: set = set()
    names = [_slug(d, taken) for d in ("results/runs/cpu_table1", "results/runs/demo/activations",
                                       "results/runs/demo/margins/", "/abs/runs/demo/margins", "runs", ".", "a b/c")]
    assert names == ["cpu_table1", "demo_activations", "demo_margins", "demo_margins_2", "runs", "runs_2", "a_b_c"]
