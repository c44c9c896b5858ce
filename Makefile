# Two commands on a fresh machine: `make demo` and `make test`.
# Both create .venv when missing and install everything the project needs.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: setup demo up test test-fast test-future lint gen gen-check clean

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

# The tests that read the date, run with the clock a year ahead (libfaketime,
# services and embedded databases included): no expectation holds only today.
DATED_TESTS := tests/unit tests/integration/test_certificate.py tests/integration/test_commission.py \
	tests/integration/test_commission_consumer.py tests/integration/test_hardening.py \
	tests/integration/test_invoice_import.py tests/integration/test_invoice_registration.py \
	tests/e2e/test_security.py tests/e2e/test_ocr_submit.py
test-future: setup
	faketime -f '+365d' $(VENV)/bin/pytest -q -p no:cacheprovider -k "not machine" $(DATED_TESTS)

clean:
	rm -rf build out .bmc .pytest_cache .mypy_cache .ruff_cache
