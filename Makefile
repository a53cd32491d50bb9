# attn-course: `make lab` opens the course, `make test` runs every test tier.
# Both set up .venv first (once; again when pyproject.toml or constraints.txt change).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
EXTRAS ?= dev,gpu,browser,grading,pretrained,site,slides
JOBS   ?= 2
# JupyterLab refuses to run as root without this flag (containers, CI).
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)
SUDO      := $(if $(filter 0,$(shell id -u)),,sudo)
# Tests run two workers on two cores: one math thread each, or they fight for the cores.
THREADS := OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
NBVAL  := --nbval-lax --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg

.PHONY: setup lab test lint release-check unit notebooks browser browser-deps sandbox-deps doctor clean \
        check learner-copy slides site

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "attn-course needs Python >= 3.10, found " + sys.version.split()[0])'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[$(EXTRAS)]"
	touch $(STAMP)

# Opens on README.md rendered (the syllabus links every notebook), with the course's
# JupyterLab settings from attn_course/lab_settings/ (no news prompt); see attn_course/lab.py.
lab: setup
	$(BIN)/attn-course lab -- $(ROOT_FLAG)

doctor: setup
	$(BIN)/attn-course doctor

lint: setup
	$(BIN)/ruff check .

# The grader runs learners' code in a bubblewrap sandbox. CI installs it; on your machine
# `make sandbox-deps` does (apt-get); without it the attack suite is skipped and says so.
unit: setup
	@if ! command -v bwrap >/dev/null && [ "$$CI" = "true" ]; then $(MAKE) sandbox-deps; fi
	@command -v bwrap >/dev/null || echo "grading attack suite SKIPPED: no bubblewrap; run 'make sandbox-deps' (apt-get install bubblewrap)"
	$(THREADS) $(BIN)/python -m pytest -n $(JOBS) tests --ignore=tests/browser

sandbox-deps:
	$(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap

notebooks: setup
	$(THREADS) $(BIN)/python -m pytest -n $(JOBS) --dist loadscope $(NBVAL) notebooks solutions exercises

# The browser tier needs Debian's chromium. CI installs it; on your machine
# `make browser-deps` does (it uses apt-get, so it asks for root); without it the tier
# is skipped and says so.
browser: setup
	@if [ ! -x "$${CHROMIUM:-/usr/bin/chromium}" ] && [ "$$CI" = "true" ]; then $(MAKE) browser-deps; fi
	@if [ ! -x "$${CHROMIUM:-/usr/bin/chromium}" ]; then echo "browser tests SKIPPED: no chromium; run 'make browser-deps' (apt-get install chromium)"; fi
	$(BIN)/python -m pytest -p no:xdist tests/browser

browser-deps:
	$(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

# The course as a static website in build/site/ (open build/site/index.html; any static
# host serves it): the committed notebooks with their outputs, nothing run, nothing
# downloaded. Sphinx's warnings (a broken link, a missing page) are printed.
# SITE_DIR: where it goes (the browser test builds into a temporary folder with this target).
SITE_DIR ?= build/site
site: setup
	$(BIN)/python -m sphinx -E -q -b html -j $(JOBS) -c site -d $(SITE_DIR)-doctrees . $(SITE_DIR)
	@echo "website: $(SITE_DIR)/index.html"

# Each lecture as a reveal.js slideshow in build/slides/ (open NN_*.slides.html; S opens
# the speaker notes); reveal.js and MathJax are copied next to the decks: works offline.
slides: setup
	$(BIN)/attn-course slides --out build/slides

# exercises/ is generated from solutions/ by `attn-course release`; it must not be stale.
release-check: setup
	$(BIN)/attn-course release --check

ifneq ($(wildcard solutions tests),)
test: lint release-check unit notebooks browser
else
test:
	@echo "This is a learner's copy of the course: it has no tests or solutions. The full course repository runs them with 'make test'."
endif

# A learner's self-check from the shell: make check NB=exercises/02_softmax.ipynb
# (the usage first: without NB nothing is installed)
check:
	@test -n "$(NB)" || { echo "usage: make check NB=exercises/02_softmax.ipynb"; exit 2; }
	@$(MAKE) --no-print-directory setup
	$(BIN)/attn-course check $(NB)

# What a class receives: the committed course without solutions/ (answers and hidden
# tests), tests/, CI and the instructors' guide. Push DEST to its own repository and hand
# that out.
learner-copy:
	@test -n "$(DEST)" || { echo "usage: make learner-copy DEST=../attn-course-learners"; exit 2; }
	@test ! -e "$(DEST)" || { echo "$(DEST) exists: choose a new folder"; exit 2; }
	mkdir -p $(DEST)
	git archive HEAD | tar -x -C $(DEST)
	rm -rf $(DEST)/solutions $(DEST)/tests $(DEST)/.ci $(DEST)/docs/instructors.md
	@echo "wrote $(DEST) from commit $$(git rev-parse --short HEAD) (uncommitted changes are not in it)"

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

# On a machine with a CUDA GPU: lecture 09's gpu tests and GPU benchmark, every output
# written to OUT. Uses that machine's own python, torch and triton (no setup, no venv).
OUT ?= gpu-check
.PHONY: gpu-check
gpu-check:
	PYTHON=$(PYTHON) bash benchmarks/gpu_check.sh $(OUT)
