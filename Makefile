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

# wrk: the serving benchmark's load generator; chromium: the browser the model-card tests render
# in (CI runs as root with apt; elsewhere, say how)
APT_TOOLS := wrk chromium
install: $(BIN)/.installed
	@missing="$$(for t in $(APT_TOOLS); do command -v $$t >/dev/null 2>&1 || echo $$t; done)"; \
	[ -z "$$missing" ] || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq $$missing >/dev/null) \
		|| echo "could not install $$missing: run apt-get install -y $$missing"

# KServe's own SDK for the test that checks our KServe V1 API with KServe's client: its own
# virtualenv, because kserve pins protobuf<7 and Ray 2.60 runs with protobuf 7
KSERVE_VENV := .venv-kserve
$(KSERVE_VENV)/.installed: tests/kserve/requirements.txt
	$(PYTHON) -m venv $(KSERVE_VENV)
	$(KSERVE_VENV)/bin/python -m pip install --quiet -r tests/kserve/requirements.txt
	touch $@

demo: install                ## set up, then run the demo loop
	$(BIN)/raymlops demo --workdir demo

lint: install                ## layering contract (pure core has no ray) and ruff
	$(BIN)/lint-imports
	$(BIN)/ruff check raymlops tests jobs benchmarks

test: lint $(KSERVE_VENV)/.installed  ## everything CI runs: lint, unit, integration, e2e
	$(BIN)/python -m pytest tests

test-unit: install           ## the seconds-long tier, no Ray
	$(BIN)/python -m pytest tests/unit -q

bench: install               ## every suite side by side; refreshes README's tables and plots
	$(BIN)/python -m pip install --quiet -e ".[test,bench]"
	$(BIN)/python -m benchmarks --suite all --readme

clean:
	rm -rf $(VENV) $(KSERVE_VENV) demo .pytest_cache .ruff_cache
