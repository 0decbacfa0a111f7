# The native module inferencekey._core (crates/inferencekey-py): conversions only, no behaviour.
# Errors are raised as the classes of inferencekey.exceptions; the public API wraps these in typed dataclasses.
# Each `*_async(future, ...)` method is the twin of the method without the suffix: it returns at once and resolves
# `future` (from `loop.create_future()`) with the same result or exception; cancelling `future` aborts the request.
import builtins
from asyncio import Future
from typing import Any, Generic, TypeVar, final

from typing_extensions import Self

from inferencekey.types import Plan

__all__ = [
    "ChatStream",
    "DataClient",
    "Endpoint",
    "LocalPlatform",
    "ManagementClient",
    "Outcome",
    "ReadinessWatch",
    "__version__",
    "canonical_slug",
    "redact",
]
__version__: str

def redact(text: str) -> str:
    """Return ``text`` with every ik_sdk_/ik_live_ token shortened to its prefix and id."""

def canonical_slug(raw: str) -> str:
    """The platform's canonical form of a slug (may be empty)."""

_T = TypeVar("_T")

@final
class Outcome(Generic[_T]):
    """The unconverted result of a native task, handed to `inferencekey._aio._resolve` on the loop thread."""
    def take(self) -> _T:
        """The converted result, or raises the call's exception (once)."""

@final
class ManagementClient:
    def __new__(
        cls,
        *,
        base_url: str | None,
        sdk_token: str | None,
        project: str | None,
        from_env: bool,
        connect_timeout: float,
        timeout: float,
        max_retries: int,
    ) -> Self: ...
    @property
    def base_url(self) -> str: ...
    @property
    def project(self) -> str | None: ...
    def ensure(self, spec: Any, on_drift: str, project: str | None) -> tuple[str, str, Plan, bool]:
        """Returns (project_slug, workload_slug, plan, applied)."""
    def ensure_async(
        self, future: Future[tuple[str, str, Plan, bool]], spec: Any, on_drift: str, project: str | None
    ) -> None: ...
    def plan(self, spec: Any, project: str | None) -> Plan: ...
    def plan_async(self, future: Future[Plan], spec: Any, project: str | None) -> None: ...
    def delete(self, workload_slug: str, project: str | None) -> bool: ...
    def delete_async(self, future: Future[bool], workload_slug: str, project: str | None) -> None: ...
    def list(self, project: str | None) -> list[dict[str, Any]]: ...
    def list_async(self, future: Future[builtins.list[dict[str, Any]]], project: str | None) -> None: ...
    def watch_readiness(self, workload_slug: str, project: str | None, timeout: float) -> ReadinessWatch: ...
    def close(self) -> None: ...

@final
class ReadinessWatch:
    def __iter__(self) -> ReadinessWatch: ...
    def __next__(self) -> tuple[str, str, int, str | None]:
        """(phase, message, elapsed_ms, step); StopIteration once the watch has finished."""
    def next_async(self, future: Future[tuple[str, str, int, str | None] | None]) -> None:
        """Resolves `future` with the next event, or None once the watch has finished."""

@final
class DataClient:
    def __new__(
        cls,
        *,
        base_url: str | None,
        project: str | None,
        api_key: str | None,
        from_env: bool,
        connect_timeout: float,
        timeout: float,
        max_retries: int,
    ) -> Self: ...
    @property
    def base_url(self) -> str: ...
    @property
    def project(self) -> str: ...
    def endpoint(self, workload_slug: str, api_key: str | None) -> Endpoint: ...
    def close(self) -> None: ...

@final
class Endpoint:
    @property
    def workload_slug(self) -> str: ...
    @property
    def project(self) -> str: ...
    @property
    def base_url(self) -> str: ...
    def chat(
        self,
        prompt: str | None,
        messages: list[Any] | None,
        temperature: float | None,
        max_tokens: int | None,
    ) -> tuple[str, str, str | None, dict[str, Any]]:
        """Returns (text, model, finish_reason, raw)."""
    def chat_async(
        self,
        future: Future[tuple[str, str, str | None, dict[str, Any]]],
        prompt: str | None,
        messages: list[Any] | None,
        temperature: float | None,
        max_tokens: int | None,
    ) -> None: ...
    def chat_stream(
        self,
        prompt: str | None,
        messages: list[Any] | None,
        temperature: float | None,
        max_tokens: int | None,
    ) -> ChatStream: ...
    def chat_stream_async(
        self,
        future: Future[ChatStream],
        prompt: str | None,
        messages: list[Any] | None,
        temperature: float | None,
        max_tokens: int | None,
    ) -> None: ...
    def embed(self, input: list[str], base64: bool) -> tuple[list[list[float]], str, dict[str, Any]]: ...
    def embed_async(
        self, future: Future[tuple[list[list[float]], str, dict[str, Any]]], input: list[str], base64: bool
    ) -> None: ...
    def rerank(
        self, query: str, documents: list[str], top_n: int | None
    ) -> tuple[list[tuple[int, float]], str, dict[str, Any]]: ...
    def rerank_async(
        self,
        future: Future[tuple[list[tuple[int, float]], str, dict[str, Any]]],
        query: str,
        documents: list[str],
        top_n: int | None,
    ) -> None: ...

@final
class ChatStream:
    def next_batch(self) -> list[tuple[str, str | None, dict[str, Any]]]:
        """The chunks ready now (waits for at least one); [] once the stream has finished."""
    def next_batch_async(self, future: Future[list[tuple[str, str | None, dict[str, Any]]]]) -> None: ...
    def close(self) -> None: ...
    def close_async(self, future: Future[None]) -> None: ...

@final
class LocalPlatform:
    def __new__(
        cls,
        *,
        port: int = 0,
        project: str | None = None,
        seed: int = 0,
        state_dir: str | None = None,
    ) -> Self: ...
    @property
    def url(self) -> str: ...
    @property
    def project(self) -> str: ...
    @property
    def sdk_token(self) -> str: ...
    @property
    def api_key(self) -> str: ...
    @property
    def admin_token(self) -> str: ...
    @property
    def ready_text(self) -> str:
        """The JSON ready line and the four export lines, exactly as `inferencekey-local` prints them."""
    def stop(self) -> None: ...
