# Two commands for a fresh clone: `make test` and `make demo`. Both create .venv and install as needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
FSDD ?= ../shared/data/fsdd/recordings

.PHONY: test demo bench gpu-check lint clean install

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

# On a CUDA machine (meant to take about 5 minutes; not yet run on one): the CUDA tests (cuDNN,
# bf16 autocast, a 2-process torchrun DDP run with exact resume), every benchmark's --quick pass on
# the GPU, and the 100 h recipe model's training throughput. Results in benchmarks/results/gpu/.
gpu-check: $(STAMP)
	@$(BIN)/python -c "import sys, torch; torch.cuda.is_available() or sys.exit('make gpu-check: CUDA is not available (no GPU visible to torch)')"
	$(BIN)/python -m pytest -q -p no:cacheprovider -n 0 -m cuda tests/test_cuda.py tests/test_data.py
	$(BIN)/python benchmarks/run_all.py --device cuda --quick --results benchmarks/results/gpu
	$(BIN)/python benchmarks/bench_recipe.py --device cuda --configs 100h --steps 5 --results benchmarks/results/gpu

clean:
	rm -rf $(VENV) exp .pytest_cache .ruff_cache
