# Two commands on a fresh machine: `make up` (the local fleet demo) and `make test`.
# Both bootstrap what they need: a virtualenv with the package, a CPU torch where there
# is no CUDA, kubectl and helm in the virtualenv, and Debian's prometheus.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.specfleet-installed
PYTEST_ARGS ?=

.PHONY: up test bootstrap prometheus clean

bootstrap: $(STAMP) prometheus

$(STAMP): pyproject.toml scripts/install_k8s_tools.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# A CPU build where no GPU is present; the range in pyproject.toml then installs nothing more.
	if ! command -v nvidia-smi >/dev/null 2>&1; then $(BIN)/python -m pip install -q torch==2.13.0 || $(BIN)/python -m pip install -q torch; fi
	$(BIN)/python -m pip install -q -e '.[runtime,dev]'
	$(BIN)/python scripts/install_k8s_tools.py $(BIN)
	touch $@

prometheus:
	@command -v prometheus >/dev/null 2>&1 || { \
	  echo "installing Debian's prometheus"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }
	@command -v prometheus >/dev/null 2>&1 || { echo "prometheus is still missing" >&2; exit 1; }

up: bootstrap
	$(BIN)/specfleet up -f examples/speculative-deployment.yaml --demo

test: bootstrap
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .state
