# The README's two commands:  make up  (install + start)   and   make test  (install + whole suite).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.nextframe-installed

.PHONY: install up lint test test-embedded test-scaled bench audit clean

install: $(STAMP)

# torch==2.13.0 goes in first so the machine's local CPU build is used; then the project, with torch
# held there by constraints.txt (diffusers and transformers would otherwise be free to pull another).
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

up: install
	$(BIN)/nextframe up $(ARGS)

# The gates before the tests: ruff (rules in pyproject.toml [tool.ruff]) and mypy ([tool.mypy]).
lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

# The lint gates, then the whole suite twice over: on the embedded defaults (SQLite, in-memory
# layer, filesystem broker), and the Django side again scaled out against PostgreSQL and Redis on
# loopback. A test that fixes its own profile (@pytest.mark.profile, nextframe.testing) runs in that
# profile's pass only. The two passes share nothing (their own data dirs, databases and Redis keys)
# and most of their time is spent waiting on real server processes, so they run side by side; each
# pass's output is printed whole when it ends (--output-sync). TEST_JOBS=1 runs them one after the other.
TEST_JOBS ?= 2
test: install
	$(MAKE) --no-print-directory lint
	$(MAKE) --no-print-directory -j$(TEST_JOBS) --output-sync=target test-embedded test-scaled

test-embedded: install
	NEXTFRAME_TEST_PROFILE=embedded $(BIN)/pytest

test-scaled: install
	NEXTFRAME_TEST_PROFILE=scaled $(BIN)/pytest tests platform

bench: install
	$(BIN)/python -m inference.bench.frame_loop

clean:
	rm -rf $(VENV) .nextframe
