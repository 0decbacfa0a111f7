#!/usr/bin/env bash
# `make fuzz`: every fuzz target of fuzz/ for FUZZ_SECONDS each (default 60), then the Python harness of the
# Python-to-JSON conversion (fuzz/python/). See fuzz/README.md. Exits 1 if any target found a failure; its input is
# in fuzz/artifacts/<target>/ and the log in fuzz/work/<target>.log.
#
#   FUZZ_SECONDS=300 make fuzz               # longer
#   FUZZ_TARGETS="sse manifest" make fuzz    # a subset (the Python harness is the target "python")
#   FUZZ_PY_ARGS=--no-deep make fuzz         # the Python harness without deep nesting and cycles
#
# On the stable toolchain: libFuzzer's coverage needs only `-C passes=sancov-module` and `-C llvm-args=...`, which
# stable rustc accepts; AddressSanitizer needs the unstable `-Z sanitizer`, so the targets run with `-s none` (the
# code under test has no `unsafe`, so ASan would have nothing to add; panics, overflow checks and debug assertions
# are what catch bugs here). No nightly and no RUSTC_BOOTSTRAP are needed.
set -euo pipefail
cd "$(dirname "$0")/.."

FUZZ_SECONDS=${FUZZ_SECONDS:-60}
FUZZ_TARGETS=${FUZZ_TARGETS:-sse chat_chunk chat_stream workload_list error_body manifest python}
FUZZ_PY_ARGS=${FUZZ_PY_ARGS:-}
VENV=${VENV:-.venv}
CARGO=${CARGO:-cargo}
CARGO_FUZZ_VERSION=0.13.2
TOOLS=fuzz/.cargo-root

# cargo-fuzz, installed from crates.io into fuzz/.cargo-root (gitignored) the first time.
if ! "$TOOLS/bin/cargo-fuzz" --version 2>/dev/null | grep -qF "$CARGO_FUZZ_VERSION"; then
    echo "== installing cargo-fuzz $CARGO_FUZZ_VERSION into $TOOLS"
    "$CARGO" install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked --root "$TOOLS"
fi
export PATH="$PWD/$TOOLS/bin:$PATH"
# The fuzz build has RUSTFLAGS of its own (coverage instrumentation): in a shared target dir it would evict the
# normal build's artifacts and the other way round, so it always builds into fuzz/target. The extension for the
# Python harness is a normal build and keeps the caller's CARGO_TARGET_DIR.
SHARED_TARGET_DIR=${CARGO_TARGET_DIR:-}
unset CARGO_TARGET_DIR
FUZZ=(fuzz)
FLAGS=(--fuzz-dir fuzz -s none --target-dir fuzz/target)

dict_of() {
    case $1 in
        sse | chat_stream) echo fuzz/dicts/sse.dict ;;
        manifest) echo fuzz/dicts/toml.dict ;;
        *) echo fuzz/dicts/json.dict ;;
    esac
}

rust_targets=()
for target in $FUZZ_TARGETS; do
    [[ $target == python ]] || rust_targets+=("$target")
done
if ((${#rust_targets[@]})); then
    echo "== building the fuzz targets (fuzz/target)"
    "$CARGO" "${FUZZ[@]}" build "${FLAGS[@]}"
fi

mkdir -p fuzz/work
failed=()
summary=()
for target in $FUZZ_TARGETS; do
    log=fuzz/work/$target.log
    echo "== $target: ${FUZZ_SECONDS}s (log: $log)"
    if [[ $target == python ]]; then
        mkdir -p fuzz/work/corpus/python fuzz/artifacts/python
        # The extension as a debug build (overflow checks and debug assertions on), and atheris.
        if [[ ! -x $VENV/bin/python ]]; then
            python3 -m venv "$VENV"
            "$VENV/bin/pip" install -q -r requirements-dev.txt
        fi
        "$VENV/bin/pip" install -q -r fuzz/python/requirements.txt
        CARGO_TARGET_DIR=${SHARED_TARGET_DIR:-$PWD/target} "$VENV/bin/maturin" develop -q
        set +e
        # shellcheck disable=SC2086 # FUZZ_PY_ARGS is a list of flags
        "$VENV/bin/python" fuzz/python/fuzz_json.py $FUZZ_PY_ARGS -max_total_time="$FUZZ_SECONDS" -timeout=30 \
            -rss_limit_mb=4096 -print_final_stats=1 -artifact_prefix=fuzz/artifacts/python/ \
            fuzz/work/corpus/python >"$log" 2>&1
        status=$?
        set -e
        # Killed by a signal (a stack overflow leaves libFuzzer no chance to save the input): keep the input the
        # harness recorded before running it.
        if ((status > 128)) && [[ -s fuzz/artifacts/python/last-input ]]; then
            crash=fuzz/artifacts/python/crash-signal-$(sha1sum fuzz/artifacts/python/last-input | cut -c1-40)
            cp fuzz/artifacts/python/last-input "$crash"
            echo "killed by signal $((status - 128)); input: $crash" >>"$log"
        fi
    else
        mkdir -p "fuzz/work/corpus/$target"
        set +e
        # New inputs go to the first corpus directory (fuzz/work, gitignored); the committed seeds are only read.
        "$CARGO" "${FUZZ[@]}" run "${FLAGS[@]}" "$target" "fuzz/work/corpus/$target" "fuzz/corpus/$target" -- \
            -max_total_time="$FUZZ_SECONDS" -dict="$(dict_of "$target")" -timeout=10 -rss_limit_mb=2048 \
            -print_final_stats=1 >"$log" 2>&1
        status=$?
        set -e
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | cut -d' ' -f2)
    if ((status == 0)); then
        result=ok
    else
        result=FAILED
        failed+=("$target")
        echo "-- $target failed (exit $status); the end of $log:"
        grep -vE '^(#[0-9]+|INFO:|\s+[0-9]+:|\s+at )' "$log" | tail -25
    fi
    summary+=("$(printf '%-14s %6ss %12s %10s %8s  %s' "$target" "$FUZZ_SECONDS" "${runs:-?}" "${rate:-?}" "${cov:-?}" "$result")")
done

echo
printf '%-14s %7s %12s %10s %8s  %s\n' target time runs runs/s cov result
printf '%s\n' "${summary[@]}"
if ((${#failed[@]})); then
    echo
    echo "fuzzing found failures in: ${failed[*]} (inputs in fuzz/artifacts/<target>/; reproduce with"
    echo "  fuzz/.cargo-root/bin/cargo-fuzz run -s none --fuzz-dir fuzz --target-dir fuzz/target <target> <input>"
    echo "  or, for python, $VENV/bin/python fuzz/python/fuzz_json.py <input>)"
    exit 1
fi
