"""Vision data modules on small files in the official formats, read by the real torchvision readers.

Fixture image i is the constant pixel(i) (see formats.py), so every check below knows exactly which
example, label and normalised value a loader must return.  Run: pytest tests/test_data.py -q
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from torch.utils.data import SequentialSampler
from torchvision.datasets import CIFAR10, FashionMNIST

from actlab import atomic
from actlab.data import vision
from actlab.data.base import EpochShuffle
from actlab.data.vision import CIFAR10Data, CIFAR100Data, FashionMNISTData, ImagenetteData

from formats import index_of, pixel, write_cifar10, write_fashion_mnist, write_idx

pytestmark = pytest.mark.filterwarnings("ignore:.*md5 of.*:UserWarning")  # fixtures can't match real md5s


def batches(loader) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*loader)
    return torch.cat(xs), torch.cat(ys)


# The documented per-channel normalisation, written out here (not read from the module) so a wrong
# constant fails: training-set mean/std of pixels in [0, 1]; ImageNet's for Imagenette.
NORMALISATION = {
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "imagenette": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


def raw_values(x: torch.Tensor, dm, row: int = 16, col: int = 16) -> torch.Tensor:
    """Undo the documented normalisation at one pixel: (N, C) uint8-scale values."""
    mean, std = map(torch.tensor, NORMALISATION[dm.name])
    return torch.round((x[:, :, row, col] * std + mean) * 255)


def check_known_answer(x, y, expected_idx, dm, channels):
    """Images are exactly (pixel(i, c)/255 - mean_c)/std_c everywhere, labels i % num_classes."""
    assert y.tolist() == [i % dm.num_classes for i in expected_idx]
    mean, std = NORMALISATION[dm.name]
    for c in range(channels):
        want = torch.tensor([(pixel(i, c) / 255 - mean[c]) / std[c] for i in expected_idx])
        core = x[:, c, 2:-2, 2:-2] if dm.name == "fashion_mnist" else x[:, c]
        assert torch.allclose(core, want[:, None, None].expand_as(core), atol=1e-5)


# ----------------------------------------------------------------------------- Fashion-MNIST


def test_fashion_known_answer_splits_and_padding(fashion_dir):
    dm = FashionMNISTData(data_dir=str(fashion_dir), batch_size=16, download=False)
    dm.prepare_data()
    dm.setup("fit")
    assert (len(dm.train_dataset), len(dm.val_dataset), len(dm.test_dataset)) == (180, 20, 50)
    x, y = batches(dm.val_dataloader())
    assert x.shape == (20, 1, 32, 32)
    val_idx = [index_of(v) for v in raw_values(x, dm)[:, 0]]
    assert val_idx == sorted(val_idx) == dm.val_dataset.indices  # in index order, not shuffled
    check_known_answer(x, y, val_idx, dm, 1)
    border = (0 - 0.2860) / 0.3530  # 2-pixel zero padding, normalised like the image
    assert torch.allclose(x[:, :, :2], torch.full_like(x[:, :, :2], border))
    assert torch.allclose(x[:, :, :, -2:], torch.full_like(x[:, :, :, -2:], border))
    x, y = batches(dm.test_dataloader())
    check_known_answer(x, y, list(range(50)), dm, 1)
    assert set(dm.train_dataset.indices).isdisjoint(val_idx)
    assert sorted(dm.train_dataset.indices + val_idx) == list(range(200))


@pytest.mark.parametrize("layout", ["flat", "torchvision"])
@pytest.mark.parametrize("compress", [True, False])
def test_fashion_reads_gzipped_and_uncompressed_in_both_layouts(tmp_path, data_cache, layout, compress):
    folder = tmp_path / "FashionMNIST" / "raw" if layout == "torchvision" else tmp_path
    write_fashion_mnist(folder, 30, 20, compress=compress)
    before = sorted(p.name for p in folder.iterdir())
    dm = FashionMNISTData(data_dir=str(tmp_path), eval_subset=5, val_split=0, download=False)
    x, y = batches(dm.test_dataloader())
    check_known_answer(x, y, list(range(5)), dm, 1)
    located = dm._locate(False)
    # Uncompressed files are read in place; gzipped ones from a one-off copy in the cache.
    assert located == (data_cache / "fashion_mnist" / located.name if compress else folder)
    assert sorted(p.name for p in folder.iterdir()) == before  # nothing written next to the sources


def test_gz_extracted_once_atomically(tmp_path, monkeypatch):
    src = write_fashion_mnist(tmp_path / "src", 10, 10)
    dm = FashionMNISTData(data_dir=str(src), download=False)
    real_copy = shutil.copyfileobj
    written = []

    def copy_and_check(fin, fout, *args):
        dest = Path(fout.name)
        final = dest.parent / dest.name[1:].split(".")[0]
        assert dest.name.endswith(".tmp") and not final.exists()  # never visible half-written
        written.append(final.name)
        return real_copy(fin, fout, *args)

    monkeypatch.setattr(atomic.shutil, "copyfileobj", copy_and_check)
    first = dm._locate(False)
    assert sorted(written) == sorted(vision.FASHION_MNIST_FILES)
    mtimes = {p.name: p.stat().st_mtime_ns for p in first.iterdir()}
    assert dm._locate(False) == first and len(written) == 4  # second call extracts nothing
    assert {p.name: p.stat().st_mtime_ns for p in first.iterdir()} == mtimes  # and no temp files left
    raw = gzip.decompress((src / "train-labels-idx1-ubyte.gz").read_bytes())
    assert (first / "train-labels-idx1-ubyte").read_bytes() == raw


def test_fashion_missing_data_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setattr(vision, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "no-such-package-dir")
    dm = FashionMNISTData(data_dir=str(tmp_path / "empty"), download=False)
    with pytest.raises(FileNotFoundError) as err:
        dm.setup()
    msg = str(err.value)
    assert "\n" not in msg and "no-such-package-dir" in msg and str(tmp_path / "empty") in msg
    assert "apt-get install dataset-fashion-mnist" in msg and "dataset.data_dir=" in msg
    # With download allowed, a failing download (closed local port: no network needed) gives the same error.
    monkeypatch.setattr(FashionMNIST, "mirrors", ["http://127.0.0.1:9/"])
    with pytest.raises(FileNotFoundError, match=r"download into .* failed") as err:
        FashionMNISTData(data_dir=str(tmp_path / "empty"), download=True).prepare_data()
    assert "\n" not in str(err.value)


@pytest.mark.skipif(
    not vision.DEBIAN_FASHION_MNIST_DIR.is_dir(),
    reason=f"Debian package dataset-fashion-mnist not installed ({vision.DEBIAN_FASHION_MNIST_DIR} absent)",
)
def test_real_fashion_mnist_from_debian_package(data_cache):
    package = sorted((p.name, p.stat().st_mtime_ns) for p in vision.DEBIAN_FASHION_MNIST_DIR.iterdir())
    dm = FashionMNISTData(subset=1000, eval_subset=1000, val_split=0, batch_size=250, download=False)
    x, y = batches(dm.val_dataloader())  # the official test split (val_split=0)
    assert x.shape == (1000, 1, 32, 32) and len(dm.train_dataset) == 1000
    assert y[:10].tolist() == [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]  # the official test labels
    # Cross-check the first image against an independent read of the gzipped IDX file.
    with gzip.open(vision.DEBIAN_FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz") as f:
        first = np.frombuffer(f.read()[16 : 16 + 784], dtype=np.uint8).reshape(28, 28)
    want = (torch.from_numpy(first.copy()).float() / 255 - 0.2860) / 0.3530
    assert torch.allclose(x[0, 0, 2:-2, 2:-2], want, atol=1e-5)
    pixels = dm.train_dataset.base.data.float() / 255  # all 60,000 training images, as read
    assert abs(pixels.mean() - dm.mean[0]) < 1e-3 and abs(pixels.std() - dm.std[0]) < 1e-3
    assert [dm.train_dataset[i][1] for i in range(10)] == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]
    assert dm._locate(False).parent.parent == data_cache  # extracted into the (test) cache...
    assert (
        sorted((p.name, p.stat().st_mtime_ns) for p in vision.DEBIAN_FASHION_MNIST_DIR.iterdir()) == package
    )
    dm = FashionMNISTData(subset=1000, download=False)  # ...and the default split holds out 10%
    dm.setup()
    assert (len(dm.train_dataset), len(dm.val_dataset), len(dm.test_dataset)) == (1000, 6000, 10000)


# ----------------------------------------------------------------------------- splits and loaders


def test_subset_eval_subset_and_val_split(fashion_dir):
    full = FashionMNISTData(data_dir=str(fashion_dir), download=False)
    full.setup()
    dm = FashionMNISTData(data_dir=str(fashion_dir), subset=50, eval_subset=7, download=False)
    dm.setup()
    assert (len(dm.train_dataset), len(dm.val_dataset), len(dm.test_dataset)) == (50, 7, 7)
    assert dm.train_dataset.indices == full.train_dataset.indices[:50]  # the first N, val unaffected
    assert dm.val_dataset.indices == full.val_dataset.indices[:7]
    counted = FashionMNISTData(data_dir=str(fashion_dir), val_split=30, download=False)
    counted.setup()
    assert (len(counted.train_dataset), len(counted.val_dataset)) == (170, 30)
    reseeded = FashionMNISTData(data_dir=str(fashion_dir), split_seed=1, download=False)
    reseeded.setup()
    assert reseeded.val_dataset.indices != full.val_dataset.indices
    on_test = FashionMNISTData(data_dir=str(fashion_dir), val_split=0, download=False)
    on_test.setup()
    assert on_test.val_dataset is on_test.test_dataset and len(on_test.train_dataset) == 200
    with pytest.raises(ValueError, match=r"^dataset\.val_split=200 holds out 200 of the 200"):
        FashionMNISTData(data_dir=str(fashion_dir), val_split=200, download=False).setup()


def test_train_loader_shuffles_reproducibly_and_eval_loaders_do_not(fashion_dir):
    def order(seed, epochs=1):
        dm = FashionMNISTData(data_dir=str(fashion_dir), batch_size=32, shuffle_seed=seed, download=False)
        loader = dm.train_dataloader()
        out = []
        for epoch in range(epochs):  # as Lightning does before each epoch
            loader.sampler.set_epoch(epoch)
            out += [index_of(v) for v in raw_values(batches(loader)[0], dm)[:, 0]]
        return out, dm

    (a, dm), (b, _), (c, _) = order(3, epochs=2), order(3, epochs=2), order(4)
    assert a == b and a[:180] != c and sorted(a[:180]) == sorted(dm.train_dataset.indices)
    assert a[:180] != a[180:]  # a new order each epoch
    assert a[180:] == order(3, epochs=2)[0][180:]  # epoch 2's order depends only on (seed, epoch): resumable
    # loader=torchvision: a DataLoader with EpochShuffle (the tensor loader draws the same order: test_resident.py)
    dm = FashionMNISTData(data_dir=str(fashion_dir), batch_size=32, download=False, loader="torchvision")
    assert isinstance(dm.train_dataloader().sampler, EpochShuffle)
    assert isinstance(dm.val_dataloader().sampler, SequentialSampler)
    assert (
        not dm.val_dataloader().persistent_workers
        and dm.val_dataloader().pin_memory == torch.cuda.is_available()
    )
    workers = FashionMNISTData(data_dir=str(fashion_dir), num_workers=2, download=False, loader="torchvision")
    assert workers.train_dataloader().persistent_workers and workers.test_dataloader().num_workers == 2


@pytest.mark.parametrize(("subset", "n_batches"), [(33, 2), (34, 3), (32, 2)])
def test_only_a_final_batch_of_one_is_dropped(fashion_dir, subset, n_batches):
    dm = FashionMNISTData(data_dir=str(fashion_dir), subset=subset, batch_size=16, download=False)
    assert len(dm.train_dataloader()) == n_batches


@pytest.mark.parametrize(("cls", "data", "augment", "changes"), [
    (CIFAR10Data, "cifar10_dir", None, True),  # CIFAR default: crop + flip
    (CIFAR10Data, "cifar10_dir", False, False),
    (FashionMNISTData, "fashion_dir", None, False),  # Fashion-MNIST default: none
    (FashionMNISTData, "fashion_dir", True, True),
])  # fmt: skip
def test_augmentation_changes_train_images_only(request, cls, data, augment, changes):
    dm = cls(data_dir=str(request.getfixturevalue(data)), augment=augment, download=False)
    dm.setup()
    torch.manual_seed(0)
    k = 1  # train position 1 is never image 0, which is all zeros (pixel(0) == 0) and so looks like padding
    plain = dm.eval_transform()(dm.train_dataset.base[dm.train_dataset.indices[k]][0])
    draws = [dm.train_dataset[k][0] for _ in range(8)]
    assert any(not torch.equal(d, plain) for d in draws) == changes
    assert all(d.shape == plain.shape for d in draws)
    v0, t0 = dm.val_dataset[0][0], dm.test_dataset[0][0]
    assert all(
        torch.equal(dm.val_dataset[0][0], v0) and torch.equal(dm.test_dataset[0][0], t0) for _ in range(4)
    )


# ----------------------------------------------------------------------------- CIFAR


@pytest.mark.parametrize(("cls", "data"), [(CIFAR10Data, "cifar10_dir"), (CIFAR100Data, "cifar100_dir")])
def test_cifar_known_answer(request, cls, data):
    dm = cls(data_dir=str(request.getfixturevalue(data)), batch_size=16, eval_subset=12, download=False)
    x, y = batches(dm.test_dataloader())
    check_known_answer(x, y, list(range(12)), dm, 3)  # also checks R, G, B land in channels 0, 1, 2
    x, y = batches(dm.val_dataloader())
    val_idx = [index_of(v) for v in raw_values(x, dm)[:, 0]]
    assert val_idx == dm.val_dataset.indices and len(val_idx) == 12
    check_known_answer(x, y, val_idx, dm, 3)
    assert len(dm.train_dataset) == 180 and len(dm.classes) == dm.num_classes


def test_cifar_accepts_the_batches_folder_itself_and_warns_on_md5(tmp_path):
    folder = write_cifar10(tmp_path, 10, 5)  # a fresh copy: md5s are checked once per file per process
    with pytest.warns(UserWarning, match=r"md5 of data_batch_1, .*batches\.meta differs"):
        dm = CIFAR10Data(data_dir=str(folder), val_split=0, download=False)
        dm.setup()
    assert dm.classes[:2] == ["airplane", "automobile"] and len(dm.test_dataset) == 5


def test_cifar_missing_data_one_line_error(tmp_path, monkeypatch):
    with pytest.raises(
        FileNotFoundError, match=r"CIFAR-10 not found: .*cifar-10-batches-py does not exist"
    ) as err:
        CIFAR10Data(data_dir=str(tmp_path), download=False).setup()
    assert "\n" not in str(err.value) and "dataset.data_dir=" in str(err.value)
    write_cifar10(tmp_path, 10, 5)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match=r"lacks data_batch_3;"):
        CIFAR10Data(data_dir=str(tmp_path), download=False).setup()
    monkeypatch.setattr(CIFAR10, "url", "http://127.0.0.1:9/cifar-10-python.tar.gz")
    with pytest.raises(FileNotFoundError, match=r"CIFAR-100 not found: .* download failed") as err:
        CIFAR100Data(data_dir=str(tmp_path / "nothing"), download=True).prepare_data()
    assert "\n" not in str(err.value)


# ----------------------------------------------------------------------------- Imagenette


def test_imagenette_known_answer(imagenette_dir, imagenette_manifest):
    dm = ImagenetteData(data_dir=str(imagenette_dir), image_size=24, batch_size=8, download=False)
    x, y = batches(dm.test_dataloader())  # the official val/ folder
    want = [r for r in imagenette_manifest if r[0] == "val"]
    assert x.shape == (20, 3, 24, 24) and y.tolist() == [r[2] for r in want]
    grey = raw_values(x, dm, 12, 12)
    assert torch.all((grey - torch.tensor([r[3] for r in want])[:, None]).abs() <= 2)  # JPEG: within 2 levels
    assert (len(dm.train_dataset), len(dm.val_dataset)) == (27, 3)
    assert dm.classes[0] == "tench" and (dm.num_classes, dm.in_channels, dm.image_size) == (10, 3, 24)
    augmented = ImagenetteData(data_dir=str(imagenette_dir), image_size=24, augment=True, download=False)
    assert batches(augmented.train_dataloader())[0].shape == (27, 3, 24, 24)  # random-resized crops


def test_imagenette_missing_release_or_class(imagenette_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"Imagenette \(320px\) not found: .*imagenette2-320 needs"):
        ImagenetteData(data_dir=str(imagenette_dir), size=320, download=False).setup()
    copy = shutil.copytree(imagenette_dir / "imagenette2-160", tmp_path / "imagenette2-160")
    shutil.rmtree(copy / "train" / "n03888257")
    with pytest.raises(FileNotFoundError, match=r"has 9 class folders in train/, expected 10"):
        ImagenetteData(data_dir=str(copy), download=False).setup()  # the release folder itself as data_dir


# ----------------------------------------------------------------------------- knobs and wiring


@pytest.mark.parametrize(("cls", "kwargs", "key"), [
    (FashionMNISTData, {"batch_size": -4}, "batch_size"),
    (FashionMNISTData, {"batch_size": 0}, "batch_size"),
    (FashionMNISTData, {"batch_size": True}, "batch_size"),
    (CIFAR10Data, {"batch_size": "128"}, "batch_size"),
    (CIFAR10Data, {"subset": 0}, "subset"),
    (CIFAR100Data, {"eval_subset": -1}, "eval_subset"),
    (CIFAR10Data, {"val_split": 1.0}, "val_split"),
    (CIFAR10Data, {"val_split": -0.1}, "val_split"),
    (CIFAR10Data, {"val_split": -3}, "val_split"),
    (CIFAR10Data, {"val_split": "0.1"}, "val_split"),
    (CIFAR10Data, {"num_workers": -1}, "num_workers"),
    (CIFAR10Data, {"split_seed": 1.5}, "split_seed"),
    (CIFAR10Data, {"augment": "yes"}, "augment"),
    (CIFAR10Data, {"download": None}, "download"),
    (CIFAR10Data, {"data_dir": 3}, "data_dir"),
    (ImagenetteData, {"size": 200}, "size"),
    (ImagenetteData, {"image_size": 0}, "image_size"),
])  # fmt: skip
def test_bad_knobs_raise_one_line_naming_the_key(cls, kwargs, key):
    with pytest.raises(ValueError) as err:
        cls(**kwargs)
    msg = str(err.value)
    assert (
        msg.startswith(f"dataset.{key} must be")
        and "\n" not in msg
        and repr(next(iter(kwargs.values()))) in msg
    )


def test_model_facing_attributes_need_no_files(tmp_path):
    missing = str(tmp_path / "nothing-here")
    facts = {
        cls(data_dir=missing, download=False).name: (d.num_classes, d.in_channels, d.image_size)
        for cls in (FashionMNISTData, CIFAR10Data, CIFAR100Data, ImagenetteData)
        for d in [cls(data_dir=missing, download=False)]
    }
    assert facts == {
        "fashion_mnist": (10, 1, 32),
        "cifar10": (10, 3, 32),
        "cifar100": (100, 3, 32),
        "imagenette": (10, 3, 160),
    }
    assert ImagenetteData(size="full", image_size=224).image_size == 224


def test_hydra_instantiate_and_lightning_fit(cifar10_dir):
    cfg = {"_target_": "actlab.data.vision.CIFAR10Data", "data_dir": str(cifar10_dir), "batch_size": 32,
           "num_workers": 0, "subset": 64, "eval_subset": 16, "val_split": 0.1, "augment": None}  # fmt: skip
    dm = instantiate(cfg)
    assert isinstance(dm, CIFAR10Data) and dm.augment is True

    class Tiny(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, dm.num_classes))

        def training_step(self, batch, _):
            return torch.nn.functional.cross_entropy(self.net(batch[0]), batch[1])

        def validation_step(self, batch, _):
            self.log("val/loss", torch.nn.functional.cross_entropy(self.net(batch[0]), batch[1]))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu")  # fmt: skip
    trainer.fit(Tiny(), datamodule=dm)
    assert trainer.global_step == 2 and torch.isfinite(trainer.callback_metrics["val/loss"])


def test_idx_writer_matches_the_spec(tmp_path):
    path = write_idx(tmp_path / "x", np.arange(6, dtype=np.uint8).reshape(1, 2, 3))
    assert path.read_bytes() == bytes([0, 0, 8, 3, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 1, 2, 3, 4, 5])
