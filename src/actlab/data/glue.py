"""GLUE (nyu-mll/glue on the hub, or local files with GLUE's column names) for sequence classification.

    actlab-train experiment=glue dataset=glue/sst2 model=minilm activation=helu
    actlab-train experiment=glue dataset=glue/rte dataset.data_files='{train:rte/train.csv,validation:rte/dev.csv}'

GLUE's test labels are hidden, so validation and test both evaluate the dev split(s) (what papers,
the HeLU paper included, report); MNLI evaluates matched and mismatched dev sets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from actlab.data.text import TextDataModule, load_hub, load_local, normalise_files


@dataclass(frozen=True)
class GlueTask:
    """A GLUE task: its text columns, label count (1 = regression), metrics and dev splits."""

    text: tuple[str, str | None]
    num_labels: int
    metrics: tuple[str, ...]
    eval_splits: tuple[tuple[str, str], ...] = (("", "validation"),)  # (metric suffix, split name)


TASKS: dict[str, GlueTask] = {
    "cola": GlueTask(("sentence", None), 2, ("mcc",)),
    "sst2": GlueTask(("sentence", None), 2, ("acc",)),
    "mrpc": GlueTask(("sentence1", "sentence2"), 2, ("acc", "f1")),
    "qqp": GlueTask(("question1", "question2"), 2, ("acc", "f1")),
    "stsb": GlueTask(("sentence1", "sentence2"), 1, ("pearson", "spearman")),
    "mnli": GlueTask(("premise", "hypothesis"), 3, ("acc",),
                     (("_m", "validation_matched"), ("_mm", "validation_mismatched"))),
    "qnli": GlueTask(("question", "sentence"), 2, ("acc",)),
    "rte": GlueTask(("sentence1", "sentence2"), 2, ("acc",)),
    "wnli": GlueTask(("sentence1", "sentence2"), 2, ("acc",)),
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
        return load_local({s: self.data_files[s] for s in needed})

    def _columns(self) -> list[str]:
        return [c for c in self.spec.text if c] + ["label"]

    def _check(self, ds, split: str) -> None:
        """Required columns present and labels in range: one clear error instead of a crash mid-training."""
        missing = [c for c in self._columns() if c not in ds.column_names]
        if missing:
            raise ValueError(f"GLUE {self.task} {split}: column(s) {missing} missing (found {ds.column_names}); "
                             f"{self.task} needs {self._columns()}")
        labels = torch.as_tensor(ds["label"], dtype=torch.float64)
        if self.num_labels == 1:
            lo, hi = STSB_RANGE
            bad = (labels < lo) | (labels > hi) | labels.isnan()
            expect = f"scores in [{lo:g}, {hi:g}]"
        else:
            bad = (labels < 0) | (labels >= self.num_labels) | (labels != labels.round())
            expect = f"integer labels 0..{self.num_labels - 1}"
        if bad.any():
            i = int(bad.nonzero()[0])
            raise ValueError(f"GLUE {self.task} {split}: {int(bad.sum())} label(s) out of range (row {i}: "
                             f"{ds['label'][i]!r}); {self.task} needs {expect} (hidden test labels are -1: "
                             f"use the validation split)")

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
        raw = self._raw()
        for _, split in (("", "train"), *self.spec.eval_splits):
            if split not in raw:
                raise ValueError(f"GLUE {self.task}: no {split!r} split (found {list(raw)})")
            self._check(raw[split], split)
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
