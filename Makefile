# actlab: `make demo` runs the main job, `make test` passes the tests. Both set everything up first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1

.PHONY: install data test test-fast lint demo bench figures lock clean

install: $(STAMP)

# The venv is rebuilt only when the lock or pyproject changes, so a second `make install` is instant.
$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements.lock
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

# Fashion-MNIST's official IDX files, from Debian (the offline data set the demo and tests use).
data: $(FMNIST)
$(FMNIST):
	$(SUDO) apt-get update -qq
	$(SUDO) apt-get install -y -qq dataset-fashion-mnist

# A one-node SLURM cluster on this machine for tests/test_slurm.py (hydra/launcher=slurm): Debian's slurm-wlm
# and munge, then scripts/slurm_local_cluster.sh start. Never fails the build: where it cannot start (no root,
# no apt), it says so and the slurm tests skip, naming the reason.
.PHONY: slurm
slurm:
	@command -v slurmctld >/dev/null && command -v munged >/dev/null || { $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge; } \
	  || echo "make slurm: could not install slurm-wlm and munge; the slurm tests will skip"
	@$(SUDO) bash scripts/slurm_local_cluster.sh start \
	  || echo "make slurm: the local SLURM cluster did not start (above: why); the slurm tests will skip"

# `slurm` first: tests/test_slurm.py runs real sweeps on the local cluster (they skip, saying why, where it cannot start).
test: $(STAMP) $(FMNIST) slurm
	$(OFFLINE) WANDB_MODE=disabled $(BIN)/python -m pytest -n 2 --dist loadfile -q

test-fast: $(STAMP) $(FMNIST)
	$(OFFLINE) WANDB_MODE=disabled $(BIN)/python -m pytest -n 2 --dist loadfile -q -m "not slow"

# ruff, the import contract in pyproject.toml (layers point down, no circles), and short modules.
lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/lint-imports
	@find src -name '*.py' | xargs wc -l | awk '$$2 != "total" && $$1 > 400 {print "over 400 lines (split it by concept): " $$2 " (" $$1 ")"; bad = 1} END {exit bad}'

demo: $(STAMP) $(FMNIST)
	$(OFFLINE) bash scripts/demo.sh

bench: $(STAMP)
	$(OFFLINE) $(BIN)/actlab bench activations
	$(OFFLINE) $(BIN)/actlab bench monitor

figures: $(STAMP)
	$(BIN)/actlab figures

lock: $(STAMP)
	$(BIN)/pip freeze --exclude-editable | grep -v '^actlab' > requirements.lock.new
	mv requirements.lock.new requirements.lock

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
