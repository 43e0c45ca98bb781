# Set-up: `make demo` (install + end-to-end demo) and `make test` (install + tests).
# The CPU torch wheel is pinned here; GPU users: create .venv, install their CUDA torch first, then `make install`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
TORCH  ?= torch==2.13.0

.PHONY: install demo test bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

install: $(PY)
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[test]"

demo: install
	$(VENV)/bin/rsuper demo --out demo_out

test: install
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) demo_out .pytest_cache
