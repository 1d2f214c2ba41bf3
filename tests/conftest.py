"""Shared test fixtures: offline environment, a private data cache, small datasets in official formats."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import torch

# Set before anything imports huggingface/wandb: tests never touch the network or a W&B account.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["WANDB_MODE"] = "disabled"
# `datasets` reads its cache location at import: a private one, so tests never touch ~/.cache.
os.environ["HF_DATASETS_CACHE"] = tempfile.mkdtemp(prefix="actlab-hf-datasets-")

from formats import (  # noqa: E402  (tests/ is on sys.path: pytest's rootdir-relative conftest import)
    write_cifar10,
    write_cifar100,
    write_fashion_mnist,
    write_imagenette,
)
from text_formats import COLUMNS, write_corpus, write_glue  # noqa: E402

FASHION_SIZES = {"train": 200, "test": 50}
CIFAR_SIZES = {"train": 200, "test": 50}
IMAGENETTE_PER_CLASS = {"train": 3, "val": 2}


@pytest.fixture(scope="session", autouse=True)
def data_cache(tmp_path_factory) -> Path:
    """Point the data cache ($ACTLAB_DATA_DIR) at a temp dir so no test writes to ~/.cache."""
    cache = tmp_path_factory.mktemp("actlab-data-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ACTLAB_DATA_DIR", str(cache))
        yield cache


@pytest.fixture(scope="session")
def fashion_dir(tmp_path_factory) -> Path:
    """Folder holding the four gzipped Fashion-MNIST IDX files (as the Debian package ships them)."""
    return write_fashion_mnist(
        tmp_path_factory.mktemp("fashion"), FASHION_SIZES["train"], FASHION_SIZES["test"]
    )


@pytest.fixture(scope="session")
def cifar10_dir(tmp_path_factory) -> Path:
    """data_dir holding cifar-10-batches-py/."""
    root = tmp_path_factory.mktemp("cifar10")
    write_cifar10(root, CIFAR_SIZES["train"], CIFAR_SIZES["test"])
    return root


@pytest.fixture(scope="session")
def cifar100_dir(tmp_path_factory) -> Path:
    """data_dir holding cifar-100-python/."""
    root = tmp_path_factory.mktemp("cifar100")
    write_cifar100(root, CIFAR_SIZES["train"], CIFAR_SIZES["test"])
    return root


@pytest.fixture(scope="session")
def _imagenette(tmp_path_factory) -> tuple[Path, list]:
    root = tmp_path_factory.mktemp("imagenette")
    return root, write_imagenette(root, IMAGENETTE_PER_CLASS["train"], IMAGENETTE_PER_CLASS["val"])


@pytest.fixture(scope="session")
def imagenette_dir(_imagenette) -> Path:
    """data_dir holding imagenette2-160/{train,val}/<wnid>/*.JPEG (3 train + 2 val per class)."""
    return _imagenette[0]


@pytest.fixture(scope="session")
def imagenette_manifest(_imagenette) -> list:
    """(split, relative path, label, grey value) for every image, in torchvision's listing order."""
    return _imagenette[1]


@pytest.fixture(scope="session")
def glue_files(tmp_path_factory) -> dict[str, dict[str, str]]:
    """{task: {split: csv path}} for all nine GLUE tasks (48 train / 24 dev rows each)."""
    root = tmp_path_factory.mktemp("glue")
    return {task: write_glue(root, task) for task in COLUMNS}


@pytest.fixture(scope="session")
def corpus_file(tmp_path_factory) -> Path:
    """A 400-line plain-text corpus (one sentence per line, some blank lines)."""
    return write_corpus(tmp_path_factory.mktemp("corpus") / "corpus.txt", 400)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from threads; on a shared 2-core box a spinning second thread hurts."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
