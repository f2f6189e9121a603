# One task vocabulary for the README, CI (.ci/run) and people.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: install demo test test-unit lint bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

install: $(BIN)/.installed

demo: install                ## set up, then run the demo loop
	$(BIN)/raymlops demo --workdir demo

lint: install                ## layering contract (pure core has no ray) and ruff
	$(BIN)/lint-imports
	$(BIN)/ruff check raymlops tests jobs benchmarks

test: lint                   ## everything CI runs: lint, unit, integration, e2e
	$(BIN)/python -m pytest tests

test-unit: install           ## the seconds-long tier, no Ray
	$(BIN)/python -m pytest tests/unit -q

bench: install               ## side-by-side measurements (benchmarks/README.md)
	$(BIN)/python -m pip install --quiet -e ".[test,bench]"
	$(BIN)/python benchmarks/tune_overhead.py
	$(BIN)/python benchmarks/drift.py
	@command -v wrk >/dev/null && $(BIN)/python benchmarks/serving.py || echo "serving benchmark skipped: install wrk (apt-get install wrk)"

clean:
	rm -rf $(VENV) demo .pytest_cache .ruff_cache
