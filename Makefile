# Quick start: `make run` installs and serves on http://127.0.0.1:8000; `make test` runs every check.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install run test lint bench

$(BIN)/omi-backend: pyproject.toml examples/hello_plugin/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip install --quiet -e examples/hello_plugin
	touch $@

install: $(BIN)/omi-backend

run: install
	$(BIN)/omi-backend serve

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: install lint
	scripts/ensure-redis
	$(BIN)/pytest
	$(BIN)/pytest examples/hello_plugin

bench: install
	$(BIN)/python bench/run_all.py
