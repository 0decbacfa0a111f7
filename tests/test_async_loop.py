# Async requests (chat, embeddings, rerank, and streams with their batches) run on the event loop's own thread over a
# plain http:// base URL: no I/O thread is started, the loop watches the socket, and every guarantee of the runtime
# path holds there too: timeouts, retries with their backoff, cancellation closing the connection, loops in many
# threads sharing one client, large answers read across many wake-ups, and streams read as the sync ones are. Every
# test runs on asyncio's own loop and on uvloop (what uvicorn runs web servers on where it is installed): the SDK's
# poller is one descriptor either loop watches.
from __future__ import annotations

import asyncio
import errno
import gc
import os
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import pytest
from conftest import (
    ENDLESS_MS,
    HANG_GUARD,
    PROMPT,
    STREAM_BACKENDS,
    Admin,
    Deploy,
    child_env,
    run_python,
    unused_port,
)
from test_threads import (
    connections_to,
    ctrl_c_during_a_stalled_call_closes_its_connection,
    ctrl_c_mid_stream_closes_the_connection,
)

from inferencekey import (
    ApiConnectionError,
    ApiTimeoutError,
    AsyncDataClient,
    DataClient,
    RateLimitError,
    TextResult,
    _aio,
)
from inferencekey.local import LocalPlatform

_T = TypeVar("_T")

# The loops every test runs on. uvloop is a test dependency wherever it builds (not on Windows), so a missing one
# fails here rather than skipping half the module.
LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {"asyncio": asyncio.new_event_loop}
if sys.platform != "win32":
    import uvloop

    LOOPS["uvloop"] = uvloop.new_event_loop

new_loop = asyncio.new_event_loop


