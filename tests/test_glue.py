"""GLUE: data from local files in GLUE's schema, metrics as GLUE defines them, fine-tuning runs, bad input."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from actlab.data.glue import TASKS, GLUEData
from actlab.run.runner import run
from actlab.tasks.glue import glue_metrics, glue_score

from compose import make_cfg
from text_formats import COLUMNS, data_files_override, glue_rows, write_bad, write_glue, write_rows

try:  # GLUE's own scorer; compared against where the venv has it (not a dependency of actlab)
    from sklearn.metrics import matthews_corrcoef
except ImportError:  # pragma: no cover - the hand-computed answers still run
    matthews_corrcoef = None

# CoLA dev's label mix: 721 acceptable (1), 322 unacceptable (0) of 1043.
COLA_DEV = torch.tensor([1] * 721 + [0] * 322)

# Metric keys a GLUE run must record, per task (each also as val/...; plus */loss and */score).
EXPECTED = {
    "cola": {"mcc"}, "sst2": {"acc"}, "mrpc": {"acc", "f1"}, "qqp": {"acc", "f1"},
    "stsb": {"pearson", "spearman"}, "mnli": {"acc_m", "acc_mm"}, "qnli": {"acc"}, "rte": {"acc"},
    "wnli": {"acc"},
}


def glue_cfg(tmp_path, files, task, *extra):
    return make_cfg(tmp_path, "experiment=glue", f"dataset=glue/{task}", data_files_override(files),
                    "model=bert_tiny", "dataset.batch_size=8", "trainer.max_epochs=1", *extra)


# -- metrics: known answers ----------------------------------------------------------------------
def mcc(preds, target) -> float:
    m = glue_metrics("cola")
    m.update(torch.as_tensor(preds), torch.as_tensor(target))
    return float(m.compute()["mcc"])


def test_cola_mcc_known_answer():
    # TP=3, FN=1, TN=3, FP=1: MCC = (3*3 - 1*1) / sqrt(4*4*4*4) = 8/16
    assert mcc([1, 1, 1, 0, 0, 0, 0, 1], [1, 1, 1, 1, 0, 0, 0, 0]) == pytest.approx(0.5)
    # TP=5, FN=2, FP=1, TN=4: (5*4 - 1*2) / sqrt((5+1)(5+2)(4+1)(4+2)) = 18/sqrt(1260)
    preds, target = [1] * 5 + [0] * 2 + [1] + [0] * 4, [1] * 7 + [0] * 5
    assert mcc(preds, target) == pytest.approx(18 / math.sqrt(1260))
    if matthews_corrcoef is not None:
        assert mcc(preds, target) == pytest.approx(matthews_corrcoef(target, preds))


def test_cola_mcc_of_a_constant_predictor_is_zero_as_in_glue():
    """GLUE's scorer (scikit-learn) gives 0 when predictions or labels are constant (MCC's denominator is 0);
    torchmetrics' own special case gave +-0.0256 on CoLA dev's label mix, and 1 or -1 for constant labels."""
    ones, zeros = torch.ones_like(COLA_DEV), torch.zeros_like(COLA_DEV)
    assert mcc(ones, COLA_DEV) == 0.0
    assert mcc(zeros, COLA_DEV) == 0.0
    assert mcc(ones, ones) == 0.0  # constant labels, predicted right: still no correlation to measure
    assert mcc(ones, zeros) == 0.0
    assert mcc(COLA_DEV, ones) == 0.0
    assert mcc([0, 0, 1], [1, 1, 0]) == pytest.approx(-1.0)  # denominator > 0: the ordinary formula
    if matthews_corrcoef is not None:
        gen = torch.Generator().manual_seed(0)
        for n in (1, 2, 3, 5, 40):
            for _ in range(50):
                p, t = torch.randint(0, 2, (n,), generator=gen), torch.randint(0, 2, (n,), generator=gen)
                assert mcc(p, t) == pytest.approx(matthews_corrcoef(t.numpy(), p.numpy()), abs=1e-6), (p, t)


def test_mrpc_acc_f1_and_score_known_answer():
    # TP=2, FP=1, FN=1, TN=4: acc 6/8, F1 of the positive class 2*2/(2*2+1+1) = 2/3, score their mean
    m = glue_metrics("mrpc")
    m.update(torch.tensor([1, 1, 1, 0, 0, 0, 0, 0]), torch.tensor([1, 1, 0, 1, 0, 0, 0, 0]))
    values = {k: float(v) for k, v in m.compute().items()}
    assert values == pytest.approx({"acc": 0.75, "f1": 2 / 3})
    assert glue_score(values) == pytest.approx((0.75 + 2 / 3) / 2)


def test_stsb_pearson_and_spearman_differ_on_a_monotone_nonlinear_relation():
    x = torch.arange(10, dtype=torch.float32)
    m = glue_metrics("stsb")
    m.update(x**3, x)  # rank-identical (Spearman 1) but not linear (Pearson < 1)
    values = {k: float(v) for k, v in m.compute().items()}
    assert values["spearman"] == pytest.approx(1.0)
    assert 0.85 < values["pearson"] < 0.99


def correlations(preds, target) -> dict[str, float]:
    m = glue_metrics("stsb")
    m.update(torch.as_tensor(preds, dtype=torch.float32), torch.as_tensor(target, dtype=torch.float32))
    return {k: float(v) for k, v in m.compute().items()}


def test_stsb_constant_prediction_scores_zero_not_nan():
    """A regression model that collapsed to one output has no rank or linear relation to the scores: recorded as
    correlation 0 (a completed run with no skill, score 0), not scipy's NaN, which GLUE's scorer would report and
    which would mark the run failed and drop it from means. Only an exactly constant input is treated so."""
    from scipy.stats import pearsonr, spearmanr

    target = [float(i % 6) for i in range(30)]
    constant = [2.5] * 30
    assert math.isnan(spearmanr(constant, target)[0]) and math.isnan(pearsonr(constant, target)[0])  # GLUE's
    assert correlations(constant, target) == {"pearson": 0.0, "spearman": 0.0}
    assert correlations(target, [3.0] * 30) == {"pearson": 0.0, "spearman": 0.0}  # constant gold scores
    assert glue_score(correlations(constant, target)) == 0.0
    nearly = [2.5] * 29 + [2.75]  # not constant: the ordinary coefficients, as scipy computes them
    values = correlations(nearly, target)
    assert values["pearson"] == pytest.approx(pearsonr(nearly, target)[0], abs=1e-5)
    assert values["spearman"] == pytest.approx(spearmanr(nearly, target)[0], abs=1e-5)


def synced_over_two_ranks(task: str, name: str, rank0, rank1) -> float:
    """Metric `name` of `task` as DDP rank 0 computes it: torchmetrics gathers each state with rank 1's."""
    other = glue_metrics(task)[name]
    other.update(*rank1)
    theirs = iter([torch.cat(v) if isinstance(v, list) else v for v in other.metric_state.values()])
    metric = glue_metrics(task, dist_sync_fn=lambda t, group=None: [t, next(theirs)],
                          distributed_available_fn=lambda: True)[name]
    metric.update(*rank0)
    return float(metric.compute())


