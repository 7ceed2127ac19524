# Set-up and the two everyday jobs. `make demo` and `make test` create the
# virtual environment on first use (torch pinned to its CPU build, see
# constraints.txt) and reinstall when pyproject.toml or setup.py change.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench docs setup

setup: $(STAMP)

$(STAMP): pyproject.toml setup.py constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/llmos demo

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/llmos bench syscall
	$(BIN)/llmos bench memory
	$(BIN)/llmos bench sched
	$(BIN)/llmos bench restart
	$(BIN)/llmos bench generate

docs: $(STAMP)
	$(BIN)/mkdocs build
