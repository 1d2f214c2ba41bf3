"""A text corpus for masked-LM pre-training: tokenised, concatenated, cut into blocks, masked per batch.

    actlab-train experiment=mlm dataset=mlm/wikitext model=bert_small activation=helu
    actlab-train experiment=mlm dataset=mlm/text_files dataset.data_files=corpus.txt

Masking follows BERT (15 % of tokens; of those 80 % [MASK], 10 % random, 10 % kept), done by
transformers' DataCollatorForLanguageModeling. Evaluation batches are masked once, with a fixed
seed, so validation loss is comparable across epochs and runs.
"""

from __future__ import annotations

from itertools import chain
from typing import Any

import torch

from actlab.data.base import check_val_split, split_indices
from actlab.data.text import TextDataModule, load_hub, load_local, normalise_files


class MLMData(TextDataModule):
    """Hub corpus `path`/`config_name` (wikitext, bookcorpus, ...) or local `data_files` (txt/csv/json/parquet).

    Held-out text: the corpus's `validation` split when it has one, else `val_split` of the blocks.
    """

    kind = "mlm"

    def __init__(self, tokenizer: str, path: str | None = None, config_name: str | None = None,
                 data_files: Any = None, text_column: str = "text", mlm_probability: float = 0.15,
                 val_split: float | int = 0.05, split_seed: int = 0, eval_seed: int = 0, **kwargs: Any):
        super().__init__(tokenizer, **kwargs)
        if path is None and not data_files:
            raise ValueError("dataset needs a hub corpus (dataset.path=wikitext) or local text "
                             "(dataset.data_files=FILE.txt)")
        if not 0.0 < float(mlm_probability) < 1.0:
            raise ValueError(f"dataset.mlm_probability must be in (0, 1), got {mlm_probability!r}")
        self.path, self.config_name = path, config_name
        self.data_files = normalise_files(data_files) if data_files else None
        self.text_column = text_column
        self.mlm_probability = float(mlm_probability)
        self.val_split = check_val_split(val_split)
        self.split_seed, self.eval_seed = split_seed, eval_seed
        self._collator = None

    def model_kwargs(self) -> dict[str, Any]:
        return {"head": "mlm", "vocab_size": len(self.tokenizer)}

    def task_kwargs(self) -> dict[str, Any]:
        return {}

    @property
    def collator(self):
        if self._collator is None:
            from transformers import DataCollatorForLanguageModeling

            self._collator = DataCollatorForLanguageModeling(self.tokenizer, mlm_probability=self.mlm_probability)
        return self._collator

    def _raw(self):
        if self.data_files is not None:
            return load_local(self.data_files)
        return load_hub(self.path, self.config_name, hint="offline, give local text: dataset.data_files=FILE.txt "
                                                   "(or {train:...,validation:...})")

    def _blocks(self, ds):
        """Tokenise every line (special tokens included, as run_mlm does), concatenate, cut into max_length."""
        if self.text_column not in ds.column_names:
            raise ValueError(f"corpus has no column {self.text_column!r} (found {ds.column_names}); "
                             f"set dataset.text_column")
        tok, size, col = self.tokenizer, self.max_length, self.text_column

        def encode(batch):
            lines = [t for t in batch[col] if t and t.strip()]
            return tok(lines, return_special_tokens_mask=True, truncation=False, verbose=False)

        def group(batch):
            joined = {k: list(chain.from_iterable(batch[k])) for k in batch}
            n = (len(joined["input_ids"]) // size) * size
            return {k: [v[i : i + size] for i in range(0, n, size)] for k, v in joined.items()}

        enc = ds.map(encode, batched=True, remove_columns=ds.column_names, desc="tokenising corpus")
        return enc.map(group, batched=True, desc=f"blocks of {size}")

    def setup(self, stage: str | None = None) -> None:
        if self.train_dataset is not None:
            return
        raw = self._raw()
        if "train" not in raw:
            raise ValueError(f"corpus has no 'train' split (found {list(raw)})")
        train = self._blocks(raw["train"])
        if len(train) < 2:
            raise ValueError(f"corpus too small: {len(train)} block(s) of {self.max_length} tokens; add text or "
                             f"lower dataset.max_length")
        if "validation" in raw:
            val = self._blocks(raw["validation"])
        else:
            train_idx, val_idx = split_indices(len(train), self.val_split, self.split_seed)
            train, val = train.select(train_idx), train.select(val_idx)
        if len(train) == 0 or len(val) == 0:
            raise ValueError(f"corpus too small: {len(train)} training and {len(val)} held-out blocks of "
                             f"{self.max_length} tokens; add text or lower dataset.max_length")
        self.train_dataset = self.first(train, self.subset).with_format("torch")
        self.eval_datasets = {"": self._masked_once(self.first(val, self.eval_subset))}

    def _masked_once(self, ds) -> list[dict]:
        """Held-out examples masked once with `eval_seed` (the collator draws from torch's global RNG)."""
        state = torch.get_rng_state()
        torch.manual_seed(self.eval_seed)
        try:
            rows = [dict(r) for r in ds.with_format("torch")]
            batch = self.collator(rows)
        finally:
            torch.set_rng_state(state)
        return [{k: v[i] for k, v in batch.items()} for i in range(len(rows))]

    def collate(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        if "labels" in examples[0]:  # evaluation examples: already masked, equal length
            return {k: torch.stack([e[k] for e in examples]) for k in examples[0]}
        return dict(self.collator(examples))
