"""GLUE (nyu-mll/glue on the hub, or local files with GLUE's column names) for sequence classification.

    actlab-train experiment=glue dataset=glue/sst2 model=minilm activation=helu
    actlab-train experiment=glue dataset=glue/rte dataset.data_files='{train:rte/train.csv,validation:rte/dev.csv}'

GLUE's test labels are hidden, so validation and test both evaluate the dev split(s) (what papers,
the HeLU paper included, report); MNLI evaluates matched and mismatched dev sets.

Local files are checked one by one before tokenising: a file that is empty, unreadable, has no rows,
lacks a column, or holds labels that are not GLUE's (words such as "entailment", out-of-range numbers)
raises one line naming the file and the fix, before any training starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from actlab.data.text import TextDataModule, load_hub, load_local, normalise_files


@dataclass(frozen=True)
class GlueTask:
    """A GLUE task: its name, text columns, class names (none = regression), metrics and dev splits."""

    title: str
    text: tuple[str, str | None]
    classes: tuple[str, ...]  # label k means classes[k], as nyu-mll/glue's ClassLabel
    metrics: tuple[str, ...]
    eval_splits: tuple[tuple[str, str], ...] = (("", "validation"),)  # (metric suffix, split name)

    @property
    def num_labels(self) -> int:
        """Model outputs: one per class, or 1 for a regression task (STS-B)."""
        return len(self.classes) or 1


_NLI = ("entailment", "not_entailment")
TASKS: dict[str, GlueTask] = {
    "cola": GlueTask("CoLA", ("sentence", None), ("unacceptable", "acceptable"), ("mcc",)),
    "sst2": GlueTask("SST-2", ("sentence", None), ("negative", "positive"), ("acc",)),
    "mrpc": GlueTask("MRPC", ("sentence1", "sentence2"), ("not_equivalent", "equivalent"), ("acc", "f1")),
    "qqp": GlueTask("QQP", ("question1", "question2"), ("not_duplicate", "duplicate"), ("acc", "f1")),
    "stsb": GlueTask("STS-B", ("sentence1", "sentence2"), (), ("pearson", "spearman")),
    "mnli": GlueTask("MNLI", ("premise", "hypothesis"), ("entailment", "neutral", "contradiction"), ("acc",),
                     (("_m", "validation_matched"), ("_mm", "validation_mismatched"))),
    "qnli": GlueTask("QNLI", ("question", "sentence"), _NLI, ("acc",)),
    "rte": GlueTask("RTE", ("sentence1", "sentence2"), _NLI, ("acc",)),
    "wnli": GlueTask("WNLI", ("sentence1", "sentence2"), _NLI[::-1], ("acc",)),
}
STSB_RANGE = (0.0, 5.0)
_KEEP = ("input_ids", "token_type_ids", "attention_mask", "labels")


def task_spec(name: str) -> GlueTask:
    if name not in TASKS:
        raise ValueError(f"unknown GLUE task {name!r}; choose from {', '.join(TASKS)}")
    return TASKS[name]


class GLUEData(TextDataModule):
    """One GLUE task, tokenised with the model's tokenizer (cached by `datasets`), padded per batch.

    `data_files` = {split: path(s)} with GLUE's column names (+ `label`); splits `train` and
    `validation` (MNLI: `validation_matched`, `validation_mismatched`). Without it, the hub dataset.
    """

    kind = "glue"

    def __init__(self, task: str, tokenizer: str, data_files: dict | None = None, **kwargs: Any):
        super().__init__(tokenizer, **kwargs)
        self.task = task
        self.spec = task_spec(task)
        self.data_files = normalise_files(data_files) if data_files else None
        self.num_labels = self.spec.num_labels

    # -- what models and tasks need to know
    def model_kwargs(self) -> dict[str, Any]:
        return {"head": "classify", "num_labels": self.num_labels, "vocab_size": len(self.tokenizer)}

    def task_kwargs(self) -> dict[str, Any]:
        return {"glue_task": self.task, "num_labels": self.num_labels}

    # -- data
    def _raw(self):
        if self.data_files is None:
            return load_hub("nyu-mll/glue", self.task, hint=(
                f"offline, give local files: dataset.data_files='{{train:PATH,{self.spec.eval_splits[0][1]}:PATH}}' "
                f"with columns {', '.join(self._columns())}"))
        needed = ["train", *(split for _, split in self.spec.eval_splits)]
        missing = [s for s in needed if s not in self.data_files]
        if missing:
            raise ValueError(f"dataset.data_files for {self.task} lacks splits {missing}; give {needed}")
        hint = f"GLUE {self.task} files need columns {', '.join(self._columns())} and one example per row"
        return load_local({s: self.data_files[s] for s in needed}, hint=hint, check=self._check)

    def _columns(self) -> list[str]:
        return [c for c in self.spec.text if c] + ["label"]

    def _labels_meant(self) -> str:
        """What GLUE's labels are for this task, for error messages."""
        if not self.spec.classes:
            lo, hi = STSB_RANGE
            return f"{self.spec.title} labels are similarity scores in [{lo:g}, {hi:g}]"
        names = ", ".join(f"{k}={name}" for k, name in enumerate(self.spec.classes))
        return f"GLUE labels are integers 0..{self.num_labels - 1} ({self.spec.title}: {names})"

    def _check(self, ds, where: str, split: str) -> None:
        """Columns present and labels GLUE's (`where`: the file, or the hub dataset): one line, not a crash."""
        missing = [c for c in self._columns() if c not in ds.column_names]
        if missing == ["label"]:
            raise ValueError(f"{where}: no 'label' column in split {split} (found {ds.column_names}); GLUE "
                             f"{self.task} needs {self._columns()} in every split (GLUE's test files have no labels: "
                             f"use the dev set)")
        if missing:
            raise ValueError(f"{where}: column(s) {missing} missing in split {split} (found {ds.column_names}); "
                             f"GLUE {self.task} needs {self._columns()}")
        values = ds["label"]
        word = next((v for v in values if isinstance(v, str)), None)
        if word is not None:
            raise ValueError(f"{where}: column 'label' holds strings ({word!r}); {self._labels_meant()}")
        # None: a JSON null or a missing cell where the reader kept the column's type.
        labels = torch.tensor([float("nan") if v is None else float(v) for v in values], dtype=torch.float64)
        if self.num_labels == 1:
            lo, hi = STSB_RANGE
            bad = (labels < lo) | (labels > hi) | labels.isnan()
        else:
            bad = (labels < 0) | (labels >= self.num_labels) | (labels != labels.round())
        if bad.any():
            i = int(bad.nonzero()[0])
            raise ValueError(f"{where}: {int(bad.sum())} label(s) out of range (row {i}: {values[i]!r}) in split "
                             f"{split}; {self._labels_meant()} (hidden test labels are -1: use the dev set)")

    def _tokenise(self, ds):
        a, b = self.spec.text
        tok = self.tokenizer
        max_length = self.max_length
        regression = self.num_labels == 1

        def encode(batch):
            enc = tok(batch[a], batch[b] if b else None, truncation=True, max_length=max_length)
            enc["labels"] = [float(x) for x in batch["label"]] if regression else [int(x) for x in batch["label"]]
            return enc

        # `datasets` caches the result, keyed by the data's and this function's fingerprint.
        out = ds.map(encode, batched=True, remove_columns=ds.column_names, desc=f"tokenising {self.task}")
        return out.with_format("torch", columns=[c for c in _KEEP if c in out.column_names])

    def setup(self, stage: str | None = None) -> None:
        if self.train_dataset is not None:
            return
        raw = self._raw()  # local files are checked as they are read
        for _, split in (("", "train"), *self.spec.eval_splits):
            if split not in raw:
                raise ValueError(f"GLUE {self.task}: no {split!r} split (found {list(raw)})")
            if self.data_files is None:
                self._check(raw[split], f"nyu-mll/glue/{self.task}", split)
        self.train_dataset = self._tokenise(self.first(raw["train"], self.subset))
        self.eval_datasets = {suffix: self._tokenise(self.first(raw[split], self.eval_subset))
                              for suffix, split in self.spec.eval_splits}

    def collate(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        # Dynamic padding: each batch is padded to its own longest example.
        labels = torch.stack([e["labels"] for e in examples])
        feats = [{k: v for k, v in e.items() if k != "labels"} for e in examples]
        batch = dict(self.tokenizer.pad(feats, return_tensors="pt"))
        batch["labels"] = labels
        return batch

    @property
    def eval_names(self) -> list[str]:
        """Metric suffix of each validation/test loader, in loader order ("" or "_m", "_mm")."""
        return [suffix for suffix, _ in self.spec.eval_splits]
