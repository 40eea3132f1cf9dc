# onebox: `make demo` and `make test` are all a fresh clone needs.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

UV_VERSION := 0.13.8
# uv itself lives in a cache outside the clone, like the package cache it fills: a fresh clone
# (CI makes one each time) links packages from there instead of downloading them again.
UV_HOME ?= $(HOME)/.cache/onebox/uv-$(UV_VERSION)
UV := $(UV_HOME)/bin/uv
PYTHON ?= python3
VENV := .venv
# The pip that fills the image wheelhouse (serving/wheelhouse.py).
export ONEBOX_PIP := $(UV_HOME)/bin/pip
BIN := $(VENV)/bin

.PHONY: help browser setup demo train serve stop status up down worker register bench requirements test lint format clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(UV):
	$(PYTHON) -m venv $(UV_HOME)
	$(UV_HOME)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(VENV)/.synced: $(UV) uv.lock pyproject.toml
	# Bytecode compiled once here, not by the first run of every command (it took seconds per command).
	$(UV) sync --frozen --compile-bytecode --python 3.11
	touch $@

setup: $(VENV)/.synced ## Create .venv from the lock file (uv.lock)

demo: setup ## Train on the bundled digits, register, gate and serve on 127.0.0.1:3000
	$(BIN)/onebox demo

train: setup ## Run the training pipeline (ARGS="--epochs 5 --no-deploy")
	$(BIN)/onebox train $(ARGS)

serve: setup ## (Re)start serving the production model
	$(BIN)/onebox serve

stop: setup ## Stop the local model server
	$(BIN)/onebox stop

status: setup ## Show what is serving
	$(BIN)/onebox status

up: setup ## Build the appliance's images offline and start it (MLflow, Prefect, gateway, model)
	$(BIN)/onebox up

down: setup ## Stop the appliance (data volumes stay)
	$(BIN)/onebox down

worker: setup ## Run a Prefect worker here for pool 'onebox': it runs the flows started in the Prefect UI
	$(BIN)/onebox worker

register: setup ## Register the flows with the appliance's Prefect server again (make up does it)
	$(BIN)/onebox register

bench: setup ## All benchmarks (docker): serving side by side, runtimes, swap, memory, pipeline (ARGS="--only appliance,serving")
	$(BIN)/python -m benchmarks.suite $(ARGS)

requirements: $(UV) ## Export the images' pinned requirements from uv.lock
	for group in serving mlflow prefect labeling; do \
	  $(UV) export --frozen --no-hashes --no-emit-project --no-default-groups --only-group $$group-image \
	    --no-header --quiet -o compose/requirements/$$group.txt; \
	done
	# The worker container runs the flows: the project's own dependencies, torch included.
	$(UV) export --frozen --no-hashes --no-emit-project --no-default-groups --no-header --quiet \
	  -o compose/requirements/worker.txt

lint: setup ## ruff (lint + format check) and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: setup ## Apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The page tests (index, Swagger, labeling) drive Debian's headless chromium: a browser from
# anywhere else cannot be downloaded here. Installed from Debian's packages when missing, as the
# base image's debootstrap is (compose/base/bootstrap.sh).
browser: ## Install Debian's chromium for the page tests when it is missing (root: apt-get; else says how)
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's chromium for the page tests"; \
	    apt-get -o DPkg::Lock::Timeout=600 update -qq && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends chromium >/dev/null; \
	  else \
	    echo "error: the page tests need Debian's chromium; run: sudo apt-get install chromium" >&2; exit 1; \
	  fi; }

test: lint browser ## Lint, then run the test suite
	$(BIN)/pytest $(PYTEST_ARGS)

clean: ## Remove the venv and the local data home (.onebox)
	-$(BIN)/onebox stop
	rm -rf $(VENV) .onebox .pytest_cache .mypy_cache .ruff_cache
