"""A/B of two builds of the SDK on the paths a change can move: client CPU per chunk of one long stream, per chunk of
short streams, and per sequential unary chat. Each build runs in its own interpreter (a venv with that build
installed), in alternating rounds against one bench-mode local platform, so drift on a shared machine hits both alike.

    .venv/bin/python benches/ab.py /tmp/venv-before/bin/python .venv/bin/python [--rounds 4]

Prints one line per round and leg, then the medians. Not part of `make bench`, which compares the SDK with its peers;
this compares the SDK with itself (benches/README.md records what each change cost or bought).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from typing import Any

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from run import Platform, platform_process

from inferencekey import Backend, ManagementClient, WorkloadSpec

# Runs in the build under test: prints the median client CPU (µs) per unit of each leg.
MEASURE = r"""
import json, sys, time
from inferencekey import DataClient

url, project, key, slug, repeats = sys.argv[1:6]
ep = DataClient(base_url=url, project=project, api_key=key).endpoint(slug)

def stream(tokens):
    with ep.generate_text_stream(prompt="x", max_tokens=tokens) as chunks:
        for chunk in chunks:
            chunk.text

def long_stream():
    stream(20000)

def short_streams():
    for _ in range(200):
        stream(26)

def unary():
    for _ in range(500):
        ep.generate_text(prompt="x", max_tokens=16)

def cpu_per_unit(run, units):
    run()  # warm: connections, caches
    samples = []
    for _ in range(int(repeats)):
        started = time.process_time()
        run()
        samples.append((time.process_time() - started) / units * 1e6)
    return sorted(samples)[len(samples) // 2]

print(json.dumps({
    "long stream, per chunk": cpu_per_unit(long_stream, 20000),
    "26-chunk streams, per chunk": cpu_per_unit(short_streams, 200 * 26),
    "unary chat, per request": cpu_per_unit(unary, 500),
}))
"""


def measure(python: str, lp: Platform, slug: str, repeats: int) -> dict[str, float]:
    done = subprocess.run(
        [python, "-c", MEASURE, lp.url, lp.project, lp.api_key, slug, str(repeats)],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, float] = json.loads(done.stdout)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("before", help="the interpreter of build A (before)")
    parser.add_argument("after", help="the interpreter of build B (after)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5, help="runs per leg per round (the median is kept)")
    args = parser.parse_args()
    results: dict[str, dict[str, list[float]]] = {"before": {}, "after": {}}
    import os

    with platform_process(dict(os.environ)) as lp:
        lp.admin("PUT", "/_local/defaults", {"readiness": "immediate", "bench": True})
        with ManagementClient(base_url=lp.url, sdk_token=lp.sdk_token, project=lp.project) as mgmt:
            slug = mgmt.ensure(WorkloadSpec(name="ab", slug="ab", model="m", backend=Backend.VLLM)).workload_slug
        for round_ in range(args.rounds):
            # Alternate which build goes first, so neither always runs on a warmer machine.
            order = ["before", "after"] if round_ % 2 == 0 else ["after", "before"]
            for name in order:
                python = args.before if name == "before" else args.after
                measured = measure(python, lp, slug, args.repeats)
                for leg, value in measured.items():
                    results[name].setdefault(leg, []).append(value)
                shown = ", ".join(f"{leg} {value:.2f} µs" for leg, value in measured.items())
                print(f"round {round_ + 1} {name}: {shown}", flush=True)
    print()
    for leg in results["before"]:
        before, after = statistics.median(results["before"][leg]), statistics.median(results["after"][leg])
        print(f"{leg}: before {before:.2f} µs, after {after:.2f} µs ({(after / before - 1) * 100:+.1f}%)")
    summary: dict[str, Any] = {
        name: {leg: statistics.median(values) for leg, values in legs.items()} for name, legs in results.items()
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
