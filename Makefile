# Two entry points, both safe to re-run: `make demo` and `make test`.
# They create .venv, install torch==2.13.0 first (a CPU wheel where pip is configured for one),
# then the package with its test extras under constraints.txt (the versions tested together).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint screenshots system-deps clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/pip install --quiet "torch==2.13.0"
	$(BIN)/pip install --quiet -c constraints.txt -e ".[testing]"
	touch $(STAMP)

system-deps:
	@scripts/install-system-deps.sh

demo: $(STAMP)
	$(BIN)/blastscope demo --out demo-output

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/npe2 validate napari-blastscope

test: system-deps $(STAMP) lint
	$(BIN)/python -m pytest

# Refresh the committed screenshots that the README shows (docs/screenshots/).
screenshots: system-deps $(STAMP)
	BLASTSCOPE_SCREENSHOTS=docs/screenshots $(BIN)/python -m pytest tests/test_screenshots.py

clean:
	rm -rf $(VENV) demo-output build dist