def test_constant_input_is_judged_over_all_ranks():
    from scipy.stats import pearsonr, spearmanr

    half = len(COLA_DEV) // 2
    ones = torch.ones_like(COLA_DEV)
    assert synced_over_two_ranks("cola", "mcc", (ones[:half], COLA_DEV[:half]),
                                 (ones[half:], COLA_DEV[half:])) == 0.0
    target = torch.arange(20, dtype=torch.float32) % 6
    varying = torch.linspace(0, 5, 10)
    for name, scipy_fn in (("pearson", pearsonr), ("spearman", spearmanr)):
        assert synced_over_two_ranks("stsb", name, (torch.full((10,), 2.5), target[:10]),
                                     (torch.full((10,), 2.5), target[10:])) == 0.0
        # constant on rank 0 only: the whole prediction varies, so the ordinary coefficient
        value = synced_over_two_ranks("stsb", name, (torch.full((10,), 2.5), target[:10]), (varying, target[10:]))
        whole = torch.cat([torch.full((10,), 2.5), varying])
        assert value == pytest.approx(scipy_fn(whole, target)[0], abs=1e-5)


def test_mnli_accuracy_counts_three_classes():
    m = glue_metrics("mnli")
    m.update(torch.tensor([0, 1, 2, 2]), torch.tensor([0, 1, 2, 0]))
    assert float(m.compute()["acc"]) == pytest.approx(0.75)


