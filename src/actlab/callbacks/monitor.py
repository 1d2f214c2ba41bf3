"""DeadNeuronMonitor: the Lightning callback that tracks dead-neuron rates (definitions: actlab.monitor).

    monitor = DeadNeuronMonitor(probe_size=512)
    Trainer(callbacks=[monitor]).fit(task, datamodule=dm)
    record["dead"] = monitor.state()          # {"final": {...}, "history": [{"epoch": 0, ...}, ...]}

Two views per epoch. `train_*`: hooks on every activation site accumulate, over the epoch's training
batches (training mode, the network changing under them), whether each unit fired / got gradient at
least once. Bare keys (`dead_fwd`, ...): `measure()` on a fixed probe set, the first `probe_size`
examples of the validation loader, cached once so that rates compare across epochs, activations and
runs. `metrics` picks the metric set ("basic" | "default" | "all", or groups; definitions and costs in
actlab.monitor): dormant_redo@tau, dormant_freq, w_abs and eff_rank / approx_rank are probe keys,
still_dead / revived compare each probe measurement with the previous one (the first has none), and
grad_norm ("all") averages per-layer weight-gradient norms over the epoch's optimizer steps (taken in
on_before_optimizer_step, after AMP unscaling). At the end of training the probe's per-layer
pre-activation histogram goes to `<out_dir>/preact_hist.json`. Aggregates are logged through
`pl_module.log`, per-layer keys straight to the attached loggers.
Under DDP the training counts are reduced over ranks (max / sum); every rank measures the same probe.
Dict batches are fed to the model as keyword arguments (HF style); their attention_mask drops padding.
Activation checkpointing re-runs forwards inside backward: the hooks then see each z twice, which
leaves every rate unchanged.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback
from torch import nn

from actlab import atomic
from actlab.batches import attention_mask, first_examples
from actlab.hist_bins import HistBins
from actlab.layer_stats import GradNorms
from actlab.monitor import EPS, TRAIN_COUNT_EVERY, UnitStats, measure, resolve_metrics

log = logging.getLogger("actlab")


class DeadNeuronMonitor(Callback):
    """Per-epoch dead-neuron rates on training batches and on a fixed probe set; see the module docstring.

    eps: threshold of |f| and |f'| (1e-6). probe_size: first K validation examples. train_stats: hook the
    training batches (the cheap part of the work, < 3 % of a ResNet-18 step). hist_bins / hist_range /
    hist_linear_width: the final pre-activation histogram, bins uniform in asinh(z / w) (null: uniform in z);
    values outside the range land in the edge bins.
    every_n_epochs: measure on epochs where (epoch + 1) % n == 0. out_dir: where preact_hist.json goes
    (default trainer.log_dir, else default_root_dir). log_per_layer: also log the `<key>/<layer>` keys
    (history keeps them either way). module_attr: measure `pl_module.<module_attr>` when it is a module
    (layer names then lack the "model." prefix), else pl_module itself. train_count_every: count the
    elements of train_zero_rate / train_band on every k-th training batch (train_dead_* see every batch).
    metrics: "basic" (the dead rates only), "default" (+ dormancy, revival, w_abs; no per-step cost), "all"
    (+ eff_rank / approx_rank on the probe, grad_norm per training step), or a list of metric groups.
    """

    def __init__(
        self,
        eps: float = EPS,
        probe_size: int = 512,
        train_stats: bool = True,
        hist_bins: int = 1000,
        hist_range: tuple[float, float] = (-1e6, 1e6),
        hist_linear_width: float | None = 0.01,
        every_n_epochs: int = 1,
        out_dir: str | None = None,
        log_per_layer: bool = True,
        module_attr: str | None = "model",
        train_count_every: int = TRAIN_COUNT_EVERY,
        metrics: str | Iterable[str] = "default",
    ):
        lo, hi = (float(v) for v in hist_range)
        bad = [name for name, ok in (
            ("probe_size >= 0", probe_size >= 0), ("hist_bins >= 1", hist_bins >= 1),
            ("hist_range lo < hi", hi > lo), ("hist_linear_width null or > 0",
                                              hist_linear_width is None or hist_linear_width > 0),
            ("every_n_epochs >= 1", every_n_epochs >= 1), ("eps >= 0", eps >= 0),
            ("train_count_every >= 1", train_count_every >= 1)) if not ok]
        if bad:
            raise ValueError(f"DeadNeuronMonitor needs {', '.join(bad)}")
        self.eps, self.probe_size, self.train_stats = float(eps), int(probe_size), bool(train_stats)
        w = None if hist_linear_width is None else float(hist_linear_width)
        self.hist_spec = HistBins(int(hist_bins), lo, hi, w)
        self.every_n_epochs, self.out_dir = int(every_n_epochs), out_dir
        self.log_per_layer, self.module_attr = bool(log_per_layer), module_attr
        self.train_count_every = int(train_count_every)
        self.groups = resolve_metrics(metrics)  # raises ValueError for an unknown name
        self.history: list[dict[str, Any]] = []
        self.final: dict[str, Any] = {}
        self._root: nn.Module | None = None
        self._train: UnitStats | None = None
        self._probe: list | None = None
        self._collect = False
        self._calls_checked = False
        self._grads: GradNorms | None = None
        self._collect_grads = False
        self._dead_masks: dict[str, torch.Tensor] = {}  # dead_fwd units of the last probe measurement

    # -- what the training entry reads ---------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """{"final": {...}, "history": [...]}: what goes into the run record as record["dead"]."""
        return {"final": dict(self.final), "history": [dict(h) for h in self.history]}

    def state_dict(self) -> dict[str, Any]:  # saved in checkpoints: a resumed run keeps its history
        masks = {p: m.tolist() for p, m in self._dead_masks.items()}  # and revival its reference
        return {**self.state(), "dead_masks": masks}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = [dict(h) for h in state_dict.get("history", [])]
        self.final = dict(state_dict.get("final", {}))
        self._dead_masks = {p: torch.tensor(m, dtype=torch.bool)
                            for p, m in (state_dict.get("dead_masks") or {}).items()}

    # -- lifecycle -----------------------------------------------------------------------------------
    def on_fit_start(self, trainer, pl_module) -> None:
        root = getattr(pl_module, self.module_attr, None) if self.module_attr else None
        root = root if isinstance(root, nn.Module) else pl_module
        # raises SharedActivationError for a module registered under two paths
        stats = UnitStats(root, self.eps, count_every=self.train_count_every)
        if not stats.sites:
            log.warning("DeadNeuronMonitor: no activation modules in %s; nothing to monitor", type(root).__name__)
            return
        self._root = root
        if "grad_norm" in self.groups:
            self._grads = GradNorms(root)
        if self.train_stats:
            stats.active = False  # opened only around training batches, never during validation
            self._train = stats.attach()

    def on_train_start(self, trainer, pl_module) -> None:
        probe = self._probe_set(trainer, pl_module)
        if self._root is not None and probe:
            # fail now on a module run twice per forward
            measure(self._root, probe[:1], self.eps, metrics="basic")
            self._calls_checked = True

    def on_fit_end(self, trainer, pl_module) -> None:
        self._release()

    def teardown(self, trainer, pl_module, stage: str) -> None:
        self._release()  # also on an exception: never leave hooks on the model

    def _release(self) -> None:
        if self._train is not None:
            self._train.detach()
        self._train, self._root, self._collect = None, None, False
        self._grads, self._collect_grads = None, False

    # -- training batches ----------------------------------------------------------------------------
    def _epoch_due(self, trainer) -> bool:
        return (trainer.current_epoch + 1) % self.every_n_epochs == 0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._collect = self._train is not None and self._epoch_due(trainer)
        if self._collect:
            self._train.reset()
        self._collect_grads = self._grads is not None and self._epoch_due(trainer)
        if self._collect_grads:
            self._grads.reset()

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if self._collect_grads:
            self._grads.accumulate()  # device work only: no host sync per step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._collect:
            self._train.mask = attention_mask(batch)
            self._train.active = True

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._collect:
            self._train.active = False
            self._train.mask = None
            if not self._calls_checked:  # no probe set to check on: check the first training batch
                self._train.check_calls()
                self._calls_checked = True

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        rates: dict[str, float] = {}
        if self._collect:
            self._collect = False
            self._train.reduce_distributed()
            rates.update(self._train.rates(prefix="train_"))
        if self._collect_grads:  # gradients are all-reduced under DDP: every rank holds the same norms
            self._collect_grads = False
            rates.update(self._grads.rates())
        self._record(trainer, pl_module, rates)

    # -- probe set -----------------------------------------------------------------------------------
    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if self._root is None or trainer.sanity_checking or not self._epoch_due(trainer):
            return
        probe = self._probe_set(trainer, pl_module)
        if probe:
            self._record(trainer, pl_module, measure(self._root, probe, self.eps, metrics=self.groups,
                                                     previous=self._dead_masks))

    def on_train_end(self, trainer, pl_module) -> None:
        if self._root is None:
            return
        final = dict(self.history[-1]) if self.history else {}
        probe = self._probe_set(trainer, pl_module)
        run_dir = self.out_dir or trainer.log_dir or trainer.default_root_dir  # log_dir: call on all ranks
        if probe:
            # same weights as the last probe measurement: no revival against it (final keeps that epoch's)
            rates = measure(self._root, probe, self.eps, histogram=self.hist_spec,
                            metrics=self.groups - {"revival"})
            hist = rates.pop("preact_hist")
            final.update(rates)
            if trainer.is_global_zero:
                write_histogram(hist, Path(run_dir) / "preact_hist.json")
        self.final = final

    def _record(self, trainer, pl_module, rates: dict[str, float]) -> None:
        if not rates:
            return
        overall = {k: v for k, v in rates.items() if "/" not in k}
        pl_module.log_dict(overall, on_step=False, on_epoch=True, batch_size=1, add_dataloader_idx=False)
        if self.log_per_layer and trainer.is_global_zero:
            # Straight to the loggers, at the step Lightning gives epoch values: each pl_module.log call
            # costs ~1-2 ms (Lightning walks its results), and a ResNet has ~100 per-layer keys per epoch.
            # Every rank holds the same (reduced) rates, so rank 0 alone writes them.
            per_layer = {k: v for k, v in rates.items() if "/" in k}
            step = trainer.fit_loop.epoch_loop._batches_that_stepped
            for logger in trainer.loggers:
                logger.log_metrics({**per_layer, "epoch": trainer.current_epoch}, step=step)
        epoch = trainer.current_epoch
        if not self.history or self.history[-1].get("epoch") != epoch:
            self.history.append({"epoch": epoch})
        self.history[-1].update(rates)
        self.final = dict(self.history[-1])  # an interrupted run still has "final" values

    def _probe_set(self, trainer, pl_module) -> list:
        """The first probe_size validation examples, loaded once (CPU batches); [] when there are none."""
        if self._probe is None:
            loader = _loader(trainer, pl_module, "val")
            if loader is None and self.probe_size:
                log.warning("DeadNeuronMonitor: no validation loader; probing the first %d training examples",
                            self.probe_size)
                loader = _loader(trainer, pl_module, "train")
            self._probe = first_examples(loader, self.probe_size) if loader is not None and self.probe_size else []
        return self._probe


def _loader(trainer, pl_module, split: str) -> Iterable | None:
    """A fresh `split` ("val" / "train") loader: datamodule's, else the trainer's, else the module's."""
    candidates = []
    if trainer.datamodule is not None:
        candidates.append(lambda: getattr(trainer.datamodule, f"{split}_dataloader")())
    candidates.append(lambda: getattr(trainer, f"{split}_dataloaders" if split == "val" else "train_dataloader"))
    candidates.append(lambda: getattr(pl_module, f"{split}_dataloader")())
    for get in candidates:
        try:
            loader = get()
        except Exception:  # Lightning raises MisconfigurationException for "not implemented"
            continue
        if isinstance(loader, (list, tuple)):
            loader = loader[0] if loader else None
        if isinstance(loader, dict):
            loader = next(iter(loader.values()), None)
        if loader is not None:
            return loader
    return None


def write_histogram(payload: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write a preact_hist.json payload atomically (temp file + rename); returns the path."""
    return atomic.write_json(path, payload)
