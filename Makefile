# One Makefile for the README and .ci/run.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup test lint typecheck pytest demo bench docs clean

setup: $(BIN)/devise

$(BIN)/devise: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy

pytest: setup
	$(BIN)/pytest -q --durations=15 -n 3 --dist loadfile

test: lint typecheck pytest

demo: setup
	$(BIN)/devise demo

bench: setup
	$(BIN)/python bench/bench_all.py

# The docs site (docs/, mkdocs.yml), served with live reload on http://127.0.0.1:8000
docs: setup
	$(BIN)/mkdocs serve

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache
