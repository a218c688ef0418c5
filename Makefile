# Two commands on a fresh machine: `make demo` and `make test` (each creates .venv if missing).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# The CPU wheel by default; set TORCH="torch" (or a CUDA index) to keep your own build.
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed

.PHONY: setup test test-all demo clean-demo

setup: $(STAMP)

# the library (code/cogrnet) is installed editable: the scripts and tests import it as is
$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q -e .
	@touch $(STAMP)

test: setup
	$(PY) -m pytest -q tests

test-all: setup
	$(PY) -m pytest -q -m "" tests

DEMO := model/demo
demo: setup
	$(PY) code/make_phantom.py --out_dir data/phantom --n_train 16 --n_test 4 --seed 0
	$(PY) code/utils/registration.py --dataset phantom --root_path data/phantom --split train \
	    --labelnum 4 --out_dir $(DEMO)/coarse --workers 2
	$(PY) code/train.py --dataset phantom --root_path data/phantom --coarse_dir $(DEMO)/coarse \
	    --exp demo --labelnum 4 --n_filters 8 --device cpu
	$(PY) code/test.py --dataset phantom --root_path data/phantom --split test \
	    --checkpoint $(DEMO)/best.pth --overlap 0.5 --out_dir $(DEMO)/test

clean-demo:
	rm -rf $(DEMO) data/phantom
