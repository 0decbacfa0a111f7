"""The SDK's data types: the workload spec, results, stream chunks, readiness events and drift plans.

All are plain dataclasses with no behaviour beyond presentation. The result types are handed to the native module
once, at import (the last lines of this file); it builds their instances by field name. What a result received but
the user may never read (``raw``, ``embeddings``) stays as the bytes received until first read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from inferencekey._core import redact, register_result_types
from inferencekey.enums import Backend, ExecutionPolicy, TaskType

if TYPE_CHECKING:
    import numpy

__all__ = [
    "EmbedResult",
    "EndpointRef",
    "FieldChange",
    "Plan",
    "ReadinessEvent",
    "RerankItem",
    "RerankResult",
    "TextChunk",
    "TextResult",
    "ToolCall",
    "Usage",
    "WorkloadSpec",
]


@dataclass
class WorkloadSpec:
    """The declarative definition of a workload, handed to ``ManagementClient.ensure``.

    ``name``, ``slug``, ``model`` and ``backend`` are required; every other field is optional and, when left unset,
    never counts as drift. ``slug`` is the idempotency key of ``ensure()``. Placement (provider, VRAM) is the
    platform's job, so there is no field for it. Secrets must never go in a spec: a token found anywhere in it raises
    ``ConfigurationError`` before any request.

    Attributes:
        name: Human-readable display name.
        slug: Stable identifier; canonicalised the way the platform stores it.
        model: Model reference, e.g. ``meta-llama/Llama-3.1-8B-Instruct``.
        backend: Inference engine (a ``Backend`` or a custom backend slug).
        project: Project slug; overrides the client's project for this spec.
        description: Free-text note shown in the dashboard.
        command: Launch command (vLLM/SGLang), e.g. ``vllm serve ...``.
        vllm_version: Pin the vLLM image version (vllm / vllm-omni backends).
        task_type: Workload modality; the server default is ``text2text``.
        config: Backend-specific configuration (``command`` and ``vllm_version`` are laid over it when set).
        execution_policy: How the Manager schedules the workload.
        execution_policy_config: Policy-specific settings (e.g. autoscaling bounds).
        worker_id: Pin to a specific worker.
        gpu_resource_id: Pin to a specific GPU resource.
    """

    name: str
    slug: str
    model: str
    backend: Backend | str
    project: str | None = None
    description: str | None = None
    command: str | None = None
    vllm_version: str | None = None
    task_type: TaskType | str | None = None
    config: dict[str, Any] | None = None
    execution_policy: ExecutionPolicy | str | None = None
    execution_policy_config: dict[str, Any] | None = None
    worker_id: str | None = None
    gpu_resource_id: str | None = None


@dataclass(frozen=True)
class EndpointRef:
    """The slugs addressing a workload's data-plane endpoint, returned by ``ensure``.

    Attributes:
        project_slug: The project the workload lives in.
        workload_slug: The workload's canonical slug.
    """

    project_slug: str
    workload_slug: str


@dataclass(frozen=True)
class Usage:
    """Token counts of a reply, as the engine reported them.

    Attributes:
        prompt_tokens: Tokens of the prompt (of the inputs, for embeddings).
        completion_tokens: Tokens generated (0 for embeddings).
        total_tokens: Their sum, as the engine reported it.
    """

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


@dataclass(frozen=True)
class ToolCall:
    """A function call the model asked for (``TextResult.tool_calls``).

    Attributes:
        id: The call's id; answer it with ``{"role": "tool", "tool_call_id": id, "content": ...}``.
        name: The function's name.
        arguments: The arguments as JSON text, as received; parse it with ``json.loads`` (a model may produce
            invalid JSON, so be ready for a ``ValueError``).
    """

    id: str
    name: str
    arguments: str


class _Lazy:
    """Fields the native module leaves unset and fills on first read: ``raw`` from the JSON bytes received
    (``_raw_source``), ``embeddings`` from the vectors received (``_vectors``). Instances built by hand have every
    field set, so this never runs for them. Copies and pickles carry the materialised fields.
    """

    __slots__ = ()

    if not TYPE_CHECKING:  # a type checker would otherwise accept any attribute name

        def __getattr__(self, name: str) -> Any:
            held = self.__dict__
            if name == "raw" and "_raw_source" in held:
                value = held["_raw_source"].parse()
            elif name == "embeddings" and "_vectors" in held:
                value = held["_vectors"].to_lists()
            else:
                raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
            object.__setattr__(self, name, value)
            return value

    def __getstate__(self) -> dict[str, Any]:
        state = {name: value for name, value in self.__dict__.items() if not name.startswith("_")}
        for name in self.__dataclass_fields__:  # type: ignore[attr-defined]
            state[name] = getattr(self, name)
        return state


@dataclass(frozen=True)
class TextResult(_Lazy):
    """The result of ``Endpoint.generate_text``.

    Attributes:
        text: The generated completion text.
        model: The model that produced the result.
        finish_reason: Why generation stopped (e.g. ``stop``, ``length``, ``tool_calls``), when reported.
        raw: The underlying response JSON, untouched (for ``TextStream.final_result()``, the reply as one chat
            completion object built from the chunks). Logprobs are here.
        usage: Token counts, when the engine reported them (a stream reports them only when asked with
            ``stream_options={"include_usage": True}``).
        tool_calls: The function calls the model asked for, in order; empty when it answered with text.
    """

    text: str
    model: str
    finish_reason: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)
    usage: Usage | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)


@dataclass(frozen=True)
class TextChunk(_Lazy):
    """One streamed event of ``Endpoint.generate_text_stream``.

    Attributes:
        text: The delta of this chunk; concatenate across chunks to rebuild the reply.
        finish_reason: Set only on the chunk that carries it (e.g. ``stop``, ``length``).
        raw: The underlying chunk JSON, untouched (tool-call fragments and logprobs are here).
        usage: Set only on the chunk that carries the reply's token counts: the extra last chunk (empty ``text``)
            of a stream opened with ``stream_options={"include_usage": True}``.
    """

    text: str
    finish_reason: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)
    usage: Usage | None = None


@dataclass(frozen=True)
class ReadinessEvent:
    """One progress update of ``ManagementClient.wait_until_ready``.

    Attributes:
        phase: ``scheduling``, ``provisioning``, ``bootstrapping``, ``ready`` or ``error``.
        message: Short, printable description of what the platform is doing.
        elapsed_ms: Milliseconds since the wait started (monotonic; never goes backwards).
        step: The bootstrap step (e.g. ``model_load``), when applicable.
    """

    phase: str
    message: str
    elapsed_ms: int = 0
    step: str | None = None


@dataclass(frozen=True)
class EmbedResult(_Lazy):
    """The result of ``Endpoint.embed``: one vector per input, in input order.

    Attributes:
        embeddings: One embedding vector per input.
        model: The embedding model that produced the vectors.
        raw: The underlying response JSON, untouched.
        usage: Token counts (``completion_tokens`` 0), when the engine reported them.
    """

    embeddings: list[list[float]]
    model: str
    raw: dict[str, Any] = field(default_factory=dict)
    usage: Usage | None = None

    def to_numpy(self) -> numpy.ndarray[Any, numpy.dtype[numpy.float32]]:
        """The vectors as a NumPy ``float32`` array of shape ``(len(embeddings), dim)``, one row per input.

        For a result of ``embed()``, the array is built straight from the vectors received (no Python float in
        between); each call returns a new, writeable array. NumPy is imported only here: without it this raises
        ``ImportError``.

        Raises:
            ImportError: NumPy is not installed.
            ValueError: The vectors do not all have the same length.
        """
        try:
            import numpy
        except ImportError as missing:
            raise ImportError("EmbedResult.to_numpy() needs NumPy: pip install numpy") from missing
        vectors = self.__dict__.get("_vectors")
        if vectors is None:
            return numpy.array(self.embeddings, dtype=numpy.float32).reshape(len(self.embeddings), -1)
        dim = vectors.dim
        if dim is None:
            raise ValueError("embedding vectors of different lengths do not make an array")
        return numpy.frombuffer(vectors.to_bytearray(), dtype=numpy.float32).reshape(vectors.count, dim)


@dataclass(frozen=True)
class RerankItem:
    """One scored document of a rerank result.

    Attributes:
        index: Position of the document in the request's ``documents`` list.
        relevance_score: Relevance to the query; higher is more relevant.
    """

    index: int
    relevance_score: float


@dataclass(frozen=True)
class RerankResult(_Lazy):
    """The result of ``Endpoint.rerank``: documents ordered by relevance, best first.

    Attributes:
        results: The scored documents.
        model: The model that scored them.
        raw: The underlying response JSON, untouched.
    """

    results: list[RerankItem]
    model: str
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FieldChange:
    """One field of a drift plan: its live value and the value the spec wants.

    Attributes:
        field: The ``WorkloadSpec`` field name, dotted inside dicts (e.g. ``config.max_model_len``).
        live: The live value (``None`` when the live workload lacks it).
        desired: The spec's value.
    """

    field: str
    live: Any
    desired: Any

    def __repr__(self) -> str:
        # A live value may hold a credential someone stored on the platform: the repr shows it redacted.
        return redact(f"FieldChange(field={self.field!r}, live={self.live!r}, desired={self.desired!r})")


@dataclass(frozen=True)
class Plan:
    """What ``ensure`` would do for a spec: create it, update drifted fields, or nothing.

    ``str(plan)`` is the readable, terraform-like rendering (``~ command: "a" -> "b"``).

    Attributes:
        action: ``create``, ``update`` or ``noop``.
        project: The project slug the plan applies to.
        workload_slug: The canonical workload slug.
        changes: The fields that would change, in comparison order: every field the spec sets for a ``create``, the
            drifted ones for an ``update``, none for a ``noop``.
        rendered: The human-readable rendering.
    """

    action: str
    project: str
    workload_slug: str
    changes: tuple[FieldChange, ...] = ()
    rendered: str = ""

    @property
    def drifted(self) -> bool:
        """Whether applying the plan would change any field (``changes`` is non-empty): ``False`` for a ``noop``."""
        return bool(self.changes)

    def __str__(self) -> str:
        return self.rendered


register_result_types(
    TextChunk=TextChunk,
    TextResult=TextResult,
    EmbedResult=EmbedResult,
    RerankItem=RerankItem,
    RerankResult=RerankResult,
    ReadinessEvent=ReadinessEvent,
    EndpointRef=EndpointRef,
    FieldChange=FieldChange,
    Plan=Plan,
    Usage=Usage,
    ToolCall=ToolCall,
)
