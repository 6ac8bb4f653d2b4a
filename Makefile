# fedsec: the commands behind the README. Every target bootstraps .venv if needed.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.fedsec-installed
SCENARIO ?= quickstart
ARGS ?=
PYTEST_ARGS ?=

export FLWR_TELEMETRY_ENABLED := 0
export FLWR_DISABLE_UPDATE_CHECK := 1

.PHONY: install run test test-all lint unit deploy bench docs data certs clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev,bench]"  # bench: ByzFL, which tests compare with
	@touch $(STAMP)

install: $(STAMP)  ## create .venv and install fedsec with pinned torch/torchvision

run: $(STAMP)  ## the main job: a real federated run of $(SCENARIO) with a results table and plot
	$(VENV)/bin/fedsec run $(SCENARIO) $(ARGS)

test: $(STAMP) lint  ## ruff + mypy + the CI suite: unit, in-process and the slow end-to-end runs not marked `extended` (< 15 min)
	$(PY) -m pytest -m "not extended" $(PYTEST_ARGS)

test-all: $(STAMP) lint  ## ruff + mypy + every test, the nine `extended` end-to-end runs included (about 27 min on 2 slow cores)
	$(PY) -m pytest $(PYTEST_ARGS)

unit: $(STAMP)  ## the fast tests only
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy fedsec strategies clients simulations examples

deploy: $(STAMP)  ## the quickstart on Flower's deployment engine: SuperLink + 2 SuperNodes on loopback
	$(VENV)/bin/fedsec deploy $(SCENARIO) --nodes 2 $(ARGS)

bench: $(STAMP)  ## time rounds, defenses and attacks against their references (ARGS=--quick for < 5 min)
	$(VENV)/bin/fedsec bench $(ARGS)

docs: $(STAMP)  ## regenerate the generated pages of docs/ (docs/configuration.md)
	$(VENV)/bin/fedsec docs

data:  ## optional real data: Debian's Fashion-MNIST (needs apt; root or sudo)
	@if command -v apt-get >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq dataset-fashion-mnist; \
	else echo "apt-get not available: put the Fashion-MNIST IDX files in a directory and set data-root"; fi

certs:  ## self-signed CA + SuperLink certificate for TLS deployments (certificates/)
	bash scripts/make_certificates.sh certificates

clean:
	rm -rf $(VENV) runs report .mypy_cache .ruff_cache .pytest_cache *.egg-info
