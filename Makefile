# Two commands for a fresh clone: `make demo` (offline, fake API) and `make test` (the suite).
# Only Python 3.10-3.13 is needed up front: uv is bootstrapped into .tools/ when it is missing.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# `=` (not `:=`): evaluated when a recipe runs, i.e. after `bootstrap` may have created it.
UV = $(or $(shell command -v uv 2>/dev/null),$(CURDIR)/.tools/bin/uv)
# Compiled .pyc files make every meltano/tap start-up ~2.5x faster; plugin venvs get them too.
export UV_COMPILE_BYTECODE := 1

.PHONY: help bootstrap install demo test unit-pythons e2e lint mutation hub-definition clean

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

test: bootstrap  ## The whole suite (what .ci/run runs): all of it on one Python, unit tests on the others
	$(UV) sync --locked
	@echo "Two lanes at once: the end-to-end tests; the unit and fake-API tests on every claimed Python."
	@echo "Each lane's output is shown when it ends; make fails if either does."
	@$(MAKE) --no-print-directory -j2 --output-sync=target e2e-lane unit-lane

# Each lane keeps about one core busy (a test mostly waits on the tap, Meltano or dbt it started),
# so on a 2-core machine the two together take about as long as the longer one.
.PHONY: e2e-lane unit-lane
e2e-lane:
	$(UV) run --locked pytest -m e2e

unit-lane:
	$(UV) run --locked pytest -m "not e2e"
	$(MAKE) --no-print-directory unit-pythons

# The unit and fake-API tests (all but `-m e2e`) on every other Python that requires-python claims,
# each in its own environment (.venv-py3.X), synced from uv.lock. A claimed Python this machine
# lacks is skipped with a line saying so; under CI (CI=true) that fails the run instead.
unit-pythons: bootstrap  ## Unit and fake-API tests on every other claimed Python
	@set -o pipefail; $(UV) run --locked python -m tests.pythons --others | while read -r version python; do \
	  if [[ "$$python" == - ]]; then \
	    echo "Python $$version is claimed (requires-python) but not on this machine: not tested"; \
	    if [[ -n "$${CI:-}" ]]; then exit 1; fi; continue; \
	  fi; \
	  echo "== unit and fake-API tests on Python $$version ($$python)"; \
	  UV_PROJECT_ENVIRONMENT=.venv-py$$version $(UV) run --locked --python "$$python" \
	    pytest -m "not e2e" -q </dev/null || exit 1; \
	done

e2e: bootstrap  ## Only the end-to-end tests (-m e2e): Meltano, PostgreSQL, dbt, packaging
	$(UV) sync --locked
	$(UV) run pytest -m e2e

lint: bootstrap  ## ruff and mypy (the tap, and the HTTP endpoint in api/)
	$(UV) sync --locked
	$(UV) run ruff check .
	$(UV) run ruff format --check .
	$(UV) run mypy tap_bolna
	$(UV) run mypy api/bolna_api

# Not part of `make test`: it takes minutes of both cores. mutmut keeps its copy in mutants/.
mutation: bootstrap  ## Mutation testing of the rule modules against the unit tests (mutmut)
	$(UV) run --locked --group mutation mutmut run
	$(UV) run --locked --group mutation mutmut results

hub-definition: bootstrap  ## Regenerate meltano-hub/tap-bolna.yml from tap-bolna --about (after a settings change)
	$(UV) sync --locked
	$(UV) run python scripts/hub_definition.py

clean:  ## Remove Meltano's plugin venvs/state, mutmut's mutants/, demo output, caches, dist/ and the .venv-py3.X test envs
	rm -rf .meltano mutants output .pytest_cache .ruff_cache .mypy_cache dist .venv-py3.*
