# legmri: `make demo` runs the pipeline on sample_data/, `make test` runs the test suite.
# Both create the virtual environment .venv on first use (CPU PyTorch first, then the package with its test extras).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DEMO_OUT ?= demo_out
JOBS   ?= 2

.PHONY: setup demo test test-slow bench lint tools clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[test]"
	@touch $(STAMP)

setup: $(STAMP)

# dciodvfy (dicom3tools) validates the DICOM SEG and SR exports in the tests.
tools:
	@command -v dciodvfy >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = "0" ]; then apt-get update -qq && apt-get install -y -qq dicom3tools >/dev/null; \
	  else echo "dciodvfy not found: install the Debian package dicom3tools to run the DICOM validation tests"; fi; }

demo: setup
	$(BIN)/legmri batch sample_data --out $(DEMO_OUT) -j $(JOBS)
	@echo "Open $(DEMO_OUT)/index.html (one report.html per study under $(DEMO_OUT)/<study>/)"

test: setup tools
	$(BIN)/python -m pytest -q -n $(JOBS) -m "not slow"

test-slow: setup tools
	$(BIN)/python -m pytest -q -m slow

# Cost per stage against image size (sample, real and phantom studies up to 512 x 512 x 160) and batch throughput
# with -j 1 and -j 2: CSV tables and bench.png in bench_out/. E.g. BENCH_ARGS="--cases samples,real --no-batch".
BENCH_ARGS ?=
bench: setup
	$(BIN)/python scripts/bench.py --out bench_out $(BENCH_ARGS)

lint: setup
	$(BIN)/ruff check pipeline tests scripts

clean:
	rm -rf $(DEMO_OUT) bench_out .pytest_cache
