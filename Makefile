# The README's commands. Every target sets up what it needs itself.
#   make test     set up .venv, fetch data, run the whole test suite (unit + notebooks + grading)
#   make report   the main job: run every lesson with papermill in $(PRESET), write figures/ and the table
#                 (WITH_CHECKPOINTS=1 adds lesson 07: downloads bert-base-chinese, a GPU is advised;
#                 RESUME=1 continues an interrupted run of the same commit where it stopped;
#                 runs whose inputs did not change come from the cache under runs/, FRESH=1 ignores it)
#   make ablations  the lessons' ablations in $(PRESET), added to the table (not part of make report)
#   make lab      your own copies of the lessons (student versions in lab/, never overwritten) in JupyterLab
#                 (SOLUTIONS=1 opens the instructor's notebooks/ with the solutions instead)
#   make student  write the student notebooks to build/student
#   make grade SUBMISSIONS=dir   grade a folder of submitted notebooks
#   make bench    speed and memory ratios (benchmarks/)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PRESET ?= small
# Where to read the corpora instead of the network (a folder holding the three public files).
NBLIB_DATA_MIRROR ?=
export NBLIB_DATA_MIRROR
# FRESH=1: ignore the cache of runs and pretraining checkpoints under runs/ (recompute everything, then overwrite it).
FRESH ?=
export NBLIB_FRESH = $(FRESH)
# Opt-in cap on each pretraining, in minutes, for slow laptops (empty: the whole character budget).
# A capped run says so in its record and the comparison marks its row "cut at N min".
MAX_PRETRAIN_MINUTES ?=
export NBLIB_MAX_PRETRAIN_MINUTES = $(MAX_PRETRAIN_MINUTES)

.PHONY: setup sandbox data test report ablations lab student grade bench lint lock

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -c constraints.txt -e '.[dev]'
	$(PY) -m ipykernel install --sys-prefix --name nblib --display-name "Python (nblib)" > /dev/null
	touch $@

setup: $(VENV)/.installed sandbox

# The grader runs each submission in a bubblewrap sandbox; install it where we may (root + apt).
sandbox:
	@command -v bwrap >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && apt-get update -qq && apt-get install -y -qq bubblewrap >/dev/null; } || echo "warning: bubblewrap (bwrap) is not installed: 'make grade' uses unshare + chroot as root, and otherwise stops (it never grades without a sandbox unless given --unsafe-no-sandbox)" >&2

data: setup
	$(PY) -m nblib.data fetch-all

test: data
	$(PY) -m ruff check nblib grader tests benchmarks notebooks
	$(PY) -m pytest -q

report: data
	$(PY) -m nblib.results.report run --preset $(PRESET) $(if $(WITH_CHECKPOINTS),--with-checkpoints) $(if $(RESUME),--resume)

# The lessons' ablations (frozen ELMo, GPT without its auxiliary LM loss, BERT's truncation study, the
# label counts the main job leaves out: preset.ablation_label_counts), then the table.
ablations: data
	$(PY) -m nblib.results.report ablations --preset $(PRESET)

lab: data
ifdef SOLUTIONS
	$(VENV)/bin/jupyter lab notebooks/
else
	$(PY) -m nblib.lab --dest lab
	$(VENV)/bin/jupyter lab lab/
endif

student: setup
	$(PY) -m grader student --out build/student

grade: data
	@test -n "$(SUBMISSIONS)" || (echo "usage: make grade SUBMISSIONS=path/to/folder" && exit 2)
	$(PY) -m grader grade "$(SUBMISSIONS)" --out build/grades

bench: data
	for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done

lint: setup
	$(PY) -m ruff check nblib grader tests benchmarks notebooks

# Rewrite constraints.txt from the current environment (what CI then installs).
lock: setup
	$(PY) -m pip freeze --exclude-editable | grep -v '^nblib' > constraints.txt
