# The Async twins: every awaitable end to end against the local platform, the same results and exceptions as the sync
# API, streams in batches, cancellation closing the connection, and an event loop that keeps running while waiting.
from __future__ import annotations

import asyncio
import inspect
import logging
import time
import warnings
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest
from conftest import (
    BOGUS_LIVE_KEY,
    BOGUS_SDK_TOKEN,
    ENDLESS_MS,
    HANG_GUARD,
    PROJECT,
    PROMPT,
    Admin,
    Deploy,
    Entry,
    make_spec,
)

import inferencekey
from inferencekey import (
    ApiTimeoutError,
    AsyncDataClient,
    AsyncEndpoint,
    AsyncManagementClient,
    AsyncTextStream,
    AuthError,
    DataClient,
    DriftError,
    DriftWarning,
    EmbedResult,
    EndpointRef,
    InferenceKeyError,
    ManagementClient,
    OnDrift,
    Plan,
    ReadinessEvent,
    RerankResult,
    TextChunk,
    TextResult,
    ValidationError,
    WaitTimeoutError,
)
from inferencekey.local import LocalPlatform

_T = TypeVar("_T")
REF = EndpointRef(project_slug=PROJECT, workload_slug="support-bot")


def run(coro: Coroutine[Any, Any, _T]) -> _T:
    """Run one coroutine on a fresh event loop (no pytest-asyncio)."""
    return asyncio.run(coro)


def amanagement(platform: LocalPlatform, token: str | None = None, **options: Any) -> AsyncManagementClient:
    return AsyncManagementClient(
        base_url=platform.url, sdk_token=token or platform.sdk_token, project=platform.project, **options
    )


def adata(platform: LocalPlatform, **options: Any) -> AsyncDataClient:
    return AsyncDataClient(base_url=platform.url, project=platform.project, api_key=platform.api_key, **options)


def chat_streams(entries: list[Entry]) -> list[Entry]:
    return [
        e
        for e in entries
        if e["path"].endswith("/chat/completions") and isinstance(e["body"], dict) and e["body"].get("stream")
    ]


def test_async_names_are_exported() -> None:
    for name in ("AsyncManagementClient", "AsyncDataClient", "AsyncEndpoint", "AsyncTextStream"):
        assert name in inferencekey.__all__
        assert getattr(inferencekey, name).__doc__


def test_async_signatures_mirror_the_sync_ones() -> None:
    pairs = [(ManagementClient, AsyncManagementClient), (DataClient, AsyncDataClient)]
    for sync_cls, async_cls in pairs:
        assert inspect.signature(sync_cls) == inspect.signature(async_cls)
        assert inspect.signature(sync_cls.from_env) == inspect.signature(async_cls.from_env)
    for name in ("ensure", "plan", "wait_until_ready", "delete", "list_workloads"):
        sync_sig = inspect.signature(getattr(ManagementClient, name))
        async_sig = inspect.signature(getattr(AsyncManagementClient, name))
        assert sync_sig.parameters == async_sig.parameters, name
        assert inspect.iscoroutinefunction(getattr(AsyncManagementClient, name)), name
    for name in ("generate_text", "generate_text_stream", "embed", "rerank"):
        sync_sig = inspect.signature(getattr(inferencekey.Endpoint, name))
        async_sig = inspect.signature(getattr(AsyncEndpoint, name))
        assert sync_sig.parameters == async_sig.parameters, name
        assert inspect.iscoroutinefunction(getattr(AsyncEndpoint, name)), name
    assert not inspect.iscoroutinefunction(AsyncDataClient.endpoint)


def test_management_end_to_end(platform: LocalPlatform, admin: Admin) -> None:
    async def main() -> None:
        async with amanagement(platform) as mgmt:
            assert repr(mgmt).startswith("AsyncManagementClient(")
            assert mgmt.project == PROJECT
            assert await mgmt.list_workloads() == []
            plan = await mgmt.plan(make_spec())
            assert isinstance(plan, Plan)
            assert plan.action == "create"
            assert await mgmt.ensure(make_spec()) == REF
            assert (await mgmt.plan(make_spec())).action == "noop"
            events: list[ReadinessEvent] = []
            await mgmt.wait_until_ready("support-bot", on_progress=events.append)
            assert events[-1].phase == "ready"
            workloads = await mgmt.list_workloads()
            assert [w["slug"] for w in workloads] == ["support-bot"]
            assert await mgmt.delete("support-bot") is True
            assert await mgmt.delete("support-bot") is False
            assert await mgmt.list_workloads() == []

    run(main())


