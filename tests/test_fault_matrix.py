# The fault matrix: every fault the local platform can inject, against every public operation it can hit, through
# the sync and the async API, asserting what platform-wire.md documents: the exception class and its attributes, the
# partial output kept, the retries (counted in the platform's journal), no hang past a timeout, and the connection
# released (the next call on the same client succeeds; an abandoned stream shows as a client disconnect).
#
# Each passing test records the outcome it observed (pytest's `record_property`, key "reliability");
# scripts/reliability_doc.py runs this module and writes those rows into docs/reliability.md (`make reliability-doc`).
from __future__ import annotations

import asyncio
import email.utils
import json
import math
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from conftest import (
    ENDLESS_MS,
    HANG_GUARD,
    PROJECT,
    PROMPT,
    STREAM_BACKENDS,
    WORKLOADS_PATH,
    Admin,
    Entry,
    child_env,
    make_spec,
)

import inferencekey
from inferencekey import (
    ApiConnectionError,
    ApiError,
    ApiTimeoutError,
    AsyncDataClient,
    AsyncManagementClient,
    AuthError,
    DataClient,
    InferenceKeyError,
    ManagementClient,
    PermissionDenied,
    ReadinessEvent,
    TextChunk,
    ValidationError,
    WaitTimeoutError,
)
from inferencekey.local import LocalPlatform

MODES = ["sync", "async"]
MAX_TOKENS = 12
# The clients' idle-read timeout: long enough that a loaded machine never trips it on a live server, short enough that
# a bug that waits on a silent server fails fast instead of hanging the run.
CLIENT_TIMEOUT = 5.0
# The idle-read timeout of the stall tests: the silence they create is endless, so only this ends the read.
STALL_TIMEOUT = 1.0
# Retry-After in delta-seconds: longer than any backoff the SDK computes for a first retry (at most 0.5 s).
RETRY_AFTER_S = 1
REQUEST_ID = "req_matrix"
MAX_SSE_EVENT_BYTES: int = getattr(inferencekey, "MAX_SSE_EVENT_BYTES", 16 * 2**20)

# Fault families: the sections of docs/reliability.md (in the order their tests run).
STATUS = "HTTP status"
RESET = "connection reset"
STALL = "stall (idle timeout)"
DRIP = "drip"
TRUNCATE = "truncation"
INBAND = "in-band error"
FRAMING = "SSE framing"
MALFORMED = "malformed payload"
NON_SSE = "non-SSE answer"
OVERSIZE = "oversized SSE event"
READINESS = "readiness profile"
FAMILIES = [STATUS, RESET, STALL, DRIP, TRUNCATE, INBAND, FRAMING, MALFORMED, NON_SSE, OVERSIZE, READINESS]


@dataclass(frozen=True)
class Op:
    """A public operation, the fault route it hits, and how its requests show in the journal."""

    name: str
    route: str
    method: str
    path: Callable[[str], bool]
    stream: bool | None = None
    # Workload the operation needs beforehand (slug, task type), if any.
    workload: tuple[str, str] | None = None

    def attempts(self, entries: list[Entry]) -> list[Entry]:
        """This operation's requests among journal entries, oldest first."""
        found = [e for e in entries if e["method"] == self.method and self.path(e["path"])]
        if self.stream is not None:
            found = [e for e in found if isinstance(e["body"], dict) and bool(e["body"].get("stream")) == self.stream]
        return found


CHAT_PATH = "/chat/completions"
OPS: dict[str, Op] = {
    op.name: op
    for op in [
        Op("list_workloads", "list", "GET", lambda p: p == WORKLOADS_PATH),
        Op("ensure_create", "create", "POST", lambda p: p == WORKLOADS_PATH),
        Op("ensure_update", "patch", "PATCH", lambda p: p.startswith("/api/"), workload=("drifted", "text2text")),
        Op("delete", "delete", "DELETE", lambda p: p.startswith("/api/"), workload=("support-bot", "text2text")),
        Op(
            "wait_until_ready",
            "readiness",
            "GET",
            lambda p: p.endswith("/readiness-events"),
            workload=("support-bot", "text2text"),
        ),
        Op(
            "generate_text",
            "chat",
            "POST",
            lambda p: p.endswith(CHAT_PATH),
            stream=False,
            workload=("chat", "text2text"),
        ),
        Op(
            "generate_text_stream",
            "chat_stream",
            "POST",
            lambda p: p.endswith(CHAT_PATH),
            stream=True,
            workload=("chat", "text2text"),
        ),
        Op("embed", "embeddings", "POST", lambda p: p.endswith("/embeddings"), workload=("embedder", "embedding")),
        Op("rerank", "rerank", "POST", lambda p: p.endswith("/rerank"), workload=("ranker", "reranker")),
    ]
}
OPERATIONS = list(OPS)
OP_LABELS = {"ensure_create": "ensure (absent: POST)", "ensure_update": "ensure (drifted: PATCH)"}
ORIGINAL_COMMAND = "vllm serve m --max-model-len 8192"
UPDATED_COMMAND = "vllm serve m --max-model-len 16384"
SSE_OPERATIONS = ["generate_text_stream", "wait_until_ready"]
# GET and DELETE are retried on transport failures and on 408/429/502/503/504 (platform-wire section 9).
IDEMPOTENT = {"list_workloads", "delete"}


# --- running an operation through the public API, sync or async --------------------------------------------------


@dataclass
class Run:
    """What one call of an operation did."""

    value: Any = None
    error: Exception | None = None
    # Stream: whether `generate_text_stream` returned (so a failure came while iterating), and the chunks received.
    opened: bool = False
    chunks: list[TextChunk] = field(default_factory=list)
    events: list[ReadinessEvent] = field(default_factory=list)
    elapsed: float = 0.0
    finished_at: float = 0.0  # wall clock

    @property
    def raised_where(self) -> str:
        return "while iterating" if self.opened else "when the stream is opened"


