#!/usr/bin/env bash
# bash scripts/fig4_inference.sh [--quick]
# The paper's Fig. 4: per-sample inference time of five HF models, original activation vs HeLU (= ReLU at
# inference). On a GPU machine run it without --quick (fp32 + AMP); on CPU, --quick gives fp32 + INT8.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
"$BIN/actlab" bench inference "$@"
# the bench measures, `actlab figures` draws (from results/bench/ unless --out-dir moved the results)
out=results/bench
for ((i = 1; i <= $#; i++)); do [ "${!i}" = --out-dir ] && j=$((i + 1)) && out=${!j}; done
"$BIN/actlab" figures --bench-dir "$out" --out results/figures
