"""BERT-family models for GLUE and masked-LM pre-training, with the configured activation in every layer.

    actlab-train experiment=glue model=minilm activation=helu          # pretrained all-MiniLM-L6-v2
    actlab-train experiment=mlm model=bert_small activation=relu        # from scratch, MLM head
    actlab-train experiment=glue model=bert_small model.checkpoint=<MLM run_id>   # fine-tune it

Three sources of weights: `pretrained` (a hub id, `minilm`, or a folder: from_pretrained), `checkpoint`
(an actlab MLM run's exported folder: the skeleton is built, the activation swapped, then the weights
loaded, so learned activation parameters such as PReLU slopes carry over), or neither (random init
from `config`). Each feed-forward activation (and the MLM head's) is replaced by its own module.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from actlab import activations, hub

log = logging.getLogger(__name__)
HEADS = ("classify", "mlm")
WEIGHTS = "model.safetensors"
# Weights a fine-tune may lack in an MLM checkpoint: the new classification head and the pooler
# (BertForMaskedLM has none).
_NEW_IN_FINETUNE = ("classifier.", "bert.pooler.")


def _auto_class(head: str):
    from transformers import AutoModelForMaskedLM, AutoModelForSequenceClassification

    return AutoModelForSequenceClassification if head == "classify" else AutoModelForMaskedLM


def build(
    act: Callable[[], nn.Module] | None,
    head: str,
    vocab_size: int,
    num_labels: int | None = None,
    pretrained: str | None = None,
    checkpoint: str | None = None,
    config: dict[str, Any] | None = None,
    tokenizer: str | None = None,
) -> nn.Module:
    """A Hugging Face model with a `head` ("classify" with `num_labels` outputs, or "mlm").

    `config` overrides architecture settings (sizes when from scratch; dropout etc. in every case).
    `vocab_size` is the tokenizer's: a model embedding fewer tokens is a tokenizer/model mismatch.
    `tokenizer` only names the tokenizer the data side uses (it is in the config for interpolation).
    """
    from transformers import AutoConfig, BertConfig

    if head not in HEADS:
        raise ValueError(f"unknown head {head!r}; choose from {HEADS}")
    if pretrained and checkpoint:
        raise ValueError("set model.pretrained or model.checkpoint, not both")
    overrides = dict(config or {})
    if head == "classify":
        if not isinstance(num_labels, int) or num_labels < 1:
            raise ValueError(f"a classification head needs num_labels >= 1, got {num_labels!r}")
        overrides["num_labels"] = num_labels
    auto = _auto_class(head)
    if pretrained:
        try:
            model = _quiet(auto.from_pretrained, hub.model_path(pretrained), **overrides)
        except OSError as e:
            raise hub.pretrained_error(pretrained, e) from None
    elif checkpoint:
        path = Path(checkpoint)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"model.checkpoint {path} holds no config.json; give an MLM run's "
                                    f"run_id, its run dir or its exported hf_model folder")
        model = auto.from_config(AutoConfig.from_pretrained(str(path), **overrides))
    else:
        model = auto.from_config(BertConfig(**{"vocab_size": vocab_size, **overrides}))
    _check_vocab(model, vocab_size, tokenizer, pretrained or checkpoint)
    if act is not None:
        activations.swap(model, act)
    if checkpoint:
        load_weights(model, Path(checkpoint))
    return model.train()  # from_pretrained returns eval mode; Lightning keeps modes as it finds them


def _quiet(fn, *args, **kwargs):
    """Call a from_pretrained without transformers' per-weight "newly initialized" report (logged once here)."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        return fn(*args, **kwargs)
    finally:
        hf_logging.set_verbosity(level)


def _check_vocab(model: nn.Module, vocab_size: int, tokenizer: str | None, source: str | None) -> None:
    embedded = model.get_input_embeddings().num_embeddings
    if vocab_size > embedded:
        raise ValueError(f"tokenizer/model mismatch: tokenizer {tokenizer or ''} has {vocab_size} tokens but "
                         f"model {source or 'from config'} embeds {embedded}; use the model's own tokenizer "
                         f"(drop the dataset.tokenizer override) or set model.config.vocab_size")


def load_weights(model: nn.Module, folder: Path) -> None:
    """Load an exported actlab checkpoint into `model` (activation already swapped).

    HeLU margins are not loaded (the fine-tune's configured margin applies); a classification head
    and pooler are expected to be new; any other missing weight means the architectures differ.
    """
    from safetensors.torch import load_file

    file = folder / WEIGHTS
    if not file.is_file():
        raise FileNotFoundError(f"model.checkpoint {folder} has no {WEIGHTS}")
    margins = {f"{p}.margin_" for p, m in model.named_modules() if isinstance(m, activations.HeLU)}
    state = {k: v for k, v in load_file(str(file)).items() if not k.endswith(".margin_")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k not in margins and not k.startswith(_NEW_IN_FINETUNE)]
    tied = set(getattr(model, "_tied_weights_keys", None) or [])
    missing = [k for k in missing if k not in tied and not k.endswith("decoder.weight")]
    if missing:
        raise ValueError(f"model.checkpoint {folder} does not fit this model: {len(missing)} weights missing "
                         f"(e.g. {missing[0]}); was it pre-trained with another model size?")
    log.info("loaded %s (%d unused: MLM head)", folder, len(unexpected))


def export(model: nn.Module, folder: Path, tokenizer=None, activation: dict | None = None) -> Path:
    """Save weights (safetensors), config and tokenizer into `folder` for fine-tuning; returns it.

    The config keeps the architecture's own hidden_act (transformers cannot build ours) and records
    the activation actually trained as `actlab_activation`.
    """
    folder.mkdir(parents=True, exist_ok=True)
    if activation is not None:
        model.config.actlab_activation = activation
    model.save_pretrained(str(folder))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(folder))
    return folder


build.kind = "text"  # the data it fits (run.build checks it against the data module's model_kind)
