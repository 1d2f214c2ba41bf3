#!/usr/bin/env bash
# bash scripts/cpu_table1.sh       (~1 h 40 min on 2 cores; completed runs are skipped on a rerun)
# Table 1's design at CPU scale (conf/experiment/cpu_table1.yaml), then its table and its report section
# with the figures: results/tables/cpu_table1.*, results/cpu_table1.md, results/figures/cpu_table1/.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
RUNS=${RUNS:-results/runs/cpu_table1}
status=0
source scripts/sweep.sh
sweep experiment=cpu_table1 "paths.runs_dir=$RUNS" "$@"
"$BIN/actlab" summarize "$RUNS" --by model,activation,margin \
    --metric test/acc dead_fwd dead_grad dormant_redo@0_025 pd --name cpu_table1 --paper -q || status=1
"$BIN/actlab" report "$RUNS" --out results/cpu_table1.md || status=1
exit $status