def test_from_env_builds_async_clients(env: LocalPlatform, admin: Admin) -> None:
    async def main() -> None:
        async with AsyncManagementClient.from_env() as mgmt:
            assert isinstance(mgmt, AsyncManagementClient)
            assert await mgmt.ensure(make_spec()) == REF
        async with AsyncDataClient.from_env() as data:
            assert isinstance(data, AsyncDataClient)
            result = await data.endpoint("support-bot").generate_text(prompt=PROMPT, max_tokens=4)
            assert isinstance(result, TextResult)

    run(main())


def test_ensure_drift_modes_share_the_sync_behaviour(
    platform: LocalPlatform, admin: Admin, caplog: pytest.LogCaptureFixture
) -> None:
    drifted = make_spec(command="vllm serve m --max-model-len 16384")

    async def main() -> None:
        async with amanagement(platform) as mgmt:
            await mgmt.ensure(make_spec(command="vllm serve m"))
            with caplog.at_level(logging.INFO, logger="inferencekey"):
                assert await mgmt.ensure(drifted, on_drift="dry_run") == REF
            assert any("ensure dry run for local/support-bot" in r.getMessage() for r in caplog.records)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                assert await mgmt.ensure(drifted, on_drift=OnDrift.WARN) == REF
            drift = [w for w in caught if issubclass(w.category, DriftWarning)]
            assert len(drift) == 1
            assert drift[0].filename == __file__
            with pytest.raises(DriftError) as info:
                await mgmt.ensure(drifted, on_drift="fail")
            assert info.value.plan is not None
            assert info.value.plan.action == "update"
            with pytest.raises(ValidationError):
                await mgmt.ensure(drifted, on_drift="sometimes")
            assert (await mgmt.plan(drifted)).drifted is True

    run(main())


def test_wait_until_ready_reports_progress_and_times_out(platform: LocalPlatform, admin: Admin) -> None:
    async def main() -> None:
        async with amanagement(platform) as mgmt:
            await mgmt.ensure(make_spec())
            # Progress before ready, whatever the timing: the workload starts stuck, and switches to `fast` once
            # the wait has seen stuck's last stage (provisioning).
            admin.settings("support-bot", readiness="stuck")
            events: list[ReadinessEvent] = []

            def switch_at_provisioning(event: ReadinessEvent) -> None:
                if event.phase == "provisioning" and all(seen.phase != "provisioning" for seen in events):
                    admin.settings("support-bot", readiness="fast")
                events.append(event)

            await mgmt.wait_until_ready("support-bot", timeout=HANG_GUARD, on_progress=switch_at_provisioning)
            phases = [event.phase for event in events]
            assert phases[0] != "ready" and phases[-1] == "ready"
            assert "bootstrapping" in phases
            assert all(isinstance(event, ReadinessEvent) for event in events)

            admin.settings("support-bot", readiness="stuck")
            events.clear()
            started = time.monotonic()
            with pytest.raises(WaitTimeoutError) as info:
                await mgmt.wait_until_ready("support-bot", timeout=1.0, on_progress=events.append)
            # The whole timeout was waited; the upper bound only catches a deadline that never fires.
            assert 0.9 <= time.monotonic() - started < HANG_GUARD
            assert isinstance(info.value, TimeoutError)
            # How far a stuck workload got before the deadline depends on the machine; the error names the last phase.
            assert {event.phase for event in events} <= {"scheduling", "provisioning"}
            last = f"last phase: {events[-1].phase}" if events else "no phase reported"
            assert f"({last})" in str(info.value)

    run(main())


