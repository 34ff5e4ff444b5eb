# tru: `make demo` and `make test` each do all the set-up they need on a fresh machine.
SHELL := /bin/bash
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
SCRATCH ?= $(CURDIR)/scratch
DATA ?= data
LFM2K ?= $(abspath $(CURDIR)/../shared/data/lfm2k)
BACKBONE ?= mgcn
EPOCHS ?= 50

# telemetry off, temporary files under the scratch folder
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := true
export DVC_NO_ANALYTICS := 1
export ITERATIVE_DO_NOT_TRACK := 1
export GX_ANALYTICS_ENABLED := false
export DVC_SITE_CACHE_DIR := $(SCRATCH)/dvc-site
export TMPDIR := $(SCRATCH)/tmp
export PYTHONUNBUFFERED := 1

.PHONY: install demo test test-fast lint format bench clean help

help:
	@echo "make install | demo | test | lint | bench | clean"

$(BIN)/python:
	@command -v $(PY) >/dev/null || { echo "error: $(PY) not found (tru needs Python 3.11)"; exit 2; }
	$(PY) -m venv $(VENV)

# torch first, pinned: the CPU wheel on disk (an unpinned torch pulls a multi-GB CUDA build)
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	@mkdir -p $(TMPDIR)
	$(BIN)/python -m pip install -q --upgrade "pip>=23.2"
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $@

install: $(VENV)/.installed

# The main job on the default dataset (Last.fm-2K): prepare, validate, train, print test metrics.
demo: install
	@mkdir -p $(TMPDIR)
	$(BIN)/tru data prepare --source lfm2k --path $(LFM2K) --out $(DATA)/lfm2k --overwrite
	$(BIN)/tru data validate $(DATA)/lfm2k
	$(BIN)/tru train --data $(DATA)/lfm2k --backbone $(BACKBONE) --epochs $(EPOCHS) --out runs/lfm2k-$(BACKBONE) --overwrite

test: install
	@mkdir -p $(TMPDIR)
	$(BIN)/python -m pytest -q --basetemp=$(SCRATCH)/pytest

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

bench: install
	@mkdir -p $(TMPDIR)
	$(BIN)/python benchmarks/bench_train_epoch.py

clean:
	rm -rf $(SCRATCH) runs .pytest_cache

# container images (make image | image-gpu | image-cpu | image-push)
include docker/Makefile.inc