@pytest.fixture(autouse=True, params=sorted(LOOPS))
def loop_kind(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run the test's loops (through `run` and `new_loop`, in child processes through LOOP_PRELUDE) on one kind."""
    global new_loop
    new_loop = LOOPS[request.param]
    try:
        yield request.param
    finally:
        new_loop = asyncio.new_event_loop


def run(coro: Coroutine[Any, Any, _T]) -> _T:
    """Run one coroutine on a fresh loop of the test's kind, closed after as `asyncio.run` closes its own."""
    loop = new_loop()
    try:
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(coro)
    finally:
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


def test_each_kind_runs_on_its_own_loop(loop_kind: str) -> None:
    async def running() -> str:
        return type(asyncio.get_running_loop()).__module__

    assert run(running()).split(".")[0] == loop_kind


def loop_prelude(kind: str) -> str:
    """The lines a child script starts with: `run(coro)` on a fresh loop of `kind` (`asyncio` or `uvloop`)."""
    return f"""
import asyncio
import {kind}

def run(coro):
    loop = {kind}.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()

# A program's main coroutine, run as programs run it (Ctrl+C cancels it, then raises KeyboardInterrupt).
run_main = {kind}.run
new_loop = {kind}.new_event_loop
"""


def adata(platform: LocalPlatform, **options: Any) -> AsyncDataClient:
    return AsyncDataClient(base_url=platform.url, project=platform.project, api_key=platform.api_key, **options)


async def ticking(work: Coroutine[Any, Any, _T], every: float) -> tuple[_T, int]:
    """Await `work` while another task ticks every `every` seconds: its result, and how many ticks the loop ran
    meanwhile (a loop blocked in `work` runs none)."""
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(every)
            ticks += 1

    counting = asyncio.create_task(ticker())
    try:
        return await work, ticks
    finally:
        counting.cancel()


NO_IO_THREAD = """
import asyncio, os
from inferencekey import AsyncDataClient

def threads():
    names = []
    for task in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{task}/comm") as f:
            names.append(f.read().strip())
    return sorted(names)

async def main():
    async with AsyncDataClient.from_env() as data:
        endpoint = data.endpoint("support-bot")
        texts = await asyncio.gather(*(endpoint.generate_text(prompt="hi", max_tokens=4) for _ in range(8)))
        vectors = await data.endpoint("embedder").embed(input=["a", "b", "c"])
        ranked = await data.endpoint("ranker").rerank(query="q", documents=["x", "y"])
        async with await endpoint.generate_text_stream(prompt="hi", max_tokens=4) as stream:
            streamed = "".join([chunk.text async for chunk in stream])
        stream = await endpoint.generate_text_stream(prompt="hi", max_tokens=4)
        final = await stream.final_result()
        return [t.text for t in texts] + [streamed, final.text], len(vectors.embeddings), len(ranked.results)

texts, vectors, ranked = run(main())
assert len(set(texts)) == 1 and texts[0], texts
print(vectors, ranked)
print(threads())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads thread names from /proc")
def test_requests_run_on_the_loops_thread_with_no_io_thread(
    platform: LocalPlatform, deploy: Deploy, loop_kind: str
) -> None:
    deploy(slug="embedder", task_type="embedding")
    deploy(slug="ranker", task_type="reranker")
    deploy()
    proc = run_python(loop_prelude(loop_kind) + NO_IO_THREAD, child_env(platform))
    assert proc.returncode == 0, proc.stderr
    counts, names = proc.stdout.splitlines()
    assert counts == "3 2"
    # The native I/O runtime (and the resolver) never started: each request ran on the loop's thread.
    assert not [name for name in eval(names) if name.startswith("inferencekey")], names


def test_a_stalled_request_times_out_with_the_sync_error(platform: LocalPlatform, deploy: Deploy, admin: Admin) -> None:
    deploy()
    admin.fault("chat", {"type": "stall", "at": "headers", "ms": ENDLESS_MS}, count=2)
    with (
        DataClient(
            base_url=platform.url, project=platform.project, api_key=platform.api_key, timeout=0.3, max_retries=0
        ) as sync_data,
        pytest.raises(ApiTimeoutError) as sync_info,
    ):
        sync_data.endpoint("support-bot").generate_text(prompt=PROMPT, max_tokens=4)

    async def main() -> ApiTimeoutError:
        async with adata(platform, timeout=0.3, max_retries=0) as data:
            started = time.monotonic()
            with pytest.raises(ApiTimeoutError) as info:
                await data.endpoint("support-bot").generate_text(prompt=PROMPT, max_tokens=4)
            assert 0.25 < time.monotonic() - started < HANG_GUARD
            return info.value

    assert str(run(main())) == str(sync_info.value)


def stall_the_next_chat(platform: LocalPlatform, deploy: Deploy, admin: Admin) -> Callable[[], list[Any]]:
    """Deploy the chat workload with its next answer stalled; the connections to the platform opened from now on."""
    deploy()
    admin.fault("chat", {"type": "stall", "at": "headers", "ms": ENDLESS_MS}, count=1)
    before = {c.laddr.port for c in connections_to(platform)}
    return lambda: [c for c in connections_to(platform) if c.laddr.port not in before]


def test_cancelling_a_stalled_request_closes_its_connection(
    platform: LocalPlatform, deploy: Deploy, admin: Admin
) -> None:
    opened = stall_the_next_chat(platform, deploy, admin)

    async def main() -> TextResult:
        async with adata(platform) as data:
            endpoint = data.endpoint("support-bot")
            request = asyncio.create_task(endpoint.generate_text(prompt=PROMPT, max_tokens=4))
            while not opened():
                await asyncio.sleep(0.01)
            request.cancel()
            with pytest.raises(asyncio.CancelledError):
                await request
            # The stalled request's connection was closed by the cancellation itself, not left to the client's close.
            assert not opened()
            return await endpoint.generate_text(prompt=PROMPT, max_tokens=4)

    assert run(main()).text


def test_the_retry_backoff_waits_on_the_loop(platform: LocalPlatform, deploy: Deploy, admin: Admin) -> None:
    deploy()
    busy = {"type": "status", "status": 429, "body": {"error": {"code": "busy", "message": "slow down"}}}
    admin.fault("chat", {**busy, "retry_after": 1}, count=1)

    async def main() -> TextResult:
        async with adata(platform) as data:
            return await data.endpoint("support-bot").generate_text(prompt=PROMPT, max_tokens=4)

    started = time.monotonic()
    result, ticks = run(ticking(main(), every=0.01))
    assert result.text
    assert time.monotonic() - started >= 0.9
    # The loop ran other tasks through the backoff: it was not blocked by a sleep.
    assert ticks >= 20, ticks
    assert [e["status"] for e in admin.requests("POST", "/chat/completions")] == [429, 200]

    admin.fault("chat", busy)

    async def refused() -> None:
        async with adata(platform, max_retries=1) as data:
            await data.endpoint("support-bot").generate_text(prompt=PROMPT, max_tokens=4)

    with pytest.raises(RateLimitError) as info:
        run(refused())
    assert info.value.status_code == 429


def test_connection_refused_is_the_sync_error(platform: LocalPlatform) -> None:
    url = f"http://127.0.0.1:{unused_port()}"
    sync_data = DataClient(base_url=url, project="p", api_key=platform.api_key, max_retries=0)
    with sync_data, pytest.raises(ApiConnectionError) as sync_info:
        sync_data.endpoint("e").generate_text(prompt=PROMPT)

    async def main() -> None:
        async with AsyncDataClient(base_url=url, project="p", api_key=platform.api_key, max_retries=0) as data:
            await data.endpoint("e").generate_text(prompt=PROMPT)

    with pytest.raises(ApiConnectionError) as info:
        run(main())
    assert str(info.value) == str(sync_info.value)


def test_loops_in_many_threads_share_one_client(platform: LocalPlatform, deploy: Deploy) -> None:
    endpoint = deploy()
    expected = endpoint.generate_text(prompt=PROMPT, max_tokens=6).text
    client = adata(platform)
    results: list[list[str]] = []
    before = {c.laddr.port for c in connections_to(platform)}

    async def calls() -> list[str]:
        endpoint = client.endpoint("support-bot")
        texts: list[str] = []
        for _ in range(10):
            batch = await asyncio.gather(*(endpoint.generate_text(prompt=PROMPT, max_tokens=6) for _ in range(4)))
            texts.extend(result.text for result in batch)
        return texts

    threads = [threading.Thread(target=lambda: results.append(run(calls()))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=HANG_GUARD)
    assert [text for texts in results for text in texts] == [expected] * 160
    # At most 16 requests were ever in flight at once: connections are reused from one request to the next.
    opened = {c.laddr.port for c in connections_to(platform)} - before
    assert len(opened) <= 16, opened
    run(client.close())


def test_a_loop_that_cannot_watch_the_poller_is_served_by_the_io_thread(
    platform: LocalPlatform, deploy: Deploy
) -> None:
    endpoint = deploy()
    expected = endpoint.generate_text(prompt=PROMPT, max_tokens=6).text
    with endpoint.generate_text_stream(prompt=PROMPT, max_tokens=6) as stream:
        expected_chunks = [chunk.text for chunk in stream]
    loop = new_loop()

    def refuse(fd: int, callback: Callable[..., object], *args: object) -> None:
        raise OSError(errno.EPERM, "this loop cannot watch that kind of descriptor")

    # A loop that watches only some descriptors: its calls go through the I/O thread, as on Windows' proactor.
    loop.add_reader = refuse  # type: ignore[method-assign]

    async def main() -> tuple[str, list[str], object]:
        async with adata(platform) as data:
            endpoint = data.endpoint("support-bot")
            text = (await endpoint.generate_text(prompt=PROMPT, max_tokens=6)).text
            async with await endpoint.generate_text_stream(prompt=PROMPT, max_tokens=6) as stream:
                chunks = [chunk.text async for chunk in stream]
            return text, chunks, _aio._WAKERS[asyncio.get_running_loop()]

    try:
        text, chunks, waker = loop.run_until_complete(main())
    finally:
        loop.close()
    assert (text, chunks) == (expected, expected_chunks)
    assert waker is None


NO_DESCRIPTOR_LEFT = """
import os, resource
from inferencekey import AsyncDataClient, _aio

data = AsyncDataClient.from_env()

async def chat():
    return (await data.endpoint("support-bot").generate_text(prompt="hi", max_tokens=4)).text

def lowest_free_descriptor():
    taken = {int(name) for name in os.listdir("/proc/self/fd")}
    return min(set(range(len(taken) + 1)) - taken)

# A first call through the I/O thread leaves its runtime built and a connection in its pool.
loop = new_loop()
_aio._WAKERS[loop] = None
first = loop.run_until_complete(chat())
loop.close()

# The next loop's first call finds no descriptor left for a poller.
loop = new_loop()
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free_descriptor(), hard))
try:
    starved = loop.run_until_complete(chat())
    remembered = loop in _aio._WAKERS
