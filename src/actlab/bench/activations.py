"""Activation cost relative to ReLU: op fwd+bwd time and saved-for-backward bytes, then a ResNet-18 train step.

    actlab bench activations               # ~2-3 min on 2 CPU cores -> results/bench/activations.{json,md}
    actlab bench activations --quick       # smoke run, seconds
    python -m actlab.bench.activations --quick

(a) op level: every registry activation (HeLU in each save mode) on one 4M-element float32 tensor;
(b) torchvision ResNet-18 (10 classes, 32x32, batch 32): one SGD train step, and what its whole forward
keeps for backward. Everything is measured in one process, variants interleaved round by round
(actlab.bench.common), and reported as medians relative to ReLU. The issue's targets: HeLU op time
<= 1.10x ReLU on CPU, ResNet-18 saved bytes <= 1.01x ReLU.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable

import pandas as pd
import torch
from torch import nn

from actlab import activations as A
from actlab.bench.common import summary, time_interleaved, write_results
from actlab.report.tables import fmt_num, to_markdown

# (label, registry name, kwargs). ReLU first: every ratio is against it.
OP_VARIANTS: list[tuple[str, str, dict]] = [
    ("relu", "relu", {}),
    ("helu (bits)", "helu", {"margin": 0.05, "save": "bits"}),
    ("helu (bool)", "helu", {"margin": 0.05, "save": "bool"}),
    ("helu (input)", "helu", {"margin": 0.05, "save": "input"}),
    ("leaky_relu", "leaky_relu", {}),
    ("prelu", "prelu", {}),
    ("elu", "elu", {}),
    ("gelu", "gelu", {}),
    ("gelu_tanh", "gelu_tanh", {}),
    ("silu", "silu", {}),
    ("swish", "swish", {"beta": 1.5}),
    ("smelu", "smelu", {}),
]
MODEL_VARIANTS = ["relu", "helu (bits)", "helu (bool)", "helu (input)", "gelu", "silu", "smelu"]
TARGETS = {"helu_op_time_x_relu": 1.10, "resnet18_saved_bytes_x_relu": 1.01}
# The issue's figures for ResNet-18 saved memory over ReLU, by what HeLU keeps for backward.
ISSUE_QUOTES = {"helu (input)": 1.16, "helu (bool)": 1.04, "helu (bits)": 1.005}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of `actlab bench activations` (registered by actlab.cli.main)."""
    p.add_argument("--quick", action="store_true", help="smoke run: 1M elements, batch 8, 3 repeats")
    p.add_argument("--numel", type=int, default=None, help="op tensor size (default 4M; quick 1M)")
    p.add_argument("--batch", type=int, default=None, help="ResNet-18 batch (default 32; quick 8)")
    p.add_argument("--repeats", type=int, default=None, help="timed rounds (default 50 op / 25 model; quick 3)")
    # One thread by default: on a shared 2-core machine, 2-thread kernels wait on a preempted worker at
    # every op and timings balloon (ResNet-18 step 0.59 s with 2 threads vs 0.12 s with 1 under load).
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1; 0 = torch's own)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--out-dir", default="results/bench")
    p.add_argument("--seed", type=int, default=0)


def saved_bytes(fn: Callable[[], object], exclude: set[int] = frozenset()) -> int:
    """Bytes that autograd keeps for backward while `fn` runs, each storage counted once.

    saved_tensors_hooks sees every tensor an op saves. Ops often save the *same* memory: ReLU keeps
    its output and the next conv keeps that same tensor as its input; BN keeps its input, which is the
    conv's output. Summing tensor sizes would count such memory twice, so we key by the untyped
    storage's data pointer and add each storage's size once. `exclude` holds storages that live
    anyway (parameters and buffers: conv weights are saved too, but they are not activation memory).
    """
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        if s.data_ptr() not in exclude:
            storages[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(storages.values())


def _ratios(times: dict[str, list[float]], base: str = "relu") -> dict[str, dict]:
    """Per variant: timing summary, median / ReLU's median, and the median of per-round ratios."""
    out = {}
    for name, samples in times.items():
        paired = [a / b for a, b in zip(samples, times[base])]
        s = summary(samples)
        out[name] = {"time": s, "time_x_relu": s["median"] / summary(times[base])["median"],
                     "time_x_relu_paired": statistics.median(paired)}
    return out


def bench_ops(numel: int, repeats: int, device: torch.device, sync) -> dict[str, dict]:
    """(a) fwd+bwd of each activation on one tensor; saved bytes of its forward."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(numel, generator=gen).to(device)
    grad = torch.randn(numel, generator=gen).to(device)
    modules = {label: A.build(name, **kw).to(device) for label, name, kw in OP_VARIANTS}

    def step(module: nn.Module) -> Callable[[], object]:
        def run_once():
            z = x.detach().requires_grad_(True)
            module(z).backward(grad)
            return z.grad
        return run_once

    times = time_interleaved({k: step(m) for k, m in modules.items()}, repeats=repeats, warmup=2, sync=sync)
    result = _ratios(times)
    for label, module in modules.items():
        z = x.detach().requires_grad_(True)
        result[label]["saved_bytes"] = saved_bytes(lambda m=module, z=z: m(z))
    base = result["relu"]["saved_bytes"]
    for r in result.values():
        r["saved_x_relu"] = r["saved_bytes"] / base
    return result


def _resnet18(label: str, seed: int, device: torch.device) -> nn.Module:
    """torchvision ResNet-18 (10 classes) with `label`'s activation at every site (ReLU swapped too, so
    every variant runs the same split-block forward)."""
    import torchvision

    _, name, kw = next(v for v in OP_VARIANTS if v[0] == label)
    torch.manual_seed(seed)
    return A.swap(torchvision.models.resnet18(num_classes=10), name, **kw).to(device).train()


def bench_resnet18(batch: int, repeats: int, seed: int, device: torch.device, sync) -> dict[str, dict]:
    """(b) one SGD train step of ResNet-18 per variant; activation bytes its forward saves."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, 32, 32, generator=gen).to(device)
    y = torch.randint(0, 10, (batch,), generator=gen).to(device)
    models = {label: _resnet18(label, seed, device) for label in MODEL_VARIANTS}

    def train_step(model: nn.Module) -> Callable[[], object]:
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

        def run_once():
            opt.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            return loss
        return run_once

    times = time_interleaved({k: train_step(m) for k, m in models.items()}, repeats=repeats, warmup=2, sync=sync)
    result = _ratios(times)
    for label, model in models.items():
        persistent = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
        forward = lambda m=model: nn.functional.cross_entropy(m(x), y)  # noqa: E731
        result[label]["saved_bytes"] = saved_bytes(forward, exclude=persistent)
        # With the saved conv/fc weights counted too: a bigger base, so smaller relative costs.
        result[label]["saved_bytes_incl_params"] = saved_bytes(forward)
        result[label]["sites"] = len(A.activation_sites(model))
    for r in result.values():
        r["saved_x_relu"] = r["saved_bytes"] / result["relu"]["saved_bytes"]
        r["saved_incl_params_x_relu"] = r["saved_bytes_incl_params"] / result["relu"]["saved_bytes_incl_params"]
    return result


