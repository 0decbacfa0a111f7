# The seam between the native module and the surface: result classes are filled by field name and match what the
# binding fills; results built natively are real dataclasses whose lazy fields (`raw`, `embeddings`) materialise on
# first read and survive copies and pickles; embeddings as NumPy arrays; a panic in a native task always resolves
# its awaiter; cancelling still aborts.
from __future__ import annotations

import asyncio
import copy
import dataclasses
import json
import logging
import pickle
import subprocess
import sys
import time

import numpy
import pytest
from conftest import PROMPT, Admin, Deploy

from inferencekey import (
    AsyncDataClient,
    DataClient,
    EmbedResult,
    EndpointRef,
    FieldChange,
    InferenceKeyError,
    Plan,
    ReadinessEvent,
    RerankItem,
    RerankResult,
    TextChunk,
    TextResult,
    ToolCall,
    Usage,
    WorkloadSpec,
    _aio,
    _core,
)
from inferencekey.local import LocalPlatform

RESULT_CLASSES: list[type] = [
    TextChunk,
    TextResult,
    EmbedResult,
    RerankItem,
    RerankResult,
    ReadinessEvent,
    EndpointRef,
    FieldChange,
    Plan,
    Usage,
    ToolCall,
]


def test_each_result_class_declares_exactly_what_the_binding_fills() -> None:
    filled = _core.result_fields()
    assert set(filled) == {cls.__name__ for cls in RESULT_CLASSES}
    for cls in RESULT_CLASSES:
        assert tuple(field.name for field in dataclasses.fields(cls)) == filled[cls.__name__], cls


def test_workload_spec_declares_exactly_the_core_spec_fields() -> None:
    # One list (the core's SPEC_FIELDS) names the fields the binding reads from a WorkloadSpec, the manifest reader
    # accepts and load_manifest hands back: the dataclass must declare exactly those, in that order.
    assert tuple(field.name for field in dataclasses.fields(WorkloadSpec)) == _core.spec_fields()
    assert len(_core.spec_fields()) == 14


def test_registration_refuses_a_class_whose_fields_differ() -> None:
    @dataclasses.dataclass(frozen=True)
    class Reordered:
        finish_reason: str | None
        text: str
        raw: dict[str, object]

    classes = {cls.__name__: cls for cls in RESULT_CLASSES}
    classes["TextChunk"] = Reordered
    with pytest.raises(TypeError, match="TextChunk declares the fields"):
        _core.register_result_types(**classes)


def test_streamed_chunks_are_dataclasses_with_lazy_raw(deploy: Deploy) -> None:
    with deploy().generate_text_stream(prompt=PROMPT, max_tokens=8) as stream:
        chunks = list(stream)
    first = chunks[0]
    assert type(first) is TextChunk
    assert "raw" not in vars(first)  # nothing parsed until read
    raw = first.raw
    assert type(raw) is dict
    assert raw["object"] == "chat.completion.chunk"
    assert first.raw is raw  # parsed once
    assert dataclasses.is_dataclass(first)
    assert [f.name for f in dataclasses.fields(first)] == ["text", "finish_reason", "raw", "usage"]
    assert first.usage is None and "usage" not in vars(first)  # the class default: nothing built per chunk
    as_dict = dataclasses.asdict(chunks[1])
    assert as_dict["text"] == chunks[1].text
    assert as_dict["raw"] == chunks[1].raw
    assert dataclasses.replace(first, text="x") == TextChunk(text="x", finish_reason=first.finish_reason, raw=raw)
    assert first == TextChunk(text=first.text, finish_reason=first.finish_reason, raw=raw)
    assert first != chunks[1]
    assert repr(first).startswith("TextChunk(text=")
    with pytest.raises(TypeError):
        hash(first)  # a frozen dataclass with a dict field, as declared
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.text = "y"  # type: ignore[misc]
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = first.nope  # type: ignore[attr-defined]
    assert "".join(c.text for c in chunks) == "".join(c.raw["choices"][0]["delta"].get("content") or "" for c in chunks)


def test_native_results_copy_and_pickle_with_their_lazy_fields(deploy: Deploy) -> None:
    ep = deploy()
    result = ep.generate_text(prompt=PROMPT, max_tokens=8)
    with ep.generate_text_stream(prompt=PROMPT, max_tokens=8) as stream:
        chunk = next(iter(stream))
    for value in (result, chunk):
        for clone in (pickle.loads(pickle.dumps(value)), copy.copy(value), copy.deepcopy(value)):
            assert clone == value
            assert type(clone.raw) is dict
            assert not any(name.startswith("_") for name in vars(clone))
    assert result.raw["choices"][0]["message"]["content"] == result.text


def test_unary_results_keep_raw_as_bytes_until_read(deploy: Deploy) -> None:
    ep = deploy()
    result = ep.generate_text(prompt=PROMPT, max_tokens=8)
    assert "raw" not in vars(result)
    assert result.raw["model"] == result.model
    ranked = deploy("ranker", task_type="reranker").rerank(query="a", documents=["a b", "c"])
    assert type(ranked) is RerankResult
    assert [type(item) for item in ranked.results] == [RerankItem, RerankItem]
    assert ranked.raw["results"][0]["index"] == ranked.results[0].index