finally:
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
again = loop.run_until_complete(chat())
print(remembered, type(_aio._WAKERS[loop]()).__name__, first == starved == again)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self/fd")
def test_a_loop_with_no_descriptor_left_for_a_poller_goes_on_through_the_io_thread(
    platform: LocalPlatform, deploy: Deploy, loop_kind: str
) -> None:
    if loop_kind == "uvloop":
        pytest.skip("uvloop makes a socket pair each time it runs: it cannot run with no descriptor left")
    deploy()
    proc = run_python(loop_prelude(loop_kind) + NO_DESCRIPTOR_LEFT, child_env(platform))
    assert proc.returncode == 0, proc.stderr
    # The starved call went through the I/O thread without settling the loop's fate; the next one got a poller.
    assert proc.stdout.split() == ["False", "LoopWaker", "True"]


def test_a_bursts_connections_are_kept_for_the_next_burst(platform: LocalPlatform, deploy: Deploy) -> None:
    deploy()
    client = adata(platform)
    before = {c.laddr.port for c in connections_to(platform)}

    async def burst() -> set[int]:
        endpoint = client.endpoint("support-bot")
        results = await asyncio.gather(*(endpoint.generate_text(prompt=PROMPT, max_tokens=4) for _ in range(200)))
        assert all(result.text for result in results)
        return {c.laddr.port for c in connections_to(platform)} - before

    first = run(burst())
    # The requests of a burst are in flight together, nearly each on a connection of its own (one that ended early
    # may lend its connection to a later one); all of them were kept idle, far more than a small idle pool would
    # keep, so the next burst opens only what its own extra concurrency needs.
    assert len(first) >= 100, len(first)
    second = run(burst())
    assert len(second - first) <= 200 - len(first), (len(first), len(second - first))
    run(client.close())


