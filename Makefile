# attn-course: `make lab` opens the course, `make test` runs every test tier.
# Both set up .venv first (once; again when pyproject.toml or constraints.txt change).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
EXTRAS ?= dev,gpu
JOBS   ?= 2
# JupyterLab refuses to run as root without this flag (containers, CI).
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)
NBVAL  := --nbval-lax --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg

.PHONY: setup lab test lint unit notebooks doctor clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "attn-course needs Python >= 3.10, found " + sys.version.split()[0])'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[$(EXTRAS)]"
	touch $(STAMP)

lab: setup
	$(BIN)/jupyter lab $(ROOT_FLAG) --ServerApp.root_dir=. notebooks/01_similarity.ipynb

doctor: setup
	$(BIN)/attn-course doctor

lint: setup
	$(BIN)/ruff check .

unit: setup
	$(BIN)/python -m pytest -n $(JOBS) tests

notebooks: setup
	$(BIN)/python -m pytest -n $(JOBS) --dist loadscope $(NBVAL) notebooks

test: lint unit notebooks

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