class Side:
    """One mode's public clients on the local platform: `ManagementClient` + `DataClient`, or their async twins."""

    def __init__(self, platform: LocalPlatform, mode: str, *, timeout: float, max_retries: int) -> None:
        self.mode = mode
        options: dict[str, Any] = {"timeout": timeout, "connect_timeout": CLIENT_TIMEOUT, "max_retries": max_retries}
        mgmt_class = ManagementClient if mode == "sync" else AsyncManagementClient
        data_class = DataClient if mode == "sync" else AsyncDataClient
        self.mgmt: Any = mgmt_class(base_url=platform.url, sdk_token=platform.sdk_token, project=PROJECT, **options)
        self.data: Any = data_class(base_url=platform.url, project=PROJECT, api_key=platform.api_key, **options)

    def run(
        self,
        op: Op,
        slug: str = "support-bot",
        *,
        wait_timeout: float = HANG_GUARD,
        on_progress: Callable[[ReadinessEvent], None] | None = None,
    ) -> Run:
        """Call `op` once; its result or exception, and what it streamed, land in the `Run`."""
        run = Run()

        def progress(event: ReadinessEvent) -> None:
            run.events.append(event)
            if on_progress is not None:
                on_progress(event)

        started = time.monotonic()
        try:
            if self.mode == "sync":
                run.value = self._sync(op.name, run, slug, wait_timeout, progress)
            else:
                run.value = asyncio.run(self._async(op.name, run, slug, wait_timeout, progress))
        except Exception as exc:
            run.error = exc
        run.elapsed = time.monotonic() - started
        run.finished_at = time.time()
        return run

    def _sync(
        self, name: str, run: Run, slug: str, wait_timeout: float, progress: Callable[[ReadinessEvent], None]
    ) -> Any:
        if name == "list_workloads":
            return self.mgmt.list_workloads()
        if name == "ensure_create":
            return self.mgmt.ensure(make_spec(slug=slug))
        if name == "ensure_update":
            return self.mgmt.ensure(make_spec(slug=slug, command=UPDATED_COMMAND))
        if name == "delete":
            return self.mgmt.delete(slug)
        if name == "wait_until_ready":
            return self.mgmt.wait_until_ready(slug, timeout=wait_timeout, on_progress=progress)
        endpoint = self.data.endpoint(slug)
        if name == "generate_text":
            return endpoint.generate_text(prompt=PROMPT, max_tokens=MAX_TOKENS)
        if name == "generate_text_stream":
            stream = endpoint.generate_text_stream(prompt=PROMPT, max_tokens=MAX_TOKENS)
            run.opened = True
            with stream:
                for chunk in stream:
                    run.chunks.append(chunk)
            return run.chunks
        if name == "embed":
            return endpoint.embed(input=["café con leche", "日本 today"])
        if name == "rerank":
            return endpoint.rerank(query="cat food", documents=["dogs bark", "cat food is tasty"])
        raise AssertionError(name)

    async def _async(
        self, name: str, run: Run, slug: str, wait_timeout: float, progress: Callable[[ReadinessEvent], None]
    ) -> Any:
        if name == "list_workloads":
            return await self.mgmt.list_workloads()
        if name == "ensure_create":
            return await self.mgmt.ensure(make_spec(slug=slug))
        if name == "ensure_update":
            return await self.mgmt.ensure(make_spec(slug=slug, command=UPDATED_COMMAND))
        if name == "delete":
            return await self.mgmt.delete(slug)
        if name == "wait_until_ready":
            return await self.mgmt.wait_until_ready(slug, timeout=wait_timeout, on_progress=progress)
        endpoint = self.data.endpoint(slug)
        if name == "generate_text":
            return await endpoint.generate_text(prompt=PROMPT, max_tokens=MAX_TOKENS)
        if name == "generate_text_stream":
            stream = await endpoint.generate_text_stream(prompt=PROMPT, max_tokens=MAX_TOKENS)
            run.opened = True
            async with stream:
                async for chunk in stream:
                    run.chunks.append(chunk)
            return run.chunks
        if name == "embed":
            return await endpoint.embed(input=["café con leche", "日本 today"])
        if name == "rerank":
            return await endpoint.rerank(query="cat food", documents=["dogs bark", "cat food is tasty"])
        raise AssertionError(name)

    def close(self) -> None:
        if self.mode == "sync":
            self.mgmt.close()
            self.data.close()
        else:

            async def close_both() -> None:
                await self.mgmt.close()
                await self.data.close()

            asyncio.run(close_both())


