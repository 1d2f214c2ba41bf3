"""Writers for small datasets in the official on-disk formats, so tests run the real torchvision readers.

Every image encodes its own index: image i is the constant value `pixel(i)` (RGB datasets add 85 and
170 on the green and blue channels, to catch channel-order mistakes); its label is i % num_classes.
`index_of(value)` inverts `pixel`, so a test can tell exactly which examples a loader returned.
"""

from __future__ import annotations

import csv
import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
from PIL import Image

_STEP = 37  # odd, so i -> 37 i mod 256 is a bijection on 0..255
_INVERSE = pow(_STEP, -1, 256)
MAX_EXAMPLES = 256  # indices are recoverable from a pixel only below this


def pixel(i: int, channel: int = 0) -> int:
    """The constant value of image i in `channel` (0 = grey or red)."""
    return (i * _STEP + 85 * channel) % 256


def index_of(value: int) -> int:
    """The index i with pixel(i) == value."""
    return (int(value) * _INVERSE) % 256


def known_images(n: int, channels: int, size: int) -> np.ndarray:
    """uint8 array (n, channels, size, size) where image i, channel c is the constant pixel(i, c)."""
    assert n <= MAX_EXAMPLES, "index encoding only distinguishes 256 images"
    values = np.array([[pixel(i, c) for c in range(channels)] for i in range(n)], dtype=np.uint8)
    return np.broadcast_to(values[:, :, None, None], (n, channels, size, size)).copy()


# ----------------------------------------------------------------------------- IDX (MNIST family)


def write_idx(path: Path, array: np.ndarray, *, compress: bool = False) -> Path:
    """IDX file: magic (0, 0, type 0x08 = ubyte, ndim), each dimension as big-endian uint32, then the data."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as f:
            f.write(header + array.tobytes())
    else:
        path.write_bytes(header + array.tobytes())
    return path


def write_fashion_mnist(folder: Path, n_train: int, n_test: int, *, compress: bool = True) -> Path:
    """The four Fashion-MNIST IDX files (28x28 grey, labels i % 10) directly in `folder`."""
    folder = Path(folder)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte", known_images(n, 1, 28)[:, 0], compress=compress)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10, compress=compress)
    return folder


# ----------------------------------------------------------------------------- CIFAR python pickles


def _pickle(path: Path, obj: dict) -> None:
    # The official files are Python 2 pickles (protocol 2); torchvision loads them with encoding="latin1".
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def _cifar_rows(start: int, n: int) -> np.ndarray:
    """Rows of 3072 bytes: the 1024 red values (row-major 32x32), then green, then blue."""
    return known_images(start + n, 3, 32)[start:].reshape(n, 3072)


def write_cifar10(root: Path, n_train: int, n_test: int) -> Path:
    """`<root>/cifar-10-batches-py/`: data_batch_1..5 (n_train split evenly), test_batch, batches.meta."""
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    assert n_train % 5 == 0, "five equal training batches"
    per = n_train // 5
    for b in range(5):
        ids = range(b * per, (b + 1) * per)
        _pickle(
            folder / f"data_batch_{b + 1}",
            {
                "batch_label": f"training batch {b + 1} of 5",
                "labels": [i % 10 for i in ids],
                "data": _cifar_rows(b * per, per),
                "filenames": [f"img_{i:05d}.png" for i in ids],
            },
        )
    _pickle(
        folder / "test_batch",
        {
            "batch_label": "testing batch 1 of 1",
            "labels": [i % 10 for i in range(n_test)],
            "data": _cifar_rows(0, n_test),
            "filenames": [f"test_{i:05d}.png" for i in range(n_test)],
        },
    )
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    _pickle(folder / "batches.meta", {"label_names": names, "num_cases_per_batch": per, "num_vis": 3072})
    (folder / "readme.html").write_text(
        '<meta HTTP-EQUIV="REFRESH" content="0; url=https://www.cs.toronto.edu/~kriz/cifar.html">\n'
    )
    return folder


def write_cifar100(root: Path, n_train: int, n_test: int) -> Path:
    """`<root>/cifar-100-python/`: train, test (fine label i % 100, coarse i % 20) and meta."""
    folder = Path(root) / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in (("train", n_train), ("test", n_test)):
        _pickle(
            folder / name,
            {
                "filenames": [f"{name}_{i:05d}.png" for i in range(n)],
                "batch_label": f"{name} batch 1 of 1",
                "fine_labels": [i % 100 for i in range(n)],
                "coarse_labels": [i % 20 for i in range(n)],
                "data": _cifar_rows(0, n),
            },
        )
    fine = [f"fine_{k:02d}" for k in range(100)]
    coarse = [f"coarse_{k:02d}" for k in range(20)]
    _pickle(folder / "meta", {"fine_label_names": fine, "coarse_label_names": coarse})
    return folder


# ----------------------------------------------------------------------------- Imagenette folder tree

IMAGENETTE_WNIDS = [
    "n01440764", "n02102040", "n02979186", "n03000684", "n03028079",
    "n03394916", "n03417042", "n03425413", "n03445777", "n03888257",
]  # fmt: skip


def imagenette_value(k: int) -> int:
    """Grey level of the k-th image written (distinct, 4 levels apart so JPEG's +-1 error cannot confuse them)."""
    assert k < 60
    return 10 + 4 * k


def write_imagenette(
    root: Path,
    n_train: int = 3,
    n_val: int = 2,
    *,
    folder: str = "imagenette2-160",
    width: int = 48,
    height: int = 36,
) -> list[tuple[str, str, int, int]]:
    """`<root>/<folder>/{train,val}/<wnid>/*.JPEG` plus noisy_imagenette.csv, like the official release.

    Images are constant grey (`imagenette_value`), `width` x `height` (landscape, like most originals).
    Returns (split, relative path, label, value) in the order torchvision lists them (sorted wnids,
    then sorted file names).
    """
    base = Path(root) / folder
    rows, manifest = [], []
    for label, wnid in enumerate(IMAGENETTE_WNIDS):
        for split, n in (("train", n_train), ("val", n_val)):
            (base / split / wnid).mkdir(parents=True, exist_ok=True)
            for j in range(n):
                # Official names: train `n01440764_10026.JPEG`, val `ILSVRC2012_val_00009111.JPEG`.
                k = label * (n_train + n_val) + (0 if split == "train" else n_train) + j
                name = (
                    f"{wnid}_{10000 + j}.JPEG"
                    if split == "train"
                    else f"ILSVRC2012_val_{label * 100 + j:08d}.JPEG"
                )
                value = imagenette_value(k)
                Image.new("RGB", (width, height), (value,) * 3).save(base / split / wnid / name, quality=95)
                rel = f"{split}/{wnid}/{name}"
                manifest.append((split, rel, label, value))
                rows.append([rel, wnid, wnid, wnid, wnid, wnid, str(split == "val")])
    with open(base / "noisy_imagenette.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", *(f"noisy_labels_{p}" for p in (0, 1, 5, 25, 50)), "is_valid"])
        writer.writerows(rows)
    return sorted(manifest, key=lambda r: (r[0], r[1]))
