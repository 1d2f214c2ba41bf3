#!/usr/bin/env bash
# bash scripts/table2.sh [extra overrides, e.g. hydra/launcher=slurm hydra.launcher.partition=gpu]
# Reproduces the HeLU paper's Table 2: pre-train one BERT per activation with masked LM, fine-tune each
# on the nine GLUE tasks, evaluate each fine-tune again after dynamic INT8 quantization (Table 3), then
# the GLUE tables with the paper's numbers beside ours.
# Needs the hub (bookcorpus, nyu-mll/glue) or local files (dataset.data_files=...); GPUs in practice.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
RUNS=${RUNS:-results/runs/table2}
status=0
source scripts/sweep.sh
sweep experiment=paper_glue_pretrain "paths.runs_dir=$RUNS" "$@"
sweep experiment=paper_glue "paths.runs_dir=$RUNS" "$@"
"$BIN/actlab" int8 "$RUNS" || status=1
"$BIN/actlab" summarize "$RUNS" --by dataset,activation,margin --metric test/score --name table2 --paper || status=1
exit $status
