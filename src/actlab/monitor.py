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

Further metrics, by metric set (`measure(metrics=)`, the callback's `metrics`). h = f(z) is the
activation's output; an "element" is one entry of a unit over S (an example, or one position of it in
conv / sequence layers). Per layer `<key>/<layer>`; the bare key is the mean over layers, except for
revival and w_abs, which pool; `<key>_units` (dormant_*) is the share over all units of the model.

| key              | definition                                                    | source                    |
|------------------|---------------------------------------------------------------|---------------------------|
| dormant_redo@tau | unit dormant if s_i <= tau, s_i = mean|h_i| / (mean_k         | Sokar et al. 2023 (ReDo); |
|                  | mean|h_k| + 1e-9), means over elements; tau 0, 0.025, 0.1     | dopamine labs/redo        |
|                  | as keys @0, @0_025, @0_1 (redo_key: no dot in a name)         |                           |
| dormant_freq     | unit dormant if h != 0 on fewer than 1 % of its elements      | Dohare et al. 2024        |
|                  | (ReLU/HeLU: z > 0; Leaky/ELU/GELU: h != 0, ~never dormant)    | (lop post_run_analysis)   |
| still_dead       | of the units dead_fwd at the previous measurement, the share  | dopamine                  |
| revived          | still dead_fwd / alive now; both 0.0 when none was dead       | dead_intersected_percent  |
| eff_rank         | exp(H(p)), p_k = sv_k / sum sv; sv: singular values of F, the | Roy & Vetterli 2007       |
|                  | inputs of the last nn.Linear (module order) over S, one row   |                           |
|                  | per example (per real token of an (N, L, D) input)            |                           |
| approx_rank      | smallest k with sum_{i<=k} sv_i^2 >= 0.99 sum sv^2 (same F)   | (squared mass)            |
| w_abs            | mean |w| of each nn.Linear / nn.ConvNd weight; bare: pooled   | Dohare et al. 2024        |
| grad_norm        | L2 norm of each such weight's gradient at every optimizer     | training only (callback)  |
|                  | step (after AMP unscaling), mean over the epoch's steps;      |                           |
|                  | bare: mean global norm; non-finite (skipped AMP) steps out    |                           |

Sets: "basic" = the first table (the cost of before); "default" = basic + dormant_redo, dormant_freq,
revival, w_abs (probe-time work only: one more per-unit sum and count per site, no training-step cost);
"all" = default + eff_rank / approx_rank (a streamed float64 Gram F^T F, eigvalsh at the end: no feature
copy kept) + grad_norm (one fused norm over the weight gradients per optimizer step). Group names
(METRIC_GROUPS) may be listed instead. The formulas live in actlab.dormancy.

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

import contextlib
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from actlab import dormancy
from actlab.activations import activation_sites
from actlab.batches import attention_mask, device_of, forward, to_device
from actlab.hist_bins import HistBins
from actlab.layer_stats import FeatureGram, weight_abs
from actlab.site_stats import Z_ONLY, Site

EPS = 1e-6
TRAIN_COUNT_EVERY = 8  # during training, element shares are counted on every 8th batch (see above)
METRIC_GROUPS = ("redo", "freq", "revival", "w_abs", "rank", "grad_norm")
METRIC_SETS = {"basic": (), "default": ("redo", "freq", "revival", "w_abs"), "all": METRIC_GROUPS}


def redo_key(tau: float) -> str:
    """"dormant_redo@0_025" for tau 0.025: no dot in a metric name (the report reads dotted names as config)."""
    return f"dormant_redo@{float(tau):g}".replace(".", "_")


