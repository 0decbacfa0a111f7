"""Soak: thousands of chat streams against the local platform, and a check that the client process does not leak.

`make soak` (or `.venv/bin/python scripts/soak.py [--streams N] [--seconds S]`). The platform runs in a child process
(`inferencekey local serve` on 127.0.0.1), so what is measured is the SDK alone. Rounds of a fixed mix run until
`--streams` streams or `--seconds` have passed, whichever comes first:

- sync streams read fully, broken early (`break` out of a `with`, `close()`, or dropped unclosed), on one client
  shared by `--threads` threads;
- async streams read fully, broken early, and cancelled (the task cancelled mid-stream);
- injected faults, each on a workload of its own so that concurrent requests do not steal them: connection reset,
  a mid-stream stall longer than the client's read timeout, truncation, an in-band error, and a 503 with
  `Retry-After: 0` on half the requests (retried by a client with `max_retries=3`);
- once per round, a forked child that uses the parent's clients (sync and async) and must exit cleanly.

Each outcome must be the one its scenario expects (a full reply, or the specific exception); anything else fails the
run. After the warm-up rounds the process's RSS, open file descriptors (/proc/self/fd) and threads (/proc/self/status)
are sampled after every round; the run fails (exit 1) when one grows past its tolerance between the first sample and
the end, or when closing the sync clients does not bring the open fds back to where they started (the tolerances are
printed with the summary). Every loop is bounded in count and time; only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import faulthandler
import gc
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from statistics import median
from typing import Any

from inferencekey import (
    ApiConnectionError,
    ApiError,
    ApiTimeoutError,
    AsyncDataClient,
    DataClient,
)
from inferencekey.testing import LocalAdmin

PROMPT = "Hola, ¿qué tal? Cuéntame algo de 日本 🦀"
# Tolerances of the growth from the first samples after the warm-up to the last ones (medians of up to 5 each, since
# idle pooled connections come and go). 16 MB over the ~10 000 streams after the warm-up is a leak of about 1.5 KB
# per stream; fds and threads must stay within a pool's worth.
RSS_TOLERANCE_MB = 16.0
FD_TOLERANCE = 24
THREAD_TOLERANCE = 4
SAMPLES_PER_END = 5
# Once every sync client is closed: open fds beyond those at the start (the platform's pipe and the like).
CLOSED_FD_TOLERANCE = 4
# How long closed clients' sockets may take to close.
CLOSE_GRACE_S = 5.0
# Each fault scenario's workload and the exception it must end in (None: a full reply). A 503 on half the requests
# is retried 3 times: a reply, or (1 time in 16) the ApiError of the last 503.
FAULTS: dict[str, tuple[dict[str, Any], type[BaseException] | None]] = {
    "soak-reset": ({"type": "reset"}, ApiConnectionError),
    "soak-stall": ({"type": "stall", "at": "mid_stream", "ms": 1500}, ApiTimeoutError),
    "soak-truncate": ({"type": "truncate", "after_events": 2}, ApiError),
    "soak-inband": ({"type": "inband_error", "after_events": 2, "shape": "nested"}, ApiError),
    "soak-503": ({"type": "status", "status": 503, "retry_after": 0}, None),
}
BACKENDS = ["vllm", "llamacpp", "ollama", "sglang"]
# How long a forked child may take for its few streams.
FORK_DEADLINE = 60


class Platform:
    """The local platform in a child process (`inferencekey local serve`), with what LocalAdmin reads of it."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "inferencekey", "local", "serve", "--port", "0", "--seed", "11"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        ready = json.loads(self.process.stdout.readline())
        self.url: str = ready["url"]
        self.project: str = ready["project"]
        self.sdk_token: str = ready["sdk_token"]
        self.api_key: str = ready["api_key"]
        self.admin_token: str = ready["admin_token"]
        assert self.url.startswith("http://127.0.0.1:"), self.url

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@dataclass
class Sample:
    round: int
    streams: int
    seconds: float
    rss_mb: float
    fds: int
    threads: int


def sample(round_: int, streams: int, started: float) -> Sample:
    gc.collect()
    status = {}
    with open("/proc/self/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            status[name] = value.strip()
    return Sample(
        round=round_,
        streams=streams,
        seconds=time.monotonic() - started,
        rss_mb=int(status["VmRSS"].split()[0]) / 1024,
        fds=len(os.listdir("/proc/self/fd")),
        threads=int(status["Threads"]),
    )


@dataclass
class Tally:
    """Outcomes by scenario; `unexpected` lists what no scenario allows."""

    outcomes: Counter[str] = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, scenario: str, outcome: str, problem: str | None = None) -> None:
        with self.lock:
            self.outcomes[f"{scenario}: {outcome}"] += 1
            if problem is not None and len(self.unexpected) < 50:
                self.unexpected.append(f"{scenario}: {problem}")

    @property
    def streams(self) -> int:
        return sum(self.outcomes.values())


