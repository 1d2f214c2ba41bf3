"""`actlab bench pipeline`: runs end to end on a tiny Fashion-MNIST, writes finite ratios, and the bare loop
trains and validates on exactly the images actlab does.

.venv/bin/python -m pytest tests/test_bench_pipeline.py -q
"""

from __future__ import annotations

import json
import math

import torch
from torch.utils.data import DataLoader

from actlab.bench import pipeline
from actlab.cli.main import main
from conftest import FASHION_SIZES


def test_quick_run_writes_finite_ratios_and_same_images(tmp_path, fashion_dir):
    rc = main(["bench", "pipeline", "--quick", "--models", "mlp", "--device", "cpu",
               "--data-dir", str(fashion_dir), "--out", str(tmp_path)])
    assert rc == 0
    data = json.loads((tmp_path / "pipeline.json").read_text())
    assert (tmp_path / "pipeline.md").read_text().count("| mlp |") >= 2
    assert data["quick"] and data["repeats"] == 1 and list(data["models"]) == ["mlp"]
    res = data["models"]["mlp"]
    # every variant either ran or says why not (the torchvision loader before dataset.loader existed)
    # (the GPU fast path, trainer=gpu + compile + channels_last, is a default variant on CUDA only)
    assert set(res["variants"]) | set(res["notes"]) == set(pipeline.VARIANTS) - set(pipeline.CUDA_ONLY)
    assert {"bare", "actlab", "actlab+monitor"} <= set(res["variants"])
    n_val = round(FASHION_SIZES["train"] * 0.1)
    n_train = FASHION_SIZES["train"] - n_val  # quick asks for 256: all 180 the fixture has
    assert res["images_per_epoch"] == n_train
    for name, v in res["variants"].items():
        assert math.isfinite(v["ratio"]) and v["ratio"] > 0, name
        assert len(v["seconds"]) == 1 and v["time"]["median"] > 0, name
        # the known answer: both sides see every training image once and the same validation images
        assert (v["train_images"], v["val_images"]) == (n_train, n_val), name
    assert res["variants"]["bare"]["ratio"] == 1.0
    assert set(res["targets"]) == {"actlab >= 0.6", "actlab+monitor >= 0.5"}


def test_batches_and_stacked_data_match_the_data_module(tmp_path, fashion_dir):
    assert [pipeline.n_batches(n, 128) for n in (1, 128, 129, 130, 256)] == [1, 1, 1, 2, 2]  # a last batch of 1 dropped
    cfg = pipeline.compose(pipeline.base_overrides("mlp", None, None, "cpu", _Args(fashion_dir), str(tmp_path)))
    from actlab.run.build import build

    dm, _, _ = build(cfg)
    dm.setup()
    for split, ds in (("train", dm.train_dataset), ("val", dm.val_dataset)):
        x, y = pipeline.stack(dm, split)  # the resident tensors, normalised at once
        xs, ys = zip(*DataLoader(ds, batch_size=64))    # the reader one image at a time
        assert torch.allclose(x, torch.cat(xs), atol=1e-6) and torch.equal(y, torch.cat(ys))
        assert x.shape[1:] == (1, 32, 32)


class _Args:
    def __init__(self, data_dir):
        self.seed, self.data_dir = 0, str(data_dir)