def resolve_metrics(spec: str | Iterable[str] | None) -> frozenset[str]:
    """The metric groups of a set name ("basic" | "default" | "all"), a group name, or a list of these."""
    if spec is None:
        return frozenset(METRIC_SETS["default"])
    names = [spec] if isinstance(spec, str) else list(spec)
    out: set[str] = set()
    for name in names:
        name = str(name)
        if name in METRIC_SETS:
            out.update(METRIC_SETS[name])
        elif name in METRIC_GROUPS:
            out.add(name)
        else:
            raise ValueError(f"unknown monitor metrics {name!r}: use a set ({'|'.join(METRIC_SETS)}) "
                             f"or groups from {', '.join(METRIC_GROUPS)}")
    return frozenset(out)


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
    training-time saving; dead_fwd / dead_grad always see every element. unit_sums adds the per-unit
    sums behind `dormant_rates()` (dormant_redo, dormant_freq): probe measurements only.
    """

    def __init__(
        self,
        model: nn.Module,
        eps: float = EPS,
        histogram: HistBins | tuple | None = None,
        count_every: int = 1,
        unit_sums: bool = False,
    ):
        histogram = None if histogram is None else HistBins.of(histogram)  # raises ValueError when bad
        self.model, self.eps, self.hist_spec = model, float(eps), histogram
        if int(count_every) < 1:
            raise ValueError(f"count_every must be >= 1, got {count_every}")
        self.sites = [Site(p, m, self.eps, histogram, int(count_every), bool(unit_sums))
                      for p, m in sites(model)]
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
            if s.abs_sum is not None:
                dist.all_reduce(s.abs_sum)
                dist.all_reduce(s.active)
                s.unit_n *= dist.get_world_size()  # every rank sees the same shapes

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

    def dormant_rates(self, taus: Iterable[float] = dormancy.REDO_TAUS,
                      freq: float = dormancy.FREQ_THRESHOLD) -> dict[str, float]:
        """dormant_redo@tau and dormant_freq per layer, mean over layers and over units (needs unit_sums)."""
        seen = [s for s in self.sites if s.abs_sum is not None and s.unit_n > 0]
        if not seen:
            return {}
        taus = tuple(float(t) for t in taus)
        names = [redo_key(t) for t in taus] + ["dormant_freq"]
        dev = seen[0].abs_sum.device
        rows = torch.stack([torch.stack([
            *(dormancy.redo_dormant(dormancy.redo_scores(s.abs_sum / s.unit_n), t).sum() for t in taus),
            dormancy.freq_dormant(s.active.double() / s.unit_n, freq).sum(),
        ]).to(dev, torch.float64) for s in seen]).tolist()  # one device sync
        out: dict[str, float] = {}
        units, counts = 0, [0.0] * len(names)
        per: dict[str, list[float]] = {k: [] for k in names}
        for s, row in zip(seen, rows):
            u = s.abs_sum.numel()
            for i, (k, c) in enumerate(zip(names, row)):
                out[f"{k}/{s.path}"] = c / u
                per[k].append(c / u)
                counts[i] += c
            units += u
        for i, k in enumerate(names):
            base, _, tau = k.partition("@")
            out[k] = sum(per[k]) / len(per[k])
            out[f"{base}_units" + (f"@{tau}" if tau else "")] = counts[i] / units
        return out

    def dead_masks(self) -> dict[str, torch.Tensor]:
        """Per layer, the bool mask of its dead_fwd units (layers seen since the last reset)."""
        return {s.path: s.fwd <= self.eps for s in self.sites if s.fwd is not None}

    def revival(self, previous: dict[str, torch.Tensor]) -> dict[str, float]:
        """still_dead / revived against the `previous` masks ({} when empty); then `previous` := today's."""
        now = self.dead_masks()
        common = [p for p in now if p in previous]
        out: dict[str, float] = {}
        if common:
            counts = torch.stack([dormancy.revival(previous[p], now[p]) for p in common]).tolist()
            for p, (n, still, rev) in zip(common, counts):
                out[f"still_dead/{p}"], out[f"revived/{p}"] = dormancy.shares(n, still, rev)
            n, still, rev = (sum(c[i] for c in counts) for i in range(3))
            out["still_dead"], out["revived"] = dormancy.shares(n, still, rev)
        previous.clear()
        previous.update({p: m.detach().clone() for p, m in now.items()})
        return out

    def histogram(self) -> dict[str, Any]:
        """The preact_hist.json payload: edges (bins + 1), HeLU margin or None, activation name, counts."""
        if self.hist_spec is None:
            raise ValueError("UnitStats was built without histogram=(bins, lo, hi[, linear_width])")
        bins = self.hist_spec.bins
        names = sorted({type(s.module).__name__ for s in self.sites})
        helus = [s.module for s in self.sites if s.kind == "helu"]
        return {
            "edges": self.hist_spec.edges(),
            **self.hist_spec.describe(),
            "margin": float(f"{helus[0].margin:.7g}") if helus else None,  # rounded for display
            "activation": "+".join(names),
            "layers": {s.path: (s.hist.tolist() if s.hist is not None else [0] * bins) for s in self.sites},
        }


def measure(
    model: nn.Module,
    batches: Iterable,
    eps: float = EPS,
    histogram: HistBins | tuple | None = None,
    metrics: str | Iterable[str] | None = "default",
    previous: dict[str, torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Dead-neuron rates of `model` on `batches`, in eval mode under no_grad; the model is left as found.

    A batch is a tensor, an (x, y, ...) tuple (x is fed) or a dict of model kwargs (HF; padded positions
    excluded via its attention_mask). With histogram=(bins, lo, hi[, linear_width]) the result also holds "preact_hist",
    the per-layer pre-activation histogram payload (see UnitStats.histogram). `metrics`: a set ("basic",
    "default", "all") or metric groups (module docstring); grad_norm is a training-time metric, ignored here.
    `previous`: the dead_fwd masks of the last measurement ({} at first), for still_dead / revived; it is
    replaced in place by this measurement's. Raises SharedActivationError for a module shared between
    call sites.
    """
    groups = resolve_metrics(metrics)
    stats = UnitStats(model, eps, histogram, unit_sums=bool(groups & {"redo", "freq"}))
    if not stats.sites:
        raise ValueError("dead-neuron monitor: the model has no activation modules (functional calls "
                         "such as F.relu are invisible to hooks)")
    gram = FeatureGram(model) if "rank" in groups else None
    device = device_of(model)
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        # inference_mode(False): Lightning validates under inference mode, where autograd-based f' fails
        with torch.inference_mode(False), torch.no_grad(), stats, gram or contextlib.nullcontext():
            for batch in batches:
                batch = to_device(batch, device)
                stats.mask = attention_mask(batch)
                if gram is not None:
                    gram.mask = stats.mask
                forward(model, batch)
                stats.check_calls()
    finally:
        for m, was_training in modes:
            m.training = was_training
    out: dict[str, Any] = stats.rates()
    wanted = tuple(p for g, p in (("redo", "dormant_redo"), ("freq", "dormant_freq")) if g in groups)
    out.update({k: v for k, v in stats.dormant_rates().items() if k.startswith(wanted)})
    if "revival" in groups and previous is not None:
        out.update(stats.revival(previous))
    if "w_abs" in groups:
        out.update(weight_abs(model))
    if gram is not None:
        out.update(gram.ranks())
    if histogram is not None:
        out["preact_hist"] = stats.histogram()
    return out
