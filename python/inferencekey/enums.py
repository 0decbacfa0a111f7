"""The platform's enumerations: backends, task types, drift strategies and execution policies.

Each member's value is the exact wire string, and every enum is a ``str`` subclass, so a member and its string are
interchangeable wherever the SDK takes one.
"""

from __future__ import annotations

from enum import Enum

__all__ = ["Backend", "ExecutionPolicy", "OnDrift", "TaskType"]


class _WireEnum(str, Enum):
    """A string enum whose ``str()`` is the wire value (not ``ClassName.MEMBER``)."""

    def __str__(self) -> str:
        return str(self.value)


class Backend(_WireEnum):
    """The inference engine that serves a workload (the ``backend`` wire string).

    Any other string is accepted wherever a ``Backend`` is, as a custom backend slug.
    """

    OLLAMA = "ollama"
    VLLM = "vllm"
    VLLM_OMNI = "vllm-omni"
    SGLANG = "sglang"
    LLAMACPP = "llamacpp"
    STABLE_DIFFUSION_CPP = "stablediffusioncpp"


class TaskType(_WireEnum):
    """The workload modality (``task_type``); the server default is ``text2text``.

    ``reranker``, ``classification`` and ``reward`` are async-only on the platform (no sync OpenAI route).
    """

    TEXT2TEXT = "text2text"
    EMBEDDING = "embedding"
    TEXT2IMAGE = "text2image"
    TEXT2VIDEO = "text2video"
    TEXT2AUDIO = "text2audio"
    IMAGE2IMAGE = "image2image"
    IMAGE2VIDEO = "image2video"
    AUDIO2TEXT = "audio2text"
    OMNI = "omni"
    RERANKER = "reranker"
    CLASSIFICATION = "classification"
    REWARD = "reward"
    FORECAST = "forecast"


class OnDrift(_WireEnum):
    """What ``ManagementClient.ensure`` does when the live workload differs from the spec.

    ``RECONCILE`` patches the drifted fields, ``FAIL`` raises ``DriftError``, ``DRY_RUN`` changes nothing and logs the
    plan, ``WARN`` changes nothing and emits a ``DriftWarning``, ``IGNORE`` changes nothing silently.
    """

    RECONCILE = "reconcile"
    FAIL = "fail"
    DRY_RUN = "dry_run"
    WARN = "warn"
    IGNORE = "ignore"


class ExecutionPolicy(_WireEnum):
    """How the platform's Manager schedules a workload (``execution_policy``)."""

    FIXED = "fixed"
    SCHEDULED = "scheduled"
    AUTOSCALING = "autoscaling"
