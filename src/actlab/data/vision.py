"""The vision datasets as LightningDataModules: Fashion-MNIST, CIFAR-10, CIFAR-100, Imagenette.

Each class only says where its official files live and which torchvision reader opens them; splits,
transforms and loaders are shared (base.py). Used from Hydra configs, e.g.
`actlab-train dataset=cifar10 dataset.data_dir=/data dataset.subset=512`; the model builder reads
`dm.num_classes`, `dm.in_channels` and `dm.image_size`.
"""

from __future__ import annotations

import gzip
import warnings
import zlib
from pathlib import Path
from typing import Any

from torchvision.datasets import CIFAR10, CIFAR100, FashionMNIST, Imagenette
from torchvision.datasets.utils import check_md5
from torchvision.transforms import v2

from actlab.data.base import (
    VisionDataModule,
    atomic_copy,
    check_int,
    default_cache_dir,
    fingerprint,
)

# Where the Debian package `dataset-fashion-mnist` installs the official (gzipped) IDX files.
# Read at call time, so tests can point it elsewhere.
DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

FASHION_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

# Per-channel mean/std of each training set (pixels scaled to [0, 1]); Imagenette uses ImageNet's.
FASHION_MNIST_MEAN, FASHION_MNIST_STD = (0.2860,), (0.3530,)
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _one_line(err: BaseException, limit: int = 200) -> str:
    """An exception as one short line (torchvision's download errors span several)."""
    text = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
    text = f"{type(err).__name__}: {text}" if text else type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ----------------------------------------------------------------------------- Fashion-MNIST


class _FashionMNISTFolder(FashionMNIST):
    """torchvision's Fashion-MNIST reader, pointed at one folder holding the four uncompressed IDX files.

    torchvision insists on `<root>/FashionMNIST/raw/`; overriding `raw_folder` lets it read the user's
    folder (or our cache) as it is, without copying.
    """

    def __init__(self, raw_dir: Path, train: bool):
        self._raw_dir = str(raw_dir)
        super().__init__(self._raw_dir, train=train)

    @property
    def raw_folder(self) -> str:
        return self._raw_dir


def _idx_files(folder: Path) -> dict[str, Path] | None:
    """The four Fashion-MNIST files in `folder` (uncompressed preferred, else .gz), or None if any is missing."""
    found = {}
    for name in FASHION_MNIST_FILES:
        path = next((p for p in (folder / name, folder / f"{name}.gz") if p.is_file()), None)
        if path is None:
            return None
        found[name] = path
    return found


def _uncompressed(files: dict[str, Path], cache: Path) -> Path:
    """A folder with the four files uncompressed: their own folder if they already are, else a cache copy.

    torchvision's IDX reader cannot read .gz, and the source may be read-only (the Debian package), so
    gzipped files are extracted once into the cache under a fingerprint of the sources; the extraction is
    atomic, so a concurrent run never reads half a file.
    """
    if not any(p.suffix == ".gz" for p in files.values()):
        return next(iter(files.values())).parent
    dest = cache / "fashion_mnist" / fingerprint(files.values())
    for name, src in files.items():
        if not (dest / name).is_file():
            try:
                atomic_copy(src, dest / name, gunzip=src.suffix == ".gz")
            except (EOFError, zlib.error, gzip.BadGzipFile) as e:
                raise ValueError(f"{src}: truncated or corrupt gzip ({e}); copy the official file again "
                                 "(or reinstall dataset-fashion-mnist)") from None
    return dest


