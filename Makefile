# Quick start: `make run` installs and serves on http://127.0.0.1:8000; `make test` runs every check.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install run test lint

$(BIN)/omi-backend: pyproject.toml examples/hello_plugin/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip install --quiet -e examples/hello_plugin
	touch $@

# htmx and its SSE extension come from the npm packages htmx.org and htmx-ext-sse
# (package-lock.json pins them), copied where the static files are served from
# (app/web/static/vendor, ignored by git).
HTMX := app/web/static/vendor/htmx.min.js
SSE := app/web/static/vendor/htmx-ext-sse.min.js

$(HTMX) $(SSE) &: package.json package-lock.json
	@command -v npm >/dev/null || { echo "npm is missing: install Node.js and npm (Debian: apt-get install npm)" >&2; exit 1; }
	npm ci --no-audit --no-fund --loglevel=error
	mkdir -p $(dir $(HTMX))
	cp node_modules/htmx.org/dist/htmx.min.js $(HTMX)
	cp node_modules/htmx-ext-sse/dist/sse.min.js $(SSE)

install: $(BIN)/omi-backend $(HTMX) $(SSE)

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
