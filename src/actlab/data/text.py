"""What the text data modules share: loading splits from the hub or local files, padding, loaders.

Local files (`dataset.data_files`) are read by `datasets`' own builders (csv/tsv, json/jsonl, parquet,
txt), so a user's copy of GLUE or a text corpus needs no network and gets `datasets`' cache. Each file
is read on its own, so a bad one (empty, unreadable, no rows, wrong columns) is named in a one-line
error instead of a `datasets` traceback about the whole dataset.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader

from actlab.data.base import EpochShuffle, check_int

BUILDERS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet",
            ".txt": "text"}
FORMAT_NAMES = {".csv": "CSV", ".tsv": "TSV", ".json": "JSON", ".jsonl": "JSON lines", ".parquet": "Parquet",
                ".txt": "text"}


def _as_files(value: Any, key: str) -> list[str]:
    files = [value] if isinstance(value, (str, Path)) else list(value) if isinstance(value, Sequence) else None
    if not files or not all(isinstance(f, (str, Path)) for f in files):
        raise ValueError(f"dataset.data_files.{key} must be a file path or a list of paths, got {value!r}")
    return [str(Path(f).expanduser()) for f in files]


def normalise_files(data_files: Any, default_split: str = "train") -> dict[str, list[str]]:
    """`data_files` as {split: [paths]}: a path or list means the `default_split`; every file must exist."""
    if isinstance(data_files, Mapping):
        files = {str(k): _as_files(v, str(k)) for k, v in data_files.items()}
    else:
        files = {default_split: _as_files(data_files, default_split)}
    for split, paths in files.items():
        for p in paths:
            if not Path(p).is_file():
                raise FileNotFoundError(f"dataset.data_files.{split}: {p} does not exist")
    return files


def load_local(files: dict[str, list[str]], *, hint: str = "",
               check: Callable[[Any, str, str], None] | None = None):
    """A DatasetDict from local files, one builder for all of them (chosen by the file extension).

    Every file is loaded and checked by itself: a bad one raises ValueError "PATH: what is wrong; `hint`"
    (one line). `check(dataset, path, split)` is run on each file's rows before a split's files are joined.
    """
    from datasets import DatasetDict

    suffixes = {Path(p).suffix.lower() for paths in files.values() for p in paths}
    unknown = suffixes - BUILDERS.keys()
    if unknown:
        raise ValueError(f"dataset.data_files: unsupported extension {sorted(unknown)}; use one of {', '.join(BUILDERS)}")
    builders = {BUILDERS[s] for s in suffixes}
    if len(builders) > 1:
        raise ValueError(f"dataset.data_files mixes formats {sorted(suffixes)}; give every split in one format")
    builder = builders.pop()
    kwargs = {"delimiter": "\t"} if suffixes == {".tsv"} else {}
    splits = {}
    for split, paths in files.items():
        parts = []
        for path in paths:
            ds = _load_file(builder, path, split, kwargs, hint)
            if check is not None:
                check(ds, path, split)
            parts.append(ds)
        splits[split] = _join(parts, paths, split)
    return DatasetDict(splits)


def _load_file(builder: str, path: str, split: str, kwargs: dict, hint: str):
    from datasets import load_dataset

    fix = f"; {hint}" if hint else ""
    if Path(path).stat().st_size == 0:
        raise ValueError(f"{path}: empty file{fix}")
    try:
        ds = load_dataset(builder, data_files={split: [path]}, split=split, **kwargs)
    except Exception as e:  # noqa: BLE001 - whatever the reader raised, the user needs the file and the fix
        if _has_no_rows(path):
            raise ValueError(f"{path}: no rows{_header_note(path)}{fix}") from None
        raise ValueError(f"{path}: not a readable {FORMAT_NAMES[Path(path).suffix.lower()]} file "
                         f"({_one_line(e)}){fix}") from None
    if len(ds) == 0:
        raise ValueError(f"{path}: no rows{_header_note(path)}{fix}")
    return ds


def _has_no_rows(path: str) -> bool:
    """Whether a file `datasets` could not read is well formed but holds no rows (a header alone, blank lines)."""
    suffix = Path(path).suffix.lower()
    try:
        if suffix in (".csv", ".tsv"):
            import pandas as pd

            return pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", nrows=1).empty
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.ParquetFile(path).metadata.num_rows == 0
        return not Path(path).read_text().strip()
    except Exception:  # noqa: BLE001 - unreadable: the caller reports it as such
        return False


def _header_note(path: str) -> str:
    return " (a header line alone)" if Path(path).suffix.lower() in (".csv", ".tsv") else ""


def _one_line(e: BaseException) -> str:
    """The reader's own complaint, on one line and short ("UnicodeDecodeError: 'utf-8' codec can't ...")."""
    cause = e.__cause__ or e  # `datasets` wraps the reader's error in DatasetGenerationError
    text = " ".join(str(cause).split())
    text = text if len(text) <= 120 else text[:117] + "..."
    return f"{type(cause).__name__}: {text}" if text else type(cause).__name__