class Matrix:
    """One test's platform, admin, setup clients (outside the matrix: their requests are not counted), the sides
    under test, and the recorder of the observed outcome."""

    def __init__(
        self,
        platform: LocalPlatform,
        admin: Admin,
        mgmt: ManagementClient,
        data: DataClient,
        record_property: Callable[[str, object], None],
    ) -> None:
        self.platform = platform
        self.admin = admin
        self.mgmt = mgmt
        self.data = data
        self.record_property = record_property
        self.sides: list[Side] = []

    def side(self, mode: str, *, timeout: float = CLIENT_TIMEOUT, max_retries: int = 1) -> Side:
        side = Side(self.platform, mode, timeout=timeout, max_retries=max_retries)
        self.sides.append(side)
        return side

    def prepare(self, op: Op, backend: str = "vllm") -> str:
        """Create the workload `op` needs (ready at once) and clear the journal; return the slug to call."""
        slug = "support-bot"
        if op.workload is not None:
            slug, task_type = op.workload
            if slug == "chat":
                slug = f"chat-{backend}"
            # The drifted workload runs another command than the one `ensure_update` asks for: ensure PATCHes it.
            command = ORIGINAL_COMMAND if op.name == "ensure_update" else None
            self.mgmt.ensure(make_spec(slug=slug, backend=backend, task_type=task_type, command=command))
        self.admin.clear_journal()
        return slug

    def reference_stream(self, slug: str) -> list[TextChunk]:
        """The chunks of an unfaulted stream of the matrix's prompt (the engines are deterministic)."""
        with self.data.endpoint(slug).generate_text_stream(prompt=PROMPT, max_tokens=MAX_TOKENS) as stream:
            chunks = list(stream)
        self.admin.clear_journal()
        return chunks

    def attempts(self, op: Op, *, settled: bool = True) -> list[Entry]:
        """`op`'s requests in the journal; `settled` waits until each has been answered (or abandoned)."""
        if not settled:
            return op.attempts(self.admin.journal())
        entries = self.admin.wait_journal(
            lambda j: all(e["outcome"] != "in_progress" for e in op.attempts(j)), timeout=HANG_GUARD
        )
        return op.attempts(entries)

    def follow_up(self, side: Side, op: Op, slug: str) -> str:
        """The next call of `op` on the same client, faults cleared, succeeds: the failed one released its
        connection and left the client usable."""
        self.admin.clear_faults()
        again = side.run(op, slug)
        assert again.error is None, f"the next call on the same client failed: {again.error!r}"
        return "next call on the same client succeeds"

    def record(self, family: str, fault: str, op: str, mode: str, *outcome: str) -> None:
        """The observed outcome of a passing test, for docs/reliability.md (call it after the assertions)."""
        assert family in FAMILIES
        op = OP_LABELS.get(op, op)
        row = {"family": family, "fault": fault, "operation": op, "mode": mode, "outcome": "; ".join(outcome)}
        self.record_property("reliability", json.dumps(row, ensure_ascii=False))

    def close(self) -> None:
        for side in self.sides:
            side.close()


@pytest.fixture
def matrix(
    platform: LocalPlatform,
    admin: Admin,
    mgmt: ManagementClient,
    data: DataClient,
    record_property: Callable[[str, object], None],
) -> Iterator[Matrix]:
    m = Matrix(platform, admin, mgmt, data, record_property)
    yield m
    m.close()


# --- how an outcome reads in the doc --------------------------------------------------------------------------------

PLATFORM_REQUEST_ID = re.compile(r"req_[0-9a-f]{16}")


def shown_request_id(value: str | None) -> str:
    if value is not None and PLATFORM_REQUEST_ID.fullmatch(value):
        return "the response's x-request-id"
    return repr(value)


def compact(value: Any, limit: int = 90) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def normalised(message: str) -> str:
    """A message with what changes from run to run (the platform's port, its request ids) replaced."""
    message = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:<port>", message)
    return PLATFORM_REQUEST_ID.sub("req_<id>", message)


def raised(exc: BaseException, sent: Any = None) -> str:
    """The exception as the doc shows it; a `body` equal to the error JSON the fault `sent` is named as such."""
    assert isinstance(exc, InferenceKeyError), repr(exc)
    attrs = [
        f"status_code={exc.status_code!r}",
        f"code={exc.code!r}",
        f"request_id={shown_request_id(exc.request_id)}",
    ]
    if sent is not None and exc.body == sent:
        attrs.append("body=the error JSON sent")
    elif exc.body is not None:
        attrs.append(f"body=`{compact(exc.body)}`")
    if hasattr(exc, "retry_after"):
        attrs.append(f"retry_after={exc.retry_after!r}")
    return f"raises `{type(exc).__name__}` ({', '.join(attrs)}): “{compact(normalised(str(exc)), 140)}”"


def attempts_text(count: int, why: str = "") -> str:
    text = "1 request" if count == 1 else f"{count} requests"
    return f"{text} ({why})" if why else text


def texts(chunks: list[TextChunk]) -> list[str]:
    return [chunk.text for chunk in chunks]


def assert_no_hang(run: Run) -> None:
    # Only a wait that never ends runs into this (every test's own deadline or timeout is far shorter).
    assert run.elapsed < HANG_GUARD, run


# --- HTTP status x Retry-After ------------------------------------------------------------------------------------

STATUSES = [429, 500, 502, 503, 504, 400, 401, 403, 404, 409]
STATUS_CODES = {
    400: "validation_error",
    401: "unauthorized",
    403: "scope_insufficient",
    404: "not_found",
    409: "conflict",
    429: "rate_limited",
    500: "internal_error",
    502: "bad_gateway",
    503: "unavailable",
    504: "gateway_timeout",
}
EXCEPTION_FOR = {400: ValidationError, 401: AuthError, 403: PermissionDenied}
MESSAGE_FOR = {
    400: "validation error: matrix fault 400",
    401: "authentication failed: matrix fault 401",
    403: "permission denied [scope_insufficient]: matrix fault 403",
}
TRANSIENT = {429, 502, 503, 504}
RETRY_AFTER_FORMS = ["delta-seconds", "HTTP-date", "absent", "garbage"]


def status_fault(status: int, form: str) -> tuple[dict[str, Any], float | None]:
    """A `status` fault with the nested error body, a pinned x-request-id and Retry-After in `form`; and the wall
    clock time before which a retry that honours it must not start (None: no wait asked)."""
    body = {"error": {"code": STATUS_CODES[status], "message": f"matrix fault {status}"}}
    fault: dict[str, Any] = {"type": "status", "status": status, "body": body, "headers": {"x-request-id": REQUEST_ID}}
    not_before = None
    if form == "delta-seconds":
        fault["retry_after"] = RETRY_AFTER_S
    elif form == "HTTP-date":
        # A whole second 1.5-2.5 s ahead: further than any first backoff (transport at most 0.5 s, readiness 1 s),
        # so only a client that honours the date waits that long.
        not_before = float(math.ceil(time.time() + 1.5))
        fault["headers"]["retry-after"] = email.utils.formatdate(not_before, usegmt=True)
    elif form == "garbage":
        fault["headers"]["retry-after"] = "soon, promise"
    return fault, not_before


