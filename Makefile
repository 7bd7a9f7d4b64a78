# make run   - install what is needed, run the whole pipeline on the embedded stack
# make test  - install the test dependencies, lint, run every test
# make bench - benchmarks (ratios to baselines measured in the same run)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
ARGS   ?=
PYTEST_ARGS ?=

.PHONY: install run test lint unit integration bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $@

run: install
	$(VENV)/bin/orderpulse run $(ARGS)

lint: install
	$(VENV)/bin/ruff check .

test: install lint
	$(PY) -m pytest $(PYTEST_ARGS)

unit: install
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

integration: install
	$(PY) -m pytest tests/integration $(PYTEST_ARGS)

bench: install
	$(VENV)/bin/orderpulse bench $(ARGS)

clean:
	rm -rf var build *.egg-info .pytest_cache .ruff_cache
