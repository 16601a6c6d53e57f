# Everything runs from a project-local virtualenv that `make install` builds itself.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STACK ?= dev

.PHONY: install test plan reference clean

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed

## make test: the whole offline suite (unit, component, whole-stack policy, plan).
test: install
	$(PY) -m pytest

## make plan STACK=dev|prod: print every resource the stack would create, offline.
plan: install
	$(PY) -m offline.plan --stack $(STACK)

## make reference: regenerate Pulumi.yaml's config section and README's table from infra/config.py.
reference: install
	$(PY) -m offline.reference --write

clean:
	rm -rf $(VENV) .pytest_cache
