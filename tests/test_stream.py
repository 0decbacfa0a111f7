# generate_text_stream: every engine dialect under every framing fault rebuilds generate_text's text, in-band
# errors, truncation, malformed frames, non-SSE replies, eager auth errors, closing early, and retry limits.
from __future__ import annotations

import gc
import time
from typing import Any

import pytest
from conftest import (
    BOGUS_LIVE_KEY,
    ENDLESS_MS,
    HANG_GUARD,
    PROJECT,
    PROMPT,
    STREAM_BACKENDS,
    Admin,
    Deploy,
    Entry,
)

from inferencekey import (
    ApiError,
    ApiTimeoutError,
    AuthError,
    DataClient,
    Endpoint,
    InferenceKeyError,
    PermissionDenied,
    TextChunk,
    TextStream,
)
from inferencekey.local import LocalPlatform

MAX_TOKENS = 24
FRAMINGS: dict[str, dict[str, Any] | None] = {
    "plain": None,
    "crlf": {"type": "framing", "line_ending": "crlf"},
    "cr": {"type": "framing", "line_ending": "cr"},
    "bom": {"type": "framing", "bom": True},
    "multiline": {"type": "framing", "multiline": True},
    "comments": {"type": "framing", "comments": True},
    "split_utf8": {"type": "framing", "split_utf8": True},
    "huge_frame": {"type": "framing", "huge_frame_bytes": 1048576},
    "drip": {"type": "drip", "bytes_per_write": 16, "interval_ms": 1},
    "everything": {
        "type": "framing",
        "line_ending": "cr",
        "bom": True,
        "multiline": True,
        "comments": True,
        "split_utf8": True,
    },
}


def chat_streams(entries: list[Entry]) -> list[Entry]:
    """The streamed chat requests among journal entries."""
    return [
        e
        for e in entries
        if e["path"].endswith("/chat/completions") and isinstance(e["body"], dict) and e["body"].get("stream")
    ]


def drain(stream: TextStream) -> list[TextChunk]:
    """Every chunk of a stream, closing it afterwards."""
    with stream:
        return list(stream)


@pytest.mark.parametrize("framing", list(FRAMINGS))
@pytest.mark.parametrize("backend", STREAM_BACKENDS)
def test_stream_rebuilds_the_text_of_generate_text(deploy: Deploy, admin: Admin, backend: str, framing: str) -> None:
    endpoint = deploy(slug=f"chat-{backend}", backend=backend)
    expected = endpoint.generate_text(prompt=PROMPT, max_tokens=MAX_TOKENS)
    fault = FRAMINGS[framing]
    fault_id = admin.fault("chat_stream", fault) if fault else None
    chunks = drain(endpoint.generate_text_stream(prompt=PROMPT, max_tokens=MAX_TOKENS))
    assert all(isinstance(chunk, TextChunk) and isinstance(chunk.raw, dict) for chunk in chunks)
    assert "".join(chunk.text for chunk in chunks) == expected.text
    finishes = [chunk.finish_reason for chunk in chunks if chunk.finish_reason is not None]
    assert finishes == [expected.finish_reason]
    if fault_id is not None:
        assert admin.fired(fault_id) == 1


@pytest.mark.parametrize("backend", STREAM_BACKENDS)
def test_usage_chunk_yields_empty_text(deploy: Deploy, backend: str) -> None:
    endpoint = deploy(slug=f"chat-{backend}", backend=backend, include_usage=True)
    expected = endpoint.generate_text(prompt=PROMPT)
    chunks = drain(endpoint.generate_text_stream(prompt=PROMPT))
    assert "".join(chunk.text for chunk in chunks) == expected.text
    assert any(chunk.raw.get("usage") for chunk in chunks), "no usage reported"
    assert all(chunk.text == "" for chunk in chunks if chunk.raw.get("choices") == [])
    assert len([chunk for chunk in chunks if chunk.finish_reason]) == 1


def test_stream_request_on_the_wire(deploy: Deploy, admin: Admin) -> None:
    endpoint = deploy()
    drain(endpoint.generate_text_stream(prompt="Hola", temperature=0.5, max_tokens=4))
    entries = admin.journal()
    assert len(entries) == 1
    assert entries[0]["path"] == f"/endpoint/{PROJECT}/support-bot/v1/chat/completions"
    assert entries[0]["body"] == {
        "model": "support-bot",
        "messages": [{"role": "user", "content": "Hola"}],
        "stream": True,
        "temperature": 0.5,
        "max_tokens": 4,
    }
    assert entries[0]["headers"]["accept"] == "text/event-stream"


