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
	@echo ""
	@echo "What ran: 16 synthetic training phantoms (data/phantom), the first 4 with two painted"
	@echo "slices each, turned into 3D coarse labels (model/demo/coarse, pictures in its png/);"
	@echo "CoGRNet trained on those 4 coarse labels and 10 unlabeled phantoms (model/demo: log.txt,"
	@echo "metrics.jsonl, tb/ for TensorBoard); best.pth is the weights with the best validation Dice,"
	@echo "scored during training on the last 2 training phantoms (never trained on); the table above"
	@echo "scores best.pth on the 4 test phantoms (data/phantom/test.list), other cases than the"
	@echo "validation ones, so its Dice differs from the validation Dice in the log."
	@echo "Per-case numbers: model/demo/test/per_case.csv and summary.json."

clean-demo:
	rm -rf $(DEMO) data/phantom
