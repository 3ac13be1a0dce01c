# lrlab: every target sets itself up first (a .venv at the repo root, pinned by requirements.lock).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 5000
SERVER_DIR ?= .lrlab/server
WORKERS ?= 4
JOBS ?= auto
SOAK ?= 20
BENCH_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install sweep test soak lint bench ui server studies reproduce
STUDIES := $(basename $(notdir $(wildcard experiments/*.yaml)))

help: ## list the targets
	@grep -hE '^[a-zA-Z_%-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-22s %s\n", $$1, $$2}'

# --no-compile, then one import of what lrlab runs: Python compiles only the modules lrlab imports (about
# 12 s) instead of pip compiling every file of torch, mlflow... (about 40 s), and before the tests' parallel
# processes would each compile them at once; the same run fills numba's cache for engine=compiled.
# PYTHONDONTWRITEBYTECODE, where a shell sets it, would make every process compile them again: not here.
unexport PYTHONDONTWRITEBYTECODE
# editable_mode=compat puts the checkout on sys.path, so that Hydra's plugin scan, which walks the
# hydra_plugins folders on the path, finds launcher=vectorized.
$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --no-compile -c requirements.lock \
		--config-settings editable_mode=compat -e '.[dev,cluster]'
	$(PY) -c "import lrlab.sweep.job, lrlab.sweep.summary, lrlab.sweep.callback, lrlab.compare, mlflow.server, lrlab as l; \
		l.train(l.compose('engine=compiled', 'num_epochs=1'))" > /dev/null
	touch $@

install: $(STAMP) ## create .venv and install lrlab with its dev tools, every version pinned

sweep: $(STAMP) ## the canonical sweep: lr=0.01,0.03,0.1 into ./mlflow.db
	$(PY) -m lrlab.run -m lr=0.01,0.03,0.1

test: $(STAMP) ## run every test (unit, integration, e2e) on every core (JOBS=N to choose); make soak adds variants
	$(PY) -m pytest -n $(JOBS) --dist worksteal -m "not soak_only"

soak: $(STAMP) ## repeat each concurrency and interrupt case SOAK times (default 20) and print the counts
	LRLAB_SOAK=$(SOAK) $(PY) -m pytest -n $(JOBS) -m "soak or soak_only" -q

lint: $(STAMP) ## ruff (lint + format check), mypy, and import-linter (the layers, and a math free of Hydra and MLflow)
	$(VENV)/bin/ruff check lrlab tests hydra_plugins
	$(VENV)/bin/ruff format --check lrlab tests hydra_plugins
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

bench: $(STAMP) ## lrlab against the seed's own loops, sweep and job costs, peak memory: ratios into BENCHMARKS.md
	$(PY) -m lrlab.tools.bench $(BENCH_ARGS)

ui: $(STAMP) ## serve the MLflow UI over ./mlflow.db on http://$(HOST):$(PORT)
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host $(HOST) --port $(PORT)

server: $(STAMP) ## a tracking server for many hosts: MLflow over PostgreSQL in $(SERVER_DIR) on http://$(HOST):$(PORT) (WORKERS=4)
	$(PY) -m lrlab.tools.server --host $(HOST) --port $(PORT) --dir $(SERVER_DIR) --workers $(WORKERS)

study-%: $(STAMP) ## run one study from experiments/ (resumable; e.g. make study-lr_sweep), then its theory analysis
	@test -f experiments/$*.yaml || { echo "lrlab: error: study=$* does not exist: choose one of $(STUDIES)" >&2; exit 2; }
	$(PY) -m lrlab.run experiment=$*
	$(PY) -m lrlab.tools.studies $*

studies: $(addprefix study-,$(STUDIES)) ## run every study in experiments/

reproduce: $(STAMP) ## run a logged run again and compare every metric history (make reproduce RUN=<run id>)
	@test -n "$(RUN)" || { echo "lrlab: error: RUN is not set: make reproduce RUN=<mlflow run id>" >&2; exit 2; }
	$(PY) -m lrlab.reproduce $(RUN)
