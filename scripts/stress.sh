#!/usr/bin/env bash
# `make test-stress`: the Rust and Python suites, STRESS_RUNS times, while busy loops keep every core loaded, so a test
# that passes only on timing luck fails here. Reports every failure (run, suite, test names); exits 1 if any.
set -uo pipefail
cd "$(dirname "$0")/.."

runs="${STRESS_RUNS:-5}"
cargo="${CARGO:-cargo}"
python="${PY:-.venv/bin/python}"
logs="$(mktemp -d "${TMPDIR:-/tmp}/inferencekey-stress.XXXXXX")"
busy=()
failures=()

start_load() {
    local _
    for _ in $(seq "$(nproc)"); do
        (while :; do :; done) &
        busy+=("$!")
    done
}

# Runs on every exit (success, failure, Ctrl+C): the busy loops never outlive the script.
stop_load() {
    if ((${#busy[@]})); then
        kill "${busy[@]}" 2>/dev/null
        wait "${busy[@]}" 2>/dev/null
        busy=()
    fi
}
trap stop_load EXIT
trap 'echo "stress: interrupted" >&2; exit 130' INT TERM

# The failing tests of a cargo log, as `binary: test`.
rust_failures() {
    awk '/^ *Running .*\(/ { bin = $NF; gsub(/[()]/, "", bin); sub(/.*\//, "", bin); sub(/-[0-9a-f]+$/, "", bin) }
         /^ *Doc-tests / { bin = "doc-tests " $2 }
         / \.\.\. FAILED$/ { print bin ": " $2 }' "$1"
}

# The failing tests of a pytest log (its short summary), as `file::test`.
python_failures() {
    awk '/^(FAILED|ERROR) / { print $2 }' "$1"
}

# run_suite RUN NAME PARSER COMMAND...: runs one suite, records its failures.
run_suite() {
    local run="$1" name="$2" parser="$3"
    shift 3
    local log="$logs/run$run-$name.log" names
    if "$@" >"$log" 2>&1; then
        echo "stress: run $run/$runs: $name passed"
        return
    fi
    names="$("$parser" "$log")"
    names="${names:-(no failing test named: see the log)}"
    echo "stress: run $run/$runs: $name FAILED (log: $log)"
    while IFS= read -r line; do
        failures+=("run $run, $name: $line")
    done <<<"$names"
}

# Build before loading the machine: the stress is on the tests, not on the compiler.
"$cargo" test --workspace --exclude inferencekey-py --no-run >"$logs/build.log" 2>&1 || {
    echo "stress: the Rust tests do not build (log: $logs/build.log)" >&2
    exit 1
}

echo "stress: $runs runs with $(nproc) busy loops; logs in $logs"
start_load
for run in $(seq "$runs"); do
    run_suite "$run" rust rust_failures "$cargo" test --workspace --exclude inferencekey-py --no-fail-fast
    run_suite "$run" python python_failures "$python" -m pytest -q -rfE tests
done
stop_load

if ((${#failures[@]})); then
    echo "stress: ${#failures[@]} failure(s):"
    printf '  %s\n' "${failures[@]}"
    exit 1
fi
echo "stress: all $runs runs passed"