def test_text_stream_is_an_iterator_of_text_chunks(deploy: Deploy) -> None:
    stream = deploy().generate_text_stream(prompt=PROMPT)
    assert isinstance(stream, TextStream)
    assert iter(stream) is stream
    first = next(stream)
    assert isinstance(first, TextChunk)
    rest = list(stream)
    assert rest
    with pytest.raises(StopIteration):
        next(stream)
    stream.close()


@pytest.mark.parametrize("shape", ["nested", "flat", "event"])
@pytest.mark.parametrize("backend", STREAM_BACKENDS)
def test_in_band_error_raises_with_the_server_message(deploy: Deploy, admin: Admin, backend: str, shape: str) -> None:
    endpoint = deploy(slug=f"chat-{backend}", backend=backend)
    admin.fault(
        "chat_stream", {"type": "inband_error", "after_events": 2, "shape": shape, "message": "engine exploded"}
    )
    stream = endpoint.generate_text_stream(prompt=PROMPT, max_tokens=MAX_TOKENS)
    received: list[TextChunk] = []
    with pytest.raises(ApiError) as info, stream:
        for chunk in stream:
            received.append(chunk)
    assert "engine exploded" in str(info.value)
    assert len(received) == 2


@pytest.mark.parametrize("backend", STREAM_BACKENDS)
def test_truncated_stream_raises_and_is_not_retried(deploy: Deploy, admin: Admin, backend: str) -> None:
    endpoint = deploy(slug=f"chat-{backend}", backend=backend)
    admin.fault("chat_stream", {"type": "truncate", "after_events": 2})
    received: list[TextChunk] = []
    with pytest.raises(ApiError), endpoint.generate_text_stream(prompt=PROMPT, max_tokens=MAX_TOKENS) as stream:
        for chunk in stream:
            received.append(chunk)
    assert len(received) == 2
    assert len(chat_streams(admin.wait_journal(lambda j: len(chat_streams(j)) >= 1))) == 1


def test_malformed_json_frame_raises(deploy: Deploy, admin: Admin) -> None:
    endpoint = deploy()
    admin.fault("chat_stream", {"type": "malformed_json", "after_events": 1})
    received: list[TextChunk] = []
    with pytest.raises(ApiError), endpoint.generate_text_stream(prompt=PROMPT) as stream:
        for chunk in stream:
            received.append(chunk)
    assert len(received) == 1


@pytest.mark.parametrize("backend", STREAM_BACKENDS)
def test_non_sse_reply_yields_one_chunk(deploy: Deploy, admin: Admin, backend: str) -> None:
    endpoint = deploy(slug=f"chat-{backend}", backend=backend)
    expected = endpoint.generate_text(prompt=PROMPT)
    admin.fault("chat_stream", {"type": "non_sse"})
    chunks = drain(endpoint.generate_text_stream(prompt=PROMPT))
    assert [(chunk.text, chunk.finish_reason) for chunk in chunks] == [(expected.text, expected.finish_reason)]


def test_auth_error_raises_when_the_stream_is_opened(platform: LocalPlatform, deploy: Deploy) -> None:
    deploy()
    endpoint = DataClient(base_url=platform.url, project=PROJECT, api_key=BOGUS_LIVE_KEY).endpoint("support-bot")
    with pytest.raises(AuthError):
        endpoint.generate_text_stream(prompt=PROMPT)


def test_permission_error_raises_when_the_stream_is_opened(
    platform: LocalPlatform, deploy: Deploy, admin: Admin
) -> None:
    deploy(slug="first")
    deploy(slug="second")
    key = admin.token("live", workload="first")
    endpoint = DataClient(base_url=platform.url, project=PROJECT, api_key=key).endpoint("second")
    with pytest.raises(PermissionDenied):
        endpoint.generate_text_stream(prompt=PROMPT)


def test_http_error_before_the_first_byte_raises_when_opened(deploy: Deploy, admin: Admin) -> None:
    endpoint = deploy()
    admin.fault("chat_stream", {"type": "status", "status": 400, "body": {"error": {"code": "bad", "message": "no"}}})
    with pytest.raises(InferenceKeyError) as info:
        endpoint.generate_text_stream(prompt=PROMPT)
    assert info.value.status_code == 400


