# The project's commands: `make demo` (the quickstart on the embedded local platform), `make test` (everything CI runs).
# Tools go into a local virtualenv (.venv) so a fresh machine needs only Rust and Python 3.

VENV ?= .venv
PY := $(VENV)/bin/python
CARGO ?= cargo

.PHONY: demo test test-rust test-python test-stress develop lint fmt bench clean-venv

$(VENV)/.tools: requirements-dev.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements-dev.txt
	touch $@

# The extension, built once in release mode into the virtualenv.
develop: $(VENV)/.tools
	$(VENV)/bin/maturin develop --release -q

demo: develop
	$(VENV)/bin/inferencekey local exec -- $(PY) examples/quickstart.py

test-rust:
	$(CARGO) test --workspace --exclude inferencekey-py

test-python: develop
	$(PY) -m pytest -q tests

test: test-rust test-python

# Both suites STRESS_RUNS times while every core is kept busy: a test that passes on timing luck fails here.
STRESS_RUNS ?= 5
test-stress: develop
	STRESS_RUNS=$(STRESS_RUNS) CARGO=$(CARGO) PY=$(PY) scripts/stress.sh

lint: $(VENV)/.tools
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(VENV)/bin/ruff check python tests examples benches
	$(VENV)/bin/ruff format --check python tests examples benches
	$(VENV)/bin/mypy
	$(PY) -m mypy.stubtest inferencekey._core

fmt: $(VENV)/.tools
	$(CARGO) fmt --all
	$(VENV)/bin/ruff format python tests examples benches

# The client benchmarks (benches/README.md): the peers, the Rust floor (a release example of inferencekey-core),
# then one run of every scenario. `make bench BENCH_ARGS=--quick` for a smoke run; `--json FILE` keeps the numbers.
BENCH_ARGS ?=
bench: develop
	$(VENV)/bin/pip install -q -r benches/requirements.txt
	$(CARGO) build --release -p inferencekey-core --example bench_floor
	$(PY) benches/run.py $(BENCH_ARGS)

clean-venv:
	rm -rf $(VENV)