def test_a_large_answer_is_read_across_many_wakeups(platform: LocalPlatform, deploy: Deploy) -> None:
    endpoint = deploy(slug="embedder", task_type="embedding", embedding_dim=1024)
    texts = [f"text {i}" for i in range(256)]
    expected = endpoint.embed(input=texts).embeddings

    async def main() -> list[list[float]]:
        async with adata(platform) as data:
            return (await data.endpoint("embedder").embed(input=texts)).embeddings

    # About 1.4 MB of JSON: many reads, each after the loop saw the socket readable.
    assert run(main()) == expected


def test_a_loop_closed_with_a_request_waiting_closes_its_connection(
    platform: LocalPlatform, deploy: Deploy, admin: Admin
) -> None:
    opened = stall_the_next_chat(platform, deploy, admin)
    client = adata(platform)
    loop = new_loop()
    task = loop.create_task(client.endpoint("support-bot").generate_text(prompt=PROMPT, max_tokens=4))
    loop.run_until_complete(asyncio.sleep(0.2))
    assert opened()
    # The loop goes away with the request still waiting in it (no cancellation): what the loop held of it is released,
    # and the request with it, closing its connection.
    loop.close()
    del task, loop
    gc.collect()
    deadline = time.monotonic() + HANG_GUARD
    while opened() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not opened()
    # The client still serves other loops.
    assert run(client.endpoint("support-bot").generate_text(prompt=PROMPT, max_tokens=4)).text
    run(client.close())


