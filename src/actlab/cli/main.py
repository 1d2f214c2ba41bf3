"""`actlab <command>`: everything except training (which is `actlab-train`).

    actlab summarize [RUNS_DIR]          # comparison tables into results/tables/
    actlab figures [RUNS_DIR]            # the paper's figures into results/figures/
    actlab int8 [RUNS_DIR]               # GLUE runs: INT8 minus fp32 dev scores, into their records
    actlab migrate [RUNS_DIR]            # upgrade records of older actlab versions in place (schema 3)
    actlab presets [xor_prelu] [prune_dnr]   # the two mini-experiments' tables and figures
    actlab status [RUNS_DIR] [--watch [SECONDS]]   # sweeps' progress: counts, epochs, ETA, failures
    actlab report RUNS_DIR ... --out results/REPORT.md   # the report: tables, comparisons vs ReLU, figures
    actlab tune [RUNS_DIR] [--metric val/acc]      # an Optuna margin search (experiment=tune_margin): table, figure
    actlab bench activations|monitor|inference|summarize|pipeline   # benchmarks into results/bench/

Each command lives in its own module exposing add_arguments(parser) and run(args) -> exit code;
modules are imported only when their command runs, so `actlab --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    "summarize": ("actlab.report.summarize", "comparison tables from run records"),
    "figures": ("actlab.report.figures", "the paper's figures from run records and benchmarks"),
    "int8": ("actlab.report.int8", "GLUE runs: dev scores in fp32 and dynamic INT8 on CPU, into their records"),
    "migrate": ("actlab.report.migrate", "upgrade schema-1/2 run records in place to schema 3 (history.jsonl)"),
    "presets": ("actlab.report.presets", "tables and figures of the presets xor_prelu and prune_dnr"),
    "status": ("actlab.report.status", "where sweeps stand: counts, epochs, ETA, failures, stale runs"),
    "report": ("actlab.report.document", "results/REPORT.md from run records: tables, comparisons, figures"),
    "tune": ("actlab.report.tuning", "an Optuna margin search (experiment=tune_margin): its trials as a table and a figure"),
}
BENCHMARKS = {
    "activations": ("actlab.bench.activations", "activation op and ResNet-18 step: time and saved memory"),
    "monitor": ("actlab.bench.monitor", "dead-neuron monitor overhead on a ResNet-18 training step"),
    "inference": ("actlab.bench.inference", "HF models: original activation vs ReLU (= HeLU at inference)"),
    "summarize": ("actlab.bench.summarize", "summarize speed on 10,000 synthetic records"),
    "pipeline": ("actlab.bench.pipeline", "actlab-train vs a bare PyTorch loop: one epoch per model, interleaved"),
}


def _add(sub, name: str, module: str, help_: str, argv: list[str]) -> None:
    parser = sub.add_parser(name, help=help_, description=help_)
    parser.set_defaults(_module=module)
    # Import only the module whose command is on the command line (help listings need none).
    if name in argv:
        importlib.import_module(module).add_arguments(parser)


def parser(argv: list[str]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="actlab", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    for name, (module, help_) in COMMANDS.items():
        _add(sub, name, module, help_, argv[:1])
    bench = sub.add_parser("bench", help="benchmarks, written to results/bench/")
    bench_sub = bench.add_subparsers(dest="benchmark", required=True)
    for name, (module, help_) in BENCHMARKS.items():
        _add(bench_sub, name, module, help_, argv[1:2] if argv[:1] == ["bench"] else [])
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parser(argv).parse_args(argv)
    return int(importlib.import_module(args._module).run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
