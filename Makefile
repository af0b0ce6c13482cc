# keras-lottery: `make demo` and `make test` do all the set-up from nothing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
BACKENDS := tensorflow jax torch
EXTRAS := tensorflow,jax,torch,export,peer,plot,tensorboard,ray,data,test,docs,dev
PYTEST_ARGS ?=
# Two workers per backend (tests that start TensorFlow children overlap);
# a test file stays on one worker so its module fixtures are built once.
PYTEST_WORKERS ?= -n 2 --dist loadfile
# The suite compiles far more than it computes: XLA without its backend
# optimizations compiles faster (JAX's MobileNetV3Small zoo test: 77 -> 55 s).
# Tests only; benchmarks and the demo keep XLA's defaults.
TEST_XLA_FLAGS ?= --xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true

.PHONY: install demo test lint docs bench clean

# Reinstalls only when pyproject.toml changes (or the venv is missing).
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first and pinned, so no extra can pull a CUDA build.
	$(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $(STAMP)

install: $(STAMP)

# The main job; JAX (fastest on CPU here) unless KERAS_BACKEND says otherwise.
demo: $(STAMP)
	KERAS_BACKEND=$${KERAS_BACKEND:-jax} $(PY) -m keras_lottery.apps.demo

# The suite once per backend, each in its own process; one line per backend.
test: $(STAMP)
	@$(VENV)/bin/ruff check keras_lottery tests examples benchmarks
	@status=0; summary=""; \
	for backend in $(BACKENDS); do \
	  echo "=== KERAS_BACKEND=$$backend ==="; \
	  start=$$(date +%s); \
	  XLA_FLAGS="$(TEST_XLA_FLAGS) $$XLA_FLAGS" KERAS_BACKEND=$$backend $(PY) -m pytest -q -p no:cacheprovider $(PYTEST_WORKERS) --durations=10 $(PYTEST_ARGS) > .venv/test-$$backend.log 2>&1; \
	  rc=$$?; tail -n 25 .venv/test-$$backend.log; \
	  line=$$(grep -E "[0-9]+ (passed|failed|errors?)(,| in )" .venv/test-$$backend.log | tail -n 1); \
	  summary="$$summary\n$$backend: $$( [ $$rc -eq 0 ] && echo OK || echo FAILED ) ($$(( $$(date +%s) - start ))s) $$line"; \
	  [ $$rc -eq 0 ] || status=1; \
	done; \
	printf "\n=== summary ===$$summary\n"; \
	exit $$status

# The documentation site; broken links and missing references fail.
docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict --site-dir site

# Quick versions of every benchmark; each refreshes its table in docs/benchmarks.md.
bench: $(STAMP)
	$(PY) benchmarks/overhead.py --backend all --repeats 5
	$(PY) benchmarks/prune_step.py --quick --backend all
	$(PY) benchmarks/search_cost.py --quick --backend all
	KERAS_BACKEND=tensorflow $(PY) benchmarks/tflite.py --quick

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache demo_output deploy_output