def test_data_end_to_end(platform: LocalPlatform, deploy: Deploy, admin: Admin) -> None:
    deploy(slug="embedder", task_type="embedding")
    deploy(slug="ranker", task_type="reranker")
    deploy()

    async def main() -> None:
        async with adata(platform) as data:
            endpoint = data.endpoint("Support Bot")
            assert isinstance(endpoint, AsyncEndpoint)
            assert endpoint.workload_slug == "support-bot"
            assert endpoint.project == PROJECT
            result = await endpoint.generate_text(prompt=PROMPT, max_tokens=8)
            assert isinstance(result, TextResult)
            assert result.text and result.raw["choices"][0]["message"]["content"] == result.text
            messages = [{"role": "user", "content": PROMPT}]
            assert (await endpoint.generate_text(messages=messages, max_tokens=8)).text == result.text

            embedded = await data.endpoint("embedder").embed(input=["a", "b"])
            assert isinstance(embedded, EmbedResult)
            assert len(embedded.embeddings) == 2
            assert (await data.endpoint("embedder").embed(input="a")).embeddings == embedded.embeddings[:1]

            documents = ["dogs bark at night", "cat food is tasty", "cars need fuel"]
            ranked = await data.endpoint("ranker").rerank(query="cat food", documents=documents, top_n=2)
            assert isinstance(ranked, RerankResult)
            assert ranked.results[0].index == 1
            assert len(ranked.results) == 2

    run(main())


def test_stream_text_equals_the_sync_stream(data: DataClient, deploy: Deploy, platform: LocalPlatform) -> None:
    deploy()
    with data.endpoint("support-bot").generate_text_stream(prompt=PROMPT, max_tokens=40) as stream:
        sync_chunks = list(stream)

    async def main() -> list[TextChunk]:
        async with adata(platform) as client:
            stream = await client.endpoint("support-bot").generate_text_stream(prompt=PROMPT, max_tokens=40)
            assert isinstance(stream, AsyncTextStream)
            async with stream:
                chunks = [chunk async for chunk in stream]
            assert [chunk async for chunk in stream] == []
            await stream.close()
            return chunks

    async_chunks = run(main())
    assert all(isinstance(chunk, TextChunk) for chunk in async_chunks)
    assert "".join(c.text for c in async_chunks) == "".join(c.text for c in sync_chunks)
    assert [c.finish_reason for c in async_chunks] == [c.finish_reason for c in sync_chunks]


def test_auth_errors_raise_at_the_await_with_attributes(platform: LocalPlatform, deploy: Deploy, admin: Admin) -> None:
    deploy()

    async def main() -> None:
        async with AsyncDataClient(base_url=platform.url, project=PROJECT, api_key=BOGUS_LIVE_KEY) as data:
            endpoint = data.endpoint("support-bot")
            with pytest.raises(AuthError) as info:
                await endpoint.generate_text_stream(prompt=PROMPT)
            exc = info.value
            assert exc.status_code == 401
            assert isinstance(exc.body, dict)
            assert exc.code == exc.body["error"]["code"]
            assert isinstance(exc.request_id, str) and exc.request_id.startswith("req_")
            with pytest.raises(AuthError):
                await endpoint.generate_text(prompt=PROMPT)
        async with amanagement(platform, BOGUS_SDK_TOKEN) as mgmt:
            with pytest.raises(AuthError) as mgmt_info:
                await mgmt.list_workloads()
            assert mgmt_info.value.status_code == 401
            assert isinstance(mgmt_info.value, InferenceKeyError)

    run(main())


def wait_for_disconnect(admin: Admin) -> None:
    """Wait until the platform has seen the client leave the last streamed chat request."""

    def disconnected(entries: list[Entry]) -> bool:
        streams = chat_streams(entries)
        return bool(streams) and bool(streams[-1]["client_disconnected"])

    entry = chat_streams(admin.wait_journal(disconnected))[-1]
    assert entry["outcome"] == "client_disconnected"


@pytest.mark.parametrize("stall", [None, "mid_stream"])
def test_cancelling_mid_stream_closes_the_connection(
    platform: LocalPlatform, deploy: Deploy, admin: Admin, stall: str | None
) -> None:
    deploy(itl_ms=100)
    if stall is not None:
        admin.fault("chat_stream", {"type": "stall", "at": stall, "ms": ENDLESS_MS})
    received: list[TextChunk] = []
    client = adata(platform)
    streams: list[AsyncTextStream] = []

    async def consume() -> None:
        stream = await client.endpoint("support-bot").generate_text_stream(prompt=PROMPT, max_tokens=60)
        streams.append(stream)
        async for chunk in stream:
            received.append(chunk)

    async def main() -> None:
        task = asyncio.create_task(consume())
        while not received:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.15)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(main())
    # The platform saw the client leave mid-stream (a stream left to finish would end "ok" instead).
    wait_for_disconnect(admin)
    assert streams[0]._native is None  # closed by the cancellation, while the client stays open
    assert client.project == PROJECT