def _join(parts: list, paths: list[str], split: str):
    """One split from its files' datasets, which must have the same columns and types."""
    from datasets import concatenate_datasets

    if len(parts) == 1:
        return parts[0]
    for ds, path in zip(parts[1:], paths[1:]):
        if ds.features != parts[0].features:
            raise ValueError(f"{path}: columns {_schema(ds)} differ from {paths[0]}'s {_schema(parts[0])}; "
                             f"give every file of split {split} the same columns and types")
    return concatenate_datasets(parts)


def _schema(ds) -> str:
    return "{" + ", ".join(f"{k}: {getattr(v, 'dtype', type(v).__name__)}" for k, v in ds.features.items()) + "}"


def load_hub(path: str, name: str | None, *, hint: str):
    """A DatasetDict from the hub (or `datasets`' cache); offline -> one line saying how to use local files."""
    from datasets import load_dataset

    try:
        return load_dataset(path, name)
    except (ConnectionError, FileNotFoundError, OSError, ValueError) as e:
        where = f"{path}/{name}" if name else path
        raise FileNotFoundError(f"cannot load {where} from the hub ({type(e).__name__}); {hint}") from None


class TextDataModule(L.LightningDataModule):
    """Tokenised splits in memory, padded per batch by a collator; subclasses build the splits in setup()."""

    kind: str = "text"
    model_kind = "text"  # the models that fit (their `kind`)

    def __init__(self, tokenizer: str, max_length: int = 128, batch_size: int = 32, num_workers: int = 0,
                 subset: int | None = None, eval_subset: int | None = None, shuffle_seed: int | None = None):
        super().__init__()
        if not isinstance(tokenizer, str) or not tokenizer:
            raise ValueError(f"dataset.tokenizer must name a tokenizer (it follows model.tokenizer), got {tokenizer!r}")
        self.tokenizer_name = tokenizer
        self.max_length = check_int("max_length", max_length, minimum=8)
        self.batch_size = check_int("batch_size", batch_size)
        self.num_workers = check_int("num_workers", num_workers, minimum=0)
        self.subset = check_int("subset", subset, optional=True)
        self.eval_subset = check_int("eval_subset", eval_subset, optional=True)
        self.shuffle_seed = check_int("shuffle_seed", shuffle_seed, minimum=0, optional=True)
        self._tokenizer = None
        self.train_dataset = None
        self.eval_datasets: dict[str, Any] = {}  # name -> dataset; several for MNLI (matched, mismatched)

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from actlab import hub

            self._tokenizer = hub.tokenizer(self.tokenizer_name)
        return self._tokenizer

    def collate(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    @staticmethod
    def first(dataset, limit: int | None):
        return dataset.select(range(min(len(dataset), limit))) if limit else dataset

    def _loader(self, dataset, train: bool) -> DataLoader:
        kwargs: dict[str, Any] = {}
        if train:  # epoch-seeded order: a resumed run sees the batches an uninterrupted one would
            seed = self.shuffle_seed if self.shuffle_seed is not None else torch.initial_seed()
            kwargs["sampler"] = EpochShuffle(len(dataset), seed)
        return DataLoader(dataset, batch_size=self.batch_size, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0, collate_fn=self.collate, **kwargs)

    def train_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader(self.train_dataset, train=True)

    def val_dataloader(self):
        self.setup()
        loaders = [self._loader(ds, train=False) for ds in self.eval_datasets.values()]
        return loaders[0] if len(loaders) == 1 else loaders

    def test_dataloader(self):
        return self.val_dataloader()

    def example_input(self) -> dict[str, torch.Tensor]:
        """A two-example batch of model inputs (labels dropped), to materialise lazy parameters."""
        enc = self.tokenizer(["an example", "another example"], padding=True, return_tensors="pt")
        return dict(enc)
