# SAMTune developer commands. Both targets create .venv and install what they need.
#   make demo   fine-tune-free demo: zero-shot LiteMedSAM on a synthetic phantom, prints Dice
#   make test   lint, type-check and the full test suite (CPU only, < 15 min on 2 cores)

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
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest

test: lint typecheck pytest

benchmark: $(STAMP)
	mkdir -p benchmarks/results
	$(PY) benchmarks/bench_prediction.py --json benchmarks/results/prediction_cpu.json
	$(PY) benchmarks/bench_training.py --json benchmarks/results/training_cpu.json

clean:
	rm -rf $(VENV) build *.egg-info
