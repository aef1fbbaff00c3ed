# vaultwatch developer entry points. `make run` and `make test` work on a fresh machine:
# the first target that needs it creates .venv and installs vaultwatch with its extras.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run demo test test-quick check lint typecheck bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The embedded default: a real OpenBao server, real traffic, vaultwatch watching.
run demo: $(STAMP)
	$(VENV)/bin/vaultwatch demo

# The whole suite, real servers included (OpenBao, Kafka-protocol broker, PostgreSQL, receivers).
test: $(STAMP)
	$(PY) -m pytest

test-quick: $(STAMP)
	$(PY) -m pytest -m "not integration and not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check ingest detect alerts vaultwatch tests bench
	$(VENV)/bin/ruff format --check ingest detect alerts vaultwatch

typecheck: $(STAMP)
	$(VENV)/bin/mypy

check: lint typecheck

bench: $(STAMP)
	$(PY) -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
