# The native module inferencekey._core (crates/inferencekey-py): conversions and waiting only, no behaviour.
# Each operation returns a `Pending` call: `wait()` runs it on the calling thread (the sync API), `start(future)` on
# the native I/O runtime, resolving `future` (from `loop.create_future()`) on its loop (the async API). Results are
# instances of the classes `inferencekey.types` registers at import; errors are the classes of inferencekey.exceptions.
import builtins
import os
from asyncio import Future
from collections.abc import Iterator
from typing import Any, Generic, TypeVar, final

from typing_extensions import Self, disjoint_base

from inferencekey.types import EmbedResult, EndpointRef, Plan, ReadinessEvent, RerankResult, TextChunk, TextResult

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_MAX_CONCURRENCY",
    "MAX_SSE_EVENT_BYTES",
    "ChatStream",
    "ChunkBatch",
    "DataClient",
    "DoneBatch",
    "EmbedJob",
    "Endpoint",
    "Ensured",
    "LocalPlatform",
    "LoopCall",
    "LoopWaker",
    "ManagementClient",
    "OpenStream",
    "Pending",
    "RawJson",
    "ReadinessWatch",
    "Vectors",
    "__version__",
    "_local_client_certificate",
    "_panicking_call",
    "canonical_slug",
    "chat_option_names",
    "load_manifest",
    "log_level_from_env",
    "redact",
    "register_result_types",
    "result_fields",
    "spec_fields",
]
__version__: str
DEFAULT_BATCH_SIZE: int
MAX_SSE_EVENT_BYTES: int
DEFAULT_MAX_CONCURRENCY: int

def redact(text: str) -> str:
    """Return ``text`` with every ik_sdk_/ik_live_ token shortened to its prefix and id."""

def log_level_from_env() -> tuple[int | None, str | None]:
    """What ``INFERENCEKEY_LOG`` asks for: ``(level, None)`` with the ``logging`` level number, ``(None, None)`` when
    unset, or ``(None, warning)`` for a value that is not ``debug``, ``info``, ``warning`` or ``error``."""

def canonical_slug(raw: str) -> str:
    """The platform's canonical form of a slug (may be empty)."""

