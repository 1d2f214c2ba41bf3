"""Prediction disagreement between seeds: saved test predictions, `pd` and `rel_pd` in `actlab summarize`.

    .venv/bin/python -m pytest tests/test_disagreement.py -q
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from actlab.cli import main as cli
from actlab.report import disagreement
from actlab.report import summarize as summ
from actlab.report.frame import load_frame
from actlab.run import records

from compose import fashion, make_cfg

# Three seeds' predictions on 10 test examples: a and b differ at 0, a and c at 1 and 2, b and c at 0, 1
# and 2 -> pairwise disagreement 0.1, 0.2, 0.3: pd = 0.2, std over pairs 0.1.
A = np.zeros(10, dtype=np.uint8)
B = A.copy()
B[0] = 1
C = A.copy()
C[[1, 2]] = 2
ACCS = [0.6, 0.5, 0.4]  # mean test error 0.5 -> rel_pd = 0.2 / 0.5 = 0.4


def test_known_answer_of_three_seeds():
    assert disagreement.pairwise([A, B, C]).tolist() == pytest.approx([0.1, 0.2, 0.3])
    r = disagreement.of_runs([A, B, C], np.array(ACCS))
    assert (r.pd, r.pd_std, r.n, r.pairs, r.why) == (pytest.approx(0.2), pytest.approx(0.1), 3, 3, None)
    assert (r.rel_pd, r.rel_pd_std) == (pytest.approx(0.4), pytest.approx(0.2))
    one = disagreement.of_runs([A], np.array([0.6]))  # nothing to pair: no value, and nothing to explain
    assert math.isnan(one.pd) and one.why is None


def run_row(run_dir: Path, activation: str, seed: int, acc: float, preds: np.ndarray | None) -> dict:
    """A frame row as load_frame gives it, its predictions saved beside it as a run saves them."""
    run_dir.mkdir(parents=True)
    if preds is not None:
        records.write_predictions(run_dir, preds)
    return {"run_id": run_dir.name, "status": "completed", "error": None, "source": "record", "kind": "image",
            "dataset": "cifar10", "model": "mlp", "activation": activation, "margin": np.nan, "schedule": None,
            "seed": seed, "tags": None, "test/acc": acc, "optim.lr": 0.1, "path": str(run_dir / records.RECORD)}


def frame(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    df["seed"] = pd.to_numeric(df["seed"]).astype("Int64")
    return df.sort_values("run_id", kind="stable", ignore_index=True)


def row_of(stats: pd.DataFrame, activation: str) -> pd.Series:
    (i,) = np.flatnonzero(stats["activation"] == activation)
    return stats.iloc[i]


def test_summarize_pd_and_rel_pd_per_row(tmp_path):
    relu = [run_row(tmp_path / f"relu-s{s}", "relu", s, acc, p) for s, (acc, p) in enumerate(zip(ACCS, (A, B, C)))]
    # GELU: two seeds that disagree on 1 of 10 examples, error 0.25
    gelu = [run_row(tmp_path / "gelu-s0", "gelu", 0, 0.7, A), run_row(tmp_path / "gelu-s1", "gelu", 1, 0.8, B)]
    s = summ.summarize(frame(relu + gelu), metrics=["test/acc", "pd", "rel_pd"])
    r, g = row_of(s.stats, "relu"), row_of(s.stats, "gelu")
    assert (r["pd:mean"], r["pd:std"], r["pd:n"], r["pd:pairs"]) == (pytest.approx(0.2), pytest.approx(0.1), 3, 3)
    assert r["rel_pd:mean"] == pytest.approx(0.4) and math.isnan(r["pd:ci_low"])
    assert (g["pd:mean"], g["rel_pd:mean"], g["pd:pairs"]) == (pytest.approx(0.1), pytest.approx(0.4), 1)
    assert math.isnan(g["pd:std"])  # one pair
    assert g["pd:diff"] == pytest.approx(-0.1) and g["rel_pd:diff"] == pytest.approx(0.0) and math.isnan(g["pd:p"])
    assert not s.notes
    table, bold = summ.display_table(s)
    shown = table.iloc[list(s.stats["activation"]).index("relu")]
    assert shown["pd (%)"] == "20.00 ± 10.00" and shown["rel_pd"] == "0.40 ± 0.20"
    assert bold[list(s.stats["activation"]).index("gelu"), list(table.columns).index("pd (%)")]  # lower is better


def test_missing_or_unequal_files_give_no_number_and_a_note(tmp_path):
    rows = [run_row(tmp_path / "relu-s0", "relu", 0, 0.6, A), run_row(tmp_path / "relu-s1", "relu", 1, 0.5, None),
            run_row(tmp_path / "gelu-s0", "gelu", 0, 0.6, A), run_row(tmp_path / "gelu-s1", "gelu", 1, 0.5, A[:9]),
            run_row(tmp_path / "elu-s0", "elu", 0, 0.6, A)]  # one run: nothing to pair, no note
    glue = [run_row(tmp_path / f"glue-s{s}", "silu", s, np.nan, None) | {"kind": "glue"} for s in (0, 1)]
    rows += glue  # GLUE runs never save predictions: no value, and no note about them
    s = summ.summarize(frame(rows), metrics=["pd", "rel_pd"])
    assert s.stats["pd:mean"].isna().all() and s.stats["rel_pd:mean"].isna().all()
    (note,) = s.notes
    assert f"a run without a readable {records.PREDICTIONS}: 1 row(s)" in note
    assert "prediction files of different lengths: 1 row(s)" in note


def test_predictions_file_round_trip_and_dtype(tmp_path):
    assert records.write_predictions(tmp_path, np.array([3, 1, 2], dtype=np.uint8)) == records.PREDICTIONS
    got = records.read_predictions(tmp_path)
    assert got.dtype == np.uint8 and got.tolist() == [3, 1, 2]
    assert not list(tmp_path.glob(".*.tmp"))  # the temp file was renamed
    (tmp_path / records.PREDICTIONS).write_bytes(b"not an npy file")
    assert records.read_predictions(tmp_path) is None and records.read_predictions(tmp_path / "none") is None
    with pytest.raises(ValueError):
        records.write_predictions(tmp_path, np.zeros((2, 2), dtype=np.int64))


# --- DDP: the ranks' shards back in index order (simulated: one process plays every rank) ----------------
@pytest.mark.parametrize("shards, dataset_len", [
    ([list(range(r, 10, 3)) for r in range(3)], None),  # TensorBatches: rank r gets r::3, unequal counts
    ([[0, 3, 6, 9], [1, 4, 7, 0], [2, 5, 8, 1]], 10),  # DistributedSampler: padded with the first examples
])
def test_ddp_gather_puts_predictions_back_in_index_order(shards, dataset_len):
    from types import SimpleNamespace

    from actlab.tasks.classify import Classifier

    truth = torch.tensor([7, 1, 4, 4, 0, 9, 2, 3, 8, 5])  # the prediction of example i
    task = Classifier(torch.nn.Linear(2, 10), 10, optimizer=lambda params: None)
    loader = SimpleNamespace(dataset=range(dataset_len)) if dataset_len else object()
    task._trainer = SimpleNamespace(world_size=3, test_dataloaders=loader)
    for rank in range(3):
        mine = truth[shards[rank]]
        width = max(map(len, shards))
        calls = iter([torch.tensor([[len(s)] for s in shards]),  # all_gather of the counts, then the padded shards
                      torch.stack([torch.cat([truth[s], torch.full((width - len(s),), -1)]) for s in shards])])
        task.all_gather = lambda t, calls=calls: next(calls)
        assert task._gather_in_order(mine).tolist() == truth.tolist()


# --- end to end: two 1-epoch runs that differ only in the seed ------------------------------------------
def _test_argmax(cfg, ckpt: Path) -> tuple[np.ndarray, np.ndarray]:
    """(argmax of the checkpoint's model on the test set in order, the test labels)."""
    from actlab.run.build import build

    dm, _, task = build(cfg)
    task.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"])
    task.eval()
    dm.setup()
    preds, labels = [], []
    with torch.no_grad():
        for x, y in dm.test_dataloader():
            preds.append(task(x).argmax(1))
            labels.append(y)
    return torch.cat(preds).numpy(), torch.cat(labels).numpy()


def test_two_seeds_end_to_end(tmp_path, fashion_dir):
    from actlab.run.runner import run

    recs, cfgs = [], []
    for seed in (0, 1):
        # batch 8: 25 steps, so that the models predict several classes (the fixture is not learnable in 1 epoch)
        cfgs.append(make_cfg(tmp_path, *fashion(fashion_dir), "trainer.max_epochs=1", "dataset.batch_size=8",
                             f"seed={seed}"))
        recs.append(run(cfgs[-1]))
    runs = tmp_path / "runs"
    preds = []
    for rec, cfg in zip(recs, cfgs):
        assert rec["files"]["predictions"] == records.PREDICTIONS
        p = records.read_predictions(runs / rec["run_id"])
        assert p.dtype == np.uint8 and p.shape == (50,)  # FASHION_SIZES["test"]
        again, labels = _test_argmax(cfg, runs / rec["run_id"] / rec["files"]["checkpoint"])
        assert np.array_equal(p, again)  # the saved predictions are the trained model's argmax
        assert np.mean(p == labels) == pytest.approx(rec["metrics"]["test/acc"], abs=1e-6)
        preds.append(p)
    expected_pd = float(np.mean(preds[0] != preds[1]))
    expected_rel = expected_pd / np.mean([1 - r["metrics"]["test/acc"] for r in recs])

    s = summ.summarize(load_frame(runs), metrics=["test/acc", "pd", "rel_pd"])
    (row,) = s.stats.to_dict("records")
    assert row["n"] == 2 and row["pd:n"] == 2 and row["pd:pairs"] == 1
    assert row["pd:mean"] == pytest.approx(expected_pd) and row["rel_pd:mean"] == pytest.approx(expected_rel)

    out = tmp_path / "tables"  # the CLI: --metric pd selects it; by default it comes with test/acc
    assert cli.main(["summarize", str(runs), "--metric", "pd", "--out", str(out), "--name", "pd", "--no-wandb"]) == 0
    csv = pd.read_csv(out / "pd.csv")
    assert "test/acc:mean" not in csv and csv["pd:mean"].tolist() == [pytest.approx(expected_pd)]
    assert cli.main(["summarize", str(runs), "--out", str(out), "--no-wandb"]) == 0
    csv = pd.read_csv(out / "summary.csv")
    assert {"test/acc:mean", "pd:mean", "rel_pd:mean"} <= set(csv.columns)
    assert csv["rel_pd:mean"].tolist() == [pytest.approx(expected_rel)]
    assert "rel_pd = pd / the row's mean test error" in (out / "summary.md").read_text()
