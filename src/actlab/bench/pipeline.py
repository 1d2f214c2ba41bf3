"""actlab's training pipeline against a bare PyTorch loop: same model, data, optimiser and schedule, one epoch.

    actlab bench pipeline                    # mlp, resnet_small, resnet18 (+ wrn40_4 on CUDA) -> results/bench/pipeline.{json,md}
    actlab bench pipeline --models mlp --repeats 2
    actlab bench pipeline --quick            # smoke run on tiny subsets, seconds

Per model, the variants run interleaved round by round, each call one whole epoch (train + one validation
pass): `bare` (data as one normalised tensor, prepared once and put on the device before the clock; randperm
batches; SGD with actlab's parameter groups and per-step cosine lr), `actlab` (runner.run, monitor off;
time = record["timings"]["fit_s"]), `actlab+monitor` (the default dead-neuron monitor) and `actlab
(torchvision loader)` (dataset.loader=torchvision, the loader before the tensor-resident one). ratio =
bare seconds / variant seconds (1.0 = no overhead). On CUDA the outputs are pipeline_cuda.{json,md}, with
images/s and peak GPU memory per variant. Targets: mlp >= 0.6x (monitor off), >= 0.5x (on); resnet_small >= 0.97x.
"""

from __future__ import annotations

import argparse
import logging
import math
import statistics
import tempfile
import time
import warnings

import lightning as L
import pandas as pd
import torch

from actlab.bench.common import summary, write_results
from actlab.report.tables import DASH, fmt_num, to_markdown

VARIANTS = ("bare", "actlab", "actlab+monitor", "actlab (torchvision loader)", "actlab fast (gpu)")
OVERRIDES = {  # what each actlab variant adds to the shared overrides
    "actlab": ["monitor=none"],
    "actlab+monitor": ["monitor=dead_neurons"],
    "actlab (torchvision loader)": ["monitor=none", "dataset.loader=torchvision"],
    # the GPU fast path (bf16 autocast, cuDNN autotuning, compile, NHWC): faster than the fp32 bare loop
    "actlab fast (gpu)": ["monitor=none", "trainer=gpu", "compile=true", "channels_last=true"],
}
CUDA_ONLY = ("actlab fast (gpu)",)
# (train subset, eval subset) per device and model; None = all (54,000 train / 6,000 val). On 2 CPU
# cores an epoch of ResNet-18 on all 54,000 images takes many minutes, hence subsets there.
SUBSETS = {
    "cpu": {"mlp": (None, None), "resnet_small": (12_800, None), "resnet18": (2_560, 512)},
    # on one GPU: whole epochs for the small models; the big ones cut so scripts/gpu_check.sh fits 8 minutes
    "cuda": {"mlp": (None, None), "resnet_small": (None, None), "resnet18": (25_600, None), "wrn40_4": (12_800, None)},
}
QUICK_SUBSET = (256, 128)
TARGETS = {("mlp", "actlab"): 0.6, ("mlp", "actlab+monitor"): 0.5, ("resnet_small", "actlab"): 0.97}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of `actlab bench pipeline` (registered by actlab.cli.main)."""
    p.add_argument("--models", default=None, help="comma list (default mlp,resnet_small,resnet18; +wrn40_4 on CUDA)")
    p.add_argument("--variants", default=None, help=f"comma list of {', '.join(VARIANTS)} (default: all that "
                   "apply to the device; the fast one needs CUDA)")
    p.add_argument("--repeats", type=int, default=None, help="timed rounds (default 3; quick 1)")
    p.add_argument("--quick", action="store_true", help="smoke run: 256 train / 128 eval images, 1 round, no warm-up")
    p.add_argument("--subset", type=int, default=None, help="training images per epoch for every model (default per model)")
    # One thread by default: on a shared 2-core machine, 2-thread kernels wait on a preempted worker at
    # every op and timings balloon (see bench activations); both sides get the same threads.
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1; 0 = torch's own)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: cuda if available")
    p.add_argument("--data-dir", default=None, help="Fashion-MNIST IDX folder (default: the data module's search)")
    p.add_argument("--out", default="results/bench", help="where pipeline[_cuda].{json,md} go")
    p.add_argument("--seed", type=int, default=0)


def compose(overrides: list[str]):
    """The real `train` config with `overrides` (as actlab-train composes it)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from actlab.run.build import CONF_DIR

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return hydra_compose("train", overrides=overrides)