def allowed(scenario: str, err: BaseException, error: type[BaseException] | None) -> bool:
    if error is not None and isinstance(err, error):
        return True
    return scenario.endswith("soak-503") and isinstance(err, ApiError) and err.status_code == 503


def settle(
    tally: Tally, scenario: str, outcome: str | None, err: BaseException | None, error: type[BaseException] | None
) -> None:
    """Count how one scenario ended (`outcome`, or the exception `err`) against what it should do (`error`)."""
    if err is not None:
        problem = None if allowed(scenario, err, error) else f"{type(err).__name__}: {err}"
        tally.add(scenario, type(err).__name__, problem)
    elif error is not None:
        tally.add(scenario, str(outcome), f"ended {outcome!r}, expected {error.__name__}")
    else:
        tally.add(scenario, str(outcome))


def expect(tally: Tally, scenario: str, run: Callable[[], str], error: type[BaseException] | None) -> None:
    """Run one stream scenario and check its outcome: `run` returns how it ended, or raises."""
    try:
        outcome = run()
    except KeyboardInterrupt:
        raise
    except BaseException as err:
        settle(tally, scenario, None, err, error)
        return
    settle(tally, scenario, outcome, None, error)


# --- sync scenarios -------------------------------------------------------------------------------------------------


def read_fully(client: DataClient, slug: str) -> str:
    with client.endpoint(slug).generate_text_stream(prompt=PROMPT, max_tokens=12) as stream:
        chunks = list(stream)
    if not chunks or not any(c.finish_reason for c in chunks):
        raise AssertionError(f"stream of {len(chunks)} chunks without a finish")
    return "complete"


def break_in_with(client: DataClient, slug: str) -> str:
    with client.endpoint(slug).generate_text_stream(prompt=PROMPT) as stream:
        for i, _ in enumerate(stream):
            if i == 2:
                break
    return "broken (with)"


def close_early(client: DataClient, slug: str) -> str:
    stream = client.endpoint(slug).generate_text_stream(prompt=PROMPT)
    next(stream)
    stream.close()
    if list(stream):
        raise AssertionError("chunks after close()")
    return "closed"


def drop_unclosed(client: DataClient, slug: str) -> str:
    stream = client.endpoint(slug).generate_text_stream(prompt=PROMPT)
    next(stream)
    del stream  # garbage collection closes it
    return "dropped"


def sync_round(client: DataClient, retrying: DataClient, impatient: DataClient, tally: Tally, threads: int) -> None:
    jobs: list[Callable[[], None]] = []
    for backend in BACKENDS:
        for _ in range(6):
            jobs.append(lambda b=backend: expect(tally, "sync full", lambda: read_fully(client, b), None))
        jobs.append(lambda b=backend: expect(tally, "sync break", lambda: break_in_with(client, b), None))
        jobs.append(lambda b=backend: expect(tally, "sync close", lambda: close_early(client, b), None))
        jobs.append(lambda b=backend: expect(tally, "sync drop", lambda: drop_unclosed(client, b), None))
    for slug, (_, error) in FAULTS.items():
        # The stall is only seen by a client whose read timeout is shorter than it.
        chosen = impatient if slug == "soak-stall" else retrying if slug == "soak-503" else client
        for _ in range(2):
            jobs.append(lambda s=slug, c=chosen, e=error: expect(tally, f"sync {s}", lambda: read_fully(c, s), e))
    with ThreadPoolExecutor(threads) as pool:
        for future in [pool.submit(job) for job in jobs]:
            future.result()


# --- async scenarios ------------------------------------------------------------------------------------------------


async def aexpect(tally: Tally, scenario: str, run: Callable[[], Any], error: type[BaseException] | None) -> None:
    try:
        outcome = await run()
    except asyncio.CancelledError:
        raise
    except BaseException as err:
        settle(tally, scenario, None, err, error)
        return
    settle(tally, scenario, outcome, None, error)


async def aread_fully(client: AsyncDataClient, slug: str) -> str:
    stream = await client.endpoint(slug).generate_text_stream(prompt=PROMPT, max_tokens=12)
    async with stream:
        chunks = [chunk async for chunk in stream]
    if not chunks or not any(c.finish_reason for c in chunks):
        raise AssertionError(f"stream of {len(chunks)} chunks without a finish")
    return "complete"


async def abreak(client: AsyncDataClient, slug: str) -> str:
    stream = await client.endpoint(slug).generate_text_stream(prompt=PROMPT)
    async with stream:
        i = 0
        async for _ in stream:
            i += 1
            if i == 2:
                break
    return "broken"


