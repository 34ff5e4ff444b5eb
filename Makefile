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
MAX_STEPS ?= 300
REGIME ?= interaction

# telemetry off, temporary files under the scratch folder
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := true
export DVC_NO_ANALYTICS := 1
export ITERATIVE_DO_NOT_TRACK := 1
export GX_ANALYTICS_ENABLED := false
export DVC_SITE_CACHE_DIR := $(SCRATCH)/dvc-site
export TMPDIR := $(SCRATCH)/tmp
export PYTHONUNBUFFERED := 1

.PHONY: install demo train-demo data-lfm2k data-ml100k compile test test-fast lint format bench bench-unlearning clean help

help:
	@echo "make install | demo | train-demo | compile | test | lint | bench | bench-unlearning | image | clean"

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

# The main job: prepare + validate the demo dataset (demo-data), then the unlearning pipeline
# (resolve_revision -> ingest -> train -> sensitivity -> unlearn -> certify -> register) through kfp.local.
# The prepared data has no deletion manifest: the demo draws 5 % random requests (--generate-requests).
demo: install demo-data
	$(BIN)/tru pipeline run --local --dataset "$$(cat $(DEMO_DATASET_FILE))" --backbone $(BACKBONE) \
		--epochs $(EPOCHS) --max-steps $(MAX_STEPS) --regime $(REGIME) --generate-requests \
		--tracking-uri sqlite:///$(CURDIR)/mlruns.db

# The library alone: prepare, validate, train a backbone on the demo dataset, print its test metrics.
train-demo: install demo-data
	d="$$(cat $(DEMO_DATASET_FILE))"; \
	$(BIN)/tru train --data "$$d" --backbone $(BACKBONE) --epochs $(EPOCHS) \
		--out "runs/$$(basename "$$d")-$(BACKBONE)" --overwrite

# The demo dataset, whatever the machine holds: Last.fm-2K when $(LFM2K) exists, else MovieLens-100K (the
# recbole wheel from PyPI, cached in ~/.cache/tru), else, with no package registry either, the synthetic
# preset $(DEMO_SYNTHETIC_PRESET). It says which, prepares + validates it, and writes its folder to
# $(DEMO_DATASET_FILE) for demo / train-demo.
DEMO_SYNTHETIC_PRESET ?= small
# (outside data/: data.dvc tracks data/ exactly as prepared)
DEMO_DATASET_FILE = $(SCRATCH)/demo-dataset.txt
.PHONY: demo-data
demo-data: install
	@mkdir -p $(TMPDIR) $(DATA) $(SCRATCH)
	@set -e; \
	if [ -d "$(LFM2K)" ]; then \
		echo "demo dataset: Last.fm-2K from $(LFM2K)"; \
		d="$(DATA)/lfm2k"; $(BIN)/tru data prepare --source lfm2k --path "$(LFM2K)" --out "$$d" --overwrite; \
	else \
		echo "Last.fm-2K not found at $(LFM2K): running the demo on MovieLens-100K" \
			"(fetched from PyPI's recbole wheel)"; \
		d="$(DATA)/ml100k"; \
		if ! $(BIN)/tru data prepare --source ml100k --out "$$d" --overwrite; then \
			echo "MovieLens-100K could not be prepared (error above): running the demo on the synthetic" \
				"preset '$(DEMO_SYNTHETIC_PRESET)' (generated here, no download)"; \
			d="$(DATA)/synthetic-$(DEMO_SYNTHETIC_PRESET)"; \
			$(BIN)/tru data prepare --source synthetic --preset $(DEMO_SYNTHETIC_PRESET) --out "$$d" --overwrite; \
		fi; \
	fi; \
	$(BIN)/tru data validate "$$d"; \
	echo "$$d" > $(DEMO_DATASET_FILE); echo "demo dataset ready: $$d"

data-lfm2k: install
	@test -d "$(LFM2K)" || { echo "error: Last.fm-2K not found at $(LFM2K) (set LFM2K=/path)" >&2; exit 2; }
	@mkdir -p $(TMPDIR)
	$(BIN)/tru data prepare --source lfm2k --path $(LFM2K) --out $(DATA)/lfm2k --overwrite
	$(BIN)/tru data validate $(DATA)/lfm2k

test: install
	@mkdir -p $(TMPDIR)
	$(BIN)/python -m pytest -q --basetemp=$(SCRATCH)/pytest

lint: install
	$(BIN)/ruff check src tests benchmarks components pipelines
	$(BIN)/ruff format --check src tests benchmarks components pipelines

compile: install
	$(BIN)/tru pipeline compile --out build/tru-unlearning.yaml

bench: install
	@mkdir -p $(TMPDIR)
	$(BIN)/python benchmarks/bench_train_epoch.py

# The unlearning benchmark behind the README's table: both datasets in parallel (one torch / BLAS thread
# each: two processes with more threads each oversubscribe a 2-core machine ~10x), resumable, then one table.
BENCH_SEEDS ?= 0 1 2
data-ml100k: $(DATA)/ml100k/dataset.yaml
$(DATA)/ml100k/dataset.yaml: | install
	$(BIN)/tru data prepare --source ml100k --out $(DATA)/ml100k --overwrite

# The revision-2 unlearning benchmark (issue 9 section 4): two lanes, one process each (see
# benchmarks/bench_v2_lanes.sh); resumable (rerun to continue); about 15-20 h on two CPU cores.
BENCH_V2_SEEDS ?= 10 11 12
BENCH_V2_CAPS ?= mgcn=400 miggt=300
bench-unlearning: install data-lfm2k data-ml100k
	@mkdir -p $(TMPDIR) bench
	export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1; \
	c="--seeds $(BENCH_V2_SEEDS) --epochs $(BENCH_V2_CAPS) --threads 1"; \
	( $(BIN)/tru bench --data $(DATA)/lfm2k --backbone mgcn --out bench/lfm2k $$c && \
	  $(BIN)/tru bench --data $(DATA)/lfm2k --backbone mgcn --regime user --sizes 1 10 --out bench/lfm2k $$c && \
	  $(BIN)/tru bench --data $(DATA)/lfm2k --backbone miggt --out bench/lfm2k $$c ) > bench/lfm2k.log 2>&1 & \
	( $(BIN)/tru bench --data $(DATA)/ml100k --backbone mgcn --out bench/ml100k $$c && \
	  $(BIN)/tru bench --data $(DATA)/ml100k --backbone miggt --out bench/ml100k $$c ) > bench/ml100k.log 2>&1 & \
	wait
	$(BIN)/tru bench --from-results bench/lfm2k/results.csv bench/ml100k/results.csv --out bench/all
	cp bench/lfm2k/results.csv benchmarks/results/unlearning-v2-lfm2k.csv
	cp bench/ml100k/results.csv benchmarks/results/unlearning-v2-ml100k.csv
	cp bench/all/results.md benchmarks/results/unlearning-v2.md
	cp bench/all/results.png benchmarks/results/unlearning-v2.png

clean:
	rm -rf $(SCRATCH) runs .pytest_cache

# container images (make image | image-gpu | image-cpu | image-push)
include docker/Makefile.inc
