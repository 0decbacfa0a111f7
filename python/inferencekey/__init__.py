"""inferencekey: the Python SDK of the InferenceKey AI platform.

Declare a workload with ``WorkloadSpec``, provision it idempotently with ``ManagementClient.ensure``, wait until it
serves, call its OpenAI-compatible ``Endpoint`` (text, streaming, embeddings, rerank) and delete it when done::

    from inferencekey import Backend, DataClient, ManagementClient, WorkloadSpec

    mgmt = ManagementClient.from_env()  # INFERENCEKEY_BASE_URL / _PROJECT / _SDK_TOKEN
    ref = mgmt.ensure(WorkloadSpec(name="Support Bot", slug="support-bot", model="m", backend=Backend.VLLM))
    try:
        mgmt.wait_until_ready(ref.workload_slug)
        ep = DataClient.from_env().endpoint(ref.workload_slug)  # INFERENCEKEY_API_KEY
        print(ep.generate_text(prompt="Hola").text)
    finally:
        mgmt.delete(ref.workload_slug)

``AsyncManagementClient``, ``AsyncDataClient`` and ``AsyncEndpoint`` are the asyncio twins (``await`` each call,
``async for`` over streams).

``LocalPlatform`` (and the ``inferencekey local`` command) runs a local copy of the platform for development and CI.
"""

# Standard modules under private names, so that `dir(inferencekey)` shows only the public surface.
import logging as _logging
import warnings as _warnings

from inferencekey._batch import EmbedProgress
from inferencekey._core import MAX_SSE_EVENT_BYTES as _MAX_SSE_EVENT_BYTES
from inferencekey._core import __version__ as _native_version
from inferencekey._core import log_level_from_env as _log_level_from_env
from inferencekey._data import AsyncDataClient, AsyncEndpoint, AsyncTextStream, DataClient, Endpoint, TextStream
from inferencekey._management import AsyncManagementClient, ManagementClient
from inferencekey.enums import Backend, ExecutionPolicy, OnDrift, TaskType
from inferencekey.exceptions import (
    ApiConnectionError,
    ApiError,
    ApiTimeoutError,
    AuthError,
    BatchEmbedError,
    ConfigurationError,
    DriftError,
    DriftWarning,
    InferenceKeyError,
    NotFoundError,
    PermissionDenied,
    RateLimitError,
    ValidationError,
    WaitTimeoutError,
)
from inferencekey.local import LocalPlatform
from inferencekey.types import (
    EmbedResult,
    EndpointRef,
    FieldChange,
    Plan,
    ReadinessEvent,
    RerankItem,
    RerankResult,
    TextChunk,
    TextResult,
    ToolCall,
    Usage,
    WorkloadSpec,
)

__version__: str = _native_version
"""The package version (that of the native module it ships with)."""

MAX_SSE_EVENT_BYTES: int = _MAX_SSE_EVENT_BYTES
"""The largest server-sent event a stream may carry (16 MiB): past it the stream raises ``ApiError``
(``malformed response: … exceeded the 16 MiB limit of one SSE event``), so a server that sends one endless line
cannot grow the client's memory without bound."""


def _configure_logging() -> None:
    """Give the ``inferencekey`` logger a stderr handler at the level ``INFERENCEKEY_LOG`` names (``debug``, ``info``,
    ``warning``, ``error``; the core reads and checks it), like ``OPENAI_LOG``. Without it nothing is configured: a
    library never configures logging by default (the NullHandler only keeps logging's last resort from printing)."""
    logger = _logging.getLogger("inferencekey")
    level, warning = _log_level_from_env()
    if warning is not None:
        _warnings.warn(warning, RuntimeWarning, stacklevel=2)
    if level is None:
        logger.addHandler(_logging.NullHandler())
        return
    handler = _logging.StreamHandler()  # stderr
    handler.setFormatter(_logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level)


_configure_logging()

__all__ = [
    "MAX_SSE_EVENT_BYTES",
    "ApiConnectionError",
    "ApiError",
    "ApiTimeoutError",
    "AsyncDataClient",
    "AsyncEndpoint",
    "AsyncManagementClient",
    "AsyncTextStream",
    "AuthError",
    "Backend",
    "BatchEmbedError",
    "ConfigurationError",
    "DataClient",
    "DriftError",
    "DriftWarning",
    "EmbedProgress",
    "EmbedResult",
    "Endpoint",
    "EndpointRef",
    "ExecutionPolicy",
    "FieldChange",
    "InferenceKeyError",
    "LocalPlatform",
    "ManagementClient",
    "NotFoundError",
    "OnDrift",
    "PermissionDenied",
    "Plan",
    "RateLimitError",
    "ReadinessEvent",
    "RerankItem",
    "RerankResult",
    "TaskType",
    "TextChunk",
    "TextResult",
    "TextStream",
    "ToolCall",
    "Usage",
    "ValidationError",
    "WaitTimeoutError",
    "WorkloadSpec",
    "__version__",
]


def _public_module() -> None:
    """Exported classes report ``inferencekey`` as their module (in reprs, tracebacks, docs and new pickles), as the
    names users import them by. Pickles that name the defining modules (``inferencekey.types.TextResult``, made by
    earlier releases) still load: those modules keep every name."""
    namespace = globals()
    for name in __all__:
        value = namespace[name]
        if isinstance(value, type) and value.__module__.startswith("inferencekey."):
            value.__module__ = "inferencekey"


_public_module()
