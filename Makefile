# Two commands on a fresh machine: `make demo` (set up + a video from the sample image) and `make test`.
PYTHON ?= python3
VENV ?= .venv
# The CPU build of torch; on a GPU machine set TORCH_SPEC to the build you want (e.g. plain "torch").
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
# The installer: uv (from PyPI, into the venv) installs the same versions as pip, about 7× faster on 2 cores
# (docs/development.md); INSTALLER=pip uses pip alone. uv reads no pip configuration, so a machine's pip
# find-links (where it keeps its CPU build of torch) is handed on as UV_FIND_LINKS.
INSTALLER ?= uv
export UV_FIND_LINKS ?= $(PIP_FIND_LINKS)
ifeq ($(INSTALLER),uv)
PREPARE = $(BIN)/python -m pip install uv
INSTALL = $(BIN)/uv pip install --python $(BIN)/python
else
PREPARE = $(BIN)/python -m pip install --upgrade pip
INSTALL = $(BIN)/python -m pip install
endif

.PHONY: setup setup-test demo test lint serve bench-serve bench-batching bench-fast-path bench-attention bench-keep-warm bench-gateway bench-queue bench-faults bench-accounts bench-work bench-presets bench-segments bench-cache bench-spritesheet gpu-wheels gpu-session soak playground playground-screenshot clean

# What the demo needs: the package with its engine and embedded Triton (no browser, no database).
setup: $(VENV)/.installed

# Each step's output goes to $(LOG); a failing step prints its tail.
LOG = $(VENV)/setup.log
STEP = run() { "$$@" >>$(LOG) 2>&1 || { tail -n 40 $(LOG) >&2; echo "make: failed: $$* (full log: $(LOG))" >&2; exit 1; }; }; run

$(VENV)/.installed: pyproject.toml
	@echo "installing the package and its server extra into $(VENV) (log: $(LOG)) ..."
	@$(PYTHON) -m venv $(VENV) && : > $(LOG)
	@$(STEP) $(PREPARE)
	@# torch first: an unpinned torch requirement would otherwise pull several GB of CUDA wheels.
	@$(STEP) $(INSTALL) "$(TORCH_SPEC)"
	@$(STEP) $(INSTALL) -e ".[server]"
	@touch $@

# What the tests need besides: the test extra, Debian's postgresql (the job-store tests' throwaway cluster)
# and chromium (the playground's browser tests; Playwright drives Debian's build), and perf_analyzer.
setup-test: $(VENV)/.installed-test

$(VENV)/.installed-test: $(VENV)/.installed
	@echo "installing the test tools (log: $(LOG)) ..."
	@if ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || ! command -v chromium >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ]; then $(STEP) sh -c "apt-get update && \
			apt-get install -y --no-install-recommends postgresql chromium fonts-liberation"; \
		else echo "make setup-test: install Debian's postgresql and chromium (as root) for the tests" >&2; fi; fi
	@$(STEP) $(INSTALL) -e ".[test]"
	@# A tool with conflicting pins, kept out of the environment: perf_analyzer (tritonclient 2.51.0's binary).
	@$(STEP) $(BIN)/python -m pip install --no-deps --target $(VENV)/tools tritonclient==2.51.0
	@touch $@

demo: setup
	$(BIN)/svd-triton demo --output out/demo.mp4

# Test files spread over TEST_WORKERS processes (pytest-xdist), each file in one, files with slow tests first
# (tests/conftest.py): 3 keep both cores busy while tests wait on servers and subprocesses (docs/development.md).
TEST_WORKERS ?= 3
test: setup-test lint
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# The packages formatted, linted and type-checked (settings in pyproject.toml); `make test` runs it first.
lint: setup-test
	$(BIN)/ruff format --check src
	$(BIN)/ruff check src
	$(BIN)/mypy

serve: setup
	$(BIN)/svd-triton serve

# perf_analyzer over HTTP and gRPC, concurrency 1..4, table into docs/benchmarks.md (INPUT=tiny|preview|xt).
bench-serve: setup-test
	$(BIN)/python -m benchmarks.perf_serve --input $(or $(INPUT),tiny)

soak: setup-test
	$(BIN)/python -m benchmarks.reliability

bench-batching: setup-test
	$(BIN)/python -m benchmarks.batching