def test_cancelling_a_stalled_request_returns_at_once(platform: LocalPlatform, deploy: Deploy, admin: Admin) -> None:
    deploy()
    admin.fault("chat", {"type": "stall", "at": "headers", "ms": ENDLESS_MS})

    async def main() -> TextResult:
        async with adata(platform) as data:
            endpoint = data.endpoint("support-bot")
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(endpoint.generate_text(prompt=PROMPT, max_tokens=4), timeout=0.3)
            return await endpoint.generate_text(prompt=PROMPT, max_tokens=4)

    started = time.monotonic()
    assert run(main()).text
    # Waiting for the stalled request would take ten minutes: the guard only catches that.
    assert time.monotonic() - started < HANG_GUARD


def test_one_await_per_batch_not_per_chunk(platform: LocalPlatform, deploy: Deploy, admin: Admin) -> None:
    deploy()

    class Counting:
        """Counts the native batch requests of a stream."""

        def __init__(self, native: Any) -> None:
            self.native = native
            self.batches = 0

        def batch_now(self) -> Any:  # answered without an await: not counted
            return self.native.batch_now()

        def next_batch(self) -> Any:
            self.batches += 1
            return self.native.next_batch()

        def close(self) -> None:
            self.native.close()

    async def main() -> tuple[int, int]:
        async with adata(platform) as data:
            stream = await data.endpoint("support-bot").generate_text_stream(prompt=PROMPT, max_tokens=200)
            # The whole reply has been sent before the first batch is asked for.
            admin.wait_journal(lambda entries: [e["outcome"] for e in chat_streams(entries)] == ["ok"])
            counting = Counting(stream._native)
            stream._native = counting  # type: ignore[assignment]
            chunks = [chunk async for chunk in stream]
            return len(chunks), counting.batches

    chunks, batches = run(main())
    assert chunks > 20
    # How reads group the chunks depends on when the client's reader runs (30 chunks came in 5 batches on a loaded
    # machine, in 1 or 2 when idle); one await per chunk would be `chunks + 1`.
    assert batches <= chunks // 2, (chunks, batches)


def test_event_loop_keeps_running_during_a_stalled_request(
    platform: LocalPlatform, deploy: Deploy, admin: Admin
) -> None:
    deploy()
    admin.fault("chat", {"type": "stall", "at": "headers", "ms": ENDLESS_MS})

    async def main() -> TextResult:
        async with adata(platform) as data:
            endpoint = data.endpoint("support-bot")
            request = asyncio.create_task(endpoint.generate_text(prompt=PROMPT, max_tokens=4))
            # The loop keeps ticking while the request is stalled: it could not, were the loop blocked in it.
            for _ in range(10):
                await asyncio.sleep(0.02)
                assert not request.done()
            request.cancel()
            with pytest.raises(asyncio.CancelledError):
                await request
            # The fault fired once: the client still works.
            return await endpoint.generate_text(prompt=PROMPT, max_tokens=4)

    started = time.monotonic()
    assert run(main()).text
    # A blocked loop would wait out the ten-minute stall first: the guard only catches that.
    assert time.monotonic() - started < HANG_GUARD


def test_stalled_stream_times_out_with_the_sync_exception(
    platform: LocalPlatform, deploy: Deploy, admin: Admin
) -> None:
    deploy()
    # The stall never ends: only the idle timeout can end the stream.
    admin.fault("chat_stream", {"type": "stall", "at": "mid_stream", "ms": ENDLESS_MS})

    async def main() -> None:
        async with adata(platform, timeout=0.5, max_retries=0) as data:
            stream = await data.endpoint("support-bot").generate_text_stream(prompt=PROMPT, max_tokens=8)
            with pytest.raises(ApiTimeoutError):
                async for _ in stream:
                    pass

    run(main())


def test_concurrent_requests_with_gather(platform: LocalPlatform, deploy: Deploy, admin: Admin) -> None:
    deploy()
    prompts = [f"{PROMPT} {i}" for i in range(8)]

    async def main() -> list[TextResult]:
        async with adata(platform) as data:
            endpoint = data.endpoint("support-bot")
            return await asyncio.gather(*(endpoint.generate_text(prompt=p, max_tokens=6) for p in prompts))

    results = run(main())
    assert len(results) == len(prompts)
    assert all(isinstance(result, TextResult) and result.text for result in results)
    bodies = [e["body"] for e in admin.requests("POST", "/chat/completions")]
    assert sorted(body["messages"][0]["content"] for body in bodies) == sorted(prompts)
