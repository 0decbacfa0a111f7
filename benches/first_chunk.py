"""Time to the first chunk of the SDK's own streams: sync, on asyncio's loop and on uvloop, taking turns against one
bench-mode local platform; then the wall time of sequential unary chats in the same three ways, for the loop's round
trip. Not part of `make bench`, which times the first chunk against a raw socket; this isolates what the loop adds.

    .venv/bin/python benches/first_chunk.py [--streams 400]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections.abc import Callable

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from run import platform_process

from inferencekey import AsyncDataClient, Backend, DataClient, ManagementClient, WorkloadSpec

TOKENS = 26
UNARY = 500


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=400, help="streams per leg (the median is printed)")
    args = parser.parse_args()
    import uvloop

    with platform_process(dict(os.environ)) as lp:
        lp.admin("PUT", "/_local/defaults", {"readiness": "immediate", "bench": True})
        with ManagementClient(base_url=lp.url, sdk_token=lp.sdk_token, project=lp.project) as mgmt:
            spec = WorkloadSpec(name="first", slug="first", model="m", backend=Backend.VLLM)
            slug = mgmt.ensure(spec).workload_slug
        endpoint = DataClient(base_url=lp.url, project=lp.project, api_key=lp.api_key).endpoint(slug)
        aendpoint = AsyncDataClient(base_url=lp.url, project=lp.project, api_key=lp.api_key).endpoint(slug)

        def sync_first() -> float:
            started, first = time.perf_counter(), 0.0
            with endpoint.generate_text_stream(prompt="first", max_tokens=TOKENS) as stream:
                for chunk in stream:
                    if chunk.text and not first:
                        first = time.perf_counter() - started
            return first

        async def async_first() -> float:
            started, first = time.perf_counter(), 0.0
            async with await aendpoint.generate_text_stream(prompt="first", max_tokens=TOKENS) as stream:
                async for chunk in stream:
                    if chunk.text and not first:
                        first = time.perf_counter() - started
            return first

        async def async_unary() -> float:
            started = time.perf_counter()
            for _ in range(UNARY):
                await aendpoint.generate_text(prompt="first", max_tokens=16)
            return (time.perf_counter() - started) / UNARY

        def sync_unary() -> float:
            started = time.perf_counter()
            for _ in range(UNARY):
                endpoint.generate_text(prompt="first", max_tokens=16)
            return (time.perf_counter() - started) / UNARY

        loops = {"asyncio": asyncio.new_event_loop(), "uvloop": uvloop.new_event_loop()}
        legs: dict[str, Callable[[], float]] = {"sync": sync_first}
        for name, loop in loops.items():
            legs[name] = lambda loop=loop: loop.run_until_complete(async_first())  # type: ignore[misc]
        seen: dict[str, list[float]] = {name: [] for name in legs}
        for leg in legs.values():  # warm: connections, caches
            leg()
        for _ in range(args.streams):
            for name, leg in legs.items():
                seen[name].append(leg())
        unary = {"sync": sync_unary(), **{name: loop.run_until_complete(async_unary()) for name, loop in loops.items()}}
        for loop in loops.values():
            loop.close()
    print(f"{'':10}{'first chunk (median)':>22}{'unary chat (wall)':>20}")
    for name, values in seen.items():
        print(f"{name:10}{statistics.median(values) * 1e6:>19.1f} µs{unary[name] * 1e6:>17.1f} µs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
