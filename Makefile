# Two commands for a newcomer:  `make demo`  and  `make test`  (see README.md).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: setup demo test lint bench clean

setup: $(VENV)/.installed

# torch is installed first and pinned: the CPU wheel 2.13.0 is what the machines carry; an unpinned
# torch (or one pulled in by another package) downloads several GB of CUDA libraries.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

demo: setup
	$(BIN)/aero demo

test: setup lint
	$(BIN)/pytest

lint: setup
	$(BIN)/ruff check .

bench: setup
	$(BIN)/aero bench ingest

clean:
	rm -rf .aero .pytest_cache .ruff_cache
