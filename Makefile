# Two entry points on a fresh machine: `make demo` and `make test`. Each creates .venv if missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-ray lint bench goldens clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/lookalike demo

test: $(STAMP)
	$(PY) -m ruff check lookalike tests bench scripts examples
	$(PY) -m ruff format --check lookalike tests bench scripts examples
	$(PY) -m mypy lookalike
	$(PY) -m pytest -m "not ray"
	$(MAKE) test-ray

# The Ray tests start a real two-node cluster. Ray advertises the machine's own address whatever it
# is told, so they run in a network namespace with only loopback (after the run above has fetched
# the photos they use: nothing can be downloaded in there).
test-ray: $(STAMP)
	unshare -n sh -c 'ip link set lo up && exec $(PY) -m pytest -m ray'

bench: $(STAMP)
	$(PY) -m bench.encoder

# Reference outputs from torch + efficientnet-lite-pytorch, in a separate venv so that torch never
# enters .venv. TORCH pins the build: 2.13.0 is the CPU wheel this project's machines carry.
TORCH ?= torch==2.13.0
goldens: $(STAMP)
	test -x .venv-ref/bin/python || $(PYTHON) -m venv .venv-ref
	.venv-ref/bin/python -m pip install -q '$(TORCH)' efficientnet-lite-pytorch==0.1.0 -e .
	.venv-ref/bin/python scripts/make_goldens.py

clean:
	rm -rf $(VENV) .venv-ref .pytest_cache .mypy_cache .ruff_cache
