"""Masked-LM pre-training: the LightningModule, and the export fine-tuning starts from.

Logs `*/loss` (cross-entropy over masked tokens), `val|test/acc` (masked-token accuracy) and
`val|test/perplexity` (torchmetrics). After fit, train.py calls `export(run_dir)`: the weights,
config and tokenizer land in `<run_dir>/hf_model/`, which `model.checkpoint=<run_id>` loads.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torchmetrics.classification import MulticlassAccuracy
from torchmetrics.text import Perplexity

from actlab.tasks.base import TrainTask

IGNORE = -100  # label of unmasked positions (transformers' convention)
EXPORT_DIR = "hf_model"


class MaskedLM(TrainTask):
    """Trains a Hugging Face *ForMaskedLM model on collator-masked batches (loss from the model)."""

    kind = "mlm"
    main_metric = "test/loss"

    def __init__(self, model: nn.Module, optimizer: Callable, scheduler: Callable | None = None,
                 decay_norm_and_bias: bool = False):
        super().__init__(model, optimizer, scheduler, decay_norm_and_bias)
        vocab = model.config.vocab_size
        self.metrics = nn.ModuleDict({
            f"{stage}_{name}": metric
            for stage in ("val", "test")
            for name, metric in (("acc", MulticlassAccuracy(vocab, average="micro", ignore_index=IGNORE)),
                                 ("perplexity", Perplexity(ignore_index=IGNORE)))
        })

    def forward(self, batch: dict[str, torch.Tensor]):
        return self.model(**batch)

    def training_step(self, batch, batch_idx):
        loss = self(batch).loss
        self.log_train(batch_idx, len(batch["labels"]), loss)
        return loss

    def _eval_step(self, batch, stage: str) -> None:
        out = self(batch)
        labels = batch["labels"]
        n = len(labels)
        self.log(f"{stage}/loss", out.loss, on_epoch=True, prog_bar=True, batch_size=n, add_dataloader_idx=False)
        logits = out.logits.float()
        acc, ppl = self.metrics[f"{stage}_acc"], self.metrics[f"{stage}_perplexity"]
        acc(logits.flatten(0, 1), labels.flatten())
        ppl(logits, labels)
        self.log(f"{stage}/acc", acc, on_epoch=True, batch_size=n)
        self.log(f"{stage}/perplexity", ppl, on_epoch=True, batch_size=n)

    def validation_step(self, batch, batch_idx, dataloader_idx: int = 0):
        self._eval_step(batch, "val")

    def test_step(self, batch, batch_idx, dataloader_idx: int = 0):
        self._eval_step(batch, "test")

    def export(self, run_dir: Path, datamodule, activation: dict | None = None) -> dict[str, str]:
        """Save the pre-trained model for fine-tuning; returns the record's `files` entries."""
        from actlab.models.bert import export

        export(self.model, Path(run_dir) / EXPORT_DIR, getattr(datamodule, "tokenizer", None), activation)
        return {"hf_model": EXPORT_DIR}
