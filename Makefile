# The README's two commands: `make bench` (the main job) and `make test`. Each sets up its own virtual
# environment on a fresh machine: torch 2.14.1 and torchvision 0.29.1 come from this machine's local wheel store
# through pip, the rest from PyPI; then the package and its C++/CUDA extension are built in place.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The CUDA kernels compile without a GPU, given the toolkit and explicit architectures (csrc/README.md).
export CUDA_HOME ?= /usr/local/cuda
export TORCH_CUDA_ARCH_LIST ?= 8.0;9.0
export MAX_JOBS ?= 2

.PHONY: env build test bench bench-full notebooks gpu clean

$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip setuptools wheel ninja
	$(BIN)/pip install torch==2.14.1 torchvision==0.29.1 numpy
	$(BIN)/pip install --no-build-isolation -e '.[torchvision,tensorflow,test,bench]'
	touch $@

env: $(STAMP)

# Recompiles only what changed in csrc/ (ninja): a no-op build takes ~2 s.
build: env
	$(BIN)/python setup.py -q build_ext --inplace

# The tests, then a smoke run of the benchmark suite (one tiny case per backend, untimed) so it cannot rot.
test: build
	TRITON_INTERPRET=1 $(BIN)/python -m pytest tests
	BENCH=smoke $(BIN)/python -m pytest bench -q --benchmark-disable

# The default matrix (~10 min on 2 CPU cores; CUDA cases too on a GPU machine): JSON + table + plots.
bench: build
	$(BIN)/python bench/run.py

bench-full: build
	BENCH=full $(BIN)/python bench/run.py

# Re-executes the notebooks at full size and saves them with their outputs.
notebooks: build
	$(BIN)/python notebooks/execute.py

# On a GPU machine that has its own torch (>= 2.11, CUDA): build for its GPU, test, compute-sanitizer, benchmark,
# with $(PYTHON), not the .venv; results and summary.md in bench/results/gpu-<date>/ (GPU_RESULTS=dir overrides).
# Stops cleanly after the build-free checks where torch sees no GPU. Settings: bench/gpu_run.sh.
gpu:
	PYTHON=$(PYTHON) bash bench/gpu_run.sh

clean:
	rm -rf $(VENV) build impls/*.so *.egg-info