def is_retried(op: Op, status: int, form: str) -> bool:
    """platform-wire sections 6, 9, 10: readiness reconnects on 429/502/503/504; GET/DELETE retry on
    408/429/502/503/504; POST (and PATCH, as the spec audit settled) only on 429/503 with a (valid) Retry-After."""
    if op.name in IDEMPOTENT or op.name == "wait_until_ready":
        return status in TRANSIENT
    return status in (429, 503) and form in ("delta-seconds", "HTTP-date")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("operation", OPERATIONS)
@pytest.mark.parametrize("form", RETRY_AFTER_FORMS)
@pytest.mark.parametrize("status", STATUSES)
def test_status(matrix: Matrix, status: int, form: str, operation: str, mode: str) -> None:
    op = OPS[operation]
    slug = matrix.prepare(op)
    side = matrix.side(mode)
    fault, not_before = status_fault(status, form)
    # Readiness reconnects until its deadline, so its fault fires once; elsewhere it never stops, so the client's
    # max_retries=1 shows as exactly two attempts when the request is retried.
    matrix.admin.fault(op.route, fault, count=1 if op.name == "wait_until_ready" else None)
    run = side.run(op, slug)
    assert_no_hang(run)
    retried = is_retried(op, status, form)
    attempts = matrix.attempts(op)
    outcome: list[str] = []

    if op.name == "wait_until_ready" and retried:
        assert run.error is None, run.error
        assert run.events[-1].phase == "ready"
        assert [e["status"] for e in attempts] == [status, 200]
        outcome.append("reconnects, then reaches `ready`")
    elif op.name == "delete" and status == 404:
        # platform-wire section 5: a 404 from the DELETE (raced with another deleter) is "already gone".
        assert run.error is None, run.error
        assert run.value is False
        assert [e["status"] for e in attempts] == [404]
        outcome.append("returns `False` (already gone)")
    else:
        exc = run.error
        assert exc is not None, f"no exception; returned {run.value!r}"
        expected = EXCEPTION_FOR.get(status, ApiError)
        assert isinstance(exc, expected), repr(exc)
        assert not isinstance(exc, TimeoutError)
        assert isinstance(exc, InferenceKeyError)
        assert (exc.status_code, exc.code, exc.request_id) == (status, STATUS_CODES[status], REQUEST_ID)
        assert exc.body == fault["body"]
        if status in MESSAGE_FOR:
            assert str(exc) == MESSAGE_FOR[status]
        else:
            assert f"matrix fault {status}" in str(exc)
            assert str(status) in str(exc)
        if hasattr(exc, "retry_after"):
            # Where the SDK exposes it: the server's wait in seconds, None when absent or unreadable.
            if form == "delta-seconds":
                assert exc.retry_after == RETRY_AFTER_S
            elif form in ("absent", "garbage"):
                assert exc.retry_after is None
        if op.name == "generate_text_stream":
            assert not run.opened, "an HTTP error must raise when the stream is opened, not mid-iteration"
        assert [e["status"] for e in attempts] == [status] * (2 if retried else 1)
        where = " when the stream is opened" if op.name == "generate_text_stream" else ""
        outcome.append(raised(exc, sent=fault["body"]) + where)

    if retried:
        if form == "delta-seconds":
            gap = attempts[1]["started_ms"] - attempts[0]["started_ms"]
            assert gap >= RETRY_AFTER_S * 1000 - 50, f"retried {gap} ms after a Retry-After of {RETRY_AFTER_S} s"
            why = f"retried after its Retry-After of {RETRY_AFTER_S} s"
        elif form == "HTTP-date":
            assert not_before is not None
            assert run.finished_at >= not_before - 0.05, "retried before the Retry-After date"
            why = "retried at its Retry-After date"
        else:
            why = "retried after a backoff: " + (
                "the unreadable Retry-After ignored" if form == "garbage" else "no Retry-After"
            )
        outcome.append(attempts_text(len(attempts), why))
    else:
        outcome.append(attempts_text(len(attempts), "not retried"))
    outcome.append(matrix.follow_up(side, op, slug))
    matrix.record(STATUS, f"{status}, Retry-After {form}", op.name, mode, *outcome)


# --- connection reset before the response -------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("operation", OPERATIONS)
def test_reset(matrix: Matrix, operation: str, mode: str) -> None:
    op = OPS[operation]
    slug = matrix.prepare(op)
    side = matrix.side(mode)
    matrix.admin.fault(op.route, {"type": "reset"}, count=1)
    run = side.run(op, slug)
    assert_no_hang(run)
    attempts = matrix.attempts(op)
    if op.name in IDEMPOTENT or op.name == "wait_until_ready":
        # A connection error is transient: GET/DELETE are retried, readiness reconnects.
        assert run.error is None, run.error
        if op.name == "wait_until_ready":
            assert run.events[-1].phase == "ready"
        assert [e["outcome"] for e in attempts] == ["reset", "ok"]
        result = "reaches `ready`" if op.name == "wait_until_ready" else f"returns `{run.value!r}`"
        outcome = [result, attempts_text(2, "the reset one retried")]
    else:
        # The POST may have reached the server: never retried (platform-wire section 10).
        exc = run.error
        assert isinstance(exc, ApiConnectionError), repr(exc)
        assert not isinstance(exc, TimeoutError)
        assert (exc.status_code, exc.request_id) == (None, None)
        if op.name == "generate_text_stream":
            assert not run.opened
        assert [e["outcome"] for e in attempts] == ["reset"]
        outcome = [raised(exc), attempts_text(1, "not retried")]
    outcome.append(matrix.follow_up(side, op, slug))
    matrix.record(RESET, "reset before the response", op.name, mode, *outcome)


# --- stalls: the idle-read timeout ---------------------------------------------------------------------------------

