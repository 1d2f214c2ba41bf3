"""Text fixtures in the formats users bring: GLUE-schema CSV/TSV/JSONL/Parquet files and plain-text corpora.

Labels follow a rule a model can learn from a few examples (a cue word), so a fine-tune that works
is distinguishable from one that does not. Columns are GLUE's, as on the hub (nyu-mll/glue).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pandas as pd

# Common words (all in the bert-base-uncased vocabulary) for filler text.
FILLER = ("the a man woman dog cat house car city river tree book table window street child friend "
          "walked saw found made took gave said went came looked played read wrote opened "
          "small large old new red blue green quiet early late happy").split()
# Cue words decide labels: class k of a task is cued by CUES[k].
CUES = ("terrible", "wonderful", "perhaps")
COLUMNS = {
    "cola": ("sentence", None), "sst2": ("sentence", None), "mrpc": ("sentence1", "sentence2"),
    "qqp": ("question1", "question2"), "stsb": ("sentence1", "sentence2"), "mnli": ("premise", "hypothesis"),
    "qnli": ("question", "sentence"), "rte": ("sentence1", "sentence2"), "wnli": ("sentence1", "sentence2"),
}
EVAL_SPLITS = {"mnli": ("validation_matched", "validation_mismatched")}


def _sentence(rng: random.Random, n_words: int, cue: str | None = None) -> str:
    words = [rng.choice(FILLER) for _ in range(n_words)]
    if cue is not None:
        words.insert(rng.randrange(len(words) + 1), cue)
    return " ".join(words) + "."


def glue_rows(task: str, n: int, seed: int = 0, words: tuple[int, int] = (4, 10)) -> list[dict]:
    """n rows with GLUE's columns for `task`; the label is cued by a word in the last text column
    (STS-B: the score is the number of "very" in sentence2, 0..5)."""
    rng = random.Random(f"{task}-{seed}")
    a, b = COLUMNS[task]
    n_labels = 3 if task == "mnli" else 2
    rows = []
    for i in range(n):
        if task == "stsb":
            score = float(i % 6)
            row = {a: _sentence(rng, rng.randint(*words)),
                   b: _sentence(rng, rng.randint(*words)) + " very" * int(score), "label": score}
        else:
            label = i % n_labels
            last = _sentence(rng, rng.randint(*words), CUES[label])
            row = {a: last} if b is None else {a: _sentence(rng, rng.randint(*words)), b: last}
            row["label"] = label
        rows.append({"idx": i, **row})
    return rows


def write_rows(path: Path, rows: list[dict]) -> Path:
    """Write rows in the format the suffix names (.csv, .tsv, .jsonl, .json, .parquet)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(rows)
    suffix = path.suffix
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".tsv":
        frame.to_csv(path, index=False, sep="\t")
    elif suffix in (".jsonl", ".json"):
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        raise ValueError(f"unsupported fixture format {suffix}")
    return path


def write_glue(folder: Path, task: str, n_train: int = 48, n_eval: int = 24, fmt: str = "csv",
               words: tuple[int, int] = (4, 10)) -> dict[str, str]:
    """Train and dev files of `task` under folder/task/; returns the data_files mapping {split: path}."""
    files = {"train": write_rows(folder / task / f"train.{fmt}", glue_rows(task, n_train, 0, words))}
    for k, split in enumerate(EVAL_SPLITS.get(task, ("validation",))):
        files[split] = write_rows(folder / task / f"{split}.{fmt}", glue_rows(task, n_eval, 1 + k, words))
    return {split: str(p) for split, p in files.items()}


def data_files_override(files: dict[str, str]) -> str:
    """The Hydra override that points a run at these files."""
    return "dataset.data_files={" + ",".join(f"{k}:'{v}'" for k, v in files.items()) + "}"


def write_corpus(path: Path, n_lines: int = 200, seed: int = 0) -> Path:
    """A plain-text corpus, one sentence per line with some blank lines (as wikitext has)."""
    rng = random.Random(seed)
    lines = [_sentence(rng, rng.randint(6, 16)) if i % 10 else "" for i in range(n_lines)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


# Bytes no text or Parquet reader accepts: invalid UTF-8 from the first byte, no Parquet magic.
BINARY = bytes(range(0x80, 0x100)) * 4
BAD_FILES = ("empty", "binary", "no_rows", "string_labels")


def write_bad(path: Path, case: str, task: str = "rte") -> Path:
    """A GLUE data file that is bad in one way (BAD_FILES), in the format the suffix names.

    `no_rows`: CSV/TSV a header line alone, Parquet a schema without rows, JSON lines blank lines.
    `string_labels`: labels as words ("yes"/"no"), as some exports of GLUE write them.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if case == "empty":
        path.write_bytes(b"")
    elif case == "binary":
        path.write_bytes(BINARY)
    elif case == "no_rows":
        if path.suffix in (".jsonl", ".json"):
            path.write_text("\n\n")
        elif path.suffix == ".parquet":
            pd.DataFrame(glue_rows(task, 2)).iloc[:0].to_parquet(path, index=False)
        else:
            write_rows(path, glue_rows(task, 2))
            path.write_text(path.read_text().splitlines()[0] + "\n")
    elif case == "string_labels":
        write_rows(path, [{**r, "label": "no" if r["label"] else "yes"} for r in glue_rows(task, 8)])
    else:
        raise ValueError(f"unknown bad-file case {case!r}; choose from {BAD_FILES}")
    return path
