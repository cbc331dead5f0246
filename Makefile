# The two newcomer commands:  `make demo` (set up, then train the default experiment) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU build of torch pinned for laptops and CI; on a GPU cluster install your CUDA torch first (pip keeps it).
TORCH ?= torch==2.13.0

.PHONY: setup demo test test-fast clean

$(BIN)/rlhf-train: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

setup: $(BIN)/rlhf-train

demo: setup
	$(BIN)/rlhf-train

# The cluster tier needs the local SLURM cluster: started (as root) for the run, stopped after if it was not up.
test: setup
	scripts/slurm/with-cluster.sh $(BIN)/python -m pytest

test-fast: setup
	$(BIN)/python -m pytest -m "not slow and not gpu"

clean:
	rm -rf outputs multirun/train multirun/generate multirun/eval
