# SAMTune developer commands. Both targets create .venv and install what they need.
#   make demo   fine-tunes cpu_quick on synthetic phantoms, segments an unseen one, prints Dice before/after
#   make test   lint, type-check and the full test suite (CPU only, < 15 min on 2 cores)
#   make benchmark   the benchmark suite and docs/benchmarks.md (about 2 h on 2 cores; DATA=la_heart_dev folder)

VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.samtune-installed

.PHONY: demo test lint typecheck pytest benchmark clean

$(STAMP): requirements/dev.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements/dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/samtune demo

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

typecheck: $(STAMP)
	$(PY) -m mypy

pytest: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest --durations=15

test: lint typecheck pytest

# The benchmark suite (see benchmarks/README.md); DATA is the la_heart_dev folder, read in place.
DATA    ?= ../shared/data/la_heart_dev

benchmark: $(STAMP)
	$(PY) benchmarks/run_all.py --data $(DATA)

clean:
	rm -rf $(VENV) build *.egg-info
