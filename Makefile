# Developer entry points. `make install` builds .venv with the CPU torch wheel pinned first.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_PIN ?= torch==2.13.0

.PHONY: install eval test test-fast lint bench gpu-check bench-fast testbed-model testbed-sign testbed-long ablate ablate-lr ablate-variant clean

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

# The suite without the tests marked slow (end-to-end CLI runs); CI runs everything (`make test`).
test-fast: install
	$(BIN)/python -m pytest -q -m "not slow" tests

lint: install
	$(BIN)/ruff check igpo harness tasks tests
	$(BIN)/ruff format --check igpo harness tasks tests

bench: install
	$(BIN)/igpo bench decode

# The GPU check (one H100/H200, no network, about 5 minutes): writes results/bench/gpu.md.
gpu-check: install
	$(BIN)/igpo bench gpu

# Fast decoding measured where the model works at gen_length 256 and 512 (igpo/recipes/sft_tiny_long.yaml).
bench-fast: testbed-long
	$(BIN)/igpo bench decode --model runs/testbed-long/checkpoints/step-000800 --data-dir ../shared/data

testbed-model: install
	$(BIN)/python -m igpo.testbed.build

# The RL base of the tiny recipes: the testbed continued with a planted answer-sign habit (about 5 minutes on 2 cores).
testbed-sign: install
	$(BIN)/python -m igpo.testbed.build_sign

# The testbed continued on 256- and 512-token canvases for 800 steps (about 17 minutes on 2 cores); rerunning resumes.
testbed-long: install
	if ls -d runs/testbed-long/checkpoints/step-* >/dev/null 2>&1; \
	then $(BIN)/igpo sft --recipe sft_tiny_long --out runs/testbed-long --resume; \
	else $(BIN)/igpo sft --recipe sft_tiny_long --out runs/testbed-long --overwrite; fi

# The committed sweep, IGPO as released against GRPO (results/testbed: 35 runs, two at a time, about
# 65 minutes on 2 cores; its learning rate from `make ablate-lr`); rerunning skips finished runs.
ablate: install
	$(BIN)/igpo ablate --grid released --results results/testbed --jobs 2

# The learning-rate pick for `make ablate` (12 runs, about 20 minutes on 2 cores).
ablate-lr: install
	$(BIN)/igpo ablate --grid released_lr --results results/testbed --jobs 2

# The earlier sweep of the trajectory / token variant (results/testbed/variant: 31 runs, about 45 minutes).
ablate-variant: install
	$(BIN)/igpo ablate --grid paper --results results/testbed/variant --jobs 2

clean:
	rm -rf $(VENV) build *.egg-info