def base_overrides(model: str, subset, eval_subset, device: str, args, results_dir: str) -> list[str]:
    """Overrides every variant of one model shares: one epoch, no logger, fresh run, test pass cut to one batch."""
    out = [f"model={model}", "dataset=fashion_mnist", "optim=sgd", "scheduler=cosine", "logger=none",
           "trainer.max_epochs=1", "trainer.enable_progress_bar=false", "trainer.limit_test_batches=1",
           f"trainer.accelerator={'gpu' if device == 'cuda' else 'cpu'}", "force=true", f"seed={args.seed}",
           f"paths.results_dir={results_dir}"]
    out += [f"dataset.subset={subset}"] if subset else []
    out += [f"dataset.eval_subset={eval_subset}"] if eval_subset else []
    return out + ([f"dataset.data_dir={args.data_dir}"] if args.data_dir else [])


def stack(dm, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(normalised float images, labels) of a split as two CPU tensors: the data module's resident uint8
    tensors through the same normalisation as its batches (actlab.data.resident)."""
    from actlab.data.resident import normalise

    images, labels = dm.tensors(split)
    shape = (1, -1, 1, 1)
    mean, std = torch.tensor(dm.mean).view(shape), torch.tensor(dm.std).view(shape)
    return normalise(images, mean, std), labels


def n_batches(n: int, batch_size: int) -> int:
    """Training batches per epoch as the data module makes them (a final batch of one is dropped)."""
    return n // batch_size if n > 1 and n % batch_size == 1 else math.ceil(n / batch_size)


def bare_epoch(cfg, data: dict, device: torch.device, sync) -> dict:
    """One epoch of a plain loop on actlab's model (same seed, so same init); seconds exclude the build."""
    from actlab.run.build import build
    from actlab.tasks.base import param_groups

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    _, model, task = build(cfg)
    model.to(device).train()
    opt = task.optimizer_factory(param_groups(model, task.optimizer_factory.keywords.get("weight_decay", 0.0),
                                              task.decay_norm_and_bias))
    x, y, xv, yv = (data[k].to(device) for k in ("x", "y", "xv", "yv"))  # on the device during this call only
    bs, steps = cfg.dataset.batch_size, n_batches(len(x), cfg.dataset.batch_size)
    sched = task.scheduler_factory(opt, total_steps=steps)
    loss_fn = task.loss_fn
    sync()
    t0 = time.perf_counter()
    perm, trained = torch.randperm(len(x), device=device), 0
    for i in range(steps):
        idx = perm[i * bs:(i + 1) * bs]
        loss = loss_fn(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        trained += len(idx)
    model.eval()
    correct = torch.zeros((), device=device)
    with torch.no_grad():
        for j in range(0, len(xv), bs):
            correct += (model(xv[j:j + bs]).argmax(1) == yv[j:j + bs]).sum()
    float(correct)  # as actlab's val/acc: the result reaches the host
    sync()
    return {"s": time.perf_counter() - t0, "train_images": trained, "val_images": len(xv)}


class CountImages(L.Callback):
    """Images actlab trained and validated on (the known answer: the same as the bare loop)."""

    def __init__(self):
        self.train = self.val = 0

    @staticmethod
    def _n(batch) -> int:
        return int(batch[1].shape[0]) if isinstance(batch, (tuple, list)) else len(batch)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.train += self._n(batch)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self.val += self._n(batch)


def actlab_epoch(cfg) -> dict:
    """One epoch of actlab-train in-process (runner.run); seconds = the record's fit_s."""
    from actlab.run.runner import run as run_one

    count = CountImages()
    record = run_one(cfg, callbacks=[count])
    return {"s": record["timings"]["fit_s"], "train_images": count.train, "val_images": count.val}


def bench_model(model: str, variants: list[str], args, device: torch.device, results_dir: str, console) -> dict:
    """Interleaved rounds of every variant on one model; raw seconds, summaries and ratios to `bare`."""
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    subset, eval_subset = QUICK_SUBSET if args.quick else SUBSETS[device.type].get(model, (None, None))
    subset = args.subset or subset
    shared = base_overrides(model, subset, eval_subset, device.type, args, results_dir)
    cfgs, notes = {}, {}
    for name in variants:
        try:
            cfgs[name] = compose(shared + OVERRIDES.get(name, ["monitor=none"]))
        except Exception as e:  # noqa: BLE001 - e.g. dataset.loader not in this checkout's config yet
            notes[name] = f"skipped: {type(e).__name__}: {str(e).splitlines()[0]}"
            console.print(f"{model} / {name}: {notes[name]}")
    data = None
    if "bare" in cfgs:
        from actlab.run.build import build

        dm, _, _ = build(cfgs["bare"])
        dm.setup()
        (x, y), (xv, yv) = stack(dm, "train"), stack(dm, "val")
        data = {"x": x, "y": y, "xv": xv, "yv": yv}
    calls = {name: (lambda c=c: bare_epoch(c, data, device, sync)) if name == "bare" else (lambda c=c: actlab_epoch(c))
             for name, c in cfgs.items()}
    warm = {name: compose(shared + OVERRIDES.get(name, ["monitor=none"]) + [
        f"dataset.subset={QUICK_SUBSET[0]}", f"dataset.eval_subset={QUICK_SUBSET[1]}"]) for name in cfgs}
    if not args.quick:  # imports, file extraction, CUDA/cuDNN start-up: paid before the clock runs
        small = data and {k: v[:QUICK_SUBSET[0] if k in ("x", "y") else QUICK_SUBSET[1]] for k, v in data.items()}
        for name, c in warm.items():
            bare_epoch(c, small, device, sync) if name == "bare" else actlab_epoch(c)
    times = {name: [] for name in calls}
    runs = {name: [] for name in calls}
    for r in range(args.repeats):
        for name, fn in calls.items():
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            out = fn()
            if cuda:
                out["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
            times[name].append(out["s"])
            runs[name].append(out)
        console.print(f"{model} round {r + 1}/{args.repeats}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()),
                      soft_wrap=True)
    result = {"train_subset": subset, "eval_subset": eval_subset, "overrides": shared,
              "variant_overrides": {k: OVERRIDES.get(k, []) for k in cfgs if k != "bare"}, "notes": notes,
              "variants": {}}
    for name, samples in times.items():
        last = runs[name][-1]
        v = {"seconds": samples, "time": summary(samples), "train_images": last["train_images"],
             "val_images": last["val_images"], "images_per_s": last["train_images"] / summary(samples)["median"]}
        if "bare" in times:
            v["ratio"] = summary(times["bare"])["median"] / v["time"]["median"]
            v["ratio_paired"] = statistics.median(b / s for b, s in zip(times["bare"], samples))
        if cuda:
            v["peak_gib"] = max(o["peak_gib"] for o in runs[name])
        result["variants"][name] = v
    result["images_per_epoch"] = next(iter(result["variants"].values()))["train_images"] if times else None
    result["targets"] = {f"{k[1]} >= {t}": {"ratio_min": t, "met": result["variants"].get(k[1], {}).get("ratio", 0) >= t}
                         for k, t in TARGETS.items() if k[0] == model and k[1] in result["variants"]}
    return result


def _ratio(res: dict, name: str) -> str:
    v = res["variants"].get(name)
    return fmt_num(v["ratio"]) if v and "ratio" in v else DASH


def tables(results: dict, cuda: bool) -> str:
    """Markdown: one summary row per model, then seconds (and images/s, GPU memory) per variant."""
    rows, detail = [], []
    for model, res in results.items():
        v = res["variants"]
        target = "; ".join(f"{k}: {'yes' if t['met'] else 'NO'}" for k, t in res["targets"].items()) or DASH
        rows.append({"model": model, "images": fmt_num(res["images_per_epoch"] or math.nan, 0, thousands=True),
                     "bare s": fmt_num(v["bare"]["time"]["median"]) if "bare" in v else DASH,
                     "actlab s": fmt_num(v["actlab"]["time"]["median"]) if "actlab" in v else DASH,
                     "ratio": _ratio(res, "actlab"), "actlab+monitor ratio": _ratio(res, "actlab+monitor"),
                     "torchvision-loader ratio": _ratio(res, "actlab (torchvision loader)"), "target": target})
        for name, s in v.items():
            row = {"model": model, "variant": name, "median s": fmt_num(s["time"]["median"], 3),
                   "q1 s": fmt_num(s["time"]["q1"], 3), "q3 s": fmt_num(s["time"]["q3"], 3),
                   "train images": fmt_num(s["train_images"], 0, thousands=True),
                   "val images": fmt_num(s["val_images"], 0, thousands=True),
                   "images/s": fmt_num(s["images_per_s"], 0, thousands=True)}
            if cuda:
                row["peak GiB"] = fmt_num(s["peak_gib"])
            detail.append(row)
        for name, note in res["notes"].items():
            detail.append({"model": model, "variant": f"{name} ({note})"})
    detail_df = pd.DataFrame(detail).fillna("")
    return ("ratio = bare seconds / actlab seconds (median over rounds; 1.00 = no overhead). One epoch: "
            "train + one validation pass.\n\n" + to_markdown(pd.DataFrame(rows)) + "\n" + to_markdown(detail_df))


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    console = Console()
    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
                          else "cpu")
    models = (args.models.split(",") if args.models
              else ["mlp", "resnet_small", "resnet18"] + (["wrn40_4"] if device.type == "cuda" else []))
    default = [v for v in VARIANTS if device.type == "cuda" or v not in CUDA_ONLY]
    variants = [v.strip() for v in args.variants.split(",") if v.strip()] if args.variants else default
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        console.print(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
        return 2
    args.repeats = args.repeats or (1 if args.quick else 3)
    threads = torch.get_num_threads()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    quiet = ("lightning", "lightning.pytorch", "lightning.fabric")
    levels = {n: logging.getLogger(n).level for n in quiet}
    try:
        for n in quiet:
            logging.getLogger(n).setLevel(logging.WARNING)
        with tempfile.TemporaryDirectory(prefix="actlab-bench-pipeline-") as tmp, warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*(does not have many workers|exists and is not empty).*")
            results = {m: bench_model(m, variants, args, device, tmp, console) for m in models}
    finally:
        torch.set_num_threads(threads)
        for n, level in levels.items():
            logging.getLogger(n).setLevel(level)
    cuda = device.type == "cuda"
    name = "pipeline_cuda" if cuda else "pipeline"
    md = (f"# actlab training pipeline vs a bare PyTorch loop ({device.type}, {args.threads or 'default'} thread(s), "
          f"{args.repeats} round(s){', quick' if args.quick else ''})\n\n" + tables(results, cuda))
    payload = {"device": device.type, "repeats": args.repeats, "quick": args.quick, "threads": args.threads,
               "variants": variants, "targets": {f"{m} {v}": t for (m, v), t in TARGETS.items()}, "models": results}
    path = write_results(name, payload, md, args.out)
    console.print(md, soft_wrap=True)
    console.print(f"wrote {path} and {path.with_suffix('.md')}")
    return 0
