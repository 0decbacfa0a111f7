"""The Async twins: ``AsyncManagementClient``, ``AsyncDataClient``, ``AsyncEndpoint`` and ``AsyncTextStream``.

They mirror the sync API (same names, arguments, defaults, results and exceptions) as awaitables that never block the
event loop: each request runs as a task of the native runtime and resolves an asyncio future; cancelling the await
aborts the task and closes its connection.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Literal, overload

from inferencekey._aio import run
from inferencekey._batch import EmbedProgress, Output, drive, run_async
from inferencekey._closing import AsyncClosing
from inferencekey._core import DEFAULT_BATCH_SIZE, DEFAULT_MAX_CONCURRENCY, ChatStream, ChunkBatch
from inferencekey._data import _DataBase, _EndpointBase
from inferencekey._management import Progress, _ensured, _ManagementBase
from inferencekey.chat import ChatTool, ResponseFormat, StreamOptions, ToolChoice
from inferencekey.enums import OnDrift

if TYPE_CHECKING:
    import numpy

from inferencekey.types import (
    EmbedResult,
    EndpointRef,
    Plan,
    ReadinessEvent,
    RerankResult,
    TextChunk,
    TextResult,
    WorkloadSpec,
)

__all__ = ["AsyncDataClient", "AsyncEndpoint", "AsyncManagementClient", "AsyncTextStream"]


class AsyncManagementClient(_ManagementBase, AsyncClosing):
    """The asyncio twin of ``ManagementClient``: the same methods and arguments, each awaited.

    Control-plane client, scoped to one project by its ``ik_sdk_`` token. One client keeps one connection pool:
    reuse it, and ``await close()`` it (or use ``async with``) when done.

    Args:
        base_url: The platform's base URL, e.g. ``https://api.inferencekey.com``.
        sdk_token: The ``ik_sdk_`` control token. A blank token raises ``ConfigurationError``; an ``ik_live_`` data
            key raises ``PermissionDenied``.
        project: The default project slug for calls that do not name one.
        timeout: The longest silence, in seconds, allowed while reading a response.
        connect_timeout: The longest wait, in seconds, for a connection to the platform.
        max_retries: How many times a transient failure is retried (see the retry policy).
    """

    async def ensure(
        self,
        spec: WorkloadSpec,
        *,
        on_drift: OnDrift | str = OnDrift.RECONCILE,
        project: str | None = None,
    ) -> EndpointRef:
        """Idempotently provision or reconcile ``spec`` and return the ref of its endpoint.

        Behaves as ``ManagementClient.ensure``: ``on_drift`` decides what a drifted workload gets (``reconcile``,
        ``fail`` raising ``DriftError``, ``dry_run`` logging the plan, ``warn`` emitting a ``DriftWarning``,
        ``ignore``).

        Raises:
            ValidationError: ``on_drift`` is not one of the accepted values, or the spec is invalid.
            DriftError: ``on_drift="fail"`` and the workload drifted.
        """
        return _ensured(await run(self._native.ensure(spec, on_drift, project)))

    async def plan(self, spec: WorkloadSpec, *, project: str | None = None) -> Plan:
        """Compute what ``ensure(spec)`` would do (create, update which fields, or nothing), changing nothing."""
        return await run(self._native.plan(spec, project))

    async def wait_until_ready(
        self,
        workload_slug: str,
        *,
        project: str | None = None,
        timeout: float = 600.0,
        on_progress: Callable[[ReadinessEvent], None] | None = None,
        silent: bool = False,
    ) -> None:
        """Wait until ``workload_slug`` is serving, reporting progress as ``ManagementClient.wait_until_ready`` does.

        Progress goes to ``on_progress`` when given; otherwise a live view is written to stderr, unless ``silent``.

        Raises:
            ApiError: The platform reported the ``error`` phase (the message is the platform's).
            WaitTimeoutError: ``timeout`` seconds passed first (also a builtin ``TimeoutError``).
        """
        watch = self._native.watch_readiness(workload_slug, project, timeout)
        progress = Progress(on_progress, silent)
        try:
            while (event := await run(watch.next())) is not None:
                if progress.report(event):
                    break
        finally:
            progress.close()

    async def delete(self, workload_slug: str, *, project: str | None = None) -> bool:
        """Delete the workload; ``True`` if it existed and was removed, ``False`` if it was already gone.

        Raises:
            PermissionDenied: The token is for another project or lacks the delete capability.
        """
        return await run(self._native.delete(workload_slug, project))

    async def list_workloads(self, *, project: str | None = None) -> list[dict[str, Any]]:
        """The project's workloads, as the platform's JSON objects."""
        return await run(self._native.list(project))

    async def close(self) -> None:
        """Close the client's pooled connections (a later call opens new ones)."""
        self._native.close()


class AsyncDataClient(_DataBase, AsyncClosing):
    """The asyncio twin of ``DataClient``; derive an ``AsyncEndpoint`` per workload, each bound to its own key.

    One client keeps one connection pool shared by its endpoints: reuse it, and ``await close()`` it (or use
    ``async with``) when done.

    Args:
        base_url: The platform's base URL, e.g. ``https://api.inferencekey.com``.
        project: The project slug; a blank one raises ``ConfigurationError``.
        api_key: The default ``ik_live_`` key, used by ``endpoint()`` when it is given none.
        timeout: The longest silence, in seconds, allowed while reading a response (or between stream events).
        connect_timeout: The longest wait, in seconds, for a connection to the platform.
        max_retries: How many times a transient failure is retried (see the retry policy).
    """

    def endpoint(self, workload_slug: str, *, api_key: str | None = None) -> AsyncEndpoint:
        """Bind an ``AsyncEndpoint`` to ``workload_slug`` (canonicalised) and an ``ik_live_`` key. No request is sent.

        Raises:
            ConfigurationError: No key is available.
            PermissionDenied: The key is an ``ik_sdk_`` control token.
            ValidationError: The slug is empty once canonicalised.
        """
        return AsyncEndpoint(self._native.endpoint(workload_slug, api_key))

    async def close(self) -> None:
        """Close the client's pooled connections (a later call opens new ones)."""
        self._native.close()


class AsyncEndpoint(_EndpointBase):
    """The asyncio twin of ``Endpoint``: one workload's OpenAI-compatible endpoint, bound to one ``ik_live_`` key.

    Obtain instances with ``AsyncDataClient.endpoint`` rather than constructing them.

    Attributes:
        workload_slug: The canonical slug of the bound workload.
        project: The project the workload lives in.
        base_url: The OpenAI-compatible base of this endpoint (``.../endpoint/{project}/{workload}/v1``).
    """

    async def generate_text(
        self,
        *,
        prompt: str | None = None,
        messages: list[Any] | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        stop: str | list[str] | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        presence_penalty: float | None = None,
        frequency_penalty: float | None = None,
        logprobs: bool | None = None,
        top_logprobs: int | None = None,
        tools: list[ChatTool] | None = None,
        tool_choice: ToolChoice | None = None,
        response_format: ResponseFormat | None = None,
        extra_body: dict[str, Any] | None = None,
        extra_headers: dict[str, str] | None = None,
        timeout: float | None = None,
        max_retries: int | None = None,
    ) -> TextResult:
        """Run a non-streaming chat completion (pass ``prompt`` or ``messages``, not both); the same parameters and
        result as ``Endpoint.generate_text``."""
        return await run(
            self._native.chat(
                prompt,
                messages,
                temperature,
                max_tokens,
                (
                    stop,
                    top_p,
                    seed,
                    presence_penalty,
                    frequency_penalty,
                    logprobs,
                    top_logprobs,
                    tools,
                    tool_choice,
                    response_format,
                    None,
                    extra_body,
                ),
                (extra_headers, timeout, max_retries),
            )
        )

    async def generate_text_stream(
        self,
        *,
        prompt: str | None = None,
        messages: list[Any] | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        stop: str | list[str] | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        presence_penalty: float | None = None,
        frequency_penalty: float | None = None,
        logprobs: bool | None = None,
        top_logprobs: int | None = None,
        tools: list[ChatTool] | None = None,
        tool_choice: ToolChoice | None = None,
        response_format: ResponseFormat | None = None,
        stream_options: StreamOptions | None = None,
        extra_body: dict[str, Any] | None = None,
        extra_headers: dict[str, str] | None = None,
        timeout: float | None = None,
        max_retries: int | None = None,
    ) -> AsyncTextStream:
        """Run a streaming chat completion: an async iterator of one ``TextChunk`` per server-sent event; the same
        parameters as ``Endpoint.generate_text_stream``.

        The connection opens in this await, so auth and validation errors raise here, not mid-iteration. Use the
        stream with ``async with`` (or ``await close()``) to release the connection when stopping early;
        ``await stream.final_result()`` gives the whole reply.
        """
        opened = await run(
            self._native.chat_stream(
                prompt,
                messages,
                temperature,
                max_tokens,
                (
                    stop,
                    top_p,
                    seed,
                    presence_penalty,
                    frequency_penalty,
                    logprobs,
                    top_logprobs,
                    tools,
                    tool_choice,
                    response_format,
                    stream_options,
                    extra_body,
                ),
                (extra_headers, timeout, max_retries),
            )
        )
        return AsyncTextStream(ChatStream(opened))

    async def embed(
        self,
        *,
        input: str | list[str],
        dimensions: int | None = None,
        extra_body: dict[str, Any] | None = None,
    ) -> EmbedResult:
        """Create embeddings: one vector per input, in input order. A bare string is a one-element batch; the same
        parameters as ``Endpoint.embed``.

        ``result.to_numpy()`` gives them as one NumPy ``float32`` array of shape ``(n, dim)``.
        """
        return await run(self._native.embed(input, dimensions, extra_body))

    @overload
    async def embed_many(
        self,
        inputs: Iterable[str],
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        output: Literal["numpy"] = "numpy",
        on_progress: Callable[[EmbedProgress], None] | None = None,
        silent: bool = False,
    ) -> numpy.ndarray[Any, numpy.dtype[numpy.float32]]: ...

    @overload
    async def embed_many(
        self,
        inputs: Iterable[str],
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        output: Literal["list"],
        on_progress: Callable[[EmbedProgress], None] | None = None,
        silent: bool = False,
    ) -> list[list[float]]: ...

    async def embed_many(
        self,
        inputs: Iterable[str],
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        output: Output = "numpy",
        on_progress: Callable[[EmbedProgress], None] | None = None,
        silent: bool = False,
    ) -> Any:
        """The asyncio twin of ``Endpoint.embed_many``: the same arguments, result, progress and errors; cancelling the
        await stops every request in flight."""
        job = self._native.embed_job(batch_size, max_concurrency, output, inputs)
        driver = drive(job, inputs, batch_size, max_concurrency, output, on_progress, silent)
        return await run_async(driver)

    async def rerank(self, *, query: str, documents: list[str], top_n: int | None = None) -> RerankResult:
        """Score ``documents`` against ``query``; results are ordered best first (at most ``top_n`` when given)."""
        return await run(self._native.rerank(query, documents, top_n))


class AsyncTextStream(AsyncClosing, AsyncIterator[TextChunk]):
    """The chunks of one streaming chat completion; an async iterator and an async context manager.

    One await fetches a batch (everything decoded so far); its chunks are then handed out natively, each
    ``TextChunk`` built as it goes. Leaving the ``async with`` block, ``await close()``, cancelling the task while it
    waits for chunks, or garbage collection closes the connection.
    """

    def __init__(self, native: ChatStream) -> None:
        self._native: ChatStream | None = native
        # Kept after close: a stream that ended cleanly still gives its final result.
        self._source = native
        self._batch: Iterator[TextChunk] = iter(())

    def __aiter__(self) -> AsyncTextStream:
        return self

    async def __anext__(self) -> TextChunk:
        for chunk in self._batch:
            return chunk
        return await self._refill()

    async def _refill(self) -> TextChunk:
        native = self._native
        if native is None:
            raise StopAsyncIteration
        try:
            batch: ChunkBatch = await run(native.next_batch())
            self._batch = batch
        except BaseException:
            await self.close()
            raise
        for chunk in self._batch:
            return chunk
        await self.close()
        raise StopAsyncIteration

    async def final_result(self) -> TextResult:
        """Read the rest of the stream and return the whole reply as one ``TextResult``, as
        ``TextStream.final_result()`` does (chunks already iterated included). The stream is consumed and closed.

        Raises:
            ApiError: The stream failed, or failed or was closed earlier (it then has no final result).
        """
        try:
            return await run(self._source.read_to_end())
        finally:
            await self.close()

    async def close(self) -> None:
        """Close the stream and its connection; iteration ends. Idempotent."""
        native, self._native = self._native, None
        self._batch = iter(())
        if native is not None:
            native.close()


AsyncEndpoint._client_class = AsyncDataClient
