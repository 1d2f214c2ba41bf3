"""`actlab bench inference`: the ReLU swap is complete and exact, INT8 runs, results are written and
`actlab figures` draws Fig. 3/4 from them (the bench itself draws nothing).

HF_HUB_OFFLINE=1 .venv/bin/python -m pytest tests/test_bench_inference.py -q
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from actlab import activations  # noqa: E402
from actlab.bench import hf_models as hf  # noqa: E402
from actlab.bench import inference  # noqa: E402
from actlab.report import bench_figures, figures  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models on one thread: faster than two on a busy 2-core box; restores the caller's setting."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _cli(*argv: str) -> int:
    p = argparse.ArgumentParser()
    inference.add_arguments(p)
    return inference.run(p.parse_args(list(argv)))


def _hidden(model, inputs) -> torch.Tensor:
    with torch.inference_mode():
        return model(**inputs).last_hidden_state


@pytest.mark.parametrize("name", hf.MODELS)
def test_swap_reaches_every_site_and_equals_native_relu(name):
    original = hf.build_model(name, "tiny")
    relu, report = hf.relu_variant(original)
    assert hf.smooth_sites(original) == 2 and hf.smooth_sites(relu) == 0  # tiny = 2 layers, 1 site each
    assert report["swapped"] == 2 and report["after"]["ReLU"] == 2
    inputs = hf.random_inputs(original, 2, 8)
    calls = {
        "original": hf.trace_activation_calls(original, inputs),
        "relu": hf.trace_activation_calls(relu, inputs),
    }
    assert calls["relu"]["gelu"] == calls["relu"]["erf"] == 0 and calls["relu"]["relu"] == 2
    # GPT-2's NewGELU is a tanh formula: its tanh calls must vanish too (BERT/RoBERTa keep the pooler's).
    assert calls["original"]["gelu"] + calls["original"]["tanh"] >= 2
    assert calls["relu"]["tanh"] == (1 if name in ("bert", "roberta") else 0)
    # Reference: the same weights in the model transformers builds with a native "relu" config.
    native = hf.build_model(name, "tiny", act="relu")
    native.load_state_dict(original.state_dict())
    out_o, out_r, out_n = _hidden(original, inputs), _hidden(relu, inputs), _hidden(native, inputs)
    assert not torch.allclose(out_o, out_r, atol=1e-4)
    torch.testing.assert_close(out_r, out_n, rtol=0, atol=1e-6)


def test_incomplete_swap_is_refused(monkeypatch):
    monkeypatch.setattr(activations, "swap", lambda model, name, **kw: model)  # a swap that misses everything
    with pytest.raises(RuntimeError, match="swap incomplete"):
        hf.relu_variant(hf.build_model("bert", "tiny"))


@pytest.mark.parametrize("name", ["bert", "gpt2"])
def test_int8_quantizes_every_linear_and_stays_close(name):
    from transformers.pytorch_utils import Conv1D

    model = hf.build_model(name, "tiny")
    q = hf.quantize_int8(model)
    assert not any(type(m) in (nn.Linear, Conv1D) for m in q.modules())  # GPT-2's Conv1D converted first
    inputs = hf.random_inputs(model, 2, 16)
    ref, out = _hidden(model, inputs), _hidden(q, inputs)
    rel = (out - ref).norm() / ref.norm()
    assert 0 < rel < 0.1, rel


def test_conv1d_to_linear_is_exact():
    model = hf.build_model("gpt2", "tiny")
    inputs = hf.random_inputs(model, 2, 8)
    ref = _hidden(model, inputs)
    torch.testing.assert_close(_hidden(hf.conv1d_to_linear(model), inputs), ref, rtol=1e-5, atol=1e-5)


ROW_KEYS = {"model", "precision", "device", "batch", "seq", "original", "relu", "ratio", "ratio_paired"}


def test_cli_tiny_run_writes_json_md_and_fig4(tmp_path, capsys):
    rc = _cli(
        "--size",
        "tiny",
        "--repeats",
        "1",
        "--warmup",
        "0",
        "--batch-sizes",
        "2",
        "--seq-lens",
        "8,16",
        "--threads",
        "1",
        "--out-dir",
        str(tmp_path),
    )
    assert rc == 0
    assert f"actlab figures --bench-dir {tmp_path}" in capsys.readouterr().out
    data = json.loads((tmp_path / "inference.json").read_text())
    assert {"machine", "settings", "models", "rows"} <= set(data)
    assert data["settings"]["threads"] == 1 == data["machine"]["torch_threads"]
    assert set(data["models"]) == set(hf.MODELS)
    assert all(
        m["swapped"] == 2 and m["calls_per_forward"]["relu"]["gelu"] == 0 for m in data["models"].values()
    )
    assert len(data["rows"]) == 5 * 2 * 2  # models x precisions (fp32, int8) x seq lens
    for row in data["rows"]:
        assert ROW_KEYS <= set(row)
        assert row["ratio"] == pytest.approx(row["relu"]["ms_per_sample"] / row["original"]["ms_per_sample"])
        assert row["original"]["tokens_per_s"] > 0 and row["relu"]["seconds"]["n"] == 1
    md = (tmp_path / "inference.md").read_text()
    assert "| model | precision | batch | seq | ms/sample original | ms/sample ReLU | ReLU/original" in md
    assert md.count("| int8 (cpu) |") == 10
    assert not (tmp_path / "fig").exists()
    paths = figures.fig_bench(tmp_path, tmp_path / "fig")  # what `actlab figures` does with the json
    assert [p.name for p in paths] == ["fig4_inference.png", "fig4_inference.pdf"]
    assert (tmp_path / "fig" / "fig4_inference.png").stat().st_size > 10_000


def test_cli_rejects_bad_precision(tmp_path, capsys):
    assert _cli("--size", "tiny", "--precisions", "bf16", "--device", "cpu", "--out-dir", str(tmp_path)) == 2
    assert "not available on cpu" in capsys.readouterr().out
    assert not (tmp_path / "inference.json").exists()


def _write_csv(path, header, rows):
    import csv

    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def test_glue_lengths_and_dynamic_padding(tmp_path):
    tok, _ = hf.bert_tokenizer()
    sst2 = _write_csv(
        tmp_path / "sst2.csv", ["sentence", "label"], [["hello world", 1], ["The cat sat.", 0], ["hello", 1]]
    )
    texts = hf.glue_texts("sst2", sst2)
    # [CLS] hello world [SEP]; [CLS] the cat sat . [SEP]; [CLS] hello [SEP]
    assert hf.glue_lengths(texts, tok) == [4, 6, 3]
    assert hf.glue_lengths(hf.glue_texts("sst2", sst2, max_samples=2), tok) == [4, 6]
    batches = hf.glue_batches(texts, tok, batch_size=2)
    assert [b["input_ids"].shape for b in batches] == [(2, 6), (1, 3)]  # each padded to its own longest
    assert batches[0]["attention_mask"].sum().item() == 10
    mrpc = _write_csv(
        tmp_path / "mrpc.csv", ["sentence1", "sentence2", "label"], [["hello world", "good night", 1]]
    )
    # [CLS] hello world [SEP] good night [SEP]
    assert hf.glue_lengths(hf.glue_texts("mrpc", mrpc), tok) == [7]
    with pytest.raises(ValueError, match="columns"):
        hf.glue_texts("qnli", mrpc)


def test_cli_glue_mode_writes_results_and_fig3(tmp_path):
    sst2 = _write_csv(
        tmp_path / "sst2.csv",
        ["sentence", "label"],
        [["a fine film", 1], ["dull", 0], ["hello world", 1], ["the cat sat on the mat", 0], ["ok", 1]],
    )
    rc = _cli(
        "--glue",
        "sst2",
        "--glue-data-files",
        str(sst2),
        "--glue-batch-size",
        "2",
        "--size",
        "tiny",
        "--repeats",
        "2",
        "--warmup",
        "0",
        "--threads",
        "1",
        "--out-dir",
        str(tmp_path),
    )
    assert rc == 0
    glue = json.loads((tmp_path / "inference_glue.json").read_text())["glue"]
    assert [r["precision"] for r in glue["rows"]] == ["fp32", "int8"]
    row = glue["rows"][0]
    assert row["n_samples"] == 5 and [b["size"] for b in row["batches"]] == [2, 2, 1]
    assert [b["tokens"] for b in row["batches"]] == [3 + 5, 4 + 8, 3]  # non-padding tokens per batch
    assert {"ms_per_sample", "ms_per_sample_std", "tokens_per_s", "tokens_per_s_std"} <= set(row["relu"])
    assert glue["data"] == {"sst2": str(sst2)}  # where the lengths came from
    md = (tmp_path / "inference_glue.md").read_text()
    assert "| sst2 | fp32 (cpu) | 5 | 4.6 | 3 |" in md  # 23 non-padding tokens over 5 samples, 3 batches
    assert f"Inputs: sst2: {sst2}." in md
    figures.fig_bench(tmp_path, tmp_path / "fig")
    assert (tmp_path / "fig" / "fig3_glue_inference.png").stat().st_size > 10_000


def _row(model, precision, o, r):
    def v(ms):
        return {
            "ms_per_sample": ms,
            "ms_per_sample_q1": ms * 0.95,
            "ms_per_sample_q3": ms * 1.05,
            "tokens_per_s": 128e3 / ms,
            "ms_per_sample_std": ms * 0.05,
            "tokens_per_s_std": 5e3 / ms,
        }

    return {
        "model": model,
        "task": model,
        "precision": precision,
        "device": "cpu",
        "batch": 8,
        "seq": 128,
        "original": v(o),
        "relu": v(r),
        "ratio": r / o,
    }


def test_figures_from_a_small_results_dict(tmp_path):
    rows = [_row(m, p, 10.0, 9.5) for m in hf.MODELS for p in ("fp32", "int8")]
    paths = bench_figures.fig4({"settings": {"threads": 2}, "rows": rows}, tmp_path)
    assert [p.name for p in paths] == ["fig4_inference.png", "fig4_inference.pdf"]
    assert bench_figures.paper_fig4()["gpt2"] == (6.8322, 5.6758)  # the packaged paper CSV
    assert bench_figures.fig4({"rows": rows[:2]}, tmp_path / "nopaper", paper=None)[0].stat().st_size > 5_000
    glue = {"glue": {"rows": [_row(t, "int8", 3.0, 2.8) for t in ("sst2", "mrpc")]}}  # full precision absent
    paths = bench_figures.fig3(glue, tmp_path)
    assert all(p.stat().st_size > 5_000 for p in paths)


def _batch(ms):
    return {v: {"ms_per_sample": ms, "tokens_per_s": 1000 / ms} for v in ("original", "relu")}


def test_std_over_batches_is_the_sample_std():
    out = inference._over_batches([_batch(1.0), _batch(2.0), _batch(6.0)])
    # mean 3, squared deviations 4 + 1 + 9 = 14 over n - 1 = 2: std sqrt(7) (pstdev would be sqrt(14/3))
    assert out["relu"]["ms_per_sample"] == pytest.approx(3.0)
    assert out["relu"]["ms_per_sample_std"] == pytest.approx(math.sqrt(7))
    single = inference._over_batches([_batch(2.0)])
    assert single["original"]["ms_per_sample"] == 2.0 and math.isnan(single["original"]["ms_per_sample_std"])


def test_glue_table_and_fig3_with_a_single_batch(tmp_path):
    row = {"task": "rte", "precision": "fp32", "device": "cpu", "n_samples": 2,
           "batches": [{"size": 2, "tokens": 9}], **inference._over_batches([_batch(2.5)])}
    payload = {"settings": {"size": "tiny", "repeats": 1, "threads": 1},
               "glue": {"rows": [row], "batch_size": 2, "max_samples": 2, "tokenizer": "t"}}
    md = inference.glue_table_md(payload)
    assert "| rte | fp32 (cpu) | 2 | 4.5 | 1 | 2.500 | 2.500 | 1.000 | 400 | 400 |" in md  # no "± nan"
    assert bench_figures.fig3(payload, tmp_path)[0].stat().st_size > 5_000  # NaN std: no whisker


def test_bench_modules_do_not_draw():
    """Measuring code imports no plotting: figures are `actlab figures`' job (actlab.report.bench_figures)."""
    drawing = ("matplotlib", "actlab.report.bench_figures", "actlab.report.figures", "actlab.report.style")
    for path in Path(inference.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        names += [f"{n.module}.{a.name}" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module
                  for a in n.names]
        assert not [m for m in names if m.startswith(drawing)], path.name
