# Set-up and the two everyday jobs. `make demo` and `make test` create the
# virtual environment on first use (torch pinned to its CPU build, see
# constraints.txt) and reinstall when pyproject.toml or setup.py change.

PYTHON ?= python3
# pytest worker processes (pytest-xdist): the suite waits on kernels and driver hosts as much as it
# computes, so two workers halve its time on two cores; JOBS=0 runs it in this one process
JOBS ?= 2
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench docs setup grade

setup: $(STAMP)

$(STAMP): pyproject.toml setup.py constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/llmos demo

test: $(STAMP)
	$(BIN)/python -m pytest -n $(JOBS)

bench: $(STAMP)
	$(BIN)/llmos bench syscall
	$(BIN)/llmos bench load
	$(BIN)/llmos bench memory
	$(BIN)/llmos bench sched
	$(BIN)/llmos bench restart
	$(BIN)/llmos bench generate
	$(BIN)/llmos bench prefix
	$(BIN)/llmos bench remote
	$(BIN)/llmos bench dp
	$(BIN)/llmos bench compress
	$(BIN)/llmos bench web

docs: $(STAMP)
	$(BIN)/mkdocs build

# the graded assignments of docs/assignments.md: a score per assignment.
# SOLUTIONS=1 grades a copy of the tree with the reference solutions in; QUICK=1 leaves out
# the driver kit's kernel tests; ASSIGNMENTS="stride cow" grades only those
grade: $(STAMP)
	$(BIN)/python grading/grade.py $(if $(SOLUTIONS),--solutions) $(if $(QUICK),--quick) $(ASSIGNMENTS)
