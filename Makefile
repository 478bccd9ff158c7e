# Elemta: `make run` starts the whole system locally; `make test` runs the suite.
# Both install what they need into .venv first.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export PYTHONPATH := $(CURDIR)/common:$(CURDIR)/services/ingress:$(CURDIR)/services/policy:$(CURDIR)/services/queue:$(CURDIR)/services/delivery:$(CURDIR)/services/api:$(CURDIR)/operator

.PHONY: run test scanners lint typecheck proto bench bench-policy clean install

$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed

run: install
	$(PY) tools/run.py $(ARGS)

# The content scanners and milters the tests run for real (Debian packages; root,
# as in CI).
SCANNERS := clamd:clamav-daemon spamd:spamd opendkim:opendkim clamav-milter:clamav-milter
scanners:
	@missing=""; for pair in $(SCANNERS); do \
	  command -v $${pair%%:*} >/dev/null 2>&1 || test -x /usr/sbin/$${pair%%:*} || missing="$$missing $${pair#*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi

test: install scanners
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy common services
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

typecheck: install
	$(VENV)/bin/mypy common services

proto: install
	PYTHON=$(PY) bash tools/proto_codegen.sh

bench: install
	$(PY) bench/relay.py $(ARGS)

bench-policy: install
	$(PY) bench/policy.py $(ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