FORKED = """
import asyncio, os
from inferencekey import AsyncDataClient

async def chat(data):
    return (await data.endpoint("support-bot").generate_text(prompt="hi", max_tokens=4)).text

data = AsyncDataClient.from_env()
parent = run(chat(data))
pid = os.fork()
if pid == 0:
    # The child: the same client, a loop of its own, connections of its own.
    os._exit(0 if run(chat(data)) == parent else 1)
_, status = os.waitpid(pid, 0)
print(os.waitstatus_to_exitcode(status), run(chat(data)) == parent)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")
def test_an_async_client_works_in_a_forked_child(platform: LocalPlatform, deploy: Deploy, loop_kind: str) -> None:
    deploy()
    proc = run_python(loop_prelude(loop_kind) + FORKED, child_env(platform))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["0", "True"]


@pytest.mark.parametrize("backend", STREAM_BACKENDS)
def test_streams_read_on_the_loop_equal_the_sync_ones(
    platform: LocalPlatform, deploy: Deploy, data: DataClient, backend: str
) -> None:
    deploy(backend=backend)
    endpoint = data.endpoint("support-bot")
    with endpoint.generate_text_stream(prompt=PROMPT, max_tokens=40) as stream:
        expected = [(c.text, c.finish_reason) for c in stream]
        expected_final = stream.final_result()

    async def main() -> tuple[list[tuple[str, str | None]], TextResult, TextResult]:
        async with adata(platform) as client:
            endpoint = client.endpoint("support-bot")
            async with await endpoint.generate_text_stream(prompt=PROMPT, max_tokens=40) as stream:
                chunks = [(c.text, c.finish_reason) async for c in stream]
                final = await stream.final_result()
            # Half read, then the rest in one await.
            stream = await endpoint.generate_text_stream(prompt=PROMPT, max_tokens=40)
            await stream.__anext__()
            return chunks, final, await stream.final_result()

    chunks, final, rest = run(main())
    assert chunks == expected
    for result in (final, rest):
        assert (result.text, result.finish_reason, result.usage) == (
            expected_final.text,
            expected_final.finish_reason,
            expected_final.usage,
        )


def test_a_slow_stream_reads_as_its_events_come(platform: LocalPlatform, deploy: Deploy, admin: Admin) -> None:
    deploy(itl_ms=20)

    async def main() -> int:
        async with adata(platform) as client:
            stream = await client.endpoint("support-bot").generate_text_stream(prompt=PROMPT, max_tokens=30)
            return len([chunk async for chunk in stream])

    chunks, ticks = run(ticking(main(), every=0.005))
    assert chunks >= 20
    # Half a second of events: the loop ran its other task all along.
    assert ticks >= 20, ticks
    assert [e["outcome"] for e in admin.requests("POST", "/chat/completions")] == ["ok"]


def interrupted_program(main: str) -> str:
    """A child script whose `async def main()` (given; it has `data`, an `AsyncDataClient`, and `ctrl_c_soon()`) is
    run as programs run theirs; it prints "interrupted" when Ctrl+C ends it and lives on, making no call. The client
    outlives the program's loop, so a connection closes because of the interrupt, not because the client went away."""
    return f"""
import os, signal, sys, threading, time
from inferencekey import AsyncDataClient
data = AsyncDataClient.from_env()

def ctrl_c_soon():
    threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
{main}
try:
    run_main(main())
except KeyboardInterrupt:
    print("interrupted", flush=True)
time.sleep(60)
"""


INTERRUPTED_CALL = interrupted_program("""
async def main():
    endpoint = data.endpoint("support-bot")
    print((await endpoint.generate_text(prompt="hello", max_tokens=4)).text != "", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    ctrl_c_soon()
    await endpoint.generate_text(prompt="hello", max_tokens=4)
""")


@pytest.mark.skipif(sys.platform == "win32", reason="sends SIGINT to itself: POSIX only")
def test_ctrl_c_during_a_stalled_request_closes_its_connection(
    platform: LocalPlatform, deploy: Deploy, admin: Admin, loop_kind: str
) -> None:
    deploy()
    ctrl_c_during_a_stalled_call_closes_its_connection(platform, admin, loop_prelude(loop_kind) + INTERRUPTED_CALL)


INTERRUPTED_STREAM = interrupted_program("""
streams = []

async def main():
    stream = await data.endpoint("support-bot").generate_text_stream(prompt="hello", max_tokens=60)
    streams.append(stream)
    await stream.__anext__()
    ctrl_c_soon()
    async for _ in stream:
        pass
""")


@pytest.mark.skipif(sys.platform == "win32", reason="sends SIGINT to itself: POSIX only")
def test_ctrl_c_mid_stream_closes_its_connection(
    platform: LocalPlatform, deploy: Deploy, admin: Admin, loop_kind: str
) -> None:
    # The interrupt lands while the stream's batch waits on the loop.
    ctrl_c_mid_stream_closes_the_connection(platform, deploy, admin, loop_prelude(loop_kind) + INTERRUPTED_STREAM)
