"""Dead-neuron measurement: which units of which activation layers never fire, or never get gradient.

    rates = measure(model, probe_batches)            # {"dead_fwd": .., "dead_fwd/layer1.0.act1": .., ...}

Definitions (ours; the HeLU paper measures no dead neurons). A *layer* is an activation call site, named
by its module path; a *unit* is a channel of an (N, C, H, W) input and a feature (last dim) of an
(N, ..., D) one (so BERT/ViT feed-forward units are hidden features, every token position counted).
Over a set S of inputs, with z the activation's input (pre-activation) and f the activation:

| key                     | per unit / element                                    | ReLU, HeLU(m)              |
|-------------------------|-------------------------------------------------------|----------------------------|
| dead_fwd                | unit dead if |f(z)| <= eps on every element of S      | z <= eps everywhere        |
| dead_grad               | unit dead if |f'(z)| <= eps everywhere, f' = the      | ReLU z <= 0; HeLU z <= -m  |
|                         | derivative training uses (HeLU: its surrogate)        |                            |
| band (HeLU layers only) | share of elements with -m < z <= 0                    | forward-dead, gets gradient|
| zero_rate               | share of elements with f(z) == 0 exactly              | z <= 0                     |

dead_* are shares of units per layer; band and zero_rate shares of elements per layer ("dynamic dead
neuron rate", in the spirit of Liu et al. 2022). Aggregates: the bare key (`dead_fwd`) is the unweighted
mean over layers, `dead_fwd_units` / `dead_grad_units` the share over all units of the model; `band` is
the mean over HeLU layers (0.0 when there are none). eps defaults to 1e-6; with it LeakyReLU, PReLU
(slope > eps), ELU and GELU units are never dead in practice, and GELU's zero_rate is 0.

Cost: per call site one per-unit max reduction (max z, or max |f(z)| and max |f'(z)|) folded into a
running max, plus element counts kept as running int64 sums; no activation copy is ever kept. During
training the element shares (zero_rate, band) are estimated on every TRAIN_COUNT_EVERY-th batch (the
counts cost more than the maxima); dead_* see every batch and `measure()` counts every element. f' has
closed forms for ReLU, HeLU, LeakyReLU, PReLU and ELU; any other activation is differentiated
elementwise with autograd (d f(z).sum() / dz = f'(z), since activations act elementwise).
Only activation *modules* are seen (is_activation), not functional calls such as F.relu. A module
registered under two paths or run twice per forward (torchvision's BasicBlock.relu) is rejected:
`actlab.activations.swap()` gives every call site its own module. For dict (HF) batches with an
`attention_mask`, padded positions of (N, L, D) inputs are excluded (a boolean gather per call).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from actlab.activations import activation_sites
from actlab.batches import attention_mask, device_of, forward, to_device
from actlab.site_stats import Z_ONLY, Site

EPS = 1e-6
TRAIN_COUNT_EVERY = 8  # during training, element shares are counted on every 8th batch (see above)


class SharedActivationError(ValueError):
    """An activation module serves several call sites, so its statistics would merge layers."""


def _fix_hint(what: str) -> str:
    return (f"dead-neuron monitor: {what}; per-layer rates would merge call sites. Call "
            "actlab.activations.swap(model, name) first: it gives every call site its own module.")


def sites(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(path, module) per activation site; raises SharedActivationError for a module under two paths."""
    seen: dict[int, str] = {}
    out = []
    for path, mod in activation_sites(model):
        if id(mod) in seen:
            raise SharedActivationError(_fix_hint(
                f"{type(mod).__name__} is registered under both '{seen[id(mod)]}' and '{path}'"))
        seen[id(mod)] = path
        out.append((path, mod))
    return out