def load_manifest(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The workloads of the deploy manifest at `path`, in file order: one dict of the `WorkloadSpec` fields each
    `[[workload]]` table sets. A file that cannot be read or holds a token raises ConfigurationError; bad TOML, an
    unknown field, a wrong type, a missing field or a duplicate slug raises ValidationError."""

def register_result_types(**classes: type) -> None:
    """Hand the binding the result classes it builds; each must declare exactly the fields of `result_fields()`."""

def result_fields() -> dict[str, tuple[str, ...]]:
    """The fields the binding fills in each result class, by class name, in dataclass order."""

def _local_client_certificate(directory: str | os.PathLike[str]) -> tuple[str, str, str]:
    """Test hook: a client CA and a client certificate it signs, written into `directory`; their paths (CA, cert,
    key)."""

def chat_option_names() -> tuple[str, ...]:
    """The chat parameters beyond prompt, messages, temperature and max_tokens, in the order `chat` takes them."""

def spec_fields() -> tuple[str, ...]:
    """The spec's field names in order, as the core reads them from a `WorkloadSpec` and from manifests."""

def _panicking_call(message: str) -> Pending[None]:
    """Test hook: a call whose core future panics with `message` (an empty message: no panic)."""

_T = TypeVar("_T")

@final
class Pending(Generic[_T]):
    """A prepared native call; each runs at most once."""
    def wait(self) -> _T:
        """Run the call on this thread (the interpreter released) and return its result."""
    def start(self, future: Future[_T], waker: LoopWaker | None = None) -> LoopCall | None:
        """Run the call and resolve `future` with its result. A request whose answer is read whole runs on the
        loop's thread when `waker` (that loop's) is given, and its `LoopCall` is returned, to close if the await ends
        otherwise; anything else runs on the I/O runtime and resolves `future` on its loop (woken through `waker`
        when given), and cancelling `future` aborts it."""

@final
class LoopCall:
    """A request run on its event loop's thread, polled again by its loop's `LoopWaker` when what it waits for
    has come."""
    def close(self) -> None:
        """Stop the request (its await was cancelled or failed), closing its connection."""

@final
class LoopWaker:
    """The wake-up of one asyncio event loop: the loop watches `fileno()` and calls `drain()` when it is readable,
    which settles the futures whose calls finished on the I/O runtime and polls the requests on the loop's thread
    whose socket is ready. Raises NotImplementedError off Unix."""
    def __new__(cls) -> Self: ...
    def fileno(self) -> int:
        """The descriptor the loop watches for reading."""
    def drain(self) -> None:
        """Settle every outcome queued for this loop and poll every request whose socket is ready (the loop's reader
        callback)."""

@final
class RawJson:
    """JSON bytes received, parsed into a dict on demand."""
    def parse(self) -> dict[str, Any]: ...

@final
class Vectors:
    """Embedding vectors received, as lists or float32 bytes on demand."""
    @property
    def count(self) -> int: ...
    @property
    def dim(self) -> int | None: ...
    def to_lists(self) -> list[list[float]]: ...
    def to_bytearray(self) -> bytearray: ...

@final
class Ensured:
    """What `ensure` did: the ref, the plan, and the warning or note to show."""
    @property
    def endpoint_ref(self) -> EndpointRef: ...
    @property
    def plan(self) -> Plan: ...
    @property
    def applied(self) -> bool: ...
    @property
    def warning(self) -> str | None: ...
    @property
    def info(self) -> str | None: ...

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
        default_headers: dict[str, str] | None = None,
        verify: bool | str | os.PathLike[str] | None = None,
        cert: str | os.PathLike[str] | tuple[str | os.PathLike[str], str | os.PathLike[str]] | None = None,
        proxy: str | None = None,
    ) -> Self: ...
    def with_options(
        self, timeout: float | None, max_retries: int | None, default_headers: dict[str, str] | None
    ) -> Self:
        """A copy with other settings (None: this client's) that shares this client's connection pool."""
    @property
    def base_url(self) -> str: ...
    @property
    def project(self) -> str | None: ...
    def ensure(self, spec: Any, on_drift: object, project: str | None) -> Pending[Ensured]: ...
    def plan(self, spec: Any, project: str | None) -> Pending[Plan]: ...
    def delete(self, workload_slug: str, project: str | None) -> Pending[bool]: ...
    def list(self, project: str | None) -> Pending[builtins.list[dict[str, Any]]]: ...
    def watch_readiness(self, workload_slug: str, project: str | None, timeout: float) -> ReadinessWatch: ...
    def close(self) -> None: ...
    def config(self) -> dict[str, Any]:
        """The constructor arguments that rebuild this client elsewhere, credentials included (for pickling)."""

@final
class ReadinessWatch:
    def __iter__(self) -> ReadinessWatch: ...
    def __next__(self) -> ReadinessEvent: ...
    def next(self) -> Pending[ReadinessEvent | None]:
        """The next event, or None once the watch has finished."""

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
        default_headers: dict[str, str] | None = None,
        verify: bool | str | os.PathLike[str] | None = None,
        cert: str | os.PathLike[str] | tuple[str | os.PathLike[str], str | os.PathLike[str]] | None = None,
        proxy: str | None = None,
    ) -> Self: ...
    def with_options(
        self, timeout: float | None, max_retries: int | None, default_headers: dict[str, str] | None
    ) -> Self:
        """A copy with other settings (None: this client's) that shares this client's connection pool."""
    @property
    def base_url(self) -> str: ...
    @property
    def project(self) -> str: ...
    def endpoint(self, workload_slug: str, api_key: str | None) -> Endpoint: ...
    def close(self) -> None: ...
    def config(self) -> dict[str, Any]:
        """The constructor arguments that rebuild this client elsewhere, credentials included (for pickling)."""

