# Every developer and CI command goes through here. `make` alone lists the targets.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

BIN := .venv/bin
TOOLS := .spinup/tools
UV_VERSION := 0.13.9

.PHONY: help setup run test check fmt lock clean bench soak

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z]+:.*## / {printf "  make %-6s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

setup: ## Install what is missing: postgresql + redis-server (apt), .venv (requirements.lock)
	@bash scripts/setup.sh

run: setup ## Start every server and service in the foreground; Ctrl-C stops them all
	@$(BIN)/python -m devstack run

check: setup ## Lint and type-check: ruff format --check, ruff check, mypy --strict
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy

test: check ## check, then pytest in two groups side by side (each starts its own servers)
	@bash scripts/test.sh

bench: setup ## Measure every kind against its floor on a stack of its own (bench/README.md)
	$(BIN)/python -m bench --profile $(BENCH_ARGS)

soak: setup ## Mixed load on a throwaway stack for SOAK_SECONDS (300): errors, latency, memory, orphans
	$(BIN)/python -m bench.soak

fmt: setup ## Format the code and apply ruff's safe fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

lock: ## Regenerate requirements.lock from pyproject.toml (UPGRADE=1 to move to newer versions)
	@test -x $(TOOLS)/uv/bin/uv || python3 -m pip install --quiet --target $(TOOLS)/uv uv==$(UV_VERSION)
	$(TOOLS)/uv/bin/uv pip compile pyproject.toml --all-extras --python-version 3.11 \
		--custom-compile-command "make lock" $(if $(UPGRADE),--upgrade) -o requirements.lock

clean: ## Delete .spinup (data, logs, secrets of every profile) once nothing there runs
	@python3 -m devstack clean
