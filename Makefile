# Every target creates or reuses .venv itself.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint typecheck bench hil fuzz soak clean deps

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

deps: $(STAMP)

## run: the whole stack on one machine over a virtual null-modem
run: $(STAMP)
	$(BIN)/ira loopback

## test: lint, type check and the full test suite (what CI runs)
test: lint typecheck
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check ira tests hil_tests bench
	$(BIN)/ruff format --check ira tests hil_tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

## bench: benchmarks (ratios measured in one run); see docs/PERFORMANCE.md
bench: $(STAMP)
	$(BIN)/python bench/link.py
	$(BIN)/python bench/bus.py
	$(BIN)/python bench/virtio.py
	$(BIN)/python bench/venet.py

## hil: the hardware-in-the-loop suite: a virtual null-modem per test, or the rig named by
## IRA_LINK_A / IRA_LINK_B (see docs/HIL.md); HIL_ARGS are passed to pytest
hil: $(STAMP)
	$(BIN)/pytest -q hil_tests $(HIL_ARGS)

## fuzz: longer fuzzing of every decoder
fuzz: $(STAMP)
	IRA_FUZZ_EXAMPLES=200000 $(BIN)/pytest -q tests -k fuzz

## soak: long fault matrices on the virtual null-modem
soak: $(STAMP)
	IRA_SOAK=1 $(BIN)/pytest -q -m slow tests hil_tests

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