@final
class Endpoint:
    @property
    def workload_slug(self) -> str: ...
    @property
    def project(self) -> str: ...
    @property
    def base_url(self) -> str: ...
    @property
    def api_key(self) -> str:
        """The bound `ik_live_` key itself."""
    def chat(
        self,
        prompt: str | None,
        messages: list[Any] | None,
        temperature: float | None,
        max_tokens: int | None,
        options: tuple[Any, ...] | None = None,
        call: tuple[dict[str, str] | None, float | None, int | None] | None = None,
    ) -> Pending[TextResult]:
        """`options`: the other chat parameters in `chat_option_names()` order, each None when not given; `call`:
        this call's `(extra_headers, timeout, max_retries)`."""
    def chat_stream(
        self,
        prompt: str | None,
        messages: list[Any] | None,
        temperature: float | None,
        max_tokens: int | None,
        options: tuple[Any, ...] | None = None,
        call: tuple[dict[str, str] | None, float | None, int | None] | None = None,
    ) -> Pending[OpenStream]: ...
    def embed(
        self, input: str | list[str], dimensions: int | None = None, extra_body: dict[str, Any] | None = None
    ) -> Pending[EmbedResult]: ...
    def rerank(self, query: str, documents: list[str], top_n: int | None) -> Pending[RerankResult]: ...
    def embed_job(self, batch_size: int, max_concurrency: int, output: str, inputs: object) -> EmbedJob:
        """A batch embedding job, after the checks of `embed_many`'s arguments (batch size, concurrency, output, and
        `inputs` not one string)."""
    def config(self) -> dict[str, Any]:
        """The client's constructor arguments, `workload_slug` and `endpoint_api_key` (for pickling)."""

@final
class EmbedJob:
    """A batch embedding job; dropping it cancels every request in flight."""
    def capacity(self) -> int: ...
    def in_flight(self) -> int: ...
    def concurrency(self) -> int: ...
    def submit(self, batch: int, texts: list[str]) -> None: ...
    def next_done(self) -> Pending[DoneBatch | None]: ...
    def abort(self) -> None: ...

@final
class DoneBatch:
    @property
    def batch(self) -> int: ...
    @property
    def vectors(self) -> Vectors | None: ...
    @property
    def error(self) -> Any: ...

@final
class OpenStream:
    """A chat stream whose response has begun, waiting to be taken by a `ChatStream`."""

@disjoint_base
class ChatStream:
    """The chunks of a streamed chat completion: a native iterator, or `next_batch()` calls."""
    def __new__(cls, open: OpenStream) -> Self: ...
    def __iter__(self) -> Self: ...
    def __next__(self) -> TextChunk: ...
    def batch_now(self) -> ChunkBatch | None:
        """The next batch when it is known without waiting (chunks already read, or the end already seen), else
        None."""
    def next_batch(self) -> Pending[ChunkBatch]:
        """The chunks decoded so far (waits for at least one); an empty batch once the stream has finished."""
    def read_to_end(self) -> Pending[TextResult]:
        """The rest of the stream read; resolves to the whole reply as a `TextResult` (chunks handed out included)."""
    def close(self) -> None: ...

@final
class ChunkBatch(Iterator[TextChunk]):
    def __iter__(self) -> ChunkBatch: ...
    def __next__(self) -> TextChunk: ...
    def __len__(self) -> int: ...

@final
class LocalPlatform:
    def __new__(
        cls,
        *,
        port: int | None = None,
        project: str | None = None,
        seed: int | None = None,
        state_dir: str | None = None,
        tls: bool | str | None = None,
        tls_client_ca: str | None = None,
    ) -> Self: ...
    @property
    def ca_path(self) -> str | None: ...
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
