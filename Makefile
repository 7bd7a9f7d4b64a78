# make run   - install what is needed, run the whole pipeline on the embedded stack
# make test  - install the test dependencies, lint, run every test
# make bench - benchmarks (ratios to baselines measured in the same run)
# make tools - Prometheus, promtool, Alertmanager, amtool (Debian packages) for the alert tests
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
ARGS   ?=
PYTEST_ARGS ?=
# The alert-rule tests run these binaries (tests/unit/test_alert_rules.py, tests/promstack.py).
PROM_TOOLS := prometheus promtool prometheus-alertmanager amtool
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install tools run test lint unit integration bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $@

# Installed once (apt-get update included); a no-op when every binary is on PATH.
# --no-install-recommends: no node exporter, which would want to run as a service.
tools:
	@for tool in $(PROM_TOOLS); do command -v $$tool >/dev/null || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing prometheus prometheus-alertmanager (missing:$$missing) ..."; \
	  log=$$(mktemp); \
	  { $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive \
	      apt-get install -y -qq --no-install-recommends prometheus prometheus-alertmanager; \
	  } >$$log 2>&1 || { cat $$log; rm -f $$log; exit 1; }; \
	  rm -f $$log; \
	fi

run: install
	$(VENV)/bin/orderpulse run $(ARGS)

lint: install
	$(VENV)/bin/ruff check .

test: install tools lint
	$(PY) -m pytest $(PYTEST_ARGS)

unit: install tools
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

integration: install tools
	$(PY) -m pytest tests/integration $(PYTEST_ARGS)

bench: install
	$(VENV)/bin/orderpulse bench $(ARGS)

clean:
	rm -rf var build *.egg-info .pytest_cache .ruff_cache
