"""actlab: a reproducible experiment pipeline for activation-function research."""

__version__ = "0.1.0"
