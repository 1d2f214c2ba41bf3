"""Training-time cost of the dead-neuron monitor: a ResNet-18 training step with vs without its hooks.

    actlab bench monitor                    # or: python -m actlab.bench.monitor --repeats 20
    actlab bench monitor --quick            # smoke run: relu only, 5 rounds, probe of 64

CIFAR ResNet-18 (actlab.models.resnet), batch 32 of 32x32 on CPU, SGD step. For each activation one
model alternates, round by round, between steps without hooks and steps with the callback's
training-time hooks attached (`UnitStats`, the per-batch work of DeadNeuronMonitor(train_stats=True)):
one model, so weights, memory layout and allocator state cannot differ between the variants.
Writes results/bench/monitor.json and .md; the overhead is the ratio of median step times (wall clock,
and CPU time of this process, which other processes' load does not inflate). On a busy machine wall
ratios are noisy, so the time spent inside the hooks is also clocked within each step
("in-hook share" = hook time / rest of the step): the direct cost, immune to drift between steps; and
an A/A control (a second hook-free variant of the first model) shows what noise alone does.
Metric sets (actlab.monitor): "basic" and "default" add the same per-step work (the hooks: default's extra
metrics are probe-time only), "all" adds GradNorms.accumulate() after every backward (variant
"+monitor(all)"). The probe-time cost, `measure()` on --probe-size examples once per validation, is timed
per set and reported in training steps (a measurement costs as much as k steps).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import pandas as pd
import torch
from torch import nn

from actlab.activations import factory
from actlab.bench.common import summary, time_interleaved, write_results
from actlab.layer_stats import GradNorms
from actlab.monitor import METRIC_SETS, TRAIN_COUNT_EVERY, UnitStats, measure
from actlab.report.tables import fmt_num, to_markdown


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--activations", nargs="+", default=["relu", "helu"], help="registry names")
    parser.add_argument("--repeats", type=int, default=15, help="timed rounds per variant")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--out-dir", default="results/bench")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--count-every", type=int, default=TRAIN_COUNT_EVERY,
                        help="count elements (zero rate, band) every k-th step (the callback's default)")
    parser.add_argument("--probe-size", type=int, default=512, help="examples of the timed probe measurement")
    parser.add_argument("--quick", action="store_true", help="smoke run: relu, 5 rounds, 1 warmup, probe of 64")


def _model(activation: str, image_size: int) -> nn.Module:
    from actlab.models.resnet import resnet18

    return resnet18(num_classes=10, in_channels=3, image_size=image_size, act=factory(activation))


def _step_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    """step(after_backward=None): one SGD step; after_backward runs where on_before_optimizer_step does."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()

    def step(after_backward=None) -> None:
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        if after_backward is not None:
            after_backward()
        opt.step()

    return step


def _clock_hooks(stats: UnitStats, spent: list[float]) -> None:
    """Wrap every site's hook bodies so that the time spent in them adds up in spent[0]."""
    for site in stats.sites:
        for name in ("pre", "post"):
            inner = getattr(site, name)

            def timed(*a, _inner=inner):
                t0 = time.perf_counter()
                _inner(*a)
                spent[0] += time.perf_counter() - t0

            setattr(site, name, timed)


def _clocked(fn, spent: list[float]):
    """fn, with the time spent in it added to spent[0]."""
    def timed() -> None:
        t0 = time.perf_counter()
        fn()
        spent[0] += time.perf_counter() - t0
    return timed


def _with_share(step, spent: list[float], shares: list[float]):
    """step(), recording hook time / (step time - hook time) for this call."""
    def fn() -> None:
        spent[0] = 0.0
        t0 = time.perf_counter()
        step()
        total = time.perf_counter() - t0
        shares.append(spent[0] / max(total - spent[0], 1e-12))
    return fn


def _toggled(step, stats: UnitStats, hooked: bool, after_backward=None):
    """step() with the monitor's hooks attached (hooked) or removed: 17 registrations, microseconds."""
    def fn() -> None:
        stats.attach() if hooked else stats.detach()
        step(after_backward)
    return fn


def _cpu_clocked(fn, samples: list[float]):
    """fn(), appending the CPU seconds this process spent in it (all threads) to `samples`."""
    def wrapped() -> None:
        t0 = time.process_time()
        fn()
        samples.append(time.process_time() - t0)
    return wrapped