class UnitStats:
    """Forward hooks on every activation site feeding per-unit accumulators; read with `rates()`.

    `active` gates the hooks (the Lightning callback opens it only around training batches);
    `mask` is the current batch's attention mask (N, L) or None. Use attach()/detach() or `with`.
    count_every > 1 counts elements (zero_rate, band) on every count_every-th call of a site only, the
    training-time saving; dead_fwd / dead_grad always see every element.
    """

    def __init__(
        self,
        model: nn.Module,
        eps: float = EPS,
        histogram: tuple[int, float, float] | None = None,
        count_every: int = 1,
    ):
        if histogram is not None:
            bins, lo, hi = int(histogram[0]), float(histogram[1]), float(histogram[2])
            if bins < 1 or not hi > lo:
                raise ValueError(f"histogram needs bins >= 1 and hi > lo, got {histogram}")
            histogram = (bins, lo, hi)
        self.model, self.eps, self.hist_spec = model, float(eps), histogram
        if int(count_every) < 1:
            raise ValueError(f"count_every must be >= 1, got {count_every}")
        self.sites = [Site(p, m, self.eps, histogram, int(count_every)) for p, m in sites(model)]
        self.active = True
        self.mask: torch.Tensor | None = None
        self._handles: list = []

    def attach(self) -> UnitStats:
        if self._handles:
            return self
        for s in self.sites:
            self._handles.append(s.module.register_forward_pre_hook(self._pre_hook(s)))
            if s.kind not in Z_ONLY:
                self._handles.append(s.module.register_forward_hook(self._post_hook(s)))
        return self

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def __enter__(self) -> UnitStats:
        return self.attach()

    def __exit__(self, *exc) -> None:
        self.detach()

    def _pre_hook(self, site: Site):
        def hook(module, args):
            if self.active and args:
                site.pre(args[0], self.mask)
        return hook

    def _post_hook(self, site: Site):
        def hook(module, args, out):
            if self.active and args:
                site.post(args[0], out, self.mask)
        return hook

    def reset(self) -> None:
        for s in self.sites:
            s.reset()
            s.calls = 0

    def check_calls(self) -> None:
        """Raise SharedActivationError if a module ran more than once since the last check; reset counts."""
        bad = [(s.path, s.calls) for s in self.sites if s.calls > 1]
        for s in self.sites:
            s.calls = 0
        if bad:
            path, k = bad[0]
            raise SharedActivationError(_fix_hint(f"the activation at '{path}' runs {k} times per forward"))

    def reduce_distributed(self) -> None:
        """Across DDP ranks: max of the unit scores, sum of the counts (no-op when not distributed)."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return
        for s in self.sites:
            if s.fwd is None:
                continue  # every rank runs the same model, so a site seen anywhere is seen everywhere
            dist.all_reduce(s.fwd, op=dist.ReduceOp.MAX)
            if s.grad is not s.fwd:
                dist.all_reduce(s.grad, op=dist.ReduceOp.MAX)
            counts = torch.stack([torch.as_tensor(v, device=s.fwd.device, dtype=torch.int64)
                                  for v in (s.nonzero, s.band, s.n)])
            dist.all_reduce(counts)
            s.nonzero, s.band, s.n = counts[0], counts[1], int(counts[2])
            if s.hist is not None:
                dist.all_reduce(s.hist)

    def rates(self, prefix: str = "") -> dict[str, float]:
        """Per-layer and aggregate rates (see the module docstring), keys prefixed by `prefix`."""
        seen = [s for s in self.sites if s.fwd is not None and s.n > 0]  # a site never called is skipped
        if not seen:
            return {}
        dev = seen[0].fwd.device
        # One stacked tensor and one .tolist(): a single device sync for the whole model.
        rows = torch.stack([torch.stack([
            *(d.to(dev, torch.float64) for d in s.dead()),
            torch.as_tensor(s.nonzero, device=dev, dtype=torch.float64),
            torch.as_tensor(s.band, device=dev, dtype=torch.float64),
        ]) for s in seen]).tolist()
        out: dict[str, float] = {}
        per: dict[str, list[float]] = {"dead_fwd": [], "dead_grad": [], "zero_rate": [], "band": []}
        units = dead_f = dead_g = 0
        for s, (df, dg, nz, band) in zip(seen, rows):
            u = s.fwd.numel()
            vals = {"dead_fwd": df / u, "dead_grad": dg / u, "zero_rate": 1.0 - nz / s.n}
            if s.kind == "helu":
                vals["band"] = band / s.n
            for k, v in vals.items():
                out[f"{prefix}{k}/{s.path}"] = v
                per[k].append(v)
            units, dead_f, dead_g = units + u, dead_f + df, dead_g + dg
        for k, vs in per.items():
            out[f"{prefix}{k}"] = sum(vs) / len(vs) if vs else 0.0
        out[f"{prefix}dead_fwd_units"] = dead_f / units
        out[f"{prefix}dead_grad_units"] = dead_g / units
        return out

    def histogram(self) -> dict[str, Any]:
        """The preact_hist.json payload: edges (bins + 1), HeLU margin or None, activation name, counts."""
        if self.hist_spec is None:
            raise ValueError("UnitStats was built without histogram=(bins, lo, hi)")
        bins, lo, hi = self.hist_spec
        names = sorted({type(s.module).__name__ for s in self.sites})
        helus = [s.module for s in self.sites if s.kind == "helu"]
        return {
            "edges": torch.linspace(lo, hi, bins + 1, dtype=torch.float64).tolist(),
            "margin": float(f"{helus[0].margin:.7g}") if helus else None,  # rounded for display
            "activation": "+".join(names),
            "layers": {s.path: (s.hist.tolist() if s.hist is not None else [0] * bins) for s in self.sites},
        }


def measure(
    model: nn.Module,
    batches: Iterable,
    eps: float = EPS,
    histogram: tuple[int, float, float] | None = None,
) -> dict[str, Any]:
    """Dead-neuron rates of `model` on `batches`, in eval mode under no_grad; the model is left as found.

    A batch is a tensor, an (x, y, ...) tuple (x is fed) or a dict of model kwargs (HF; padded positions
    excluded via its attention_mask). With histogram=(bins, lo, hi) the result also holds "preact_hist",
    the per-layer pre-activation histogram payload (see UnitStats.histogram). Raises
    SharedActivationError for a module shared between call sites.
    """
    stats = UnitStats(model, eps, histogram)
    if not stats.sites:
        raise ValueError("dead-neuron monitor: the model has no activation modules (functional calls "
                         "such as F.relu are invisible to hooks)")
    device = device_of(model)
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        # inference_mode(False): Lightning validates under inference mode, where autograd-based f' fails
        with torch.inference_mode(False), torch.no_grad(), stats:
            for batch in batches:
                batch = to_device(batch, device)
                stats.mask = attention_mask(batch)
                forward(model, batch)
                stats.check_calls()
    finally:
        for m, was_training in modes:
            m.training = was_training
    out: dict[str, Any] = stats.rates()
    if histogram is not None:
        out["preact_hist"] = stats.histogram()
    return out
