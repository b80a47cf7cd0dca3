# The book's two commands: `make book` (build it) and `make test` (run the tests).
# Both create .venv and install what they need on first use.

PROFILE ?= cpu
SEED ?= 0
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: book test install benchmarks clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test,book]"
	touch $(STAMP)

install: $(STAMP)

## Execute every chapter through papermill at PROFILE (ci | cpu | paper) and build the HTML strictly.
book: $(STAMP)
	$(BIN)/python -m collapse.book --profile $(PROFILE) --seed $(SEED)
	@echo "Open _build/html/index.html; figures are in _build/figures/"

## Unit tests and every chapter through papermill at profile=ci.
test: $(STAMP)
	$(BIN)/python -m pytest

benchmarks: $(STAMP)
	$(BIN)/python benchmarks/gaussian.py
	$(BIN)/python benchmarks/markov.py
	$(BIN)/python -m pip install --quiet -e ".[torch]"
	$(BIN)/python benchmarks/vae.py

clean:
	rm -rf _build
