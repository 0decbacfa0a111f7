# embed_many: any number of texts in batches, concurrently, every vector in input order (NumPy or lists), adapting to
# 429/503 without losing anything, a failure that carries what was done, lazy iterators, progress, cancellation.
from __future__ import annotations

import asyncio
import io
import math
import pickle
import time
from collections.abc import Iterator
from typing import Any

import numpy
import pytest
from conftest import Admin, Deploy

from inferencekey import (
    AsyncDataClient,
    BatchEmbedError,
    EmbedProgress,
    Endpoint,
    ValidationError,
)
from inferencekey.local import LocalPlatform


def texts(n: int) -> list[str]:
    """`n` distinct texts (the local platform's vectors are a deterministic function of the words)."""
    return [f"text number {i} about topic {i % 17} and {i % 5}" for i in range(n)]


def direct(ep: Endpoint, inputs: list[str]) -> numpy.ndarray[Any, numpy.dtype[numpy.float32]]:
    """The vectors of `inputs` by plain embed calls, for comparison."""
    rows = [ep.embed(input=inputs[i : i + 100]).to_numpy() for i in range(0, len(inputs), 100)]
    return numpy.concatenate(rows)


def embedding_requests(admin: Admin) -> list[dict[str, Any]]:
    return [e for e in admin.journal() if e["path"].endswith("/embeddings")]


@pytest.fixture
def embedder(deploy: Deploy) -> Endpoint:
    return deploy("embedder", task_type="embedding")


def test_every_vector_in_input_order(embedder: Endpoint, admin: Admin) -> None:
    inputs = texts(1000)
    array = embedder.embed_many(inputs, batch_size=32, max_concurrency=4, silent=True)
    assert array.dtype == numpy.float32 and array.shape == (1000, 64)
    requests = embedding_requests(admin)
    assert len(requests) == math.ceil(1000 / 32)
    assert all(len(e["body"]["input"]) <= 32 for e in requests)
    assert sorted(t for e in requests for t in e["body"]["input"]) == sorted(inputs)  # each text sent once
    admin.clear_journal()
    assert numpy.array_equal(array, direct(embedder, inputs))


def test_lists_and_iterators_and_empty_input(embedder: Endpoint) -> None:
    inputs = texts(70)
    as_lists = embedder.embed_many(iter(inputs), batch_size=8, output="list", silent=True)
    assert isinstance(as_lists, list) and len(as_lists) == 70
    assert all(isinstance(x, float) for x in as_lists[0])
    assert numpy.array_equal(numpy.asarray(as_lists, dtype=numpy.float32), direct(embedder, inputs))
    assert embedder.embed_many([], silent=True).shape == (0, 0)
    assert embedder.embed_many([], output="list", silent=True) == []


def test_an_iterator_is_read_lazily(embedder: Endpoint) -> None:
    pulled = 0

    def source() -> Iterator[str]:
        nonlocal pulled
        for text in texts(2000):
            pulled += 1
            yield text

    pulled_at_first_progress: list[int] = []

    def progress(update: EmbedProgress) -> None:
        if not pulled_at_first_progress:
            pulled_at_first_progress.append(pulled)

    array = embedder.embed_many(source(), batch_size=10, max_concurrency=2, on_progress=progress)
    assert array.shape == (2000, 64)
    # When the first batch came back, at most the submission window (4 x concurrency batches) had been read.
    assert pulled_at_first_progress[0] <= 10 * 2 * 4
    assert pulled == 2000


def test_progress_reports_items_rate_and_eta(embedder: Endpoint, capsys: pytest.CaptureFixture[str]) -> None:
    updates: list[EmbedProgress] = []
    embedder.embed_many(texts(100), batch_size=10, on_progress=updates.append)
    assert [u.done for u in updates] == sorted(u.done for u in updates)
    assert updates[-1].done == 100 and all(u.total == 100 for u in updates)
    assert updates[-1].eta_s == 0 and all(u.rate > 0 for u in updates)
    assert capsys.readouterr().err == ""  # on_progress replaces the view
    embedder.embed_many(texts(10), silent=True)
    assert capsys.readouterr().err == ""
    embedder.embed_many(texts(10))  # not a terminal: one plain line at the end
    err = capsys.readouterr().err
    assert "embedded 10/10 texts" in err and err.count("\n") == 1


