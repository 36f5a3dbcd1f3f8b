# Quick start:  make demo  (set up + distil the bundled adult dataset)   ·   make test  (set up + run what CI runs)
# Everything installs from the pinned constraints.txt (CPU torch). `make demo` uses .venv, with the core and every
# plugin installed in editable mode; `make test` installs nox into .venv and runs the default nox sessions, which
# build their own environments under .nox/ (see `nox -l`, or noxfile.py).

PYTHON   ?= python3
VENV     ?= .venv
BIN      := $(VENV)/bin
PLUGINS  := $(sort $(wildcard plugins/gbdt2nn-*))
PIP      := $(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt
STAMP    := $(VENV)/.installed
NOX      := $(VENV)/.nox-installed
# Extra arguments for nox, e.g.  make test NOXFLAGS='-s "plugin(shap)"'  or  NOXFLAGS='-t plugins'
NOXFLAGS ?=

.PHONY: demo test lint typecheck setup clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(NOX): constraints.txt | $(BIN)/python
	$(PIP) nox
	touch $@

$(STAMP): pyproject.toml constraints.txt $(addsuffix /pyproject.toml,$(PLUGINS)) | $(BIN)/python
	$(PIP) torch==2.13.0
	$(PIP) -e . $(addprefix -e ,$(PLUGINS)) pytest captum pyarrow ruff
	touch $@

setup: $(STAMP)  ## .venv with the core, every plugin (editable) and the test tools

demo: $(STAMP)  ## distil the bundled adult dataset: teacher vs plain vs aligned student
	$(BIN)/gbdt2nn distill

test: $(NOX)  ## the default nox sessions: lint, typecheck, core alone, each plugin alone, all, e2e grid, example plugin
	$(BIN)/nox $(NOXFLAGS)

lint: $(NOX)  ## ruff check + ruff format --check
	$(BIN)/nox -s lint

typecheck: $(NOX)  ## mypy --strict on the core, the plugins and the example
	$(BIN)/nox -s typecheck

clean:
	rm -rf $(VENV) .nox .pytest_cache .ruff_cache .mypy_cache