# The fast path vs stock diffusers (SIZE=tiny on CPU, SIZE=xt on a GPU), table into docs/benchmarks.md.
bench-fast-path: setup-test
	$(BIN)/python -m benchmarks.fast_path --size $(or $(SIZE),tiny) $(ARGS)

# Each SDPA kernel at the UNet's attention shapes (SIZE=xt on a GPU), table into docs/benchmarks.md.
bench-attention: setup-test
	$(BIN)/python -m benchmarks.attention --size $(or $(SIZE),tiny) $(ARGS)

# Cold start vs warm request per keep-warm release mechanism (tiny and random-xt on CPU), table into docs/benchmarks.md.
bench-keep-warm: setup-test
	$(BIN)/python -m benchmarks.keep_warm $(ARGS)

# Gateway overhead vs calling Triton directly, and a burst of 200 jobs at concurrency 16, into docs/benchmarks.md.
bench-gateway: setup-test
	$(BIN)/python -m benchmarks.gateway_overhead $(ARGS)

# Gateway replicas on PostgreSQL: claim latency (notify vs poll), takeover after SIGKILL, 200 jobs through 3 vs 1.
bench-queue: setup-test
	$(BIN)/python -m benchmarks.queue $(ARGS)

# Triton faults through the gateway: full server restart → first job running/succeeded (--poll-seconds 2 and 0.2),
# and a job through a stub crash vs one without (tiny model on CPU), into docs/benchmarks.md.
bench-faults: setup-test
	$(BIN)/python -m benchmarks.triton_faults $(ARGS)

# The work of one full SVD-XT video per preset and switch, counted on meta tensors (no GPU, nothing computed).
bench-work: setup
	$(BIN)/python -m benchmarks.work_table $(ARGS)

# The speed presets end to end vs stock diffusers, CPU seconds, random-xt at 64×64, 4 frames, into docs/benchmarks.md.
bench-presets: setup-test
	$(BIN)/python -m benchmarks.presets $(ARGS)

# Accounts on PostgreSQL: store operations on an empty store vs 100,000 finished jobs (with their index plans), and
# one owner's wait behind another's burst through 2 replicas, into docs/benchmarks.md.
bench-accounts: setup-test
	$(BIN)/python -m benchmarks.accounts $(ARGS)

# What segments, interpolation and loops cost vs a plain request, and segment drift (tiny model on CPU).
bench-segments: setup-test
	$(BIN)/python -m benchmarks.segments $(ARGS)

# Feature caching (intervals 1, 2, 3, 5, each branch) vs stock diffusers, random-xt at 64×64 and tiny on CPU, into docs/benchmarks.md.
bench-cache: setup-test
	$(BIN)/python -m benchmarks.feature_cache $(ARGS)

# Peak memory of the sprite sheet of the largest video the limits allow, vs decoding every frame first, into docs/benchmarks.md.
bench-spritesheet: setup-test
	$(BIN)/python -m benchmarks.spritesheet $(ARGS)

# The GPU benchmark kit (docs/development.md): the wheels the GPU box lacks (benchmarks/gpu_box_packages.txt
# lists what it has) into .whl/, checked, and the command to run there.
gpu-wheels: setup-test
	$(BIN)/python -m benchmarks.gpu_wheels

# On the GPU box (its own python3 and packages plus .whl/, no venv, no network): every GPU row, the table into
# $$OUT (else out/gpu-session).
gpu-session:
	bash scripts/gpu_session.sh $(ARGS)

# The playground on the CPU demo stack: tiny-model Triton (streaming) and the gateway; open http://localhost:8080/.
playground: setup-test
	$(BIN)/svd-triton serve --stream & serve=$$!; trap "kill $$serve" EXIT; \
	until $(BIN)/python -c "import urllib.request as u; u.urlopen('http://localhost:8000/v2/health/ready')" 2>/dev/null; do \
		kill -0 $$serve || exit 1; sleep 1; done; \
	echo "playground: open http://localhost:8080/ (Ctrl-C stops it)"; $(BIN)/svd-triton gateway --port 8080

# docs/playground.png: the playground after generating a video (tiny model, real gateway, headless Chromium).
playground-screenshot: setup-test
	$(BIN)/python scripts/playground_screenshot.py

clean:
	rm -rf $(VENV) out
