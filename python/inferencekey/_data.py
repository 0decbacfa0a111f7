"""``DataClient``, ``Endpoint`` and ``TextStream`` and their asyncio twins, side by side over shared bases: the
data-plane clients (``ik_live_`` keys) that call a workload's OpenAI-compatible endpoint. Requests, SSE decoding and
error mapping happen in the native core. The async classes mirror the sync ones (same names, arguments, defaults,
results and exceptions) as awaitables that never block the event loop: each request runs as a task of the native
runtime and resolves an asyncio future; cancelling the await aborts the task and closes its connection.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

from inferencekey._aio import run
from inferencekey._batch import EmbedProgress, Output, drive, run_async, run_sync
from inferencekey._client import ClientBase
from inferencekey._closing import AsyncClosing, Closing
from inferencekey._core import DEFAULT_BATCH_SIZE, DEFAULT_MAX_CONCURRENCY, ChatStream
from inferencekey._core import DataClient as NativeDataClient
from inferencekey._core import Endpoint as NativeEndpoint
from inferencekey._network import CertFiles
from inferencekey._pickling import rebuild_endpoint
from inferencekey.chat import ChatTool, ResponseFormat, StreamOptions, ToolChoice
from inferencekey.types import EmbedResult, RerankResult, TextChunk, TextResult

if TYPE_CHECKING:
    import numpy

DEFAULT_BATCH_SIZE: int = DEFAULT_BATCH_SIZE
DEFAULT_MAX_CONCURRENCY: int = DEFAULT_MAX_CONCURRENCY

__all__ = ["AsyncDataClient", "AsyncEndpoint", "AsyncTextStream", "DataClient", "Endpoint", "TextStream"]

_D = TypeVar("_D", bound="_DataBase")


class _DataBase(ClientBase):
    """Construction and configuration shared by ``DataClient`` and ``AsyncDataClient``."""

    _native: NativeDataClient

    def __init__(
        self,
        *,
        base_url: str,
        project: str,
        api_key: str | None = None,
        timeout: float = 600.0,
        connect_timeout: float = 10.0,
        max_retries: int = 2,
        default_headers: Mapping[str, str] | None = None,
        verify: bool | str | os.PathLike[str] = True,
        cert: CertFiles | None = None,
        proxy: str | None = None,
    ) -> None:
        self._native = NativeDataClient(
            base_url=base_url,
            project=project,
            api_key=api_key,
            from_env=False,
            connect_timeout=connect_timeout,
            timeout=timeout,
            max_retries=max_retries,
            default_headers=None if default_headers is None else dict(default_headers),
            verify=verify,
            cert=cert,
            proxy=proxy,
        )

    @classmethod
    def from_env(
        cls: type[_D],
        *,
        base_url: str | None = None,
        project: str | None = None,
        api_key: str | None = None,
        timeout: float = 600.0,
        connect_timeout: float = 10.0,
        max_retries: int = 2,
        default_headers: Mapping[str, str] | None = None,
        verify: bool | str | os.PathLike[str] = True,
        cert: CertFiles | None = None,
        proxy: str | None = None,
    ) -> _D:
        """Build a client from configuration, each value resolved as explicit > environment > default.

        Reads ``INFERENCEKEY_BASE_URL`` (default ``https://api.inferencekey.com``), ``INFERENCEKEY_PROJECT`` and
        ``INFERENCEKEY_API_KEY`` (the default ``ik_live_`` key). Blank environment values count as unset.
        """
        client = cls.__new__(cls)
        client._native = NativeDataClient(
            base_url=base_url,
            project=project,
            api_key=api_key,
            from_env=True,
            connect_timeout=connect_timeout,
            timeout=timeout,
            max_retries=max_retries,
            default_headers=None if default_headers is None else dict(default_headers),
            verify=verify,
            cert=cert,
            proxy=proxy,
        )
        return client

    @property
    def project(self) -> str:
        """The project slug of this client's endpoints."""
        return self._native.project


class DataClient(_DataBase, Closing):
    """Data-plane client for one project; derive an ``Endpoint`` per workload, each bound to its own key.

    One client keeps one connection pool shared by its endpoints: reuse it, and ``close()`` it (or use it as a
    context manager) when done.

    Args:
        base_url: The platform's base URL, e.g. ``https://api.inferencekey.com``.
        project: The project slug; a blank one raises ``ConfigurationError``.
        api_key: The default ``ik_live_`` key, used by ``endpoint()`` when it is given none.
        timeout: The longest silence, in seconds, allowed while reading a response (or between stream events).
        connect_timeout: The longest wait, in seconds, for a connection to the platform.
        max_retries: How many times a transient failure is retried (see the retry policy).
        default_headers: Headers sent with every request (for a gateway or a tenant); ``Authorization`` is
            refused, since the client sends its own credential.
        verify: Which certificates to trust: ``True`` (the operating system's store, ``SSL_CERT_FILE`` and
            ``SSL_CERT_DIR``, and the bundled roots), the path of a PEM bundle (only those), or ``False`` (no
            verification; logged once as a warning, never the default).
        cert: A client certificate for mutual TLS: the path of a PEM file holding the certificate and its key, or a
            ``(cert, key)`` pair of paths.
        proxy: A proxy for every request (``http://``, ``https://``, ``socks5://``), replacing ``HTTPS_PROXY``,
            ``HTTP_PROXY`` and ``ALL_PROXY``; ``NO_PROXY`` still applies. ``None``: the environment's.
    """

    def endpoint(self, workload_slug: str, *, api_key: str | None = None) -> Endpoint:
        """Bind an ``Endpoint`` to ``workload_slug`` (canonicalised) and an ``ik_live_`` key.

        The key resolves as ``api_key=`` > the client's default key (``INFERENCEKEY_API_KEY``). No request is sent.

        Raises:
            ConfigurationError: No key is available.
            PermissionDenied: The key is an ``ik_sdk_`` control token.
            ValidationError: The slug is empty once canonicalised.
        """
        return Endpoint(self._native.endpoint(workload_slug, api_key))

    def close(self) -> None:
        """Close the client's pooled connections (a later call opens new ones)."""
        self._native.close()


class _EndpointBase:
    """The bound workload's identity, shared by ``Endpoint`` and ``AsyncEndpoint``."""

    # The client class an unpickled endpoint is rebuilt with.
    _client_class: type[_DataBase]

    def __init__(self, native: NativeEndpoint) -> None:
        self._native = native
        self.workload_slug: str = native.workload_slug
        self.project: str = native.project
        self.base_url: str = native.base_url

    @property
    def api_key(self) -> str:
        """The ``ik_live_`` key this endpoint is bound to, for handing the endpoint to another OpenAI-compatible
        client (``openai.OpenAI(base_url=ep.base_url, api_key=ep.api_key)``). It is the credential itself: never log
        or print it (the endpoint's repr does not show it)."""
        return self._native.api_key

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle as the client's configuration, the workload slug and the endpoint's key; never a connection."""
        return (rebuild_endpoint, (self._client_class, self._native.config()))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(project={self.project!r}, workload_slug={self.workload_slug!r})"


class Endpoint(_EndpointBase):
    """One workload's OpenAI-compatible endpoint, bound to one ``ik_live_`` key.

    Obtain instances with ``DataClient.endpoint`` rather than constructing them.

    Attributes:
        workload_slug: The canonical slug of the bound workload.
        project: The project the workload lives in.
        base_url: The OpenAI-compatible base of this endpoint (``.../endpoint/{project}/{workload}/v1``).
    """

    def generate_text(
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
        """Run a non-streaming chat completion.

        Pass either ``prompt`` (one user turn) or ``messages`` (OpenAI-style role/content dicts, forwarded as given),
        not both. Unset parameters are omitted from the request; set ones go under their OpenAI names, so the body is
        the one the ``openai`` client sends for the same call:

        - sampling: ``stop`` (a string or up to 4), ``top_p`` (0 to 1), ``seed``, ``presence_penalty`` and
          ``frequency_penalty`` (-2 to 2), ``logprobs`` and ``top_logprobs`` (0 to 20; the values stay in ``raw``);
        - tools: ``tools`` (function tools) and ``tool_choice``; the calls come back as ``TextResult.tool_calls``;
        - structured output: ``response_format`` (``json_object``, or ``json_schema`` with a schema);
        - ``extra_body``: engine parameters the SDK does not name (``top_k``, ``min_p``, vLLM's guided decoding),
          merged into the body last.

        Every argument is checked before any request (``ValidationError`` naming it). ``TextResult.usage`` carries
        the token counts when the engine reports them.
        """
        return self._native.chat(
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
        ).wait()

    def generate_text_stream(
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
    ) -> TextStream:
        """Run a streaming chat completion: an iterator of one ``TextChunk`` per server-sent event.

        Same parameters as ``generate_text``, plus ``stream_options``: ``{"include_usage": True}`` adds a last chunk
        (empty ``text``) whose ``usage`` carries the token counts. The connection opens here, so auth and validation
        errors raise from this call, not mid-iteration; chunks are then pulled as you iterate. Concatenate
        ``chunk.text`` to rebuild the reply, or call ``final_result()`` for the whole reply (text, usage, tool calls).
        Use it as a context manager (or call ``close()``) to release the connection when stopping early.
        """
        return TextStream(
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
            ).wait()
        )

    def embed(
        self,
        *,
        input: str | list[str],
        dimensions: int | None = None,
        extra_body: dict[str, Any] | None = None,
    ) -> EmbedResult:
        """Create embeddings: one vector per input, in input order. A bare string is a one-element batch.

        ``result.to_numpy()`` gives them as one NumPy ``float32`` array of shape ``(n, dim)``, built from the vectors
        received without Python floats in between (``result.embeddings`` is then never built). ``dimensions`` asks a
        model that can shorten its vectors for that size; ``extra_body`` is merged into the request body last.
        ``result.usage`` carries the token counts when the engine reports them.
        """
        return self._native.embed(input, dimensions, extra_body).wait()

    @overload
    def embed_many(
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
    def embed_many(
        self,
        inputs: Iterable[str],
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        output: Literal["list"],
        on_progress: Callable[[EmbedProgress], None] | None = None,
        silent: bool = False,
    ) -> list[list[float]]: ...

    def embed_many(
        self,
        inputs: Iterable[str],
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        output: Output = "numpy",
        on_progress: Callable[[EmbedProgress], None] | None = None,
        silent: bool = False,
    ) -> Any:
        """Embed every text of ``inputs`` (any iterable of strings, of any length) and return the vectors in input
        order: a NumPy ``float32`` array of shape ``(n, dim)`` (``output="numpy"``, the default) or lists.

        Inputs are sent ``batch_size`` per request (32 by default, the input cap of common embedding servers), with up
        to ``max_concurrency`` requests in flight on the SDK's own I/O threads. When the platform answers 429 or 503
        the job sends fewer requests at once (halving, then growing back by one as answers come back clean) and
        retries the refused batch after its ``Retry-After``; lost connections are retried too. An iterator is read
        lazily, so memory stays bounded by the batches in flight plus the output.

        Progress (``EmbedProgress``: items, items/s, ETA) goes to ``on_progress`` when given; otherwise a live line is
        written to stderr (plain lines in CI or when redirected), unless ``silent``. Ctrl+C or cancelling stops every
        request in flight.

        Raises:
            BatchEmbedError: Some batch failed in a way retries could not cure; it carries the failed and the
                completed input indices and the vectors that were embedded, so the job can resume.
            ValidationError: ``batch_size`` is not 1-2048, ``max_concurrency`` < 1, or ``output`` is unknown.
            ImportError: ``output="numpy"`` without NumPy installed.
        """
        job = self._native.embed_job(batch_size, max_concurrency, output, inputs)
        driver = drive(job, inputs, batch_size, max_concurrency, output, on_progress, silent)
        return run_sync(driver)

    def rerank(self, *, query: str, documents: list[str], top_n: int | None = None) -> RerankResult:
        """Score ``documents`` against ``query``; results are ordered best first (at most ``top_n`` when given)."""
        return self._native.rerank(query, documents, top_n).wait()


class TextStream(ChatStream, Closing, Iterator[TextChunk]):
    """The chunks of one streaming chat completion; an iterator and a context manager.

    Iteration is native: chunks are read from the connection in batches (everything decoded so far, in one
    crossing) and each ``TextChunk`` is built as it is handed out. Leaving the ``with`` block, ``close()``, or
    garbage collection closes the connection.
    """

    def __iter__(self) -> TextStream:
        return self

    def final_result(self) -> TextResult:
        """Read the rest of the stream and return the whole reply as one ``TextResult``: the text (chunks already
        iterated included), ``model``, ``finish_reason``, ``usage`` (when the stream was opened with
        ``stream_options={"include_usage": True}``) and the ``tool_calls`` assembled from their streamed fragments.
        ``raw`` is the reply as one chat completion object. The stream is consumed: iteration ends.

        Raises:
            ApiError: The stream failed, or failed or was closed earlier (it then has no final result).
        """
        return self.read_to_end().wait()

    def close(self) -> None:
        """Close the stream and its connection; iteration ends. Idempotent."""
        ChatStream.close(self)


Endpoint._client_class = DataClient


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
        default_headers: Headers sent with every request (for a gateway or a tenant); ``Authorization`` is
            refused, since the client sends its own credential.
        verify: Which certificates to trust: ``True`` (the operating system's store, ``SSL_CERT_FILE`` and
            ``SSL_CERT_DIR``, and the bundled roots), the path of a PEM bundle (only those), or ``False`` (no
            verification; logged once as a warning, never the default).
        cert: A client certificate for mutual TLS: the path of a PEM file holding the certificate and its key, or a
            ``(cert, key)`` pair of paths.
        proxy: A proxy for every request (``http://``, ``https://``, ``socks5://``), replacing ``HTTPS_PROXY``,
            ``HTTP_PROXY`` and ``ALL_PROXY``; ``NO_PROXY`` still applies. ``None``: the environment's.
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
            # The end (or chunks read ahead) is often known already: only a real wait goes through the runtime.
            batch = native.batch_now()
            if batch is None:
                batch = await run(native.next_batch())
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
