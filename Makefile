# Two commands for a fresh clone: `make demo` (offline, fake API) and `make test` (the suite).
# Only Python 3.10-3.13 is needed up front: uv is bootstrapped into .tools/ when it is missing.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# `=` (not `:=`): evaluated when a recipe runs, i.e. after `bootstrap` may have created it.
UV = $(or $(shell command -v uv 2>/dev/null),$(CURDIR)/.tools/bin/uv)
# Compiled .pyc files make every meltano/tap start-up ~2.5x faster; plugin venvs get them too.
export UV_COMPILE_BYTECODE := 1

.PHONY: help bootstrap install demo test e2e lint hub-definition clean

help:  ## List the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'

bootstrap:  ## Install uv into .tools/ if it is not on PATH
	@command -v uv >/dev/null 2>&1 || test -x .tools/bin/uv || { \
	  echo "uv not found: installing it into .tools/ (python3 -m venv + pip)"; \
	  python3 -m venv .tools && .tools/bin/pip install --quiet "uv>=0.8,<1"; }

install: bootstrap  ## uv sync the project and meltano install its plugins
	$(UV) sync --locked
	$(UV) run meltano install

demo: bootstrap  ## Offline demo: fake Bolna API -> meltano run tap-bolna target-csv -> summary
	$(UV) sync --locked
	$(UV) run python scripts/demo.py

test: bootstrap  ## The whole test suite (what .ci/run runs), PostgreSQL end-to-end tests included
	$(UV) sync --locked
	$(UV) run pytest

e2e: bootstrap  ## Only the Meltano + PostgreSQL end-to-end tests
	$(UV) sync --locked
	$(UV) run pytest tests/test_meltano_e2e.py tests/test_dbt.py tests/test_analysis.py tests/test_pii_safe.py

lint: bootstrap  ## ruff and mypy
	$(UV) sync --locked
	$(UV) run ruff check .
	$(UV) run ruff format --check .
	$(UV) run mypy tap_bolna

hub-definition: bootstrap  ## Regenerate meltano-hub/tap-bolna.yml from tap-bolna --about (after a settings change)
	$(UV) sync --locked
	$(UV) run python scripts/hub_definition.py

clean:  ## Remove Meltano's plugin venvs/state, demo output and caches (not .venv)
	rm -rf .meltano output .pytest_cache .ruff_cache .mypy_cache