def test_embeddings_to_numpy_come_from_the_received_vectors(deploy: Deploy) -> None:
    ep = deploy("embedder", task_type="embedding")
    texts = ["alpha", "beta", "gamma"]
    result = ep.embed(input=texts)
    array = result.to_numpy()
    assert "embeddings" not in vars(result)  # no Python float was built for the array
    assert array.dtype == numpy.float32
    assert array.shape == (3, len(result.embeddings[0]))
    assert array.flags.writeable and array.flags.c_contiguous
    assert numpy.array_equal(array, numpy.asarray(result.embeddings, dtype=numpy.float32))
    assert result.to_numpy() is not array  # a new array each time
    # Each row is the vector of its input, in input order.
    for row, text in zip(array, texts, strict=True):
        assert numpy.array_equal(row, ep.embed(input=text).to_numpy()[0])
    by_hand = EmbedResult(embeddings=[[1.0, 2.0], [3.0, 4.0]], model="m")
    assert by_hand.to_numpy().tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert by_hand.to_numpy().dtype == numpy.float32


def test_to_numpy_without_numpy_says_what_is_missing(platform: LocalPlatform) -> None:
    code = (
        "import sys; sys.modules['numpy'] = None\n"
        "from inferencekey import EmbedResult\n"
        "try:\n"
        "    EmbedResult(embeddings=[[1.0]], model='m').to_numpy()\n"
        "except ImportError as exc:\n"
        "    print('ImportError:', exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert "ImportError: EmbedResult.to_numpy() needs NumPy" in done.stdout


def test_a_panic_in_a_native_call_raises_an_sdk_error_sync_and_async() -> None:
    with pytest.raises(InferenceKeyError, match="panicked: boom"):
        _core._panicking_call("boom").wait()

    async def main() -> None:
        from inferencekey._aio import run

        with pytest.raises(InferenceKeyError, match="panicked: kaboom"):
            await asyncio.wait_for(run(_core._panicking_call("kaboom")), timeout=30)
        assert await run(_core._panicking_call("")) is None  # the same call without the panic resolves

    asyncio.run(main())


def test_a_pending_call_runs_once(deploy: Deploy) -> None:
    pending = _core._panicking_call("")
    assert pending.wait() is None
    with pytest.raises(InferenceKeyError, match="already run"):
        pending.wait()


def test_async_streams_hand_out_text_chunks(platform: LocalPlatform, deploy: Deploy) -> None:
    deploy()

    async def main() -> list[TextChunk]:
        async with AsyncDataClient(base_url=platform.url, project=platform.project, api_key=platform.api_key) as data:
            stream = await data.endpoint("support-bot").generate_text_stream(prompt=PROMPT, max_tokens=12)
            async with stream:
                return [chunk async for chunk in stream]

    chunks = asyncio.run(main())
    with DataClient(base_url=platform.url, project=platform.project, api_key=platform.api_key) as data:
        expected = data.endpoint("support-bot").generate_text(prompt=PROMPT, max_tokens=12).text
    assert all(type(chunk) is TextChunk for chunk in chunks)
    assert "".join(chunk.text for chunk in chunks) == expected
    assert json.dumps(chunks[0].raw)


def test_io_threads_never_wait_for_the_interpreter(platform: LocalPlatform, deploy: Deploy, admin: Admin) -> None:
    # Four async requests are answered 503 + Retry-After: 0 once, which the native runtime retries on its own (and
    # logs). Meanwhile this thread holds the interpreter lock in one long C call. If an I/O thread needed the lock
    # (to log, to hand over a result), the retries would wait for the hold to end; they must not. The requests go
    # through the runtime as on a loop that cannot watch sockets (Windows' proactor): on a loop that can, they run
    # on the loop's own thread (tests/test_async_loop.py), which, like any asyncio client, goes on only when the
    # loop runs.
    deploy()
    admin.fault("chat", {"type": "status", "status": 503, "retry_after": 0}, count=4)
    logging.getLogger("inferencekey").setLevel(logging.DEBUG)
    hold_ms = 0.0

    async def main() -> list[TextResult]:
        nonlocal hold_ms
        # Enough retries that any one request could meet all four refusals (which one does depends on timing).
        async with AsyncDataClient(
            base_url=platform.url, project=platform.project, api_key=platform.api_key, max_retries=4
        ) as data:
            ep = data.endpoint("support-bot")
            _aio._WAKERS[asyncio.get_running_loop()] = None  # the runtime's path, woken by the resolver thread
            tasks = [asyncio.create_task(ep.generate_text(prompt=PROMPT, max_tokens=4)) for _ in range(4)]
            await asyncio.sleep(0)  # each task starts its native call and awaits it
            started = time.perf_counter()
            total = sum(range(60_000_000))  # one C call: the lock is held throughout
            hold_ms = (time.perf_counter() - started) * 1000
            assert total > 0
            return await asyncio.gather(*tasks)

    try:
        results = asyncio.run(main())
    finally:
        logging.getLogger("inferencekey").setLevel(logging.NOTSET)
    assert all(result.text for result in results)
    assert hold_ms > 300, f"the hold was too short to show anything ({hold_ms:.0f} ms)"
    chats = [e for e in admin.journal() if e["path"].endswith("/chat/completions")]
    assert [e["status"] for e in chats].count(503) == 4 and len(chats) == 8
    first = min(e["started_ms"] for e in chats)
    # Every attempt, retries included, reached the server while the lock was still held.
    late = [e["started_ms"] - first for e in chats if e["started_ms"] - first > hold_ms / 2]
    assert not late, (late, hold_ms)
