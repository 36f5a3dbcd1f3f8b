# Quick start:  make demo  (set up + distil the bundled adult dataset)   ·   make test  (set up + run the tests)
# Everything installs into .venv from the pinned constraints.txt (CPU torch), core and plugins in editable mode.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PLUGINS := $(sort $(wildcard plugins/gbdt2nn-*))
STAMP  := $(VENV)/.installed

.PHONY: demo test lint setup clean

$(STAMP): pyproject.toml constraints.txt $(addsuffix /pyproject.toml,$(PLUGINS))
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt torch==2.13.0
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt \
		-e . $(addprefix -e ,$(PLUGINS)) pytest captum pyarrow ruff
	touch $(STAMP)

setup: $(STAMP)  ## create .venv with the core, every plugin and the test tools

demo: $(STAMP)  ## distil the bundled adult dataset: teacher vs plain vs aligned student
	$(BIN)/gbdt2nn distill

lint: $(STAMP)
	$(BIN)/ruff check gbdt2nn_core plugins tests scripts

test: $(STAMP)  ## lint, then the test suites of the core and of every plugin
	$(BIN)/ruff check gbdt2nn_core plugins tests scripts
	GBDT2NN_STRICT_PLUGINS=1 $(BIN)/python -m pytest tests $(addsuffix /tests,$(PLUGINS)) -q

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
