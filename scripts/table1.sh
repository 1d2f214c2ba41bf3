#!/usr/bin/env bash
# bash scripts/table1.sh [extra overrides, e.g. hydra/launcher=slurm hydra.launcher.partition=gpu]
# Reproduces the HeLU paper's Table 1 (WRN-40-4 on CIFAR-10/100 for 100 epochs, Imagenette for 50),
# then the comparison table with the paper's numbers beside ours, and the accuracy-vs-margin figure.
# Needs the data sets on disk or a network (dataset.data_dir=...); a GPU per job in practice.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
RUNS=${RUNS:-results/runs/table1}
status=0
source scripts/sweep.sh
sweep experiment=paper_table1 dataset=cifar10,cifar100 "paths.runs_dir=$RUNS" "$@"
sweep experiment=paper_table1 dataset=imagenette trainer.max_epochs=50 "paths.runs_dir=$RUNS" "$@"
"$BIN/actlab" summarize "$RUNS" --by dataset,activation,margin --name table1 --paper || status=1
"$BIN/actlab" figures "$RUNS" --out results/figures/table1 || status=1
exit $status