STALL_CASES = [("headers", name) for name in OPERATIONS] + [
    (at, name) for at in ("first_chunk", "mid_stream") for name in SSE_OPERATIONS
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("at", "operation"), STALL_CASES)
def test_stall(matrix: Matrix, at: str, operation: str, mode: str) -> None:
    op = OPS[operation]
    slug = matrix.prepare(op)
    reference = matrix.reference_stream(slug) if op.name == "generate_text_stream" else []
    side = matrix.side(mode, timeout=STALL_TIMEOUT)
    fault = {"type": "stall", "at": at, "ms": ENDLESS_MS}
    label = {"headers": "before the headers", "first_chunk": "before the first event", "mid_stream": "mid-stream"}[at]

    if op.name == "wait_until_ready":
        seen: list[ReadinessEvent] = []

        def switch_after_the_first_event(event: ReadinessEvent) -> None:
            if not seen and at == "mid_stream":
                matrix.admin.settings(slug, readiness="immediate")
            seen.append(event)

        if at == "mid_stream":
            # The snapshot must not be terminal for a stall after it to matter: start stuck, then once the first
            # event is in, the workload becomes ready (the stalled connection cannot tell).
            matrix.admin.settings(slug, readiness="stuck")
        matrix.admin.fault(op.route, fault, count=1)
        run = side.run(op, slug, on_progress=switch_after_the_first_event)
        assert_no_hang(run)
        assert run.error is None, run.error
        assert run.events[-1].phase == "ready"
        attempts = matrix.attempts(op, settled=False)
        assert len(attempts) == 2
        if at != "headers":
            entries = matrix.admin.wait_journal(lambda j: bool(op.attempts(j)[0]["client_disconnected"]))
            assert op.attempts(entries)[0]["outcome"] == "client_disconnected"
            released = "the stalled stream is closed (journal: client_disconnected)"
        else:
            released = "the stalled request is abandoned"
        outcome = [f"idle timeout ({STALL_TIMEOUT} s), reconnects, reaches `ready`", attempts_text(2), released]
        outcome.append(matrix.follow_up(side, op, slug))
        matrix.record(STALL, f"stall {label}", op.name, mode, *outcome)
        return

    matrix.admin.fault(op.route, fault, count=None)
    run = side.run(op, slug)
    assert_no_hang(run)
    exc = run.error
    assert isinstance(exc, ApiTimeoutError), repr(exc)
    assert isinstance(exc, TimeoutError)
    assert isinstance(exc, ApiError)
    assert exc.status_code is None
    assert "read timeout" in str(exc)
    outcome = [raised(exc)]
    if at == "headers":
        assert exc.request_id is None
        if op.name == "generate_text_stream":
            assert not run.opened
            outcome[0] += " when the stream is opened"
        # A timeout after the request was sent is a transport failure: GET/DELETE retry it, POST never does.
        expected = 2 if op.name in IDEMPOTENT else 1
        attempts = matrix.attempts(op, settled=False)
        assert len(attempts) == expected
        outcome.append(attempts_text(expected, "the timed-out one retried" if expected == 2 else "not retried"))
    else:
        assert run.opened
        assert exc.request_id is not None and PLATFORM_REQUEST_ID.fullmatch(exc.request_id)
        kept = 1 if at == "mid_stream" else 0
        assert texts(run.chunks) == texts(reference)[:kept]
        outcome[0] += " " + run.raised_where
        outcome.append("the chunk before it kept" if kept else "no chunk had arrived")
        entries = matrix.admin.wait_journal(
            lambda j: bool(op.attempts(j) and op.attempts(j)[-1]["client_disconnected"])
        )
        attempts = op.attempts(entries)
        assert len(attempts) == 1
        assert attempts[0]["outcome"] == "client_disconnected"
        outcome.append(attempts_text(1, "not retried") + "; the stream is closed (journal: client_disconnected)")
    outcome.append(matrix.follow_up(side, op, slug))
    matrix.record(STALL, f"stall {label}", op.name, mode, *outcome)


# --- drip and framing: the same events, delivered or framed differently ----------------------------------------

FRAMINGS: dict[str, dict[str, Any]] = {
    "line_ending lf": {"line_ending": "lf"},
    "line_ending crlf": {"line_ending": "crlf"},
    "line_ending cr": {"line_ending": "cr"},
    "bom": {"bom": True},
    "multiline": {"multiline": True},
    "comments": {"comments": True},
    "split_utf8": {"split_utf8": True},
    "huge_frame_bytes 1 MiB": {"huge_frame_bytes": 1 << 20},
}


def decoded_normally(matrix: Matrix, op: Op, slug: str, mode: str, fault: dict[str, Any]) -> list[str]:
    """Run `op` under `fault`, which changes only how the events travel: the result is the unfaulted one."""
    reference = matrix.reference_stream(slug) if op.name == "generate_text_stream" else []
    side = matrix.side(mode)
    fault_id = matrix.admin.fault(op.route, fault, count=1)
    run = side.run(op, slug)
    assert_no_hang(run)
    assert run.error is None, run.error
    assert matrix.admin.fired(fault_id) == 1
    # One request. (Its journal outcome may read client_disconnected: a dripped body's last bytes can come after the
    # client, holding [DONE], has closed the stream.)
    attempts = matrix.attempts(op)
    assert len(attempts) == 1
    if op.name == "generate_text_stream":
        assert texts(run.chunks) == texts(reference)
        assert [c.finish_reason for c in run.chunks] == [c.finish_reason for c in reference]
        assert len([c for c in run.chunks if c.finish_reason]) == 1
        result = f"yields the same {len(run.chunks)} chunks as an unfaulted stream (text, one finish_reason)"
    else:
        assert [event.phase for event in run.events] == ["ready"]
        result = "reaches `ready`"
    return [result, attempts_text(1), matrix.follow_up(side, op, slug)]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("operation", SSE_OPERATIONS)
