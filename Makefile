# Set-up: `make demo` (install + end-to-end demo) and `make test` (install + tests).
# The CPU torch wheel is pinned here; GPU users: create .venv, install their CUDA torch first, then `make install`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
TORCH  ?= torch==2.13.0
# nnU-Net (rsuper[nnunet]) lives in a second venv: nnunetv2 -> timm -> torchvision, and PyPI's torchvision does not
# import beside the CPU torch 2.13.0 above; 2.14.1 + 0.29.1 do (docs/nnunet.md). tests/nnunet runs nnU-Net from it.
NNUNET_VENV  ?= .venv-nnunet
NNUNET_TORCH ?= torch==2.14.1 torchvision==0.29.1

.PHONY: install nnunet demo test bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

install: $(PY)
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[test]"

nnunet: $(NNUNET_VENV)/bin/nnUNetv2_train

$(NNUNET_VENV)/bin/nnUNetv2_train: pyproject.toml
	$(PYTHON) -m venv $(NNUNET_VENV)
	$(NNUNET_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(NNUNET_VENV)/bin/python -m pip install --quiet $(NNUNET_TORCH)
	$(NNUNET_VENV)/bin/python -m pip install --quiet -e ".[nnunet]" $(NNUNET_TORCH)
	touch $@

demo: install
	$(VENV)/bin/rsuper demo --out demo_out

test: install nnunet
	RSUPER_NNUNET_BIN="$(abspath $(NNUNET_VENV))/bin" $(PY) -m pytest -q

clean:
	rm -rf $(VENV) $(NNUNET_VENV) demo_out .pytest_cache
