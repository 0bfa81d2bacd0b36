# Two entry points on a fresh machine: `make demo` and `make test`. Each creates .venv if missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# One venv for both: `demo` installs the package and what it runs on, `test` adds the test extras
# on top (scripts/install-venv.sh: uv when it can, else pip; nothing installed twice).
DEMO_STAMP := $(VENV)/.installed-demo
TEST_STAMP := $(VENV)/.installed-test

.PHONY: demo test test-ray lint bench goldens clean

$(DEMO_STAMP): pyproject.toml
	sh scripts/install-venv.sh $(PYTHON) $(VENV) .
	touch $@

$(TEST_STAMP): pyproject.toml
	sh scripts/install-venv.sh $(PYTHON) $(VENV) '.[test]'
	touch $@ $(DEMO_STAMP)

demo: $(DEMO_STAMP)
	$(VENV)/bin/lookalike demo

test: $(TEST_STAMP)
	$(PY) -m ruff check lookalike tests bench scripts examples
	$(PY) -m ruff format --check lookalike tests bench scripts examples
	$(PY) -m mypy lookalike
	$(PY) -m pytest -m "not ray"
	$(MAKE) test-ray

# The Ray tests start a real two-node cluster. Ray advertises the machine's own address whatever it
# is told, so they run in a network namespace with only loopback (after the run above has fetched
# the photos they use: nothing can be downloaded in there).
test-ray: $(TEST_STAMP)
	unshare -n sh -c 'ip link set lo up && exec $(PY) -m pytest -m ray'

bench: $(TEST_STAMP)
	$(PY) -m bench.encoder

# Reference outputs from torch + efficientnet-lite-pytorch, in a separate venv so that torch never
# enters .venv. TORCH pins the build: 2.13.0 is the CPU wheel this project's machines carry.
TORCH ?= torch==2.13.0
goldens: $(TEST_STAMP)
	test -x .venv-ref/bin/python || $(PYTHON) -m venv .venv-ref
	.venv-ref/bin/python -m pip install -q '$(TORCH)' efficientnet-lite-pytorch==0.1.0 -e .
	.venv-ref/bin/python scripts/make_goldens.py

clean:
	rm -rf $(VENV) .venv-ref .pytest_cache .mypy_cache .ruff_cache
