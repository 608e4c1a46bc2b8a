# One entry point for people and CI. `make help` lists the targets.
SHELL := bash
.SHELLFLAGS := -o errexit -o nounset -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: help run test test-fast test-docker lint bench bench-report drill docker-up migrate backup restore lock clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

PIP_INSTALL := $(BIN)/pip install --quiet --disable-pip-version-check --require-hashes

# Stamps: reinstall only when a lock file changes. `run` needs the runtime set only.
$(VENV)/.runtime: requirements.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "error: $(PYTHON) is older than 3.11; fix: install Python 3.11+ or run make PYTHON=python3.11 ..." >&2; exit 1; }
	@$(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); \
	  echo "error: cannot create $(VENV); fix: sudo apt-get install python3-venv" >&2; exit 1; }
	$(PIP_INSTALL) -r requirements.txt
	touch $@

$(VENV)/.dev: $(VENV)/.runtime $(VENV)/.checkov requirements-dev.txt
	$(PIP_INSTALL) -r requirements.txt -r requirements-dev.txt
	touch $@

# checkov (tests/k8s) in a venv of its own: its exact pins cannot share ours
# (requirements-checkov.in says which). Built once per lock, outside the checkout like the
# container tests' engine (~/.cache/flask-kit), since a fresh clone would spend a minute on it
# every time; .venv/checkov links to it. A build cut short lacks its .complete and is redone.
CHECKOV_CACHE = $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/flask-kit/checkov-$(shell sha256sum requirements-checkov.txt | cut -c 1-16)
$(VENV)/.checkov: requirements-checkov.txt | $(VENV)/.runtime
	@if [[ ! -f "$(CHECKOV_CACHE)/.complete" ]]; then \
	  rm -rf "$(CHECKOV_CACHE)" && $(PYTHON) -m venv "$(CHECKOV_CACHE)" && \
	  "$(CHECKOV_CACHE)/bin/pip" install --quiet --disable-pip-version-check --require-hashes -r requirements-checkov.txt && \
	  touch "$(CHECKOV_CACHE)/.complete"; \
	fi
	ln -sfn "$(CHECKOV_CACHE)" $(VENV)/checkov
	touch $@

run: $(VENV)/.runtime ## Serve the app under Gunicorn on http://127.0.0.1:8000 (embedded SQLite, no servers needed)
	$(BIN)/flask --app wsgi db upgrade
	exec $(BIN)/python -m gevent.monkey --module gunicorn --config gunicorn.conf.py wsgi:app

# Two processes: the container tests, which mostly wait on dockerd, in one, and the other modules
# beside them (tests/conftest.py says which goes where). One process took 17 minutes.
test: $(VENV)/.dev ## Install what the suite needs, then run every test (real Postgres, Redis, nginx, Docker)
	scripts/install-servers.sh
	$(BIN)/pytest -n 2 $(PYTEST_ARGS)

test-fast: $(VENV)/.dev ## Run the suite without the slow server and container tests
	$(BIN)/pytest -m 'not slow' $(PYTEST_ARGS)

test-docker: $(VENV)/.dev ## Only the container tests (a private dockerd and local base images; needs root)
	scripts/install-servers.sh
	$(BIN)/pytest -m docker $(PYTEST_ARGS)

lint: $(VENV)/.dev ## Lint the Dockerfile, shell scripts and workflows
	$(BIN)/pytest tests/deploy/test_static.py $(PYTEST_ARGS)

bench: $(VENV)/.dev ## Benchmark the seed's Gunicorn setup, ours, and bare Flask under ours (real servers; writes bench/results/)
	scripts/install-servers.sh
	$(BIN)/python -m bench

bench-report: $(VENV)/.dev ## Rewrite docs/benchmarks.md and its plot from the newest bench result
	$(BIN)/python -m bench.report

drill: $(VENV)/.dev ## Run the resilience drills against real servers and rewrite docs/resilience.md
	scripts/install-servers.sh
	$(BIN)/python -m drills

docker-up: ## Run the whole stack in Docker on https://localhost (development settings, no .env needed)
	docker compose up --build --wait

migrate: $(VENV)/.runtime ## Apply migrations to DATABASE_URL (a one-off step, never part of boot)
	$(BIN)/flask --app wsgi db upgrade

# The database `make run` uses: DATABASE_URL(_FILE), or .env's, or instance/app.sqlite.
APP_DATABASE_URL := $(BIN)/python -c 'from wsgi import app; print(app.config["SQLALCHEMY_DATABASE_URI"])'

backup: $(VENV)/.runtime ## Back up the app's database into BACKUP_DIR (default backups/); prints the file
	url="$$($(APP_DATABASE_URL))"; \
	  env -u DATABASE_URL_FILE DATABASE_URL="$$url" BACKUP_DIR="$${BACKUP_DIR:-backups}" scripts/backup.sh

restore: $(VENV)/.runtime ## Restore BACKUP=<file> into the app's database (FORCE=1 replaces its contents)
	@[[ -n "$(BACKUP)" ]] || { echo "make restore: error: no backup named; fix: make restore BACKUP=backups/<file>" >&2; exit 2; }
	url="$$($(APP_DATABASE_URL))"; \
	  env -u DATABASE_URL_FILE DATABASE_URL="$$url" scripts/restore.sh $(if $(filter 1,$(FORCE)),--force) "$(BACKUP)"

# This machine's pip.conf index and wheel paths must not leak into the lock files.
PIP_COMPILE := --quiet --generate-hashes --strip-extras --allow-unsafe --no-emit-index-url --no-emit-find-links

lock: $(VENV)/.dev ## Re-pin requirements*.txt (with hashes) from requirements*.in
	$(BIN)/pip-compile $(PIP_COMPILE) -o requirements.txt requirements.in
	$(BIN)/pip-compile $(PIP_COMPILE) -o requirements-dev.txt requirements-dev.in
	$(BIN)/pip-compile $(PIP_COMPILE) -o requirements-checkov.txt requirements-checkov.in

clean: ## Remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache instance
