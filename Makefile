# All set-up happens here: a fresh clone needs only `make demo` or `make test`.
PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
# The count of runs of the article's program in stress tests.
CI_STRESS_RUNS ?= 30
# ...of it under spawn or forkserver, a few seconds each, looking for lost lines.
CI_SLOW_STRESS_RUNS ?= 6
FULL_STRESS_RUNS ?= 500

.PHONY: demo test lint typecheck docs wheel stress compat bench clean

$(VENV)/.ready: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(VPY) -m pip install -q --disable-pip-version-check -e '.[test,lint,docs,structlog]'
	touch $@

demo: $(VENV)/.ready
	$(VPY) -m forksafe_logging demo

lint: $(VENV)/.ready
	$(VENV)/bin/ruff check forksafe_logging tests benchmarks docs scripts setup.py
	$(VENV)/bin/ruff format --check forksafe_logging tests benchmarks docs scripts setup.py

typecheck: $(VENV)/.ready
	$(VENV)/bin/mypy

docs: $(VENV)/.ready
	$(VENV)/bin/sphinx-build -W --keep-going -b html docs docs/_build/html
	$(VENV)/bin/sphinx-build -W --keep-going -b doctest docs docs/_build/doctest

wheel: $(VENV)/.ready
	rm -rf dist build
	$(VPY) -m pip wheel -q --disable-pip-version-check --no-deps -w dist .

test: lint typecheck docs wheel
	FORKSAFE_STRESS_RUNS=$(CI_STRESS_RUNS) FORKSAFE_SLOW_STRESS_RUNS=$(CI_SLOW_STRESS_RUNS) \
		scripts/test-all-pythons.sh
	$(MAKE) compat

# FORKSAFE_PYTHONS="3.12" narrows it to some versions (each takes ~25 min).
stress: wheel
	FORKSAFE_STRESS_RUNS=$(FULL_STRESS_RUNS) scripts/test-all-pythons.sh -m stress -s

# The virtualenv's Python, then the versions in COMPAT_PYTHONS with the
# repository on PYTHONPATH (fetched by scripts/get-python.sh if need be).
COMPAT_PYTHONS ?= 3.14 3.15
compat: $(VENV)/.ready
	$(VPY) scripts/compat.py
	$(VPY) scripts/compat.py --versions $(COMPAT_PYTHONS)

bench: $(VENV)/.ready
	$(VPY) -m pip install -q --disable-pip-version-check -e '.[bench]'
	$(VPY) benchmarks/fork_cost.py
	$(VPY) benchmarks/throughput.py
	$(VPY) benchmarks/order_cost.py
	$(VPY) benchmarks/startup_cost.py
	$(VPY) benchmarks/first_record.py

clean:
	rm -rf $(VENV) .venvs dist build docs/_build *.egg-info .mypy_cache .ruff_cache .pytest_cache