async def acancelled(client: AsyncDataClient, tally: Tally) -> None:
    """A task reading a slow stream, cancelled mid-stream."""
    started = asyncio.Event()

    async def reader() -> None:
        stream = await client.endpoint("soak-slow").generate_text_stream(prompt=PROMPT)
        async with stream:
            async for _ in stream:
                started.set()

    task = asyncio.create_task(reader())
    try:
        await asyncio.wait_for(started.wait(), 10)
    except asyncio.TimeoutError:
        tally.add("async cancel", "no chunk", "no chunk within 10 s")
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        tally.add("async cancel", "cancelled")
    except BaseException as err:
        tally.add("async cancel", type(err).__name__, f"{type(err).__name__}: {err}")
    else:
        tally.add("async cancel", "finished", "the slow stream finished before the cancel")


async def async_round(tally: Tally, platform: Platform) -> None:
    # Clients made inside the loop they are used on; closed at the end of the round.
    client = AsyncDataClient(base_url=platform.url, project=platform.project, api_key=platform.api_key, max_retries=0)
    retrying = AsyncDataClient(base_url=platform.url, project=platform.project, api_key=platform.api_key, max_retries=3)
    impatient = AsyncDataClient(
        base_url=platform.url, project=platform.project, api_key=platform.api_key, max_retries=0, timeout=0.3
    )
    async with client, retrying, impatient:
        jobs = []
        for backend in BACKENDS:
            for _ in range(5):
                jobs.append(aexpect(tally, "async full", lambda b=backend: aread_fully(client, b), None))
            jobs.append(aexpect(tally, "async break", lambda b=backend: abreak(client, b), None))
        for _ in range(4):
            jobs.append(acancelled(client, tally))
        for slug, (_, error) in FAULTS.items():
            chosen = impatient if slug == "soak-stall" else retrying if slug == "soak-503" else client
            jobs.append(aexpect(tally, f"async {slug}", lambda s=slug, c=chosen: aread_fully(c, s), error))
        await asyncio.gather(*jobs)


# --- fork -----------------------------------------------------------------------------------------------------------


def forked_child(client: DataClient, platform: Platform, tally: Tally) -> None:
    """A child process that uses the parent's sync client and a new async one, then exits; must exit 0 in time."""
    pid = os.fork()
    if pid == 0:
        # A child that hangs shows where, before the parent kills it.
        faulthandler.dump_traceback_later(FORK_DEADLINE - 5, exit=True)
        code = 1
        try:
            for backend in BACKENDS:
                read_fully(client, backend)
                close_early(client, backend)
            async_tally = Tally()
            asyncio.run(async_child(platform, async_tally))
            code = 0 if not async_tally.unexpected else 3
        except BaseException as err:
            print(f"forked child: {type(err).__name__}: {err}", file=sys.stderr, flush=True)
            code = 2
        finally:
            os._exit(code)
    deadline = time.monotonic() + FORK_DEADLINE
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            code = os.waitstatus_to_exitcode(status)
            problem = None if code == 0 else f"child exited with {code}"
            tally.add("fork child", "exit 0" if code == 0 else f"exit {code}", problem)
            return
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    tally.add("fork child", "hung", f"the forked child did not finish within {FORK_DEADLINE} s")


async def async_child(platform: Platform, tally: Tally) -> None:
    async with AsyncDataClient(base_url=platform.url, project=platform.project, api_key=platform.api_key) as client:
        await aexpect(tally, "fork async", lambda: aread_fully(client, "vllm"), None)


# --- the run --------------------------------------------------------------------------------------------------------


def setup(platform: Platform) -> LocalAdmin:
    admin = LocalAdmin(platform)  # type: ignore[arg-type]  # it reads url, project and the tokens
    for backend in BACKENDS:
        admin.create_workload(backend, backend=backend)
    for slug, (fault, _) in FAULTS.items():
        admin.create_workload(slug)
        admin.fault("chat_stream", fault, workload=slug, count=None, **({"probability": 0.5} if "503" in slug else {}))
    admin.create_workload("soak-slow")
    admin.settings("soak-slow", ttft_ms=5, itl_ms=20)
    return admin


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=12000, help="stop after this many streams (default 12000)")
    parser.add_argument("--seconds", type=float, default=180, help="stop after this long (default 180)")
    parser.add_argument("--threads", type=int, default=8, help="threads sharing the sync client (default 8)")
    parser.add_argument("--warmup-rounds", type=int, default=3, help="rounds before the first sample (default 3)")
    args = parser.parse_args()

    platform = Platform()
    try:
        return soak(platform, args)
    finally:
        platform.stop()


