# The two commands a new user types: `make run` and `make test`.
# Each creates the project-local virtualenv (.venv) from requirements.lock first
# when it is missing or the lock changed.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
ARGS   ?=
# The built-in simulated log at the library defaults, tuned per run (see the file's comments).
CONFIG ?= pipeline/configs/simulated.yaml
PYTEST_ARGS ?=

.PHONY: env run test test-fast bench clean

env: $(VENV)/.installed

# The lock is the full, verified pip freeze: installed with --no-deps so pip does
# not re-resolve (TFX 1.16 declares Python < 3.11 although every wheel it needs
# exists for 3.11; ../shared/env/README.md in the design notes has the details).
$(VENV)/.installed: requirements.lock setup.py pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --no-deps --ignore-requires-python -r requirements.lock
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

run: env
	$(BIN)/pfdx run --config $(CONFIG) $(ARGS)

test: env
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The suite without the end-to-end tests (marker `e2e`, registered in pyproject.toml):
# those run TFX pipelines or full compares, where TFX start-up dominates. CI runs `test`.
test-fast: env
	$(BIN)/python -m pytest -m "not e2e" $(PYTEST_ARGS)

bench: env
	for b in bench/*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf outputs .pytest_cache
