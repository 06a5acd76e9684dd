# The two commands in the README are `make demo` and `make test`; everything else is here too.
.PHONY: setup demo test lint typecheck contracts bench clean

VENV := .venv/bin
# Two test processes, a test file each at a time (the suite mostly waits on brokers and
# servers: 10 minutes instead of 19 on the 2-core machine, pytest-xdist).
# Branch coverage of the product, summary on the terminal and coverage.xml (`make test COVERAGE=`
# skips it). Measured: tests/audit +24 % CPU, tests/policies (pure Python, hypothesis) +75 %.
COVERAGE ?= --cov --cov-report=term:skip-covered --cov-report=xml

setup:
	@scripts/bootstrap

demo: setup
	$(VENV)/idmz demo

test: setup lint
	$(VENV)/python -m pytest -q -n 2 --dist loadfile $(COVERAGE)
	$(VENV)/idmz demo --check
	$(VENV)/idmz demo --check --ca vault

lint: setup
	$(VENV)/ruff check .
	$(VENV)/ruff format --check .
	$(VENV)/mypy
	$(VENV)/lint-imports

bench: setup
	@for b in bench/*.py; do echo "== $$b"; $(VENV)/python $$b || exit 1; done

clean:
	rm -rf idmz-data .pytest_cache .mypy_cache .ruff_cache .coverage .coverage.* coverage.xml
