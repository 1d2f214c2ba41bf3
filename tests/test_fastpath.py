"""The GPU fast path as configs (trainer=gpu, channels_last, compile), run on the CPU where they apply.

A machine without a GPU cannot run trainer=gpu as is: it must say so in one line. Its precision
(bf16-mixed) and the model knobs run here on tiny models; scripts/gpu_check.sh runs the real thing.
Run: pytest tests/test_fastpath.py -q
"""

from __future__ import annotations

import shutil

import pytest
import torch

from actlab.activations import HeLU
from actlab.models.resnet import ResNet
from actlab.run.build import speed_up
from actlab.run.runner import run

from compose import fashion, make_cfg

pytestmark = pytest.mark.filterwarnings("ignore:.*md5 of.*:UserWarning")


def test_trainer_gpu_composes_to_bf16_autocast_and_cudnn_autotuning(tmp_path):
    t = make_cfg(tmp_path, "trainer=gpu").trainer
    assert (t.accelerator, t.devices, t.precision, t.benchmark) == ("gpu", 1, "bf16-mixed", True)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error of a machine without a GPU")
def test_trainer_gpu_without_a_gpu_is_a_one_line_error(tmp_path, fashion_dir):
    with pytest.raises(ValueError, match=r"^trainer\.accelerator=gpu cannot run here .*; use trainer\.accelerator=cpu"):
        run(make_cfg(tmp_path, *fashion(fashion_dir), "trainer=gpu"))


def test_bf16_autocast_trains_helu(tmp_path, fashion_dir):
    """trainer=gpu's precision on the CPU: a HeLU MLP trains under bf16 autocast to finite metrics."""
    rec = run(make_cfg(tmp_path, *fashion(fashion_dir), "trainer=gpu", "trainer.accelerator=cpu",
                       "trainer.benchmark=false", "activation=helu", "monitor=dead_neurons", "monitor.probe_size=16"))
    assert rec["status"] == "completed" and rec["config"]["trainer"]["precision"] == "bf16-mixed"
    assert 0.0 <= rec["metrics"]["test/acc"] <= 1.0 and rec["metrics"]["train/loss"] > 0


def test_channels_last_keeps_the_function_and_changes_the_layout():
    torch.manual_seed(0)
    a = ResNet(10, 3, 16, act=lambda: HeLU(0.05), blocks=[1, 1], width=8).eval()
    b = ResNet(10, 3, 16, act=lambda: HeLU(0.05), blocks=[1, 1], width=8).eval()
    b.load_state_dict(a.state_dict())
    speed_up(b, channels_last=True)
    conv = next(m for m in b.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()
    seen = []
    conv.register_forward_hook(lambda m, args, out: seen.append(args[0].is_contiguous(memory_format=torch.channels_last)))
    x = torch.randn(4, 3, 16, 16)
    torch.testing.assert_close(b(x), a(x), rtol=1e-5, atol=1e-5)  # same function, other summation order
    assert seen == [True]  # the NCHW input was converted on the way in
    assert set(b.state_dict()) == set(a.state_dict())


def test_compile_and_channels_last_runs_match_eager(tmp_path, cifar10_dir):
    """compile (aot_eager: Dynamo + AOTAutograd, no C++ toolchain needed) + channels_last on a small
    ResNet with HeLU and the monitor: the run completes, its numbers are eager's up to float reordering,
    and its checkpoint keys are the plain model's (Module.compile, not a wrapper)."""
    over = [f"dataset.data_dir={cifar10_dir}", "dataset=cifar10", "dataset.subset=64", "dataset.eval_subset=32",
            "model=resnet_small", "model.width=4", "activation=helu", "trainer.max_epochs=1",
            "monitor=dead_neurons", "monitor.probe_size=16"]
    eager = run(make_cfg(tmp_path / "eager", *over))
    fast = run(make_cfg(tmp_path / "fast", *over, "compile=aot_eager", "channels_last=true"))
    assert fast["status"] == "completed" and fast["run_id"] != eager["run_id"]
    for key in ("train/loss", "val/loss", "test/acc"):
        assert fast["metrics"][key] == pytest.approx(eager["metrics"][key], rel=1e-3, abs=1e-3)
    ckpt = torch.load(tmp_path / "fast" / "runs" / fast["run_id"] / "checkpoints" / "last.ckpt", weights_only=False)
    assert not any("_orig_mod" in k for k in ckpt["state_dict"])


def test_bad_compile_value_is_one_line(tmp_path, fashion_dir):
    with pytest.raises(ValueError, match=r"^compile must be true, false or a torch\.compile backend name, got 3"):
        run(make_cfg(tmp_path, *fashion(fashion_dir), "compile=3"))


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                    reason="Inductor on the CPU compiles C++: needs g++ (apt-get install g++)")
def test_compile_with_inductor_trains_a_helu_mlp(tmp_path, fashion_dir):
    rec = run(make_cfg(tmp_path, *fashion(fashion_dir), "compile=true", "activation=helu", "trainer.max_epochs=1"))
    assert rec["status"] == "completed" and 0.0 <= rec["metrics"]["test/acc"] <= 1.0
