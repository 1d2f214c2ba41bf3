"""The GPU paths, on a real GPU: tensor loader on the device, trainer=gpu (bf16) with compile and
channels_last, DDP on one GPU. Skipped without CUDA; scripts/gpu_check.sh runs them (with
tests/test_helu_triton.py's cuda cases). Run: pytest -m cuda -q
"""

from __future__ import annotations

import pytest
import torch

from actlab.data.vision import CIFAR10Data
from actlab.run.runner import run

from compose import fashion, make_cfg

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.filterwarnings("ignore:.*md5 of.*:UserWarning"),
]


def _gpu(*over: str) -> list[str]:
    return ["trainer=gpu", *over]


def test_tensor_loader_batches_live_on_the_gpu_with_the_cpu_pixels(cifar10_dir):
    dm = CIFAR10Data(data_dir=str(cifar10_dir), batch_size=16, eval_subset=32, download=False)
    cpu = torch.cat([x for x, _ in dm.val_dataloader()])
    images, labels = dm.tensors("val", "cuda")
    assert images.is_cuda and labels.is_cuda
    from actlab.data.resident import TensorBatches

    gpu = TensorBatches(images, labels, 16, dm.mean, dm.std)
    xs = [x for x, _ in gpu]
    assert all(x.is_cuda for x in xs)
    assert torch.equal(torch.cat(xs).cpu(), cpu)  # normalising on the GPU gives the same bits


def test_bf16_step_with_compile_and_channels_last(tmp_path, cifar10_dir):
    over = [f"dataset.data_dir={cifar10_dir}", "dataset=cifar10", "dataset.subset=128", "dataset.eval_subset=64",
            "model=resnet_small", "activation=helu", "trainer.max_epochs=2", "monitor=dead_neurons",
            "monitor.probe_size=32"]
    rec = run(make_cfg(tmp_path, *_gpu(*over, "compile=true", "channels_last=true")))
    assert rec["status"] == "completed" and rec["config"]["trainer"]["precision"] == "bf16-mixed"
    assert torch.isfinite(torch.tensor(rec["metrics"]["train/loss"]))


def test_eager_gpu_run_matches_itself(tmp_path, fashion_dir):
    """Same seed, same GPU, deterministic=true: identical metrics (the tensor loader draws on the CPU)."""
    over = [*fashion(fashion_dir), "activation=helu", "trainer.deterministic=true", "trainer.benchmark=false",
            "trainer.precision=32-true"]
    a = run(make_cfg(tmp_path / "a", *_gpu(*over)))
    b = run(make_cfg(tmp_path / "b", *_gpu(*over)))
    assert a["metrics"] == b["metrics"]


def test_ddp_on_one_gpu(tmp_path, fashion_dir):
    rec = run(make_cfg(tmp_path, *fashion(fashion_dir), "trainer=ddp", "trainer.accelerator=gpu",
                       "trainer.devices=1", "activation=helu"))
    assert rec["status"] == "completed"