def test_overload_answers_lower_concurrency_and_lose_nothing(embedder: Endpoint, admin: Admin) -> None:
    admin.fault(
        "embeddings",
        {"type": "status", "status": 429, "retry_after": 0},
        count=None,
        probability=0.2,
    )
    updates: list[EmbedProgress] = []
    inputs = texts(600)
    array = embedder.embed_many(inputs, batch_size=10, max_concurrency=8, on_progress=updates.append)
    refused = [e for e in embedding_requests(admin) if e["status"] == 429]
    assert refused, "the fault never fired"
    assert min(u.concurrency for u in updates) < 8
    assert max(u.concurrency for u in updates) <= 8
    admin.call("DELETE", "/_local/faults")
    assert numpy.array_equal(array, direct(embedder, inputs))


def test_a_failure_carries_what_was_done_and_the_job_can_resume(embedder: Endpoint, admin: Admin) -> None:
    admin.fault("embeddings", {"type": "status", "status": 400, "body": {"error": {"message": "too long"}}})
    inputs = texts(300)
    with pytest.raises(BatchEmbedError) as info:
        embedder.embed_many(inputs, batch_size=10, max_concurrency=3, silent=True)
    error = info.value
    assert error.status_code == 400 and "too long" in str(error)
    clone = pickle.loads(pickle.dumps(error))  # it can travel back from a worker process
    assert clone.failed_indices == error.failed_indices and numpy.array_equal(clone.vectors, error.vectors)
    assert error.__cause__ is not None
    assert error.failed_indices  # the refused batch
    assert sorted(error.failed_indices + error.completed_indices) == list(range(error.consumed))
    assert error.consumed < len(inputs)  # it stopped sending after the failure
    assert error.vectors.shape == (len(error.completed_indices), 64)
    # Resume: the failed inputs and the ones never read; together with what was done, the whole job.
    rest = error.failed_indices + list(range(error.consumed, len(inputs)))
    again = embedder.embed_many([inputs[i] for i in rest], silent=True)
    result = numpy.empty((len(inputs), 64), dtype=numpy.float32)
    result[error.completed_indices] = error.vectors
    result[rest] = again
    assert numpy.array_equal(result, direct(embedder, inputs))


def test_bad_arguments_are_refused_before_any_request(embedder: Endpoint, admin: Admin) -> None:
    for kwargs, word in [
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": 5000}, "batch_size"),
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"output": "pandas"}, "output"),
    ]:
        with pytest.raises(ValidationError, match=word):
            embedder.embed_many(["a"], silent=True, **kwargs)
    with pytest.raises(ValidationError, match="not one string"):
        embedder.embed_many("abc", silent=True)
    with pytest.raises(TypeError):
        embedder.embed_many(["a", 3], silent=True)  # type: ignore[list-item]
    assert embedding_requests(admin) == []


def test_async_embed_many_and_cancellation(platform: LocalPlatform, embedder: Endpoint, admin: Admin) -> None:
    inputs = texts(200)
    expected = direct(embedder, inputs)

    async def main() -> numpy.ndarray[Any, numpy.dtype[numpy.float32]]:
        async with AsyncDataClient(base_url=platform.url, project=platform.project, api_key=platform.api_key) as data:
            ep = data.endpoint("embedder")
            array = await ep.embed_many(inputs, batch_size=16, max_concurrency=4, silent=True)
            # Cancelling while every request stalls: the job stops and nothing stays in flight.
            admin.fault("embeddings", {"type": "stall", "at": "headers", "ms": 600_000}, count=None)
            task = asyncio.create_task(ep.embed_many(texts(100), batch_size=10, max_concurrency=4, silent=True))
            while len([e for e in embedding_requests(admin) if e["outcome"] == "in_progress"]) < 4:
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            return array

    try:
        array = asyncio.run(main())
    finally:
        admin.call("DELETE", "/_local/faults")
    assert numpy.array_equal(array, expected)
    # The limit held (no more than max_concurrency were sent), and nothing was sent after the cancellation.
    stalled = [e for e in embedding_requests(admin) if e["outcome"] == "in_progress"]
    assert len(stalled) == 4
    seen = len(embedding_requests(admin))
    asyncio.run(asyncio.sleep(0.2))
    assert len(embedding_requests(admin)) == seen


