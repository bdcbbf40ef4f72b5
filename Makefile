# The two commands of the README: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The CPU build of torch lies on this machine kind's disk; an unpinned torch would pull a CUDA build.
TORCH  ?= torch==2.13.0
PYTEST_ARGS ?=
# Test processes (pytest-xdist): two take about 16 instead of 28 minutes on 2 cores. Tests that start Ray
# share one worker (marked `starts_ray`, see tests/conftest.py); PYTEST_WORKERS=0 runs everything in this process.
PYTEST_WORKERS ?= 2

.PHONY: venv demo test lint format bench docs docs-serve clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=25.1"
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[all]" --group dev
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/ce-rerank demo

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

# The documentation site (docs/ + mkdocs.yml). `make test` builds it too, strictly, and runs its examples.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

docs-serve: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_retrieval.py --data ../shared/data/scifact --out benchmarks/results/retrieval.json
	$(BIN)/python benchmarks/bench_rerank.py --out benchmarks/results/rerank.json

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache site
