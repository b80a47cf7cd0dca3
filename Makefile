# The book's two commands: `make book` (build it) and `make test` (run the tests).
# Both create .venv and install what they need on first use.

PROFILE ?= cpu
SEED ?= 0
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_STAMP := $(VENV)/.installed-torch

.PHONY: book test install benchmarks clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test,book]"
	touch $(STAMP)

# PyTorch (pinned CPU build) and transformers: the parity tests and the benchmarks' references.
$(TORCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[torch]"
	touch $(TORCH_STAMP)

install: $(STAMP)

## Execute every chapter through papermill at PROFILE (ci | cpu | paper) and build the HTML strictly.
book: $(STAMP)
	$(BIN)/python -m collapse.book --profile $(PROFILE) --seed $(SEED)
	@echo "Open _build/html/index.html; figures are in _build/figures/"

## Unit tests (parity against PyTorch/transformers included) and every chapter through papermill at profile=ci.
test: $(TORCH_STAMP)
	$(BIN)/python -m pytest

benchmarks: $(TORCH_STAMP)
	$(BIN)/python benchmarks/gaussian.py
	$(BIN)/python benchmarks/markov.py
	$(BIN)/python benchmarks/vae.py
	$(BIN)/python benchmarks/lm.py
	$(BIN)/python benchmarks/avoiding.py

clean:
	rm -rf _build
