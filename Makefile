# Two commands for a fresh clone: `make test` and `make demo`. Both create .venv and install as needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
FSDD ?= ../shared/data/fsdd/recordings

.PHONY: test demo bench lint clean install

install: $(STAMP)

# Re-install only when pyproject.toml changes.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup

demo: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" FSDD_DIR="$(FSDD)" bash recipes/digits/run.sh

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) exp .pytest_cache .ruff_cache
