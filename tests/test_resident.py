"""The tensor-resident loader (dataset.loader=tensor) against torchvision's per-image path.

Known answers: the same evaluation pixels bit for bit, the same training order, torchvision's own crop
and flip for given offsets; the augmentation's distribution equal to torchvision's (chi-square);
(seed, epoch) reproducibility, DDP shards, and whole runs identical between the two loaders.
Run: pytest tests/test_resident.py -q
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import chi2_contingency, chisquare
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from actlab.data.resident import PAD, TensorBatches, pad_crop_flip
from actlab.data.vision import CIFAR10Data, FashionMNISTData, ImagenetteData
from actlab.run.runner import run

from compose import fashion, make_cfg

pytestmark = pytest.mark.filterwarnings("ignore:.*md5 of.*:UserWarning")  # fixtures can't match real md5s


def _cat(loader) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*loader)
    return torch.cat(xs), torch.cat(ys)


def _pair(cls, folder, **kw):
    return (cls(data_dir=str(folder), download=False, loader="tensor", **kw),
            cls(data_dir=str(folder), download=False, loader="torchvision", **kw))


@pytest.mark.parametrize(("cls", "data"), [(FashionMNISTData, "fashion_dir"), (CIFAR10Data, "cifar10_dir")])
def test_evaluation_pixels_and_labels_are_identical(request, cls, data):
    tensor, tv = _pair(cls, request.getfixturevalue(data), batch_size=16, eval_subset=40)
    for split in ("val_dataloader", "test_dataloader"):
        (xa, ya), (xb, yb) = _cat(getattr(tensor, split)()), _cat(getattr(tv, split)())
        assert xa.dtype == xb.dtype == torch.float32 and xa.shape == xb.shape
        assert torch.equal(xa, xb) and torch.equal(ya, yb)  # bit for bit, not approximately


def test_unaugmented_training_batches_are_torchvisions_in_the_same_order(fashion_dir):
    tensor, tv = _pair(FashionMNISTData, fashion_dir, batch_size=32, shuffle_seed=5)
    a, b = tensor.train_dataloader(), tv.train_dataloader()
    assert len(a) == len(b)
    for epoch in range(2):
        a.sampler.set_epoch(epoch)
        b.sampler.set_epoch(epoch)
        for (xa, ya), (xb, yb) in zip(a, b, strict=True):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_crop_and_flip_are_torchvisions_for_given_offsets():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (12, 3, 9, 7), dtype=torch.uint8, generator=g)  # odd, non-square
    shifts = torch.randint(0, 2 * PAD + 1, (12, 2), generator=g)
    flips = torch.arange(12) % 2 == 0
    out = pad_crop_flip(images, shifts, flips)
    for i in range(12):
        want = F.crop(F.pad(images[i], [PAD]), int(shifts[i, 0]), int(shifts[i, 1]), 9, 7)
        want = F.horizontal_flip(want) if flips[i] else want
        assert torch.equal(out[i], want)


def _landing_cells(augment, draws: int) -> np.ndarray:
    """Where the marker pixel of an 8x8 image lands over `draws` augmentations: counts per (row, col)."""
    counts = np.zeros((8 + 2 * PAD) * (8 + 2 * PAD))
    for x in augment(draws):
        hit = (x == 255).nonzero()
        cell = (int(hit[0, 0]) + PAD) * (8 + 2 * PAD) + int(hit[0, 1]) + PAD if len(hit) else -1
        counts[cell] += 1  # -1: cropped away
    return counts


def test_augmentation_has_torchvisions_distribution():
    """Crop offset and flip of the tensor loader vs RandomCrop(padding=4) + RandomHorizontalFlip: the
    marker pixel (2, 1) of an 8x8 image lands in the same cells with the same frequencies."""
    image = torch.zeros(1, 8, 8, dtype=torch.uint8)
    image[0, 2, 1] = 255
    n = 6000

    def ours(draws):
        batches = TensorBatches(image.expand(draws, 1, 8, 8).contiguous(), torch.zeros(draws), draws,
                                mean=[0.0], std=[1 / 255], shuffle=True, seed=1, augment=True)
        (x, _), = list(batches)
        return x[:, 0].round()

    torch.manual_seed(2)
    tv = v2.Compose([v2.RandomCrop(8, padding=PAD), v2.RandomHorizontalFlip()])
    a, b = _landing_cells(ours, n), _landing_cells(lambda d: [tv(image)[0] for _ in range(d)], n)
    seen = (a + b) > 0
    assert seen.sum() > 20  # the marker really moves around
    assert chi2_contingency(np.stack([a[seen], b[seen]]))[1] > 1e-3
    # and each draw of ours is uniform: 81 offsets, flips half the time
    plan = TensorBatches(image.expand(n, 1, 8, 8), torch.zeros(n), 64, [0.0], [1.0], shuffle=True,
                         augment=True).epoch_plan()
    offsets = (plan[1][:, 0] * (2 * PAD + 1) + plan[1][:, 1]).bincount(minlength=(2 * PAD + 1) ** 2)
    assert chisquare(offsets.numpy())[1] > 1e-3 and abs(plan[2].float().mean().item() - 0.5) < 0.03


def test_order_and_augmentation_depend_only_on_seed_and_epoch():
    images, labels = torch.randint(0, 256, (50, 3, 8, 8), dtype=torch.uint8), torch.arange(50)

    def epoch(batches, k):
        batches.set_epoch(k)
        return _cat(batches)

    def make(seed=0):
        return TensorBatches(images, labels, 16, [0.5] * 3, [0.2] * 3, shuffle=True, seed=seed, augment=True)

    first = make()
    run_through = [epoch(first, k) for k in range(3)]
    resumed = epoch(make(), 2)  # a fresh object at epoch 2, as after a resume
    assert torch.equal(run_through[2][0], resumed[0]) and torch.equal(run_through[2][1], resumed[1])
    assert not torch.equal(run_through[0][1], run_through[1][1])  # a new order each epoch
    assert not torch.equal(epoch(make(seed=1), 0)[1], run_through[0][1])


@pytest.mark.parametrize(("n", "world"), [(50, 2), (51, 3), (7, 2)])
def test_ddp_ranks_get_disjoint_equal_shards(n, world):
    images, labels = torch.zeros(n, 1, 4, 4, dtype=torch.uint8), torch.arange(n)
    train = [TensorBatches(images, labels, 4, [0.0], [1.0], shuffle=True, seed=3, rank=r, world=world)
             for r in range(world)]
    seen = [_cat(t)[1] for t in train]
    per_rank = n // world  # equal shards, the remainder dropped; then a final batch of one (BatchNorm)
    per_rank -= per_rank % 4 == 1
    assert {len(s) for s in seen} == {per_rank}
    assert len(set(torch.cat(seen).tolist())) == world * per_rank  # disjoint
    evals = [_cat(TensorBatches(images, labels, 4, [0.0], [1.0], rank=r, world=world))[1] for r in range(world)]
    assert sorted(torch.cat(evals).tolist()) == list(range(n))  # evaluation sees every example once


def test_loader_choice_is_checked(imagenette_dir, fashion_dir):
    with pytest.raises(ValueError, match=r"^dataset\.loader='tensor' is not available for imagenette; use one of "
                                         r"torchvision$"):
        ImagenetteData(data_dir=str(imagenette_dir), loader="tensor")
    with pytest.raises(ValueError, match=r"^dataset\.loader='gpu' .* use one of tensor, torchvision$"):
        FashionMNISTData(data_dir=str(fashion_dir), loader="gpu")
    assert ImagenetteData(data_dir=str(imagenette_dir)).loader == "torchvision"
    assert FashionMNISTData(data_dir=str(fashion_dir)).loader == "tensor"


def test_whole_runs_match_between_the_loaders(tmp_path, fashion_dir):
    """No augmentation: same batches in the same order, so training is the same computation, bit for bit."""
    over = [*fashion(fashion_dir), "activation=helu", "monitor=dead_neurons", "monitor.probe_size=16"]
    a = run(make_cfg(tmp_path / "a", *over, "dataset.loader=tensor"))
    b = run(make_cfg(tmp_path / "b", *over, "dataset.loader=torchvision"))
    assert a["run_id"] != b["run_id"]  # the loader is part of a run's identity (augmented data differs)
    assert a["metrics"] == b["metrics"] and set(a["metrics"]) >= {"train/loss", "train/acc", "val/acc", "test/acc"}
