# Targets create a virtualenv, install torch first (a CPU build by default), then the package.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: venv install test demo bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -e ".[dev,test]"
	touch $@

venv install: $(VENV)/.installed

test: $(VENV)/.installed
	$(PY) -m pytest tests -q

demo: $(VENV)/.installed
	$(PY) examples/seed_flow.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info
