#!/usr/bin/env bash
# make demo  (or: bash scripts/demo.sh)
# The demo on Fashion-MNIST, CPU only, under 10 minutes on 2 cores (two jobs at a time):
#   1. activations side by side on a small CNN, full training set (ReLU, LeakyReLU, GELU, HeLU 0.05; seed 0);
#   2. a HeLU margin sweep on a deep narrow MLP (16 x 16; margins 0.01, 0.1, 0.5; ReLU and GELU; 8 seeds);
# then the comparison tables (results/tables/) and results/REPORT.md with its figures (results/figures/demo_*/),
# whose comparisons it prints. Completed runs are skipped on a second call (same run_id): re-running redoes only
# what is missing. `actlab status results/runs/demo` shows where the sweeps stand.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
RUNS=${RUNS:-results/runs/demo}
LOG=${RUNS}/demo_tables.log   # what summarize prints (their errors still reach the console)
status=0
source scripts/sweep.sh
sweep experiment=demo_activations "paths.runs_dir=$RUNS/activations"
sweep experiment=demo_margins activation=relu,gelu activation.margin=0 "paths.runs_dir=$RUNS/margins"
sweep experiment=demo_margins activation=helu "paths.runs_dir=$RUNS/margins"

{
"$BIN/actlab" summarize "$RUNS/activations" --by model,activation --name demo_activations -q || status=1
"$BIN/actlab" summarize "$RUNS/margins" --by model,activation,margin \
    --metric test/acc dead_fwd dead_grad dormant_redo@0_025 pd --name demo_margins -q || status=1
} > "$LOG"
"$BIN/actlab" report "$RUNS/activations" "$RUNS/margins" --out results/REPORT.md || status=1
echo "tables: results/tables/demo_*.md, report: results/REPORT.md, its figures: results/figures/demo_*/ (log: $LOG)"
exit $status