def test_the_view_redraws_one_line_on_a_terminal_and_prints_plain_lines_elsewhere() -> None:
    from inferencekey._batch import EmbedProgressView

    updates = [
        EmbedProgress(done=32, total=64, elapsed_s=0.5, rate=64.0, eta_s=0.5, concurrency=8),
        EmbedProgress(done=64, total=64, elapsed_s=1.0, rate=64.0, eta_s=0.0, concurrency=4),
    ]
    terminal = io.StringIO()
    view = EmbedProgressView(terminal, interactive=True)
    for update in updates:
        view(update)
    view.close()
    drawn = terminal.getvalue()
    assert drawn.count("\n") == 1 and drawn.endswith("\n")  # one line, redrawn, left on screen
    assert "embedded 64/64 texts  64/s  ETA 0s  (concurrency 4)" in drawn
    log = io.StringIO()
    view = EmbedProgressView(log, interactive=False)
    for update in updates:
        view(update)
    view.close()
    assert log.getvalue() == "embedded 64/64 texts  64/s  ETA 0s  (concurrency 4)\n"  # quiet until the end


class FakeTerminal(io.StringIO):
    """A stream that says it is a terminal and counts the view's redraws (each starts with a carriage return)."""

    def isatty(self) -> bool:
        return True

    @property
    def redraws(self) -> int:
        return self.getvalue().count("\r")


def test_a_fast_run_redraws_at_most_ten_times_a_second_and_ends_on_the_final_state(
    embedder: Endpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    from inferencekey._progress import MIN_REDRAW_INTERVAL_S

    # The built-in view on a "terminal" stderr: 20,000 texts in batches of 10 make 2,000 progress updates.
    terminal = FakeTerminal()
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr("sys.stderr", terminal)
    started = time.monotonic()
    array = embedder.embed_many(texts(20_000), batch_size=10, max_concurrency=8)
    elapsed = time.monotonic() - started
    assert array.shape[0] == 20_000
    # One draw up front, then at most one per interval, plus the final state drawn at the end.
    assert terminal.redraws <= elapsed / MIN_REDRAW_INTERVAL_S + 2, (terminal.redraws, elapsed)
    assert terminal.redraws < 2_000 / 4
    drawn = terminal.getvalue()
    assert drawn.endswith("\n") and drawn.count("\n") == 1
    assert drawn.rsplit("\r", 1)[1].startswith("\x1b[2Kembedded 20,000/20,000 texts")


def test_a_throttled_redraw_is_kept_until_the_next_due_one_or_the_end() -> None:
    from inferencekey._progress import LiveLine

    now = [0.0]
    terminal = FakeTerminal()
    line = LiveLine(terminal, interactive=True, clock=lambda: now[0])
    line.redraw("one")
    now[0] = 0.05
    line.redraw("two")  # too soon: kept
    assert terminal.redraws == 1
    now[0] = 0.11
    line.redraw("three")  # due: drawn, "two" is dropped for the newer text
    assert terminal.redraws == 2 and "two" not in terminal.getvalue()
    now[0] = 0.12
    line.redraw("four", now=True)  # a change that must show at once
    line.redraw("five")
    line.end()  # the kept text is the final state: drawn before the newline
    assert terminal.redraws == 4
    assert terminal.getvalue().endswith("five\n")
    line.print("plain")  # plain lines are never throttled
    line.print("plain")
    assert terminal.getvalue().endswith("plain\nplain\n")
