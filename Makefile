# The few commands people type. Each one sets itself up first (scripts/setup.sh is quick once done).
PY := .venv/bin/python
export OPENBLAS_NUM_THREADS ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup demo test test-shared test-fast lint format bench clean

setup:
	@bash scripts/setup.sh

demo: setup  ## prepare MovieLens-100K, LoRA-fine-tune SmolLM2-135M on CPU, evaluate against popularity
	$(PY) -m generative_rec demo

test: setup  ## the whole suite: unit, integration, slow (real SmolLM2) and vLLM server tests
	$(PY) -m pytest tests -m "not shared_data"

test-shared: setup  ## the tests on the full shared Amazon file (../shared/data or $$GENREC_SHARED_DATA)
	$(PY) -m pytest tests -m shared_data

test-fast: setup  ## unit tests only (tiny random models, seconds)
	$(PY) -m pytest tests -m "not slow and not vllm and not integration and not shared_data"

lint: setup
	.venv/bin/ruff check generative_rec tests train serve bench

format: setup
	.venv/bin/ruff format generative_rec tests train serve bench

clean:
	rm -rf runs .pytest_cache
