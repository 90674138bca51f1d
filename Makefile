# Every target builds its own .venv, so a fresh clone needs only Python 3.11, git and make.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint typecheck bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/auditloop demo

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy

test: lint typecheck
	sh tools/ensure-chromium.sh || echo "chromium unavailable: the report browser test will skip"
	sh tools/ensure-redis.sh || echo "redis-server unavailable: the Redis store tests will skip"
	rm -f .coverage .coverage.*
	# coverage starts before pytest, so auditloop's import (pulled in by its
	# pytest plugin) is measured too; report exits non-zero under fail_under.
	$(BIN)/coverage run -m pytest -p no:cacheprovider
	$(BIN)/coverage combine -q
	$(BIN)/coverage report

bench: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) .coverage* .mypy_cache .ruff_cache build dist
