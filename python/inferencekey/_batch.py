"""``embed_many``: embed any number of texts in batches, concurrently on the native I/O runtime, with the vectors
returned in input order. One driver serves the sync and async endpoints: it is a generator that yields each native
call to wait for, and the two differ only in how they wait.

Memory stays bounded by the batches in flight plus the output: inputs are read lazily (an iterator is consumed as
batches are sent), submitting stops while a slow batch holds up the ordered output, and finished vectors go straight
into one float32 buffer that becomes the result.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Sized
from dataclasses import dataclass
from itertools import islice
from typing import Any, Literal, TextIO

from inferencekey._core import DoneBatch, EmbedJob, Pending
from inferencekey._progress import LiveLine
from inferencekey.exceptions import ApiError, BatchEmbedError, InferenceKeyError

Output = Literal["numpy", "list"]

# How many batches may be finished or in flight ahead of the first unwritten one: bounds what waits for a slow batch.
_WINDOW_FACTOR = 4


@dataclass(frozen=True)
class EmbedProgress:
    """Progress of ``embed_many``, reported after each finished batch.

    Attributes:
        done: Inputs embedded so far.
        total: How many inputs there are, when known (a sequence); ``None`` for an iterator.
        elapsed_s: Seconds since the job started.
        rate: Inputs embedded per second so far.
        eta_s: Seconds left at the current rate, when ``total`` is known.
        concurrency: Requests allowed in flight now (lowered while the platform answers 429 or 503).
    """

    done: int
    total: int | None
    elapsed_s: float
    rate: float
    eta_s: float | None
    concurrency: int


class EmbedProgressView:
    """The built-in view of ``embed_many`` on stderr: one line redrawn in place on a terminal, at most about ten times
    a second and with the final state at the end; otherwise (``CI`` set, or not a terminal) a plain line at most every
    10 seconds and at the end."""

    def __init__(self, stream: TextIO | None = None, *, interactive: bool | None = None) -> None:
        self._line = LiveLine(stream, interactive=interactive)
        self._last_plain = 0.0
        self._last: EmbedProgress | None = None

    def __call__(self, progress: EmbedProgress) -> None:
        """Show one update."""
        self._last = progress
        if self._line.interactive:
            self._line.redraw(progress_line(progress))
        elif progress.elapsed_s - self._last_plain >= 10.0:
            self._last_plain = progress.elapsed_s
            self._line.print(progress_line(progress))

    def close(self) -> None:
        """End the view with the final state."""
        if self._line.interactive:
            self._line.end()
        elif self._last is not None and self._last.elapsed_s != self._last_plain:
            self._line.print(progress_line(self._last))


def progress_line(progress: EmbedProgress) -> str:
    """E.g. ``embedded 12,288/100,000 texts  4,096/s  ETA 21s  (8 in flight)``."""
    of = f"/{progress.total:,}" if progress.total is not None else ""
    line = f"embedded {progress.done:,}{of} texts  {progress.rate:,.0f}/s"
    if progress.eta_s is not None:
        line += f"  ETA {progress.eta_s:,.0f}s"
    return f"{line}  (concurrency {progress.concurrency})"


def drive(
    job: EmbedJob,
    inputs: Iterable[str],
    batch_size: int,
    max_concurrency: int,
    output: Output,
    on_progress: Callable[[EmbedProgress], None] | None,
    silent: bool,
) -> Generator[Pending[DoneBatch | None], DoneBatch | None, Any]:
    """Run ``job`` over ``inputs``: yields each native call to wait for and is sent its result; returns the vectors.

    ``job`` comes from the endpoint, whose core has checked the arguments already (``batch_size``,
    ``max_concurrency``, ``output``, and ``inputs`` not one string).
    """
    numpy = _numpy() if output == "numpy" else None
    total = len(inputs) if isinstance(inputs, Sized) else None
    source: Iterator[str] = iter(inputs)
    view = EmbedProgressView() if on_progress is None and not silent else None
    report = on_progress if on_progress is not None else view
    started = time.monotonic()

    spans: list[tuple[int, int]] = []  # batch number -> (first input index, count)
    finished: dict[int, bytearray] = {}  # finished batches waiting for an earlier one
    written = 0  # batches written to `out`, in order
    out = bytearray()
    dim: int | None = None
    consumed = done_items = 0
    exhausted = False
    failures: list[tuple[int, InferenceKeyError]] = []
    window = max_concurrency * _WINDOW_FACTOR
    try:
        while True:
            while not exhausted and not failures and job.capacity() > 0 and len(spans) - written < window:
                texts = list(islice(source, batch_size))
                if not texts:
                    exhausted = True
                    break
                spans.append((consumed, len(texts)))
                consumed += len(texts)
                job.submit(len(spans) - 1, texts)
            finished_batch = yield job.next_done()
            if finished_batch is None:
                break
            if finished_batch.error is not None:
                failures.append((finished_batch.batch, finished_batch.error))
                continue
            vectors = finished_batch.vectors
            assert vectors is not None
            if dim is None:
                dim = vectors.dim
            if vectors.dim != dim or dim is None:
                failures.append((finished_batch.batch, ApiError("malformed response: embeddings of different lengths")))
                continue
            finished[finished_batch.batch] = vectors.to_bytearray()
            while written in finished:
                out += finished.pop(written)
                written += 1
            done_items += spans[finished_batch.batch][1]
            if report is not None:
                report(_progress(done_items, total, started, job.concurrency()))
    except BaseException:
        job.abort()  # Ctrl+C, cancellation or an error: no request stays in flight
        raise
    finally:
        if view is not None:
            view.close()
    n = sum(count for _, count in spans[:written])
    if failures:
        raise _partial_failure(failures, spans, written, finished, out, dim or 0, consumed, output, numpy)
    return _vectors(out, n, dim or 0, output, numpy)


def _progress(done: int, total: int | None, started: float, concurrency: int) -> EmbedProgress:
    elapsed = max(time.monotonic() - started, 1e-9)
    rate = done / elapsed
    eta = (total - done) / rate if total is not None and rate > 0 else None
    return EmbedProgress(done=done, total=total, elapsed_s=elapsed, rate=rate, eta_s=eta, concurrency=concurrency)


def _vectors(buffer: bytearray, n: int, dim: int, output: Output, numpy: Any) -> Any:
    """``n`` vectors of ``dim`` float32 values in ``buffer``, as a NumPy array (sharing it) or as lists."""
    if numpy is not None:
        return numpy.frombuffer(buffer, dtype=numpy.float32).reshape(n, dim)
    flat = memoryview(buffer).cast("f").tolist()
    return [flat[i * dim : (i + 1) * dim] for i in range(n)]


def _partial_failure(
    failures: list[tuple[int, InferenceKeyError]],
    spans: list[tuple[int, int]],
    written: int,
    finished: dict[int, bytearray],
    out: bytearray,
    dim: int,
    consumed: int,
    output: Output,
    numpy: Any,
) -> BatchEmbedError:
    """The error of a job where some batches failed for good, carrying every vector that was embedded."""
    completed: list[int] = []
    buffer = bytearray(out)
    for batch in range(written):
        first, count = spans[batch]
        completed.extend(range(first, first + count))
    for batch in sorted(finished):
        first, count = spans[batch]
        completed.extend(range(first, first + count))
        buffer += finished[batch]
    done = set(completed)
    failed = [index for index in range(consumed) if index not in done]
    failures.sort(key=lambda failure: failure[0])
    cause = failures[0][1]
    message = (
        f"embedding failed for {len(failed):,} of {consumed:,} inputs read ({len(failures)} batch(es)); "
        f"first error: {cause}"
    )
    error = BatchEmbedError(
        message,
        failed_indices=failed,
        completed_indices=completed,
        vectors=_vectors(buffer, len(completed), dim, output, numpy),
        consumed=consumed,
        cause=cause,
    )
    error.__cause__ = cause
    return error


def _numpy() -> Any:
    try:
        import numpy
    except ImportError as missing:
        raise ImportError(
            "embed_many(output='numpy') needs NumPy: pip install numpy, or pass output='list'"
        ) from missing
    return numpy


def run_sync(driver: Generator[Pending[Any], Any, Any]) -> Any:
    """Run a driver, waiting for each native call on this thread."""
    try:
        pending = next(driver)
        while True:
            pending = driver.send(pending.wait())
    except StopIteration as finished:
        return finished.value
    except BaseException as exc:
        _throw(driver, exc)
        raise


async def run_async(driver: Generator[Pending[Any], Any, Any]) -> Any:
    """Run a driver, awaiting each native call on the running event loop."""
    from inferencekey._aio import run

    try:
        pending = next(driver)
        while True:
            pending = driver.send(await run(pending))
    except StopIteration as finished:
        return finished.value
    except BaseException as exc:
        _throw(driver, exc)
        raise


def _throw(driver: Generator[Any, Any, Any], exc: BaseException) -> None:
    """Let the driver clean up (abort its requests) after an interruption raised outside it."""
    if getattr(driver, "gi_frame", None) is not None and not getattr(driver, "gi_running", True):
        # The driver re-raises `exc` after its cleanup; the caller raises it.
        with contextlib.suppress(BaseException):
            driver.throw(exc)