def soak(platform: Platform, args: argparse.Namespace) -> int:
    admin = setup(platform)
    common = {"base_url": platform.url, "project": platform.project, "api_key": platform.api_key}
    client = DataClient(**common, max_retries=0)
    retrying = DataClient(**common, max_retries=3)
    impatient = DataClient(**common, max_retries=0, timeout=0.3)
    tally = Tally()
    samples: list[Sample] = []
    before = sample(0, 0, time.monotonic())
    started = time.monotonic()
    round_ = 0
    print(f"soak: up to {args.streams} streams or {args.seconds:.0f} s against {platform.url}", flush=True)
    while tally.streams < args.streams and time.monotonic() - started < args.seconds:
        round_ += 1
        sync_round(client, retrying, impatient, tally, args.threads)
        asyncio.run(async_round(tally, platform))
        forked_child(client, platform, tally)
        # The platform's journal is bounded, but clearing it keeps the child's memory flat too.
        admin.clear_journal()
        if round_ >= args.warmup_rounds:
            samples.append(sample(round_, tally.streams, started))
            last = samples[-1]
            print(
                f"  round {round_:3d}: {last.streams:6d} streams, {last.seconds:6.1f} s, RSS {last.rss_mb:6.1f} MB, "
                f"{last.fds:3d} fds, {last.threads:3d} threads",
                flush=True,
            )
    after = sample(round_, tally.streams, started)
    for c in (client, retrying, impatient):
        c.close()
    # A closed pool's sockets are shut by the runtime's tasks a moment later (later still on a loaded machine): wait
    # for them, within a bound that a real leak outlasts.
    deadline = time.monotonic() + CLOSE_GRACE_S
    closed = sample(round_, tally.streams, started)
    while closed.fds - before.fds > CLOSED_FD_TOLERANCE and time.monotonic() < deadline:
        time.sleep(0.05)
        closed = sample(round_, tally.streams, started)
    return report(tally, before, samples, after, closed)


def report(tally: Tally, before: Sample, samples: list[Sample], after: Sample, closed: Sample) -> int:
    print("\noutcomes")
    width = max(map(len, tally.outcomes), default=10)
    for name, count in sorted(tally.outcomes.items()):
        print(f"  {name:<{width}} {count:6d}")
    print(f"  {'total':<{width}} {tally.streams:6d}")
    failures = [f"unexpected outcome: {u}" for u in tally.unexpected]
    ends = min(SAMPLES_PER_END, len(samples) // 2)
    print(f"\nresources (baseline and end: medians of the first and the last {ends} samples after the warm-up)")
    print(f"  {'':<10} {'start':>9} {'baseline':>9} {'end':>9} {'growth':>9} {'tolerance':>10}")
    if ends < 1:
        failures.append(f"only {len(samples)} sample(s) after the warm-up: run longer (--streams/--seconds)")
    else:
        first, last = samples[:ends], samples[-ends:]

        def ends_of(metric: Callable[[Sample], float]) -> tuple[float, float]:
            return median(map(metric, first)), median(map(metric, last))

        rows = [
            ("RSS MB", before.rss_mb, *ends_of(lambda s: s.rss_mb), RSS_TOLERANCE_MB),
            ("fds", before.fds, *ends_of(lambda s: s.fds), FD_TOLERANCE),
            ("threads", before.threads, *ends_of(lambda s: s.threads), THREAD_TOLERANCE),
        ]
        for name, start, baseline, end, tolerance in rows:
            growth = end - baseline
            flag = "" if growth <= tolerance else "  <- too much"
            print(f"  {name:<10} {start:9.1f} {baseline:9.1f} {end:9.1f} {growth:+9.1f} {tolerance:10.1f}{flag}")
            if growth > tolerance:
                failures.append(f"{name} grew by {growth:.1f} after the warm-up (tolerance {tolerance})")
        # With every client closed, no connection of theirs may stay open.
        open_after_close = closed.fds - before.fds
        flag = "" if open_after_close <= CLOSED_FD_TOLERANCE else "  <- too many"
        print(f"  fds after closing the clients: {closed.fds} ({open_after_close:+d} on the start){flag}")
        if open_after_close > CLOSED_FD_TOLERANCE:
            failures.append(f"{open_after_close} more fds than at the start once every client is closed")
        measured = last[-1].streams - first[0].streams
        growth_kb = (rows[0][3] - rows[0][2]) * 1024
        per_stream = growth_kb / max(measured, 1)
        print(f"  RSS growth per stream after the warm-up: {per_stream:+.3f} KB over {measured} streams")
        print(f"\n{after.streams} streams in {after.seconds:.1f} s over {after.round} rounds")
    if failures:
        print("\nSOAK FAILED")
        for failure in failures:
            print(f"  {failure}")
        return 1
    print("soak passed")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
    sys.exit(130)