# -- data --------------------------------------------------------------------------------------
def test_every_file_format_reads_the_same_tokens(tmp_path):
    rows = glue_rows("rte", 12)
    encoded = []
    for fmt in ("csv", "tsv", "jsonl", "parquet"):
        files = {s: str(write_rows(tmp_path / fmt / f"{s}.{fmt}", rows)) for s in ("train", "validation")}
        dm = GLUEData("rte", "bert-base-uncased", data_files=files, batch_size=4)
        dm.setup()
        encoded.append([r["input_ids"].tolist() for r in dm.train_dataset])
    assert all(e == encoded[0] for e in encoded[1:])
    assert len(encoded[0]) == 12


def test_pairs_are_encoded_as_two_segments_and_padded_per_batch(glue_files):
    dm = GLUEData("mrpc", "bert-base-uncased", data_files=glue_files["mrpc"], batch_size=4, max_length=128)
    batch = next(iter(dm.val_dataloader()))
    longest = int(batch["attention_mask"].sum(1).max())
    assert batch["input_ids"].shape[1] == longest < 128  # dynamic padding, not max_length
    assert set(batch["token_type_ids"].unique().tolist()) == {0, 1}  # sentence1 and sentence2 segments
    sep = dm.tokenizer.sep_token_id
    assert ((batch["input_ids"] == sep).sum(1) == 2).all()  # [CLS] a [SEP] b [SEP]
    assert batch["labels"].dtype == torch.long


def test_stsb_labels_are_floats_and_mnli_has_two_dev_sets(glue_files):
    stsb = GLUEData("stsb", "bert-base-uncased", data_files=glue_files["stsb"], batch_size=8)
    assert next(iter(stsb.train_dataloader()))["labels"].dtype == torch.float32
    mnli = GLUEData("mnli", "bert-base-uncased", data_files=glue_files["mnli"], batch_size=8)
    loaders = mnli.val_dataloader()
    assert isinstance(loaders, list) and len(loaders) == 2
    assert mnli.eval_names == ["_m", "_mm"]


def test_max_length_truncates(glue_files):
    dm = GLUEData("sst2", "bert-base-uncased", data_files=glue_files["sst2"], batch_size=48, max_length=8)
    assert next(iter(dm.train_dataloader()))["input_ids"].shape[1] == 8


# -- runs ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("task", list(TASKS))
def test_every_task_records_its_glue_metrics(task, glue_files, tmp_path):
    rec = run(glue_cfg(tmp_path, glue_files[task], task, "trainer.fast_dev_run=true"))
    assert rec["status"] == "completed"
    keys = {k.split("/", 1)[1] for k in rec["metrics"] if k.startswith("test/") and "loss" not in k}
    assert keys == EXPECTED[task] | {"score"}
    parts = [rec["metrics"][f"test/{k}"] for k in EXPECTED[task]]
    assert rec["metrics"]["test/score"] == pytest.approx(sum(parts) / len(parts))


