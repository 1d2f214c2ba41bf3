"""Masked-LM pre-training: corpus blocks, BERT's 80/10/10 masking, the exported model, fine-tuning from it."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from actlab import activations
from actlab.data.corpus import MLMData
from actlab.models.bert import build
from actlab.run import checkpoints
from actlab.run.runner import run

from compose import make_cfg
from text_formats import data_files_override


def mlm_cfg(tmp_path, corpus, *extra):
    return make_cfg(tmp_path, "experiment=mlm", "dataset=mlm/text_files", f"dataset.data_files={corpus}",
                    "model=bert_tiny", "dataset.batch_size=8", "dataset.max_length=32", "trainer.max_epochs=1",
                    *extra)


def test_corpus_is_cut_into_full_blocks(corpus_file):
    dm = MLMData("bert-base-uncased", data_files=str(corpus_file), max_length=32, val_split=0.1)
    dm.setup()
    lines = [ln for ln in corpus_file.read_text().splitlines() if ln.strip()]
    total = sum(len(dm.tokenizer(ln)["input_ids"]) for ln in lines)  # with [CLS]/[SEP] per line, as run_mlm
    blocks = len(dm.train_dataset) + len(dm.eval_datasets[""])
    assert blocks == total // 32
    assert all(len(r["input_ids"]) == 32 for r in dm.train_dataset)


def test_masking_is_bert_80_10_10_and_never_touches_special_tokens(corpus_file):
    dm = MLMData("bert-base-uncased", data_files=str(corpus_file), max_length=32, batch_size=10_000)
    dm.setup()
    torch.manual_seed(0)
    batch = next(iter(dm.train_dataloader()))
    labels, ids = batch["labels"], batch["input_ids"]
    chosen = labels != -100
    # Labels hold the original token at chosen positions; elsewhere the input is untouched. So this
    # reconstruction must be a training block (the loader shuffles rows: compare as a set).
    original = torch.where(chosen, labels, ids)
    blocks = {tuple(r["input_ids"].tolist()) for r in dm.train_dataset}
    assert {tuple(r.tolist()) for r in original} == blocks
    special = torch.isin(original, torch.tensor(dm.tokenizer.all_special_ids))
    assert not (chosen & special).any()
    assert int(chosen.sum()) / int((~special).sum()) == pytest.approx(0.15, abs=0.02)
    masked = ids[chosen] == dm.tokenizer.mask_token_id
    kept = ids[chosen] == original[chosen]
    assert masked.float().mean() == pytest.approx(0.8, abs=0.04)
    # 10 % kept, plus the random 10 % that happen to draw the original token (about 1/vocab of them)
    assert kept.float().mean() == pytest.approx(0.1, abs=0.03)
    assert (~masked & ~kept).float().mean() == pytest.approx(0.1, abs=0.03)


def test_held_out_masking_is_fixed_across_epochs(corpus_file):
    dm = MLMData("bert-base-uncased", data_files=str(corpus_file), max_length=32, batch_size=4)
    first = [b["input_ids"] for b in dm.val_dataloader()]
    torch.manual_seed(123)  # the global RNG must not matter
    again = [b["input_ids"] for b in dm.val_dataloader()]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert any((b == dm.tokenizer.mask_token_id).any() for b in first)


def test_helu_replaces_the_mlm_head_activation_too():
    model = build(activations.factory("helu", margin=0.1), "mlm", vocab_size=30522,
                  config={"num_hidden_layers": 2, "hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64})
    sites = {p for p, m in activations.activation_sites(model) if isinstance(m, activations.HeLU)}
    assert sites == {"bert.encoder.layer.0.intermediate.intermediate_act_fn",
                     "bert.encoder.layer.1.intermediate.intermediate_act_fn",
                     "cls.predictions.transform.transform_act_fn"}


@pytest.fixture(scope="module")
def pretrained_prelu(tmp_path_factory, corpus_file):
    """A finished MLM run of bert_tiny with PReLU (its learned slopes must reach the fine-tune)."""
    root = tmp_path_factory.mktemp("mlm")
    rec = run(mlm_cfg(root, corpus_file, "activation=prelu", "optim.lr=1e-3"))
    return root, rec


def test_mlm_run_records_metrics_and_exports_a_loadable_model(pretrained_prelu):
    root, rec = pretrained_prelu
    assert rec["status"] == "completed"
    assert {"train/loss", "val/loss", "val/acc", "val/perplexity", "test/perplexity"} <= set(rec["metrics"])
    # perplexity is exp(mean masked-token cross-entropy): the two logged numbers must agree
    assert rec["metrics"]["val/perplexity"] == pytest.approx(torch.tensor(rec["metrics"]["val/loss"]).exp().item(),
                                                             rel=0.05)
    folder = root / "runs" / rec["run_id"] / rec["files"]["hf_model"]
    config = json.loads((folder / "config.json").read_text())
    assert config["actlab_activation"]["name"] == "prelu"
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()


def test_fine_tune_starts_from_the_pretrained_weights_and_slopes(pretrained_prelu):
    root, rec = pretrained_prelu
    folder, trained = checkpoints.resolve(rec["run_id"], root / "runs", "bert_tiny", ("prelu", None))
    assert trained == ("prelu", None)
    saved = load_file(str(folder / "model.safetensors"))
    slope_key = "bert.encoder.layer.0.intermediate.intermediate_act_fn.weight"
    assert saved[slope_key].item() != pytest.approx(0.25)  # PReLU's init: pre-training moved it
    model = build(activations.factory("prelu"), "classify", vocab_size=30522, num_labels=2, checkpoint=str(folder))
    state = model.state_dict()
    for key in (slope_key, "bert.embeddings.word_embeddings.weight", "bert.encoder.layer.1.output.dense.weight"):
        assert torch.equal(state[key], saved[key]), key


def test_glue_fine_tune_from_an_mlm_run_id_and_from_auto(pretrained_prelu, glue_files):
    root, rec = pretrained_prelu
    base = ["experiment=glue", "dataset=glue/rte", data_files_override(glue_files["rte"]), "model=bert_tiny",
            "activation=prelu", "dataset.batch_size=8", "trainer.fast_dev_run=true"]
    by_id = run(make_cfg(root, *base, f"model.checkpoint={rec['run_id']}"))
    auto = run(make_cfg(root, *base, "model.checkpoint=auto"))
    assert by_id["status"] == auto["status"] == "completed"
    assert by_id["metrics"] == auto["metrics"]  # same weights, same seed: the same numbers


def test_auto_without_a_matching_pre_training_run(pretrained_prelu, glue_files):
    root, _ = pretrained_prelu
    cfg = make_cfg(root, "experiment=glue", "dataset=glue/rte", data_files_override(glue_files["rte"]),
                   "model=bert_tiny", "activation=helu", "model.checkpoint=auto")
    with pytest.raises(FileNotFoundError, match="no completed masked-LM run of model=bert_tiny with helu margin 0.05"):
        run(cfg)


def test_helu_margin_comes_from_the_fine_tune_config_not_the_checkpoint(tmp_path, corpus_file):
    rec = run(mlm_cfg(tmp_path, corpus_file, "activation=helu", "activation.margin=0.5", "trainer.fast_dev_run=true"))
    folder = tmp_path / "runs" / rec["run_id"] / "hf_model"
    model = build(activations.factory("helu", margin=0.01), "classify", vocab_size=30522, num_labels=2,
                  checkpoint=str(folder))
    assert [m.margin for m in activations.helu_modules(model)] == pytest.approx([0.01, 0.01])


def test_checkpoint_that_is_not_a_finished_mlm_run(tmp_path, corpus_file):
    with pytest.raises(FileNotFoundError, match="model.checkpoint 'nope' is neither a run_id"):
        checkpoints.resolve("nope", tmp_path, "bert_tiny", ("relu", None))
    bad = make_cfg(tmp_path, "experiment=mlm", "dataset=mlm/text_files", f"dataset.data_files={corpus_file}",
                   "model=bert_tiny", "dataset.mlm_probability=1.5")
    with pytest.raises(ValueError, match=r"mlm_probability must be in \(0, 1\)"):
        run(bad)


def test_corpus_too_small_and_missing_file(tmp_path):
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("just a few words\n")
    with pytest.raises(ValueError, match="corpus too small"):
        run(mlm_cfg(tmp_path, tiny))
    with pytest.raises(FileNotFoundError, match="dataset.data_files.train: .*missing.txt does not exist"):
        run(mlm_cfg(tmp_path, tmp_path / "missing.txt"))


@pytest.mark.parametrize("corpus", ["wikitext", "bookcorpus", "wikipedia"])
def test_hub_corpora_offline_say_how_to_use_local_text(corpus, tmp_path):
    cfg = make_cfg(tmp_path, "experiment=mlm", f"dataset=mlm/{corpus}", "model=bert_tiny")
    assert cfg.dataset.path  # a real hub dataset id, tried first
    with pytest.raises(FileNotFoundError, match="cannot load .* from the hub .*dataset.data_files=FILE.txt"):
        run(cfg)
