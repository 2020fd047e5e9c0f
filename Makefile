# Two commands matter: `make demo` and `make test`. Both create .venv and install on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export TRACEMILL_HOME ?= $(CURDIR)/.tracemill
export DAGSTER_HOME   ?= $(TRACEMILL_HOME)/dagster
export TOKENIZERS_PARALLELISM := false
export HF_HUB_OFFLINE := 1
export DAGSTER_DISABLE_TELEMETRY := 1

.PHONY: setup demo test ui mlflow-ui lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)
	@mkdir -p $(DAGSTER_HOME) && cp -n dagster.yaml $(DAGSTER_HOME)/dagster.yaml 2>/dev/null || true

demo: setup
	$(PY) -m assets.demo

test: setup
	$(PY) -m pytest

ui: setup
	$(VENV)/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

mlflow-ui: setup
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(TRACEMILL_HOME)/mlflow/mlflow.db --host 127.0.0.1 --port 5000

lint: setup
	$(VENV)/bin/ruff check pipeline assets tests bench

bench: setup
	$(PY) bench/capture.py

clean:
	rm -rf $(TRACEMILL_HOME)
