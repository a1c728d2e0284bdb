# Two commands do all set-up (README): `make run` and `make test`. Both install into .venv
# first; the install is skipped while pyproject.toml is unchanged.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.install-stamp

.PHONY: install run test bench

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e .
	# the released hydra-optuna-sweeper beside ours (--no-deps: it pins optuna<3), for the test
	# that both plugins' configs coexist; never on the app's path
	$(PY) -m pip install --quiet --no-deps --target $(VENV)/coexist hydra-optuna-sweeper==1.2.0
	touch $(STAMP)

# The main job: the Optuna sweep over eq. (8) (ARGS passes overrides, e.g. ARGS="hydra.sweeper.n_trials=10").
run: install
	$(PY) sweep.py -m $(ARGS)

# The test suite, the end-to-end smoke sweep among it, in TEST_WORKERS processes (pytest-xdist;
# TEST_WORKERS=0: one process). Each test process starts its own PostgreSQL and mlflow server.
TEST_WORKERS ?= 2
test: install
	$(PY) -m pytest -q tests -n $(TEST_WORKERS) --durations=15 $(ARGS)

bench: install
	$(PY) benchmarks/bench_data.py
	$(PY) benchmarks/bench_selection.py
	$(PY) benchmarks/bench_table3.py
	$(PY) benchmarks/bench_sweeper.py