def test_minilm_fine_tune_learns_the_cue_with_helu_in_every_layer(glue_files, tmp_path):
    """Pretrained MiniLM (offline), GELU swapped for HeLU in all 6 layers, learns a cue-word task."""
    rec = run(glue_cfg(tmp_path, glue_files["sst2"], "sst2", "model=minilm", "activation=helu",
                       "trainer.max_epochs=3", "optim.lr=1e-4", "monitor=dead_neurons"))
    assert rec["status"] == "completed"
    assert rec["metrics"]["test/acc"] >= 0.9  # the cue word decides the label; chance is 0.5
    from actlab.run import records

    per_layer = records.read_dead_layers(tmp_path / "runs" / rec["run_id"])
    layers = {k.split("/", 1)[1] for k in per_layer if k.startswith("dead_fwd/")}
    assert layers == {f"bert.encoder.layer.{i}.intermediate.intermediate_act_fn" for i in range(6)}


def test_swap_reaches_every_feed_forward_layer(glue_files, tmp_path):
    from hydra.utils import instantiate

    from actlab.activations import HeLU
    from actlab.models.bert import build

    act = instantiate(make_cfg(tmp_path, "activation=helu", "activation.margin=0.3").activation)
    model = build(act, "classify", vocab_size=30522, num_labels=2, config={"num_hidden_layers": 3,
                  "hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64})
    helus = [m for m in model.modules() if isinstance(m, HeLU)]
    assert len(helus) == 3 and len({id(m) for m in helus}) == 3  # one instance per layer
    assert all(m.margin == pytest.approx(0.3) for m in helus)
    assert all(isinstance(layer.intermediate.intermediate_act_fn, HeLU) for layer in model.bert.encoder.layer)


# -- bad input ----------------------------------------------------------------------------------
def test_unknown_task(glue_files, tmp_path):
    with pytest.raises(ValueError, match="unknown GLUE task 'colaa'; choose from cola, sst2"):
        run(glue_cfg(tmp_path, glue_files["cola"], "cola", "dataset.task=colaa"))


def test_missing_column(tmp_path):
    rows = [{k: v for k, v in r.items() if k != "sentence2"} for r in glue_rows("rte", 8)]
    files = {s: str(write_rows(tmp_path / f"{s}.csv", rows)) for s in ("train", "validation")}
    with pytest.raises(ValueError, match=r"column\(s\) \['sentence2'\] missing"):
        run(glue_cfg(tmp_path, files, "rte"))


@pytest.mark.parametrize(("task", "bad"), [("sst2", 2), ("mnli", -1), ("stsb", 7.5)])
def test_label_out_of_range(task, bad, tmp_path):
    files = write_glue(tmp_path, task, n_train=8, n_eval=8)
    rows = glue_rows(task, 8)
    rows[3]["label"] = bad
    write_rows(tmp_path / task / "train.csv", rows)
    with pytest.raises(ValueError, match=r"1 label\(s\) out of range \(row 3"):
        run(glue_cfg(tmp_path, files, task))


def setup_error(files: dict[str, str], task: str = "rte") -> str:
    """The message GLUEData.setup() raises for these files (it must raise ValueError or FileNotFoundError)."""
    with pytest.raises((ValueError, FileNotFoundError)) as info:
        GLUEData(task, "bert-base-uncased", data_files=files, batch_size=4).setup()
    return str(info.value)


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "parquet"])
@pytest.mark.parametrize(("case", "says"), [
    ("empty", ": empty file; "),
    ("binary", ": not a readable "),
    ("no_rows", ": no rows"),
    ("string_labels", ": column 'label' holds strings ('yes'); GLUE labels are integers 0..1 "
                      "(RTE: 0=entailment, 1=not_entailment)"),
])
def test_bad_data_file_is_one_line_naming_it(case, says, fmt, tmp_path):
    files = write_glue(tmp_path, "rte", n_train=8, n_eval=8, fmt=fmt)
    write_bad(Path(files["validation"]), case)
    msg = setup_error(files)
    assert msg.startswith(files["validation"] + says), msg
    assert "\n" not in msg


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
@pytest.mark.parametrize("split", ["train", "validation"])
def test_label_column_missing_from_one_split(split, fmt, tmp_path):
    files = write_glue(tmp_path, "rte", n_train=8, n_eval=8, fmt=fmt)
    write_rows(Path(files[split]), [{k: v for k, v in r.items() if k != "label"} for r in glue_rows("rte", 8)])
    msg = setup_error(files)
    assert msg.startswith(f"{files[split]}: no 'label' column in split {split} "), msg
    assert "\n" not in msg


