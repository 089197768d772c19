# Two commands on a fresh machine: `make demo` (set up + a video from the sample image) and `make test`.
PYTHON ?= python3
VENV ?= .venv
# The CPU build of torch; on a GPU machine set TORCH_SPEC to the build you want (e.g. plain "torch").
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: setup demo test serve clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first: an unpinned torch requirement would otherwise pull several GB of CUDA wheels.
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

demo: setup
	$(BIN)/svd-triton demo --output out/demo.mp4

test: setup
	$(BIN)/python -m pytest -q

serve: setup
	$(BIN)/svd-triton serve

clean:
	rm -rf $(VENV) out