class FashionMNISTData(VisionDataModule):
    """Fashion-MNIST (28x28 grey, 10 classes), zero-padded to 32x32 so the CIFAR models serve unchanged.

    Files are looked for in: `data_dir` (files directly in it, or torchvision's `FashionMNIST/raw/`
    layout; .gz or not), the Debian package folder, the cache; then downloaded if `download`.
    """

    name = "fashion_mnist"
    num_classes, in_channels, image_size = 10, 1, 32
    mean, std = FASHION_MNIST_MEAN, FASHION_MNIST_STD

    def _eval_geometry(self) -> list:
        return [v2.Pad(2)]  # 28 -> 32 with zeros (the background colour); applied before normalising

    def _locate(self, download: bool) -> Path:
        cache = default_cache_dir()
        candidates = [self.data_dir, self.data_dir / "FashionMNIST" / "raw"] if self.data_dir else []
        candidates += [DEBIAN_FASHION_MNIST_DIR, cache / "FashionMNIST" / "raw"]
        for folder in candidates:
            files = _idx_files(folder)
            if files:
                return _uncompressed(files, cache)
        reason = ""
        if download:
            root = self.data_dir or cache
            try:  # the test split is the smallest thing that makes torchvision fetch all four files
                FashionMNIST(root, train=False, download=True)
                return root / "FashionMNIST" / "raw"
            except Exception as err:  # no network, HTTP error, read-only folder...: all mean "not available"
                reason = f"; download into {root} failed ({_one_line(err)})"
        raise FileNotFoundError(
            f"Fashion-MNIST IDX files not found in {', '.join(map(str, candidates))}{reason}; "
            f"apt-get install dataset-fashion-mnist or set dataset.data_dir=<folder with "
            f"train-images-idx3-ubyte[.gz] and the other three files>"
        )

    def _load(self, location: Path, train: bool) -> FashionMNIST:
        try:
            return _FashionMNISTFolder(location, train=train)
        except (RuntimeError, ValueError, EOFError, IndexError) as e:  # torchvision's IDX reader on a bad file
            which = "train" if train else "t10k"
            raise ValueError(f"{location}/{which}-*-idx*-ubyte: not a valid IDX file ({str(e).splitlines()[0]}); "
                             "copy the official Fashion-MNIST files again") from None


# ----------------------------------------------------------------------------- CIFAR
# torchvision verifies the md5 of every CIFAR batch file and refuses to read on a mismatch. Files
# written by tests in the official format cannot match those md5s, and failing hard would make the real
# reading code untestable; skipping the check silently would hide a corrupt download. So: the md5s are
# still computed (once per file per process) and a mismatch *warns*; torchvision's unpickling then
# fails loudly on a file that is actually broken. The archive md5 used by download() is kept as is.

_MD5_OK: dict[str, bool] = {}


def _warn_on_md5_mismatch(folder: Path, expected: list) -> None:
    bad = []
    for name, md5 in expected:
        path = folder / name
        if not path.is_file():
            continue  # missing files are torchvision's (or _locate's) to report
        key = f"{fingerprint([path])}:{md5}"
        if key not in _MD5_OK:
            _MD5_OK[key] = check_md5(str(path), md5)
            if not _MD5_OK[key]:
                bad.append(name)
    if bad:
        warnings.warn(
            f"{folder}: md5 of {', '.join(bad)} differs from the official release; reading it anyway",
            UserWarning,
            stacklevel=4,
        )


class _Md5WarnOnly:
    """Mixin for torchvision's CIFAR readers: md5 mismatch -> warning (see the comment above)."""

    def __init__(self, root: Path, train: bool, download: bool = False):
        folder = Path(root) / self.base_folder
        _warn_on_md5_mismatch(
            folder, [*self.train_list, *self.test_list, (self.meta["filename"], self.meta["md5"])]
        )
        # torchvision's check_integrity(path, md5=None) only checks that the file exists.
        self.train_list = [[name, None] for name, _ in self.train_list]
        self.test_list = [[name, None] for name, _ in self.test_list]
        self.meta = {**self.meta, "md5": None}
        super().__init__(root, train=train, download=download)


class _CIFAR10Reader(_Md5WarnOnly, CIFAR10):
    pass


class _CIFAR100Reader(_Md5WarnOnly, CIFAR100):
    pass


class CIFAR10Data(VisionDataModule):
    """CIFAR-10 (32x32 RGB, 10 classes) from `<data_dir>/cifar-10-batches-py` (the official python pickles).

    `data_dir` defaults to the cache ($ACTLAB_DATA_DIR or ~/.cache/actlab/data); augmentation (random
    crop with 4-pixel padding + horizontal flip, as in the HeLU paper) is on by default.
    """

    name = "cifar10"
    num_classes, in_channels, image_size = 10, 3, 32
    mean, std = CIFAR10_MEAN, CIFAR10_STD
    default_augment = True
    reader: type = _CIFAR10Reader
    title = "CIFAR-10"

    def _locate(self, download: bool) -> Path:
        base = self.reader.base_folder
        root = self.data_dir or default_cache_dir()
        if root.name == base:  # accept the batches folder itself as data_dir
            root = root.parent
        needed = [name for name, _ in [*self.reader.train_list, *self.reader.test_list]]
        needed.append(self.reader.meta["filename"])

        def missing() -> list[str]:
            return [name for name in needed if not (root / base / name).is_file()]

        reason = ""
        if missing() and download:
            try:
                self.reader(root, train=False, download=True)
            except Exception as err:  # no network, HTTP error, read-only folder...: all mean "not available"
                reason = f"; download failed ({_one_line(err)})"
        lacking = missing()
        if lacking:
            what = "does not exist" if not (root / base).is_dir() else f"lacks {', '.join(lacking)}"
            raise FileNotFoundError(
                f"{self.title} not found: {root / base} {what}{reason}; extract {self.reader.url} "
                f"into a folder and set dataset.data_dir=<that folder>"
            )
        return root

    def _load(self, location: Path, train: bool) -> CIFAR10:
        return self.reader(location, train=train)


