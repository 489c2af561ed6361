# Developer entry points. `make install` builds .venv with the CPU torch wheel pinned first.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_PIN ?= torch==2.13.0

.PHONY: install eval test lint bench testbed-model clean

$(BIN)/igpo: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH_PIN)"
	$(BIN)/pip install -q "$(TORCH_PIN)" -e ".[dev]"
	touch $(BIN)/igpo

install: $(BIN)/igpo

eval: install
	$(BIN)/igpo eval

test: install
	$(BIN)/python -m pytest -q tests

lint: install
	$(BIN)/ruff check igpo harness tasks tests

bench: install
	$(BIN)/igpo bench decode

testbed-model: install
	$(BIN)/python -m igpo.testbed.build

clean:
	rm -rf $(VENV) build *.egg-info