def run(args: argparse.Namespace) -> int:
    if args.quick:
        args.activations, args.repeats, args.warmup = args.activations[:1], min(args.repeats, 5), 1
        args.probe_size = min(args.probe_size, 64)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size)
    y = torch.randint(0, 10, (args.batch_size,))
    probe = [torch.randn(min(args.batch_size, args.probe_size - i), 3, args.image_size, args.image_size)
             for i in range(0, args.probe_size, args.batch_size)]
    variants, monitors, shares, models = {}, {}, {}, {}
    for act in args.activations:
        model = models[act] = _model(act, args.image_size)
        step = _step_fn(model, x, y)
        stats = monitors[act] = UnitStats(model, count_every=args.count_every)  # active: every step counts
        spent, shares[act], shares[f"{act} all"] = [0.0], [], []
        _clock_hooks(stats, spent)
        grads = _clocked(GradNorms(model).accumulate, spent)
        variants[act] = _toggled(step, stats, False)
        variants[f"{act}+monitor"] = _with_share(_toggled(step, stats, True), spent, shares[act])
        variants[f"{act}+monitor(all)"] = _with_share(_toggled(step, stats, True, grads), spent,
                                                      shares[f"{act} all"])
        if act == args.activations[0]:
            variants[f"{act} (A/A)"] = _toggled(step, stats, False)
    cpu = {name: [] for name in variants}
    variants = {name: _cpu_clocked(fn, cpu[name]) for name, fn in variants.items()}
    times = time_interleaved(variants, repeats=args.repeats, warmup=args.warmup)
    cpu = {name: s[args.warmup:] for name, s in cpu.items()}  # drop the warmup calls
    for stats in monitors.values():
        stats.detach()
    probe_times = {}  # act -> set -> seconds per measure() on the probe (eval mode, no_grad)
    for act, model in models.items():
        sets = {name: (lambda m=model, s=name: measure(m, probe, metrics=s)) for name in METRIC_SETS}
        probe_times[act] = time_interleaved(sets, repeats=max(3, args.repeats // 3), warmup=1)
        model.train()

    rows, probe_rows = [], []
    payload = {"setup": {k: v for k, v in vars(args).items() if k != "func"}, "results": {}}
    for act in args.activations:
        off, on = times[act], times[f"{act}+monitor"]
        # Also the median of per-round ratios: rounds are interleaved, so pairing cancels slow drift.
        paired = statistics.median(b / a for a, b in zip(off, on))
        on_all = times[f"{act}+monitor(all)"]
        step_s = statistics.median(off)
        probe = {name: statistics.median(t) for name, t in probe_times[act].items()}
        res = {
            "without": summary(off),
            "with": summary(on),
            "overhead_pct": 100 * (statistics.median(on) / statistics.median(off) - 1),
            "overhead_pct_paired": 100 * (paired - 1),
            "cpu_without": summary(cpu[act]),
            "cpu_with": summary(cpu[f"{act}+monitor"]),
            "overhead_pct_cpu": 100 * (statistics.median(cpu[f"{act}+monitor"]) / statistics.median(cpu[act]) - 1),
            # warmup calls are recorded too: skip them
            "in_hook_pct": 100 * statistics.median(shares[act][args.warmup:]),
            # metric set "all": the hooks plus the per-step gradient norms
            "with_all": summary(on_all),
            "overhead_pct_all": 100 * (statistics.median(on_all) / step_s - 1),
            "overhead_pct_all_paired": 100 * (statistics.median(b / a for a, b in zip(off, on_all)) - 1),
            "overhead_pct_all_cpu": 100 * (statistics.median(cpu[f"{act}+monitor(all)"])
                                           / statistics.median(cpu[act]) - 1),
            "in_hook_pct_all": 100 * statistics.median(shares[f"{act} all"][args.warmup:]),
            # probe-time cost per set: seconds per measurement, and in training steps without hooks
            "probe_s": probe,
            "probe_steps": {name: t / step_s for name, t in probe.items()},
            "sites": len(monitors[act].sites),
            "train_rates": {k: v for k, v in monitors[act].rates("train_").items() if "/" not in k},
        }
        payload["results"][act] = res
        rows.append({"activation": act, "step ms (no hooks)": fmt_num(1e3 * res["without"]["median"], 1),
                     "step ms (monitor)": fmt_num(1e3 * res["with"]["median"], 1),
                     "overhead (medians)": f"{fmt_num(res['overhead_pct'], sign=True)} %",
                     "overhead (paired)": f"{fmt_num(res['overhead_pct_paired'], sign=True)} %",
                     "overhead (CPU time)": f"{fmt_num(res['overhead_pct_cpu'], sign=True)} %",
                     "in-hook share": f"{fmt_num(res['in_hook_pct'])} %",
                     "overhead, all (paired)": f"{fmt_num(res['overhead_pct_all_paired'], sign=True)} %",
                     "in-hook share, all": f"{fmt_num(res['in_hook_pct_all'])} %", "sites": str(res["sites"])})
        probe_rows.append({"activation": act, **{
            f"probe {name} ms (steps)":
                f"{fmt_num(1e3 * probe[name], 1)} ({fmt_num(res['probe_steps'][name], 2)})"
            for name in METRIC_SETS}})
    first = args.activations[0]
    base, ctrl = times[first], times[f"{first} (A/A)"]
    payload["aa_control_pct"] = 100 * (statistics.median(ctrl) / statistics.median(base) - 1)
    payload["aa_control_pct_paired"] = 100 * (statistics.median(b / a for a, b in zip(base, ctrl)) - 1)
    payload["aa_control_pct_cpu"] = 100 * (
        statistics.median(cpu[f"{first} (A/A)"]) / statistics.median(cpu[first]) - 1)
    md = "\n".join([
        "# Dead-neuron monitor: training-step overhead",
        "",
        f"CIFAR ResNet-18, batch {args.batch_size} of {args.image_size}x{args.image_size}, CPU, "
        f"{torch.get_num_threads()} threads, {args.repeats} interleaved rounds (medians); element "
        f"counts every {args.count_every} steps. Metric sets basic and default add the same per-step work; "
        "all adds per-step gradient norms.",
        "",
        to_markdown(pd.DataFrame(rows)),
        f"A/A control ({first} without hooks, run twice per round): {payload['aa_control_pct']:+.2f} % (medians), "
        f"{payload['aa_control_pct_paired']:+.2f} % (paired), {payload['aa_control_pct_cpu']:+.2f} % (CPU time): "
        "differences this size are noise.",
        "",
        f"Probe measurement (`measure()`, once per validation) on {args.probe_size} examples, per metric set: "
        "ms, and in training steps (no hooks) of the table above.",
        "",
        to_markdown(pd.DataFrame(probe_rows)),
    ])
    path = write_results("monitor", payload, md, args.out_dir)
    print(md)
    print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="actlab bench monitor", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
