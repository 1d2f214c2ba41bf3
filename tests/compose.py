"""Compose the real Hydra config for tests: tiny, CPU, no logger, results in a temp dir."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from actlab.run.build import CONF_DIR

FAST = [
    "logger=none",
    "trainer=cpu",
    "trainer.enable_progress_bar=false",
    "trainer.max_epochs=2",
    "dataset.batch_size=32",
    "monitor=none",
]


def make_cfg(results: Path, *overrides: str, fast: bool = True, return_hydra_config: bool = False) -> DictConfig:
    """The composed `train` config with `paths.results_dir=results` plus FAST defaults and overrides."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(
            "train",
            overrides=[f"paths.results_dir={results}", *(FAST if fast else []), *overrides],
            return_hydra_config=return_hydra_config,
        )


def fashion(data_dir: Path) -> list[str]:
    """Overrides for the tiny Fashion-MNIST fixture and a small MLP."""
    return [f"dataset.data_dir={data_dir}", "model=mlp", "model.depth=3", "model.width=16"]
