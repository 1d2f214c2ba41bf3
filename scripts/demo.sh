#!/usr/bin/env bash
# make demo  (or: bash scripts/demo.sh)
# The demo sweep on Fashion-MNIST, CPU only, ~10 minutes on 2 cores:
#   1. activations side by side on a small CNN (ReLU, LeakyReLU, GELU, HeLU 0.05; 3 seeds);
#   2. a HeLU margin sweep on a deep narrow MLP (16 x 16; margins 0 .. 0.5, 3 seeds, ReLU beside it);
# then the comparison tables (results/tables/) and figures (results/figures/).
# Completed runs are skipped on a second call (same run_id), so re-running only redoes what is missing.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
RUNS=${RUNS:-results/runs/demo}
status=0
"$BIN/actlab-train" -m experiment=demo_activations "paths.runs_dir=$RUNS/activations" || status=1
"$BIN/actlab-train" -m experiment=demo_margins "paths.runs_dir=$RUNS/margins" || status=1

"$BIN/actlab" summarize "$RUNS/activations" --by model,activation --name demo_activations || status=1
"$BIN/actlab" summarize "$RUNS/margins" --by model,activation,margin --metric test/acc dead_fwd dead_grad \
    --name demo_margins || status=1
"$BIN/actlab" figures "$RUNS/margins" --out results/figures || status=1
echo
echo "tables:  results/tables/demo_activations.md  results/tables/demo_margins.md"
echo "figures: $(ls results/figures/*.png 2>/dev/null | tr '\n' ' ')"
exit $status
