# The book's two commands: `make book` (build it) and `make test` (run the tests).
# Both create .venv and install what they need on first use.

PROFILE ?= cpu
SEED ?= 0
# Chapters executed at once, each in its own kernel (collapse.book's DEFAULT_JOBS says why 2).
JOBS ?= 2
PYTHON ?= python3
VENV ?= .venv
# The versions the book was built and tested with (pip constraints). `make book CONSTRAINTS=`
# (empty) with a fresh VENV builds against the newest releases instead.
CONSTRAINTS ?= constraints.txt
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_STAMP := $(VENV)/.installed-torch
PIP_CONSTRAINTS := $(if $(CONSTRAINTS),-c $(CONSTRAINTS))

.PHONY: book pdf test install benchmarks lock clean

$(STAMP): pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(PIP_CONSTRAINTS) -e ".[test,book]"
	touch $(STAMP)

# PyTorch (pinned CPU build) and transformers: the parity tests and the benchmarks' references.
$(TORCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet $(PIP_CONSTRAINTS) -e ".[torch]"
	touch $(TORCH_STAMP)

install: $(STAMP)

## Execute every chapter through papermill at PROFILE (ci | cpu | paper) and build the HTML strictly.
BOOK_FLAGS ?=

book: $(STAMP)
	$(BIN)/python -m collapse.book --profile $(PROFILE) --seed $(SEED) --jobs $(JOBS) $(BOOK_FLAGS)
	@echo "Open _build/html/index.html; figures are in _build/figures/"

## The book (executed as by `make book`; stored results are reused) and, from the same pages, one PDF:
## _build/latex/book.pdf. Needs TeX (the README says which packages); says so when it is missing.
pdf: $(STAMP)
	$(BIN)/python -m collapse.book --profile $(PROFILE) --seed $(SEED) --jobs $(JOBS) --pdf $(BOOK_FLAGS)

# The numerical tests run a second time under another XLA CPU configuration: another
# instruction set (x86-64 only) and two forced host devices. A test that holds only on one
# machine's rounding, or on one device count, fails here instead of on a reader's machine.
ifeq ($(shell uname -m),x86_64)
OTHER_XLA_FLAGS ?= --xla_cpu_max_isa=SSE4_2 --xla_force_host_platform_device_count=2
else
OTHER_XLA_FLAGS ?= --xla_force_host_platform_device_count=2
endif

# The second pass runs the tests that compare computed numbers (not the chapter pages, which the
# first pass and the book build execute, nor the 1-versus-4-device comparisons, which pin their own
# device counts, nor the I/O, config and build tests, nor those of the results store, records and
# resumption, marked `stored`, nor those of a model's behaviour, marked `behaviour`, whose margins
# no rounding reaches): 214-227 s on 2 cores (311 s with the behaviour tests).
NUMERICS_TESTS := tests/test_gaussian.py tests/test_sampling.py tests/test_discrete.py tests/test_linear_regression.py \
	tests/test_real_fraction.py tests/test_runner.py tests/test_fairness.py tests/test_vae.py tests/test_lm.py

# Test workers (pytest-xdist; 0 runs the tests in one process). On 2 cores the first pass took
# 11 min 4 s on two workers against 14 min 8 s in one process (362 tests, same machine).
TEST_JOBS ?= 2
PYTEST := $(BIN)/python -m pytest -n $(TEST_JOBS) --dist worksteal

## Unit tests (parity against PyTorch/transformers included) and every chapter through papermill at
## profile=ci; then the unit tests again under OTHER_XLA_FLAGS.
test: $(TORCH_STAMP)
	$(PYTEST)
	XLA_FLAGS="$(OTHER_XLA_FLAGS)" $(PYTEST) -q -m "not slow and not forced_devices and not stored and not behaviour" $(NUMERICS_TESTS)

## Every benchmark, each against its reference in the same process; their ratios go into one table,
## _build/benchmarks.md, and into the README. About 15 minutes on 2 cores.
BENCHMARK_LOG := _build/benchmarks.jsonl
benchmarks: $(TORCH_STAMP)
	mkdir -p _build && rm -f $(BENCHMARK_LOG)
	COLLAPSE_BENCHMARK_LOG=$(BENCHMARK_LOG) $(BIN)/python benchmarks/gaussian.py
	COLLAPSE_BENCHMARK_LOG=$(BENCHMARK_LOG) $(BIN)/python benchmarks/mixtures.py
	COLLAPSE_BENCHMARK_LOG=$(BENCHMARK_LOG) $(BIN)/python benchmarks/markov.py
	COLLAPSE_BENCHMARK_LOG=$(BENCHMARK_LOG) $(BIN)/python benchmarks/vae.py --capacity 64
	COLLAPSE_BENCHMARK_LOG=$(BENCHMARK_LOG) $(BIN)/python benchmarks/vae.py --capacity 32 --batch 128
	COLLAPSE_BENCHMARK_LOG=$(BENCHMARK_LOG) $(BIN)/python benchmarks/lm.py
	COLLAPSE_BENCHMARK_LOG=$(BENCHMARK_LOG) $(BIN)/python benchmarks/avoiding.py
	$(BIN)/python benchmarks/table.py $(BENCHMARK_LOG) --out _build/benchmarks.md --readme README.md

## Rewrite constraints.txt from the newest releases (in a scratch venv); then run make test and make book.
lock:
	rm -rf .venv-lock
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install --quiet --upgrade pip
	.venv-lock/bin/python -m pip install --quiet -e ".[test,book,torch]"
	{ sed -n '1,3p' constraints.txt; .venv-lock/bin/python -m pip freeze --exclude-editable | grep -v '^-e' | sed 's/+cpu$$//'; } > constraints.new
	mv constraints.new constraints.txt
	rm -rf .venv-lock

clean:
	rm -rf _build
