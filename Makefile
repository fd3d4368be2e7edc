# tvmq: every target is idempotent; `make demo` and `make test` set up a fresh machine first.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
APT_PACKAGES := qemu-system-arm gcc-arm-none-eabi picolibc-arm-none-eabi dataset-fashion-mnist
STAMP := $(VENV)/.tvmq-installed
# train = torch 2.13.0 (CPU build, a local wheel on these machines): the tests cover the
# torch.export import path with it; data = seglearn + scikit-learn (IMU and digits data
# sets). Set EXTRAS=dev for a lighter environment.
EXTRAS ?= dev,train,data

.PHONY: setup apt venv demo test bench lint format clean

setup: apt $(STAMP)

# Installs only what is missing, so a second run does nothing (and needs no network).
apt:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" -eq 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(VENV)/bin/python:
	@command -v $(PYTHON) >/dev/null || { echo "tvmq needs $(PYTHON) (Python 3.11)"; exit 1; }
	$(PYTHON) -m venv $(VENV)

# Re-installs when pyproject.toml or this Makefile changes.
$(STAMP): pyproject.toml Makefile | $(VENV)/bin/python
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	@touch $(STAMP)

venv: $(STAMP)

demo: setup
	$(PY) -m tvmq.demo

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q -n 2 --dist loadfile

# accuracy grid rows in this many one-thread processes (the grid is the same for any)
BENCH_JOBS ?= $(shell nproc)

bench: setup
	@$(PY) -c "import ai_edge_litert" 2>/dev/null || $(PY) -m pip install -q "ai-edge-litert==2.3.0"
	$(PY) -m benchmarks.run --jobs $(BENCH_JOBS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf build bench_results demo_results .pytest_cache .ruff_cache
