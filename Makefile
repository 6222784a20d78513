# qsmkit: `make demo` and `make test` do all set-up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench clean install

$(BIN)/qsmkit: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $(BIN)/qsmkit

install: $(BIN)/qsmkit

demo: install
	$(BIN)/qsmkit demo demo-output --force

test: install
	$(BIN)/python -m pytest tests

lint: install
	$(BIN)/ruff check src tests benchmarks

bench: install
	$(BIN)/python benchmarks/bench_methods.py

clean:
	rm -rf $(VENV) demo-output build *.egg-info src/*.egg-info
