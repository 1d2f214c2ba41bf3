#!/usr/bin/env bash
# bash scripts/fig4_inference.sh [--quick]
# The paper's Fig. 4: per-sample inference time of five HF models, original activation vs HeLU (= ReLU at
# inference). On a GPU machine run it without --quick (fp32 + AMP); on CPU, --quick gives fp32 + INT8.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
"$BIN/actlab" bench inference "$@"
"$BIN/actlab" figures --out results/figures