def test_stsb_string_scores_name_the_range(tmp_path):
    files = write_glue(tmp_path, "stsb", n_train=8, n_eval=8)
    write_rows(Path(files["train"]), [{**r, "label": "high"} for r in glue_rows("stsb", 8)])
    msg = setup_error(files, "stsb")
    assert msg.startswith(f"{files['train']}: column 'label' holds strings ('high'); STS-B labels are similarity "
                          "scores in [0, 5]"), msg


@pytest.mark.parametrize("case", ["empty", "string_labels"])
def test_bad_data_file_fails_the_run_with_one_line(case, tmp_path):
    from actlab.run import records

    files = write_glue(tmp_path, "rte", n_train=8, n_eval=8)
    write_bad(Path(files["train"]), case)
    with pytest.raises(ValueError) as info:
        run(glue_cfg(tmp_path, files, "rte"))
    (rec,) = [records.read(p.parent) for p in (tmp_path / "runs").glob("*/record.json")]
    assert rec["status"] == "failed"
    assert rec["error"] == f"ValueError: {info.value}"
    assert rec["error"].startswith(f"ValueError: {files['train']}: ") and "\n" not in rec["error"]


def test_tokenizer_override_that_is_not_the_models(glue_files, tmp_path):
    with pytest.raises(ValueError, match="tokenizer/model mismatch: dataset.tokenizer=bert-base-uncased but "
                                         "model=minilm uses minilm"):
        run(glue_cfg(tmp_path, glue_files["rte"], "rte", "model=minilm", "dataset.tokenizer=bert-base-uncased"))


def test_tokenizer_larger_than_the_model_vocabulary(glue_files, tmp_path):
    with pytest.raises(ValueError, match="tokenizer/model mismatch: tokenizer bert-base-uncased has 30522 tokens "
                                         "but model from config embeds 1000"):
        run(glue_cfg(tmp_path, glue_files["rte"], "rte", "+model.config.vocab_size=1000"))


def test_missing_split_and_offline_hub(glue_files, tmp_path):
    only_train = {"train": glue_files["mnli"]["train"], "validation": glue_files["mnli"]["validation_matched"]}
    with pytest.raises(ValueError, match=r"lacks splits \['validation_matched', 'validation_mismatched'\]"):
        run(glue_cfg(tmp_path, only_train, "mnli"))
    cfg = make_cfg(tmp_path, "experiment=glue", "dataset=glue/cola", "model=bert_tiny")
    with pytest.raises(FileNotFoundError, match="cannot load nyu-mll/glue/cola from the hub .*dataset.data_files="):
        run(cfg)


def test_task_and_model_must_fit_the_data(glue_files, tmp_path):
    with pytest.raises(ValueError, match=r"task=Classifier does not fit dataset=glue/rte \(glue data\); use "
                                         r"experiment=glue"):
        run(glue_cfg(tmp_path, glue_files["rte"], "rte", "task=classify"))
    with pytest.raises(ValueError, match=r"model=mlp does not fit dataset=glue/rte \(glue data\)"):
        run(glue_cfg(tmp_path, glue_files["rte"], "rte", "model=mlp"))


def test_failed_glue_run_is_recorded(tmp_path):
    from actlab.run import records

    files = write_glue(tmp_path, "sst2", n_train=8, n_eval=8)
    rows = glue_rows("sst2", 8)
    rows[0]["label"] = 5
    write_rows(tmp_path / "sst2" / "validation.csv", rows)
    cfg = glue_cfg(tmp_path, files, "sst2")
    with pytest.raises(ValueError):
        run(cfg)
    (rec,) = [records.read(p.parent) for p in (tmp_path / "runs").glob("*/record.json")]
    assert rec["status"] == "failed" and "out of range" in rec["error"]


def test_columns_table_matches_the_data_module():
    assert {t: tuple(TASKS[t].text) for t in TASKS} == COLUMNS
