#!/usr/bin/env bash
# One GPU check, under 8 minutes on one GPU: the CUDA tests, then the benchmarks on CUDA, whose results go to
# results/bench/*_cuda.{json,md} (commit them). Needs the venv (make install) and the Debian Fashion-MNIST (make data).
#   bash scripts/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=disabled
PY=${PYTHON:-.venv/bin/python}
nvidia-smi -L || true
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu_check: torch sees no CUDA device')"
mkdir -p results/bench
log=results/bench/gpu_check.log
: > "$log"
step() {  # name, seconds, command...: run with a time limit, log it, keep going, remember a failure
  local name=$1 limit=$2; shift 2
  echo "== $name (limit ${limit}s)" | tee -a "$log"
  if timeout "$limit" "$@" 2>&1 | tee -a "$log"; then echo "== $name: ok" | tee -a "$log"
  else echo "== $name: FAILED" | tee -a "$log"; failed=1; fi
}
failed=0
# HeLU Triton kernels vs eager on the GPU, tensor loader on the GPU, bf16 + compile + channels_last, DDP on one GPU
step "cuda tests" 150 "$PY" -m pytest -q -m cuda -p no:cacheprovider tests/test_helu_triton.py tests/test_cuda.py
step "bench pipeline" 200 "$PY" -m actlab.cli.main bench pipeline --device cuda --repeats 2
step "bench activations" 60 "$PY" -m actlab.cli.main bench activations --device cuda
step "bench inference" 60 "$PY" -m actlab.cli.main bench inference --quick --device cuda
ls -l results/bench/*_cuda.* | tee -a "$log"
exit $failed
