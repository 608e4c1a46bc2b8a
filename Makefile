# One entry point for people and CI. `make help` lists the targets.
SHELL := bash
.SHELLFLAGS := -o errexit -o nounset -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: help run test test-fast lint migrate lock clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(BIN)/activate: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --require-hashes -r requirements.txt -r requirements-dev.txt
	touch $@

run: $(BIN)/activate ## Serve the app under Gunicorn on http://127.0.0.1:8000 (embedded SQLite, no servers needed)
	$(BIN)/flask --app wsgi db upgrade
	exec $(BIN)/gunicorn --config gunicorn.conf.py wsgi:app

test: $(BIN)/activate ## Install what the suite needs, then run every test (real Postgres, Redis, nginx, Docker)
	scripts/install-servers.sh
	$(BIN)/pytest $(PYTEST_ARGS)

test-fast: $(BIN)/activate ## Run the suite without the slow server and container tests
	$(BIN)/pytest -m 'not slow' $(PYTEST_ARGS)

lint: $(BIN)/activate ## Lint the Dockerfile, shell scripts and workflows
	$(BIN)/pytest tests/deploy/test_static.py $(PYTEST_ARGS)

migrate: $(BIN)/activate ## Apply migrations to DATABASE_URL (a one-off step, never part of boot)
	$(BIN)/flask --app wsgi db upgrade

lock: $(BIN)/activate ## Re-pin requirements*.txt (with hashes) from requirements*.in
	$(BIN)/pip-compile --quiet --generate-hashes --strip-extras --allow-unsafe -o requirements.txt requirements.in
	$(BIN)/pip-compile --quiet --generate-hashes --strip-extras --allow-unsafe -o requirements-dev.txt requirements-dev.in

clean: ## Remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache instance