def wait_for_disconnect(admin: Admin) -> Entry:
    """The streamed chat request, once the platform has seen the client go away."""

    def disconnected(entries: list[Entry]) -> bool:
        streams = chat_streams(entries)
        return bool(streams) and bool(streams[-1]["client_disconnected"])

    entry = chat_streams(admin.wait_journal(disconnected))[-1]
    assert entry["outcome"] == "client_disconnected"
    return entry


def slow_endpoint(deploy: Deploy) -> Endpoint:
    """An endpoint whose stream takes seconds to finish (so an early close is visible)."""
    return deploy(itl_ms=100)


def test_break_inside_with_closes_the_connection(deploy: Deploy, admin: Admin) -> None:
    endpoint = slow_endpoint(deploy)
    with endpoint.generate_text_stream(prompt=PROMPT, max_tokens=60) as stream:
        for index, _ in enumerate(stream):
            if index == 1:
                break
    # The platform saw the client leave mid-stream (a stream drained to its end would be "ok").
    wait_for_disconnect(admin)


def test_close_closes_the_connection(deploy: Deploy, admin: Admin) -> None:
    stream = slow_endpoint(deploy).generate_text_stream(prompt=PROMPT, max_tokens=60)
    next(stream)
    stream.close()
    wait_for_disconnect(admin)


def test_garbage_collection_closes_the_connection(deploy: Deploy, admin: Admin) -> None:
    stream = slow_endpoint(deploy).generate_text_stream(prompt=PROMPT, max_tokens=60)
    next(stream)
    del stream
    gc.collect()
    wait_for_disconnect(admin)


def test_stream_is_retried_before_its_first_event(deploy: Deploy, admin: Admin) -> None:
    endpoint = deploy()
    expected = endpoint.generate_text(prompt=PROMPT).text
    admin.clear_journal()
    admin.fault("chat_stream", {"type": "status", "status": 503, "retry_after": 0, "body": {"error": "warming"}})
    assert "".join(chunk.text for chunk in drain(endpoint.generate_text_stream(prompt=PROMPT))) == expected
    assert [e["status"] for e in chat_streams(admin.wait_journal(lambda j: len(chat_streams(j)) >= 2))] == [503, 200]


@pytest.mark.parametrize("status", [500, 502])
def test_stream_is_not_retried_after_a_server_error(deploy: Deploy, admin: Admin, status: int) -> None:
    endpoint = deploy()
    admin.fault("chat_stream", {"type": "status", "status": status, "body": {"error": "boom"}})
    with pytest.raises(ApiError) as info:
        endpoint.generate_text_stream(prompt=PROMPT)
    assert info.value.status_code == status
    assert len(chat_streams(admin.journal())) == 1


def test_silence_longer_than_the_timeout_raises_api_timeout(
    platform: LocalPlatform, deploy: Deploy, admin: Admin
) -> None:
    deploy()
    client = DataClient(base_url=platform.url, project=PROJECT, api_key=platform.api_key, timeout=0.5, max_retries=0)
    admin.fault("chat_stream", {"type": "stall", "at": "mid_stream", "ms": ENDLESS_MS})
    started = time.monotonic()
    stream = client.endpoint("support-bot").generate_text_stream(prompt=PROMPT)
    with pytest.raises(ApiTimeoutError) as info, stream:
        for _ in stream:
            pass
    # The stall never ends: only the idle timeout can end the stream. The guard only catches a timeout that never fires.
    assert time.monotonic() - started < HANG_GUARD
    assert isinstance(info.value, TimeoutError)


def test_slow_but_steady_stream_is_not_a_timeout(platform: LocalPlatform, deploy: Deploy) -> None:
    # A stream that lasts longer than the timeout, each gap far below it: the timeout is per read, not per stream.
    # (The gaps need room to spare: one read kept waiting by a loaded machine must not look like a silent server.)
    deploy(itl_ms=100)
    client = DataClient(base_url=platform.url, project=PROJECT, api_key=platform.api_key, timeout=2.0)
    endpoint = client.endpoint("support-bot")
    started = time.monotonic()
    chunks = drain(endpoint.generate_text_stream(prompt=PROMPT, max_tokens=40))
    assert time.monotonic() - started > 2.0
    assert len([chunk for chunk in chunks if chunk.finish_reason]) == 1
