# Two commands on a fresh machine: `make demo` and `make test`.
# Both create .venv when missing and install everything the project needs.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
CHECKOV_VENV := .venv-checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed-stamp

.PHONY: setup demo up test test-fast test-future lint gen gen-check lock clean

# Every dependency as locked (requirements/*.lock: every transitive package
# pinned, every file hashed), installed by uv (itself installed by pip from
# its own hashed lock), then the project itself without dependencies.
UV := $(VENV)/bin/uv
$(STAMP): pyproject.toml requirements/dev.lock requirements/uv.lock tools/system-packages.sh
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --require-hashes -r requirements/uv.lock
	$(UV) pip install --quiet --python $(PY) --require-hashes -r requirements/dev.lock
	$(UV) pip install --quiet --python $(PY) --no-deps -e .
	@bash tools/system-packages.sh
	@touch $(STAMP)

# checkov pins its own dependencies, some against the project's: its own venv.
$(CHECKOV_STAMP): requirements/checkov.lock $(STAMP)
	@test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(UV) pip install --quiet --python $(CHECKOV_VENV)/bin/python --require-hashes -r requirements/checkov.lock
	@touch $(CHECKOV_STAMP)

setup: $(STAMP) $(CHECKOV_STAMP)

demo: setup
	$(VENV)/bin/bmc demo

up: setup
	$(VENV)/bin/bmc up

# Re-lock after changing pyproject.toml: the services' image installs
# runtime.lock, `make setup` dev.lock (tests/unit/test_lock.py checks both).
COMPILE := $(UV) pip compile --universal --python-version 3.11 --generate-hashes --quiet
lock: setup
	$(COMPILE) pyproject.toml -o requirements/runtime.lock
	$(COMPILE) pyproject.toml --extra dev -o requirements/dev.lock
	$(COMPILE) requirements/checkov.in -o requirements/checkov.lock
	$(COMPILE) requirements/uv.in -o requirements/uv.lock

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
	$(VENV)/bin/pytest -q -p no:cacheprovider --durations=30

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
