# Set-up is two commands:  `make quickstart` (the main job) and `make test`.
# Both create and use a local virtual environment, .venv, by themselves.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: venv test test-fast lint quickstart demo bench results results-quick clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt torch==2.13.0
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

test: lint
	$(BIN)/python -m pytest -q -p no:cacheprovider

test-fast: lint
	$(BIN)/python -m pytest -q -m "not slow"

quickstart: $(STAMP)
	$(BIN)/alphapo quickstart --out runs/quickstart

demo: $(STAMP)
	$(BIN)/alphapo demo

bench: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/bench_vs_trl.py

# every paper recipe (recipes/*.yaml; docs/RESULTS.md) with one shared SFT/pairs folder, each recipe's
# wall time printed; JOBS parallel runs (default 2). results-quick: the quick variants (recipes/quick).
JOBS ?= 2
results: $(STAMP)
	JOBS=$(JOBS) ALPHAPO=$(BIN)/alphapo recipes/run_all.sh recipes runs

results-quick: $(STAMP)
	JOBS=$(JOBS) ALPHAPO=$(BIN)/alphapo recipes/run_all.sh recipes/quick runs/quick

clean:
	rm -rf $(VENV) runs .pytest_cache
