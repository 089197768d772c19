# Two commands on a fresh machine: `make demo` (set up + a video from the sample image) and `make test`.
PYTHON ?= python3
VENV ?= .venv
# The CPU build of torch; on a GPU machine set TORCH_SPEC to the build you want (e.g. plain "torch").
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: setup demo test serve bench-serve bench-batching bench-fast-path bench-attention bench-keep-warm bench-gateway bench-segments soak playground playground-screenshot clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	# PostgreSQL for the gateway's job-store tests (a throwaway cluster on loopback); Debian's package, as root.
	if ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ]; then apt-get update && apt-get install -y --no-install-recommends postgresql; \
		else echo "make setup: install Debian's postgresql (as root) for the gateway tests" >&2; fi; fi
	# Chromium (and a font) for the playground's browser tests: Playwright drives Debian's build (it cannot download its own).
	if ! command -v chromium >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ]; then apt-get update && apt-get install -y --no-install-recommends chromium fonts-liberation; \
		else echo "make setup: install Debian's chromium (as root) for the playground tests" >&2; fi; fi
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first: an unpinned torch requirement would otherwise pull several GB of CUDA wheels.
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[test]"
	# A tool with conflicting pins, kept out of the environment: perf_analyzer (tritonclient 2.51.0's binary).
	$(BIN)/python -m pip install --quiet --no-deps --target $(VENV)/tools tritonclient==2.51.0
	touch $@

demo: setup
	$(BIN)/svd-triton demo --output out/demo.mp4

test: setup
	$(BIN)/python -m pytest -q

serve: setup
	$(BIN)/svd-triton serve

# perf_analyzer over HTTP and gRPC, concurrency 1..4, table into docs/benchmarks.md (INPUT=tiny|preview|xt).
bench-serve: setup
	$(BIN)/python -m benchmarks.perf_serve --input $(or $(INPUT),tiny)

soak: setup
	$(BIN)/python -m benchmarks.reliability

bench-batching: setup
	$(BIN)/python -m benchmarks.batching

# The fast path vs stock diffusers (SIZE=tiny on CPU, SIZE=xt on a GPU), table into docs/benchmarks.md.
bench-fast-path: setup
	$(BIN)/python -m benchmarks.fast_path --size $(or $(SIZE),tiny) $(ARGS)

# Each SDPA kernel at the UNet's attention shapes (SIZE=xt on a GPU), table into docs/benchmarks.md.
bench-attention: setup
	$(BIN)/python -m benchmarks.attention --size $(or $(SIZE),tiny) $(ARGS)

# Cold start vs warm request per keep-warm release mechanism (tiny and random-xt on CPU), table into docs/benchmarks.md.
bench-keep-warm: setup
	$(BIN)/python -m benchmarks.keep_warm $(ARGS)

# Gateway overhead vs calling Triton directly, and a burst of 200 jobs at concurrency 16, into docs/benchmarks.md.
bench-gateway: setup
	$(BIN)/python -m benchmarks.gateway_overhead $(ARGS)

# What segments, interpolation and loops cost vs a plain request, and segment drift (tiny model on CPU).
bench-segments: setup
	$(BIN)/python -m benchmarks.segments $(ARGS)

# The playground on the CPU demo stack: tiny-model Triton (streaming) and the gateway; open http://localhost:8080/.
playground: setup
	$(BIN)/svd-triton serve --stream & serve=$$!; trap "kill $$serve" EXIT; \
	until $(BIN)/python -c "import urllib.request as u; u.urlopen('http://localhost:8000/v2/health/ready')" 2>/dev/null; do \
		kill -0 $$serve || exit 1; sleep 1; done; \
	echo "playground: open http://localhost:8080/ (Ctrl-C stops it)"; $(BIN)/svd-triton gateway --port 8080

# docs/playground.png: the playground after generating a video (tiny model, real gateway, headless Chromium).
playground-screenshot: setup
	$(BIN)/python scripts/playground_screenshot.py

clean:
	rm -rf $(VENV) out
