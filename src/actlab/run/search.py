"""The search space of `experiment=tune_margin` (hydra-optuna-sweeper's custom_search_space hook).

Margin 0 cannot sit on a log scale: trial 0 is `activation=relu` (HeLU at margin 0 is ReLU exactly, same
forward and backward), every later trial draws HeLU's margin log-uniform in [LOW, HIGH].
"""

from __future__ import annotations

LOW, HIGH = 1e-4, 1.0  # the log-uniform margin range


def margin_space(cfg, trial) -> None:
    """hydra.sweeper.custom_search_space: trial 0 is `activation=relu` (margin 0), later trials draw
    activation.margin in [LOW, HIGH] on a log scale, unless hydra.sweeper.params or the command line
    already declares a margin distribution (then that one is used, and trial 0 ignores its draw)."""
    if trial.number == 0:
        trial.suggest_categorical("activation", ["relu"])
    elif "activation.margin" not in trial.params:
        trial.suggest_float("activation.margin", LOW, HIGH, log=True)
