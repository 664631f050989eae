# One virtual environment, installed from setup.cfg under requirements/constraints.txt.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# Test processes (pytest-xdist), one per core up to 4: the tests are tiny graphs whose time
# goes to Python and graph building, which one process runs on one core; each process holds its
# own TensorFlow, hence the cap. `make test PYTEST_WORKERS=0` runs in one process.
PYTEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 2); [ $$n -gt 4 ] && n=4; echo $$n)
# The backend-neutral suites that also run on Keras's JAX backend (JAX's CPU wheel): the
# contract over every registered name, the chunked kernels and the task models. (The byte-LM
# tests stay TensorFlow-only here for time: its layers are in the contract suite.)
JAX_TESTS ?= tests/layers/test_attention_contract.py tests/layers/test_nonfinite_contract.py tests/layers/test_chunked_attention.py tests/zoo/test_zoo.py

.PHONY: install lint format test test-mixed-precision-eigen test-jax test-all demo bench clean

install: $(STAMP)

# The stamp makes a second `make install` a no-op until the dependency files change.
$(STAMP): setup.cfg pyproject.toml requirements/constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c requirements/constraints.txt -e '.[test,jax]'
	touch $@

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

test: install lint
	$(PY) -m pytest -n $(PYTEST_WORKERS) -m "not slow" $(PYTEST_ARGS)
	$(MAKE) --no-print-directory test-mixed-precision-eigen
	$(MAKE) --no-print-directory test-jax

# The mixed-precision contract again with TensorFlow's oneDNN kernels off (the variable is read
# when TensorFlow is imported): bfloat16 and float16 then run through Eigen's kernels, which
# round differently, and which every CPU without AVX-512 uses anyway. The bounds must hold on
# both paths. (ONEDNN_MAX_CPU_ISA=AVX2 emulates such a CPU with oneDNN on.)
test-mixed-precision-eigen: install
	TF_ENABLE_ONEDNN_OPTS=0 $(PY) -m pytest -n $(PYTEST_WORKERS) -m "not slow" tests/layers/test_attention_contract.py -k mixed_precision $(PYTEST_ARGS)

# The layer contract, chunked and zoo suites again under KERAS_BACKEND=jax (TensorFlow-only
# tests skip themselves there, with the reason).
test-jax: install
	KERAS_BACKEND=jax $(PY) -m pytest -n $(PYTEST_WORKERS) -m "not slow" $(JAX_TESTS) $(PYTEST_ARGS)

test-all: install lint
	$(PY) -m pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

demo: install
	bash scripts/demo.sh

bench: install
	$(PY) -m benchmarks.efficiency
	$(PY) -m benchmarks.accuracy

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache demo_out
