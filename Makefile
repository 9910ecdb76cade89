# Two commands for a fresh machine (Python 3.11 and the package registries):
#   make run    set up .venv and run the packaged default experiment
#   make test   set up .venv and run the test suite
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
# torch/torchvision pinned to the release these machines hold on disk (see README)
TORCH := torch==2.14.1 torchvision==0.29.1

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -qq --upgrade pip
	$(PY) -m pip install -qq $(TORCH)
	$(PY) -m pip install -qq -e ".[test]"
	touch $@

.PHONY: setup run test bench
setup: $(VENV)/.installed

run: setup
	$(VENV)/bin/fl-sim run $(ARGS)

# the layering contracts (pyproject.toml [tool.importlinter]) and lint run before the tests
test: setup
	$(VENV)/bin/lint-imports
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q $(PYTEST_ARGS)

bench: setup
	$(PY) bench/bench_features.py