def test_drip(matrix: Matrix, operation: str, mode: str) -> None:
    op = OPS[operation]
    slug = matrix.prepare(op)
    outcome = decoded_normally(matrix, op, slug, mode, {"type": "drip", "bytes_per_write": 5, "interval_ms": 1})
    matrix.record(DRIP, "drip, 5 bytes per write", op.name, mode, *outcome)


# --- truncation ----------------------------------------------------------------------------------------------------

TRUNCATE_CASES = [("generate_text_stream", backend) for backend in STREAM_BACKENDS] + [("wait_until_ready", "vllm")]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("operation", "backend"), TRUNCATE_CASES)
def test_truncated_before_the_finish(matrix: Matrix, operation: str, backend: str, mode: str) -> None:
    op = OPS[operation]
    slug = matrix.prepare(op, backend)
    reference = matrix.reference_stream(slug) if op.name == "generate_text_stream" else []
    side = matrix.side(mode)
    matrix.admin.fault(op.route, {"type": "truncate", "after_events": 2}, count=1)
    run = side.run(op, slug)
    assert_no_hang(run)
    attempts = matrix.attempts(op)
    if op.name == "wait_until_ready":
        # A dropped readiness stream is reconnected and re-synced from the snapshot.
        assert run.error is None, run.error
        assert run.events[-1].phase == "ready"
        assert [e["outcome"] for e in attempts] == ["ok", "ok"]
        outcome = ["reconnects, reaches `ready`", attempts_text(2)]
        name = "stream ends before a terminal phase"
    else:
        # Never a silent truncation; the chunks before it are delivered; a stream is not retried once it started.
        exc = run.error
        assert type(exc) is ApiError, repr(exc)
        assert "stream ended before completion" in str(exc)
        assert exc.status_code is None
        assert exc.request_id is not None and PLATFORM_REQUEST_ID.fullmatch(exc.request_id)
        assert run.opened
        assert texts(run.chunks) == texts(reference)[:2]
        assert [e["outcome"] for e in attempts] == ["ok"]
        outcome = [raised(exc) + " " + run.raised_where, "the 2 chunks before it kept", attempts_text(1, "not retried")]
        name = "ends after 2 events: no finish chunk, no [DONE]"
    outcome.append(matrix.follow_up(side, op, slug))
    matrix.record(TRUNCATE, name, f"{op.name} ({backend})" if op.stream else op.name, mode, *outcome)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("backend", STREAM_BACKENDS)
def test_truncated_after_the_finish(matrix: Matrix, backend: str, mode: str) -> None:
    # Spec: a stream that ends without [DONE] but after its finish_reason is complete: no error, nothing lost.
    op = OPS["generate_text_stream"]
    slug = matrix.prepare(op, backend)
    outcome = decoded_normally(matrix, op, slug, mode, {"type": "truncate", "after_finish": True})
    matrix.record(TRUNCATE, "ends after the finish chunk, no [DONE]", f"{op.name} ({backend})", mode, *outcome)


# --- in-band errors -------------------------------------------------------------------------------------------------