class CIFAR100Data(CIFAR10Data):
    """CIFAR-100 (32x32 RGB, 100 fine classes) from `<data_dir>/cifar-100-python`; otherwise as CIFAR-10."""

    name = "cifar100"
    num_classes = 100
    mean, std = CIFAR100_MEAN, CIFAR100_STD
    reader = _CIFAR100Reader
    title = "CIFAR-100"


# ----------------------------------------------------------------------------- Imagenette

# torchvision's `size` values and the folder each release unpacks to.
IMAGENETTE_FOLDERS = {"160px": "imagenette2-160", "320px": "imagenette2-320", "full": "imagenette2"}
# Class names in label order (torchvision sorts the WordNet-id folders).
IMAGENETTE_CLASSES = [
    "tench", "English springer", "cassette player", "chain saw", "church",
    "French horn", "garbage truck", "gas pump", "golf ball", "parachute",
]  # fmt: skip


def _check_size(size: Any) -> str:
    text = str(size).lower()
    text = f"{text}px" if text.isdigit() else text
    if text not in IMAGENETTE_FOLDERS:
        raise ValueError(f"dataset.size must be one of 160, 320, full (the Imagenette release), got {size!r}")
    return text


class ImagenetteData(VisionDataModule):
    """Imagenette (10 easy ImageNet classes) from `<data_dir>/imagenette2-160` (or -320, or imagenette2).

    `size` picks the release (160 / 320 / full: shorter side 160 px, 320 px, original). Images are
    resized (shorter side) and centre-cropped to `image_size`; 160 by default, the native resolution of
    the smallest release, so nothing is resampled by default (the paper does not give its size).
    The official `train` folder is split into train/val by `val_split`; the official `val` folder is
    the test split. No augmentation by default, as in the paper; `augment=true` gives random-resized
    crops (scale 0.35-1, fastai's Imagenette recipe) + horizontal flips.
    """

    name = "imagenette"
    num_classes, in_channels = 10, 3
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    classes = IMAGENETTE_CLASSES
    tensor_loader = False  # JPEGs of varying size: decoded per image by torchvision's reader

    def __init__(self, size: int | str = 160, image_size: int = 160, **kwargs: Any):
        super().__init__(**kwargs)
        self.size = _check_size(size)
        self.image_size = check_int("image_size", image_size)

    def _eval_geometry(self) -> list:
        return [v2.Resize(self.image_size, antialias=True), v2.CenterCrop(self.image_size)]

    def _augment_geometry(self) -> list:
        crop = v2.RandomResizedCrop(self.image_size, scale=(0.35, 1.0), antialias=True)
        return [crop, v2.RandomHorizontalFlip()]

    def _locate(self, download: bool) -> Path:
        folder = IMAGENETTE_FOLDERS[self.size]
        root = self.data_dir or default_cache_dir()
        if root.name == folder:  # accept the release folder itself as data_dir
            root = root.parent

        def present() -> bool:
            return (root / folder / "train").is_dir() and (root / folder / "val").is_dir()

        reason = ""
        if not present() and download:
            try:
                Imagenette(root, split="val", size=self.size, download=True)
            except Exception as err:  # no network, HTTP error, read-only folder...: all mean "not available"
                reason = f"; download failed ({_one_line(err)})"
        if not present():
            url = Imagenette._ARCHIVES[self.size][0]
            raise FileNotFoundError(
                f"Imagenette ({self.size}) not found: {root / folder} needs train/ and val/ folders{reason}; "
                f"extract {url} into a folder and set dataset.data_dir=<that folder>"
            )
        return root

    def _load(self, location: Path, train: bool) -> Imagenette:
        dataset = Imagenette(location, split="train" if train else "val", size=self.size)
        if len(dataset.wnids) != self.num_classes:  # a missing class folder would silently shift labels
            raise FileNotFoundError(
                f"Imagenette at {location / IMAGENETTE_FOLDERS[self.size]} has {len(dataset.wnids)} class "
                f"folders in {'train' if train else 'val'}/, expected {self.num_classes}; re-extract the archive"
            )
        return dataset
