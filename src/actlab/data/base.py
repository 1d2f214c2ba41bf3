"""What the vision data modules share: knob checks, the data cache, splits, transforms, loaders.

Each dataset in vision.py only says where its files live and how torchvision reads them; how
examples are split, transformed and batched lives here, so every dataset behaves the same.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision.transforms import v2

from actlab import atomic
from actlab.data.resident import TensorBatches, read_split


def default_cache_dir() -> Path:
    """Where downloads and extracted copies go: $ACTLAB_DATA_DIR if set, else ~/.cache/actlab/data."""
    env = os.environ.get("ACTLAB_DATA_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "actlab" / "data"


# ----------------------------------------------------------------------------- knob checks
# Users set these through Hydra (`dataset.batch_size=...`), so messages name the config key.


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_int(key: str, value: Any, *, minimum: int = 1, optional: bool = False) -> int | None:
    """Return `value` if it is an int >= minimum (or None when optional), else raise a one-line ValueError."""
    if value is None and optional:
        return None
    if not _is_int(value) or value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"dataset.{key} must be {what}{' or null' if optional else ''}, got {value!r}")
    return value


def check_val_split(value: Any) -> float | int:
    """A fraction in [0, 1) or a count >= 0 of training examples held out for validation."""
    if (_is_int(value) and value >= 0) or (isinstance(value, float) and 0.0 <= value < 1.0):
        return value
    raise ValueError(
        f"dataset.val_split must be a fraction in [0, 1) or a count >= 0 (0 = validate on the test split), "
        f"got {value!r}"
    )


def check_bool(key: str, value: Any, *, optional: bool = False) -> bool | None:
    if value is None and optional:
        return None
    if not isinstance(value, bool):
        raise ValueError(
            f"dataset.{key} must be true or false{' or null' if optional else ''}, got {value!r}"
        )
    return value


# ----------------------------------------------------------------------------- files


def fingerprint(paths: Iterable[Path]) -> str:
    """Short hash of absolute path, size and mtime of each file: names a cache entry for exactly these files."""
    h = hashlib.sha1()
    for p in paths:
        st = p.stat()
        h.update(f"{p.resolve()}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:12]


def atomic_copy(src: Path, dest: Path, *, gunzip: bool = False) -> None:
    """Copy (or gunzip) src to dest so dest never exists half-written: a second process extracting
    concurrently either sees the finished file or writes its own identical copy."""
    atomic.copy(src, dest, gunzip=gunzip)


# ----------------------------------------------------------------------------- splits


def split_indices(n: int, val_split: float | int, seed: int) -> tuple[list[int], list[int]]:
    """Hold out a seeded random part of range(n) for validation; both parts returned sorted.

    Sorted, so "the first N" (subset / eval_subset / the dead-neuron probe) means the lowest indices,
    and the validation set does not depend on `subset`.
    """
    n_val = max(1, round(n * val_split)) if isinstance(val_split, float) and val_split > 0 else int(val_split)
    if n_val >= n:
        raise ValueError(
            f"dataset.val_split={val_split!r} holds out {n_val} of the {n} training examples, "
            f"leaving none to train on; use a smaller value"
        )
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(perm[n_val:]), sorted(perm[:n_val])


class TransformedSubset(Dataset):
    """Examples `indices` of `base` (a torchvision dataset built without a transform), through `transform`.

    One base dataset then serves both the augmented training part and the plain held-out part.
    """

    def __init__(self, base: Dataset, indices: Sequence[int], transform: Callable):
        self.base, self.indices, self.transform = base, list(indices), transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image, label = self.base[self.indices[i]]
        return self.transform(image), int(label)


# ----------------------------------------------------------------------------- the data module


class VisionDataModule(L.LightningDataModule):
    """Shared knobs and behaviour; subclasses set the class attributes and implement `_locate`/`_load`.

    Knobs (config keys `dataset.<knob>`): data_dir, batch_size, num_workers, subset (first N training
    examples), eval_subset (first N of val and of test), val_split (fraction or count held out of the
    training set, seeded by split_seed; 0 = validate on the test split), augment (None = the dataset's
    paper default), download (only tried when files are missing), shuffle_seed (None = follow the global
    torch seed, i.e. `seed_everything`).
    """

    name: str
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: list | None = None
    default_augment: bool = False

    def __init__(
        self,
        data_dir: str | None = None,
        batch_size: int = 128,
        num_workers: int = 0,
        subset: int | None = None,
        eval_subset: int | None = None,
        val_split: float | int = 0.1,
        split_seed: int = 0,
        augment: bool | None = None,
        download: bool = True,
        shuffle_seed: int | None = None,
        loader: str | None = None,
    ):
        super().__init__()
        if data_dir is not None and not isinstance(data_dir, (str, os.PathLike)):
            raise ValueError(f"dataset.data_dir must be a folder path or null, got {data_dir!r}")
        self.data_dir = Path(data_dir).expanduser() if data_dir not in (None, "") else None
        self.batch_size = check_int("batch_size", batch_size)
        self.num_workers = check_int("num_workers", num_workers, minimum=0)
        self.subset = check_int("subset", subset, optional=True)
        self.eval_subset = check_int("eval_subset", eval_subset, optional=True)
        self.val_split = check_val_split(val_split)
        self.split_seed = check_int("split_seed", split_seed, minimum=0)
        augment = check_bool("augment", augment, optional=True)
        self.augment = self.default_augment if augment is None else augment
        self.download = check_bool("download", download)
        self.shuffle_seed = check_int("shuffle_seed", shuffle_seed, minimum=0, optional=True)
        self.loader = self._check_loader(loader)
        self._splits: dict[str, tuple[Dataset, list[int]]] = {}
        self._resident: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]] = {}
        self._read: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.train_dataset: Dataset | None = None
        self.val_dataset: Dataset | None = None
        self.test_dataset: Dataset | None = None

    kind = "image"
    model_kind = "image"  # the models that fit (their `kind`)
    # "tensor": the split as one uint8 tensor on the device, batches by index (data/resident.py); only
    # for data whose images all have one size and sit in memory as a `.data` array (not Imagenette).
    tensor_loader = True

    def _check_loader(self, loader: Any) -> str:
        choices = ("tensor", "torchvision") if self.tensor_loader else ("torchvision",)
        if loader is None:
            return choices[0]
        if loader not in choices:
            raise ValueError(f"dataset.loader={loader!r} is not available for {self.name}; use one of "
                             f"{', '.join(choices)}")
        return loader

    # -- what models and tasks are told about the data (see train._build_model)
    def model_kwargs(self) -> dict[str, Any]:
        return {"num_classes": self.num_classes, "in_channels": self.in_channels, "image_size": self.image_size}

    def task_kwargs(self) -> dict[str, Any]:
        return {"num_classes": self.num_classes}

    def example_input(self) -> torch.Tensor:
        """A two-image batch of zeros, to materialise lazy parameters before the optimizer exists."""
        return torch.zeros(2, self.in_channels, self.image_size, self.image_size)

    # -- what a dataset provides
    def _locate(self, download: bool) -> Any:
        """Find (or fetch, when allowed) the files; return what `_load` needs; raise FileNotFoundError."""
        raise NotImplementedError

    def _load(self, location: Any, train: bool) -> Dataset:
        """The torchvision dataset for the official train or test split, with no transform."""
        raise NotImplementedError

    def _eval_geometry(self) -> list:
        """Deterministic resizing/padding to `image_size` (none for native 32x32 data)."""
        return []

    def _augment_geometry(self) -> list:
        # The HeLU paper's CIFAR recipe: random 32x32 crop of the 4-pixel zero-padded image + horizontal flip.
        return [*self._eval_geometry(), v2.RandomCrop(self.image_size, padding=4), v2.RandomHorizontalFlip()]

    # -- transforms: PIL image -> float tensor (C, image_size, image_size), normalised per channel
    def _transform(self, augment: bool) -> v2.Compose:
        geometry = self._augment_geometry() if augment else self._eval_geometry()
        return v2.Compose(
            [
                v2.ToImage(),
                *geometry,
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize(self.mean, self.std),
            ]
        )

    def train_transform(self) -> v2.Compose:
        return self._transform(self.augment)

    def eval_transform(self) -> v2.Compose:
        return self._transform(False)

    # -- Lightning hooks
    def prepare_data(self) -> None:
        # Runs once per node before setup: the place for downloads and extraction.
        self._locate(self.download)

    def setup(self, stage: str | None = None) -> None:
        if self.train_dataset is not None:  # Lightning calls setup per stage; build everything once
            return
        location = self._locate(self.download)
        train_base, test_base = self._load(location, train=True), self._load(location, train=False)
        if self.classes is None:
            self.classes = list(getattr(train_base, "classes", [])) or None
        test_idx = list(range(_first(len(test_base), self.eval_subset)))
        if self.val_split == 0:
            train_idx, val_split = list(range(len(train_base))), (test_base, test_idx)
        else:
            train_idx, val_idx = split_indices(len(train_base), self.val_split, self.split_seed)
            val_split = (train_base, val_idx[: _first(len(val_idx), self.eval_subset)])
        train_idx = train_idx[: _first(len(train_idx), self.subset)]
        self._splits = {"train": (train_base, train_idx), "val": val_split, "test": (test_base, test_idx)}
        self.test_dataset = TransformedSubset(test_base, test_idx, self.eval_transform())
        self.val_dataset = self.test_dataset if self.val_split == 0 else \
            TransformedSubset(*val_split, self.eval_transform())
        self.train_dataset = TransformedSubset(train_base, train_idx, self.train_transform())

    def _seed(self) -> int:
        return self.shuffle_seed if self.shuffle_seed is not None else torch.initial_seed()

    def _device_and_rank(self) -> tuple[torch.device, int, int]:
        """The training device and this process's DDP rank and world size (CPU, 0, 1 without a trainer)."""
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return torch.device("cpu"), 0, 1
        return trainer.strategy.root_device, trainer.global_rank, trainer.world_size

    def tensors(self, split: str, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """(uint8 images (N, C, image_size, image_size), int64 labels) of a split, on `device`: eval
        geometry applied, nothing normalised. Read once per process (resident.read_split) and per device."""
        self.setup()
        key = (split, str(device))
        if key not in self._resident:
            base, idx = self._splits[split]
            if id(base) not in self._read:  # train and val share the official train split: read it once
                geometry = self._eval_geometry()
                self._read[id(base)] = read_split(base, v2.Compose(geometry) if geometry else None)
            images, labels = self._read[id(base)]
            index = torch.as_tensor(idx, dtype=torch.long)
            self._resident[key] = (images.index_select(0, index).to(device), labels.index_select(0, index).to(device))
        return self._resident[key]

    def _batches(self, split: str, train: bool) -> TensorBatches:
        device, rank, world = self._device_and_rank()
        images, labels = self.tensors(split, device)
        return TensorBatches(images, labels, self.batch_size, self.mean, self.std, shuffle=train,
                             seed=self._seed(), augment=train and self.augment, rank=rank, world=world)

    def _loader(self, dataset: Dataset, train: bool) -> DataLoader:
        kwargs: dict[str, Any] = {}
        if train:
            seed = self._seed()
            # A final batch of exactly one example would crash BatchNorm in training mode: drop only that.
            drop_last = len(dataset) > 1 and len(dataset) % self.batch_size == 1
            kwargs = dict(sampler=EpochShuffle(len(dataset), seed), drop_last=drop_last)
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
            **kwargs,
        )

    # Each loader sets up on first use, so `dm.val_dataloader()` works without an explicit setup().
    # With loader=tensor they return TensorBatches (an iterable of device batches, not a DataLoader).
    def train_dataloader(self) -> DataLoader | TensorBatches:
        self.setup()
        return self._batches("train", True) if self.loader == "tensor" else self._loader(self.train_dataset, True)

    def val_dataloader(self) -> DataLoader | TensorBatches:
        self.setup()
        return self._batches("val", False) if self.loader == "tensor" else self._loader(self.val_dataset, False)

    def test_dataloader(self) -> DataLoader | TensorBatches:
        self.setup()
        return self._batches("test", False) if self.loader == "tensor" else self._loader(self.test_dataset, False)


class EpochShuffle(Sampler[int]):
    """A random order that depends only on (seed, epoch): Lightning calls set_epoch before each epoch,
    so a run resumed from a checkpoint at epoch k sees the same orders as an uninterrupted one."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, int(seed) % 2**63, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())


def _first(n: int, limit: int | None) -> int:
    return n if limit is None else min(n, limit)
