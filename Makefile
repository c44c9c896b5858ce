# Two commands on a fresh machine: `make demo` and `make test`.
# Both create .venv when missing and install everything the project needs.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: setup demo up test test-fast lint gen gen-check clean

$(STAMP): pyproject.toml tools/system-packages.sh
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@bash tools/system-packages.sh
	@touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(VENV)/bin/bmc demo

up: setup
	$(VENV)/bin/bmc up

gen: setup
	$(PY) tools/protogen.py

gen-check: setup
	$(PY) tools/protogen.py --check

lint: setup
	$(PY) tools/protogen.py --check
	$(PY) tools/buflint.py
	$(VENV)/bin/ruff check services tests tools bench
	$(VENV)/bin/ruff format --check services tests tools bench
	$(VENV)/bin/mypy services

# The whole suite: contracts, lint, unit, integration and end-to-end tests,
# against the embedded PostgreSQL/Redis and against the machine's own.
test: lint
	$(VENV)/bin/pytest -q -p no:cacheprovider

test-fast: setup
	$(VENV)/bin/pytest -q -p no:cacheprovider tests/unit

clean:
	rm -rf build out .bmc .pytest_cache .mypy_cache .ruff_cache