def _table(title: str, rows: dict[str, dict], quotes: dict[str, float] | None = None) -> str:
    """Markdown table; with `quotes` (the model table) also saved bytes incl. params and the issue's figure."""
    cells = []
    for name, r in rows.items():
        row = {"activation": name, "median ms": fmt_num(r["time"]["median"] * 1e3),
               "time x ReLU": fmt_num(r["time_x_relu"]), "paired x ReLU": fmt_num(r["time_x_relu_paired"]),
               "saved MiB": fmt_num(r["saved_bytes"] / 2**20), "saved x ReLU": fmt_num(r["saved_x_relu"], 4)}
        if quotes:
            row["saved incl. params x ReLU"] = fmt_num(r["saved_incl_params_x_relu"], 4)
            row["issue quote"] = str(quotes.get(name, ""))
        cells.append(row)
    return f"### {title}\n\n" + to_markdown(pd.DataFrame(cells)).rstrip("\n")


def _settings(args: argparse.Namespace) -> dict:
    quick = args.quick
    return {
        "quick": quick,
        "numel": args.numel or (2**20 if quick else 4 * 2**20),
        "batch": args.batch or (8 if quick else 32),
        "op_repeats": args.repeats or (3 if quick else 50),
        "model_repeats": args.repeats or (3 if quick else 25),
        "device": args.device,
        "threads": torch.get_num_threads(),
        "seed": args.seed,
    }


def run(args: argparse.Namespace) -> int:
    """Entry point of `actlab bench activations`; returns a process exit code."""
    if args.device == "cuda" and not torch.cuda.is_available():
        print("actlab bench activations: --device cuda but no CUDA device is available")
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = _settings(args)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    ops = bench_ops(settings["numel"], settings["op_repeats"], device, sync)
    print(_table(f"op: fwd+bwd on {settings['numel']:,} float32 elements", ops), flush=True)
    model = bench_resnet18(settings["batch"], settings["model_repeats"], settings["seed"], device, sync)
    print(_table(f"ResNet-18 train step, batch {settings['batch']}, 32x32", model, ISSUE_QUOTES), flush=True)
    reached = {
        "helu_op_time_x_relu": ops["helu (bits)"]["time_x_relu"],
        "resnet18_saved_bytes_x_relu": model["helu (bits)"]["saved_x_relu"],
    }
    payload = {
        "settings": settings,
        "seconds": time.perf_counter() - t0,
        # Other processes on a shared machine inflate timings; the load average says how much to trust them.
        "loadavg_before_after": [load_before, os.getloadavg()],
        "targets": TARGETS,
        "reached": reached,
        "op": ops,
        "resnet18": model,
    }
    summary_lines = [f"- {k}: {v:.3f} (target <= {TARGETS[k]})" for k, v in reached.items()]
    md = "\n\n".join([
        "# Activation benchmark (medians; ratios vs ReLU measured in one process, interleaved rounds)",
        "\n".join(summary_lines),
        _table(f"op: fwd+bwd on {settings['numel']:,} float32 elements", ops),
        _table(f"ResNet-18 train step (fwd, bwd, SGD), batch {settings['batch']}, 32x32; saved = activation "
               "bytes, unique storages, params excluded", model, ISSUE_QUOTES),
        f"Settings: {settings}; torch threads {torch.get_num_threads()}; load average before/after "
        f"{payload['loadavg_before_after']}.",
    ])
    path = write_results("activations", payload, md, args.out_dir, device=device.type)
    print("\n".join(summary_lines))
    print(f"wrote {path} and {path.with_suffix('.md')} in {payload['seconds']:.0f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m actlab.bench.activations`: the same flags as `actlab bench activations`."""
    parser = argparse.ArgumentParser(prog="python -m actlab.bench.activations", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
