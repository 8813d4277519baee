# churnsignal developer tasks. `make help` lists them.

PYTHON ?= python3.11
VENV ?= .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
SERVICES_ENV := var/services.env
PYTEST_ARGS ?=
BENCH_ARGS ?=
CHAOS_ARGS ?=

# Run pytest with the given arguments; exit code 5 (no tests collected) counts as success.
run_pytest = rc=0; $(VPY) -m pytest -q $(1) $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests (exit code 5): nothing to run, treated as success"; rc=0; fi; \
	exit $$rc

.PHONY: help venv install tools services test test-unit run bench chaos detection lint stop status clean distclean

help:
	@echo "make install    create $(VENV) and install the project with its dev extra"
	@echo "make services   start Kafka and PostgreSQL on loopback (scripts/services.sh)"
	@echo "make test       the whole test suite, against the real services"
	@echo "make test-unit  tests not marked 'integration', no services needed"
	@echo "make run        run churnsignal in embedded mode (no services needed)"
	@echo "make bench      benchmarks, against the real services"
	@echo "make chaos      broker/database restarts, kill -9, Slack outage and a 30-min soak: docs/reliability.md"
	@echo "make detection  detection quality on public and simulated data: docs/detection.md"
	@echo "make lint       ruff check"
	@echo "make status     show whether the services run"
	@echo "make stop       stop Kafka and PostgreSQL"
	@echo "make clean      remove caches and build leftovers; distclean also stops services, removes var/ and $(VENV)"

venv: $(VPY)

$(VPY):
	$(PYTHON) -m venv $(VENV)

# Also compiles the scoring domain with mypyc (scripts/build_native.py: quick when nothing changed; the
# pure Python runs when it cannot).
install: $(STAMP)
	@$(VPY) scripts/build_native.py

# Reinstalls only when pyproject.toml changes.
$(STAMP): pyproject.toml | $(VPY)
	$(VPY) -m pip install -q -e '.[dev]'
	touch $@

services:
	bash scripts/services.sh

# Command-line tools some tests need (helm in var/tools/bin, promtool, amtool, Chromium): scripts/install-tools.sh.
tools:
	bash scripts/install-tools.sh

status:
	@bash scripts/services.sh status

stop:
	bash scripts/services.sh stop

# The pure domain's tests run first on its Python source too (the suite then runs on the compiled one).
test: install tools services
	@set -e; . ./$(SERVICES_ENV); CHURNSIGNAL_PURE_PYTHON=1 $(VPY) -m pytest -q -p no:cacheprovider tests/domain; \
	$(call run_pytest,)

test-unit: install
	@$(call run_pytest,-m "not integration")

run: install
	$(VENV)/bin/churnsignal run

bench: install services
	set -e; . ./$(SERVICES_ENV); $(VPY) -m bench $(BENCH_ARGS)

# Stops and restarts a Kafka and a PostgreSQL of its own (scripts/services.sh as a second instance on free
# ports under var/chaos/, deleted at the end; the servers of `make services` are left alone); a quick run:
# make chaos CHAOS_ARGS="--soak-minutes 3".
chaos: install
	$(VPY) -m chaos $(CHAOS_ARGS)

# Detection quality on ChurnSim (fightchurn, PyPI) and the sparse simulator: writes docs/detection.md.
detection: install services
	$(VPY) -m bench.detection

lint: install
	$(VPY) -m ruff check .

clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache .hypothesis
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	bash scripts/services.sh stop
	rm -rf var $(VENV)
