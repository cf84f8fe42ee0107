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

.PHONY: env build test bench bench-full notebooks lab gpu clean

$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip setuptools wheel ninja
	$(BIN)/pip install torch==2.14.1 torchvision==0.29.1 numpy
	$(BIN)/pip install --no-build-isolation -e '.[torchvision,tensorflow,test,bench]'
	touch $@

env: $(STAMP)

# Recompiles only what changed in csrc/ (ninja): a build with nothing changed compiles nothing.
build: env
	$(BIN)/python setup.py -q build_ext --inplace

# The linter (ruff: pyflakes, pycodestyle, import order; settings in pyproject.toml), then the tests, one pytest worker
# per CPU core (pytest-xdist; tests/README.md says what is where; the 20 slowest
# are listed at the end), then a smoke run of the benchmark suite (one tiny case per backend, untimed) so it
# cannot rot.
test: build
	$(BIN)/ruff check .
	TRITON_INTERPRET=1 $(BIN)/python -m pytest -n auto --dist worksteal --durations=20 tests
	BENCH=smoke $(BIN)/python -m pytest bench -q --benchmark-disable

# The default matrix (CUDA cases too on a GPU machine), then the crop_and_resize cases again under an allocator that
# keeps freed pages (bench/allocator.py): JSON + table + plots; the README's table says how long the runs took.
bench: build
	$(BIN)/python bench/run.py

bench-full: build
	BENCH=full $(BIN)/python bench/run.py

# Re-executes the notebooks at full size and saves them with their outputs.
notebooks: build
	$(BIN)/python notebooks/execute.py

# JupyterLab on notebooks/ with the project's kernel (this .venv's python3). Installs pyproject's `notebooks` extra
# into .venv the first time (not part of `make env`/`make test`; CI never downloads it); then, as execute.py does,
# checks that the python3 kernel is this .venv's Python.
LAB_STAMP := $(VENV)/.lab-installed
$(LAB_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['notebooks']))" > $(VENV)/notebooks-requirements.txt
	$(BIN)/pip install -r $(VENV)/notebooks-requirements.txt
	touch $@

lab: build $(LAB_STAMP)
	$(BIN)/python -c "import runpy; runpy.run_path('notebooks/execute.py')['_check_kernel']()"
	$(BIN)/jupyter lab --notebook-dir=notebooks --MappingKernelManager.default_kernel_name=python3 \
		$(if $(filter 0,$(shell id -u)),--allow-root)  # JupyterLab refuses root (containers) without it

# On a GPU machine that has its own torch (>= 2.11, CUDA): build for its GPU, test, compute-sanitizer, benchmark,
# with $(PYTHON), not the .venv; results and summary.md in bench/results/gpu-<date>/ (GPU_RESULTS=dir overrides).
# Stops cleanly after the build-free checks where torch sees no GPU. Settings: bench/gpu_run.sh.
gpu:
	PYTHON=$(PYTHON) bash bench/gpu_run.sh

clean:
	rm -rf $(VENV) build impls/*.so *.egg-info