SHAPES = ["nested", "flat", "event"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("backend", STREAM_BACKENDS)
def test_inband_error_in_a_chat_stream(matrix: Matrix, backend: str, shape: str, mode: str) -> None:
    op = OPS["generate_text_stream"]
    slug = matrix.prepare(op, backend)
    reference = matrix.reference_stream(slug)
    side = matrix.side(mode)
    fault = {"type": "inband_error", "after_events": 2, "shape": shape, "message": "engine exploded"}
    matrix.admin.fault(op.route, fault, count=1)
    run = side.run(op, slug)
    assert_no_hang(run)
    exc = run.error
    assert type(exc) is ApiError, repr(exc)
    assert "engine exploded" in str(exc)
    assert exc.status_code is None
    assert exc.request_id is not None and PLATFORM_REQUEST_ID.fullmatch(exc.request_id)
    assert isinstance(exc.body, dict)
    assert run.opened
    assert texts(run.chunks) == texts(reference)[:2]
    attempts = matrix.attempts(op)
    assert len(attempts) == 1
    outcome = [
        raised(exc) + " " + run.raised_where,
        "the 2 chunks before it kept",
        attempts_text(1, f"not retried; journal: {attempts[0]['outcome']}"),
        matrix.follow_up(side, op, slug),
    ]
    matrix.record(INBAND, f"{shape} error frame after 2 events", f"{op.name} ({backend})", mode, *outcome)


@pytest.mark.parametrize("mode", MODES)
def test_inband_error_in_a_readiness_stream(matrix: Matrix, mode: str) -> None:
    # A `{"error": {...}}` frame on the readiness stream is the platform saying the watch failed: raised at once with
    # its message, not reconnected until the deadline.
    op = OPS["wait_until_ready"]
    slug = matrix.prepare(op)
    side = matrix.side(mode)
    fault = {"type": "inband_error", "shape": "nested", "message": "scheduler lost the workload"}
    matrix.admin.fault(op.route, fault, count=1)
    run = side.run(op, slug)
    assert_no_hang(run)
    exc = run.error
    assert isinstance(exc, ApiError), f"expected ApiError, got {exc!r} (events {[e.phase for e in run.events]})"
    assert not isinstance(exc, TimeoutError)
    assert "scheduler lost the workload" in str(exc)
    attempts = matrix.attempts(op)
    assert len(attempts) == 1, "raised at once: no reconnect"
    outcome = [raised(exc), attempts_text(1, "no reconnect"), matrix.follow_up(side, op, slug)]
    matrix.record(INBAND, 'nested `{"error": {...}}` frame', op.name, mode, *outcome)


# --- SSE framing: the same events, framed differently ------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("operation", SSE_OPERATIONS)
@pytest.mark.parametrize("framing", list(FRAMINGS))
def test_framing(matrix: Matrix, framing: str, operation: str, mode: str) -> None:
    op = OPS[operation]
    slug = matrix.prepare(op)
    outcome = decoded_normally(matrix, op, slug, mode, {"type": "framing", **FRAMINGS[framing]})
    matrix.record(FRAMING, framing, op.name, mode, *outcome)


# --- malformed payloads ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("operation", SSE_OPERATIONS)
def test_malformed_json_event(matrix: Matrix, operation: str, mode: str) -> None:
    op = OPS[operation]
    slug = matrix.prepare(op)
    reference = matrix.reference_stream(slug) if op.name == "generate_text_stream" else []
    side = matrix.side(mode)
    after = 1 if op.name == "generate_text_stream" else 0
    matrix.admin.fault(op.route, {"type": "malformed_json", "after_events": after}, count=1)
    run = side.run(op, slug)
    assert_no_hang(run)
    attempts = matrix.attempts(op)
    assert len(attempts) == 1
    if op.name == "wait_until_ready":
        # Readiness decoding is tolerant (platform-wire section 6): an event that is not a phase is skipped.
        assert run.error is None, run.error
        assert [event.phase for event in run.events] == ["ready"]
        outcome = ["the bad event is skipped; reaches `ready`", attempts_text(1)]
        name = "a `data:` line that is not JSON, before the snapshot"
    else:
        exc = run.error
        assert type(exc) is ApiError, repr(exc)
        assert "malformed JSON" in str(exc)
        assert exc.request_id is not None and PLATFORM_REQUEST_ID.fullmatch(exc.request_id)
        assert run.opened
        assert texts(run.chunks) == texts(reference)[:1]
        outcome = [raised(exc) + " " + run.raised_where, "the chunk before it kept", attempts_text(1, "not retried")]
        name = "a `data:` line that is not JSON, after 1 event"
    outcome.append(matrix.follow_up(side, op, slug))
    matrix.record(MALFORMED, name, op.name, mode, *outcome)


MISSING_RESULT: dict[str, tuple[dict[str, Any], str]] = {
    "generate_text": ({"id": "chatcmpl-x", "object": "chat.completion", "model": "chat-vllm"}, "choices"),
    "generate_text_stream": ({"id": "chatcmpl-x", "object": "chat.completion", "model": "chat-vllm"}, "choices"),
    "embed": ({"object": "list", "model": "embedder"}, "data"),
    "rerank": ({"model": "ranker"}, "results"),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("operation", list(MISSING_RESULT))
def test_ok_answer_without_its_result(matrix: Matrix, operation: str, mode: str) -> None:
    # A 200 whose JSON lacks what the operation returns is a malformed response (platform-wire section 8), never an
    # empty result. For the stream it is a plain JSON answer (an engine that ignored `stream: true`) without choices.
    op = OPS[operation]
    slug = matrix.prepare(op)
    side = matrix.side(mode)
    body, missing = MISSING_RESULT[operation]
    fault = {"type": "status", "status": 200, "body": body, "headers": {"x-request-id": REQUEST_ID}}
    matrix.admin.fault(op.route, fault, count=1)
    run = side.run(op, slug)
    assert_no_hang(run)
    exc = run.error
    assert isinstance(exc, ApiError), f"expected ApiError, got {exc!r}; returned {run.value!r}"
    assert not isinstance(exc, (ApiConnectionError, ApiTimeoutError))
    assert str(exc).startswith("malformed response"), str(exc)
    assert exc.request_id == REQUEST_ID
    attempts = matrix.attempts(op)
    assert len(attempts) == 1
    where = (" " + run.raised_where) if op.name == "generate_text_stream" else ""
    outcome = [raised(exc) + where, attempts_text(1, "not retried"), matrix.follow_up(side, op, slug)]
    matrix.record(MALFORMED, f"200 with a JSON body without `{missing}`", op.name, mode, *outcome)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("backend", STREAM_BACKENDS)
def test_non_sse_answer_to_a_stream(matrix: Matrix, backend: str, mode: str) -> None:
    # platform-wire section 10: a plain JSON answer to a stream request is its text as one chunk, with its finish.
    op = OPS["generate_text_stream"]
    slug = matrix.prepare(op, backend)
    expected = matrix.data.endpoint(slug).generate_text(prompt=PROMPT, max_tokens=MAX_TOKENS)
    matrix.admin.clear_journal()
    side = matrix.side(mode)
    matrix.admin.fault(op.route, {"type": "non_sse"}, count=1)
    run = side.run(op, slug)
    assert_no_hang(run)
    assert run.error is None, run.error
    assert [(c.text, c.finish_reason) for c in run.chunks] == [(expected.text, expected.finish_reason)]
    attempts = matrix.attempts(op)
    assert len(attempts) == 1
    outcome = [
        f"yields 1 chunk: generate_text's text and finish_reason ({expected.finish_reason!r})",
        attempts_text(1),
        matrix.follow_up(side, op, slug),
    ]
    matrix.record(NON_SSE, "plain JSON completion", f"{op.name} ({backend})", mode, *outcome)


# --- an SSE event without end --------------------------------------------------------------------------------------

# Runs in a child process, so the client's memory is measured apart from the platform (which serves from this one).
# A watchdog ends the child if its memory runs away, so an SDK without a limit cannot take the machine down with it.
ENDLESS_CHILD = r"""
import asyncio, json, os, resource, sys, threading, time
from inferencekey import AsyncDataClient, AsyncManagementClient, DataClient, ManagementClient

mode, operation, slug, runaway = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
env = os.environ
options = dict(base_url=env["INFERENCEKEY_BASE_URL"], project=env["INFERENCEKEY_PROJECT"], timeout=30, max_retries=0)
mgmt_class, data_class = (ManagementClient, DataClient) if mode == "sync" else (AsyncManagementClient, AsyncDataClient)
mgmt = mgmt_class(sdk_token=env["INFERENCEKEY_SDK_TOKEN"], **options)
endpoint = data_class(api_key=env["INFERENCEKEY_API_KEY"], **options).endpoint(slug)
PAGE = os.sysconf("SC_PAGE_SIZE")

def rss():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE

async def call(op):
    if op == "warm-up":
        return await mgmt.list_workloads()
    if op == "wait_until_ready":
        return await mgmt.wait_until_ready(slug, timeout=60, silent=True)
    async with await endpoint.generate_text_stream(prompt="hi") as stream:
        return [chunk async for chunk in stream]

def sync_call(op):
    if op == "warm-up":
        return mgmt.list_workloads()
    if op == "wait_until_ready":
        return mgmt.wait_until_ready(slug, timeout=60, silent=True)
    with endpoint.generate_text_stream(prompt="hi") as stream:
        return list(stream)

def run(op):
    return sync_call(op) if mode == "sync" else asyncio.run(call(op))

run("warm-up")  # the runtime, the pool and the connection exist before the baseline
baseline, peak = rss(), [0]
maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

def watchdog():
    while True:
        growth = rss() - baseline
        peak[0] = max(peak[0], growth)
        if growth > runaway:
            print(json.dumps({"runaway": growth}), flush=True)
            os._exit(3)
        time.sleep(0.002)

threading.Thread(target=watchdog, daemon=True).start()
started = time.monotonic()
try:
    run(operation)
    error = None
except Exception as exc:
    error = exc
elapsed = time.monotonic() - started
maxrss_growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - maxrss_before
print(json.dumps({
    "error": None if error is None else type(error).__name__,
    "message": str(error),
    "status_code": getattr(error, "status_code", None),
    "elapsed": elapsed,
    "growth": max(peak[0], maxrss_growth),
}), flush=True)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="measures the client's memory through /proc")
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("operation", SSE_OPERATIONS)
def test_endless_sse_line(matrix: Matrix, operation: str, mode: str) -> None:
    # An event that never ends (`data: xxxx...` with no newline, forever) is refused once it passes the SDK's SSE
    # event size limit: ApiError saying so, with the client's memory bounded by about that limit.
    op = OPS[operation]
    slug = matrix.prepare(op)
    try:
        matrix.admin.fault(op.route, {"type": "endless_line"}, count=1)
    except AssertionError as refused:
        if "-> 400" in str(refused):
            pytest.skip("the local platform has no `endless_line` fault yet (it refuses the rule: 400)")
        raise
    bound = 3 * MAX_SSE_EVENT_BYTES + (32 << 20)
    runaway = max(512 << 20, 2 * bound)
    args = [sys.executable, "-c", ENDLESS_CHILD, mode, op.name, slug, str(runaway)]
    child = subprocess.run(
        args, env=child_env(matrix.platform), capture_output=True, text=True, timeout=4 * HANG_GUARD, check=False
    )
    assert child.returncode == 0, f"child exited {child.returncode}: {child.stdout} {child.stderr[-2000:]}"
    result = json.loads(child.stdout.strip().splitlines()[-1])
    assert result["error"] == "ApiError", result
    message = result["message"].lower()
    assert "limit" in message and "event" in message, result["message"]
    assert result["elapsed"] < HANG_GUARD, result
    assert result["growth"] < bound, f"the client grew {result['growth']} bytes (limit {MAX_SSE_EVENT_BYTES})"
    attempts = matrix.attempts(op)
    assert len(attempts) == 1
    outcome = [
        f"raises `ApiError` (status_code={result['status_code']!r}): “{compact(normalised(result['message']), 140)}”",
        f"client memory stays under 3 x the {MAX_SSE_EVENT_BYTES >> 20} MiB event limit + 32 MiB",
        attempts_text(1),
        matrix.follow_up(matrix.side(mode), op, slug),
    ]
    matrix.record(OVERSIZE, "one `data:` line that never ends", op.name, mode, *outcome)


# --- readiness profiles ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("profile", ["stuck", "error", "flapping"])
def test_readiness_profile(matrix: Matrix, profile: str, mode: str) -> None:
    op = OPS["wait_until_ready"]
    slug = matrix.prepare(op)
    side = matrix.side(mode)
    matrix.admin.readiness(slug, profile, error_message="CUDA out of memory" if profile == "error" else None)
    matrix.admin.clear_journal()
    run = side.run(op, slug, wait_timeout=1.0 if profile == "stuck" else HANG_GUARD)
    assert_no_hang(run)
    phases = [event.phase for event in run.events]
    attempts = matrix.attempts(op, settled=False)
    if profile == "stuck":
        exc = run.error
        assert isinstance(exc, WaitTimeoutError), repr(exc)
        assert isinstance(exc, TimeoutError)
        assert not isinstance(exc, ApiError)
        assert run.elapsed >= 0.9
        assert set(phases) <= {"scheduling", "provisioning"}
        last = f"last phase: {phases[-1]}" if phases else "no phase reported"
        assert f"({last})" in str(exc)
        outcome = [
            "raises `WaitTimeoutError` (a TimeoutError, not an ApiError) at the 1 s deadline, naming the last phase",
            attempts_text(len(attempts)),
        ]
    elif profile == "error":
        exc = run.error
        assert type(exc) is ApiError, repr(exc)
        assert not isinstance(exc, TimeoutError)
        assert "CUDA out of memory" in str(exc)
        assert phases[-1] == "error"
        assert len(attempts) == 1
        outcome = [raised(exc) + " after the `error` event", attempts_text(1)]
    else:
        assert run.error is None, run.error
        assert phases[-1] == "ready"
        assert phases.count("ready") == 1
        outcome = ["returns at the first `ready`", attempts_text(len(attempts))]
    matrix.admin.readiness(slug, "immediate")
    outcome.append(matrix.follow_up(side, op, slug))
    matrix.record(READINESS, profile, op.name, mode, *outcome)
