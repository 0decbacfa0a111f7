"""The SDK's exception hierarchy, raised by both this package and the native module.

Every error derives from ``InferenceKeyError`` and carries ``status_code``, ``code``, ``request_id`` and ``body``.
Messages never contain a full token: the native layer redacts them before an exception is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from inferencekey.types import Plan

__all__ = [
    "ApiConnectionError",
    "ApiError",
    "ApiTimeoutError",
    "AuthError",
    "BatchEmbedError",
    "ConfigurationError",
    "DriftError",
    "DriftWarning",
    "InferenceKeyError",
    "NotFoundError",
    "PermissionDenied",
    "RateLimitError",
    "ValidationError",
    "WaitTimeoutError",
]


class InferenceKeyError(Exception):
    """Base class for every SDK error.

    Attributes:
        message: The human-readable message (also ``str(error)``).
        status_code: The HTTP status of the response, or ``None`` for local and transport errors.
        code: The platform's error code (e.g. ``scope_insufficient``), when it sent one.
        request_id: The ``x-request-id`` response header, when present.
        body: The decoded error body (JSON value or text), when there was one.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        code: str | None = None,
        request_id: str | None = None,
        body: object = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.code = code
        self.request_id = request_id
        self.body = body

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.message!r}, status_code={self.status_code!r}, "
            f"code={self.code!r}, request_id={self.request_id!r})"
        )


class PermissionDenied(InferenceKeyError):
    """The credential may not perform the operation (HTTP 403, or a wrong kind of token caught locally).

    ``code`` is one of ``wrong_credential_type``, ``project_scope_mismatch`` or ``scope_insufficient``.
    """


class AuthError(InferenceKeyError):
    """Credentials are missing or invalid (HTTP 401)."""


class ValidationError(InferenceKeyError):
    """A request argument failed local or server validation (local checks, HTTP 400 or 422)."""


class DriftError(ValidationError):
    """``ensure(on_drift=OnDrift.FAIL)`` found the live workload differing from the spec; nothing was changed.

    Attributes:
        plan: The computed ``Plan`` (what would change), when available.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        code: str | None = None,
        request_id: str | None = None,
        body: object = None,
        plan: Plan | None = None,
    ) -> None:
        super().__init__(message, status_code=status_code, code=code, request_id=request_id, body=body)
        self.plan = plan


class ConfigurationError(InferenceKeyError):
    """The client is misconfigured before any request is sent (no token, no project, no data key, secret in spec)."""


class ApiError(InferenceKeyError):
    """Any other non-2xx response, an in-band stream error, a malformed response or a transport failure."""


class NotFoundError(ApiError):
    """The workload (or another resource named) does not exist (HTTP 404), on the control plane or the data plane.

    For a workload, the message says whether the project has similar slugs.
    """


class RateLimitError(ApiError):
    """The platform refused the request for now (HTTP 429), after the SDK's own retries.

    Attributes:
        retry_after: How long, in seconds, the platform asked to wait (its ``Retry-After``), when it said.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        code: str | None = None,
        request_id: str | None = None,
        body: object = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status_code=status_code, code=code, request_id=request_id, body=body)
        self.retry_after = retry_after


class ApiConnectionError(ApiError):
    """The platform could not be reached, or the connection broke before a complete response."""


class ApiTimeoutError(ApiError, TimeoutError):
    """A transport timeout (connect, or no data for longer than the read timeout); also a builtin ``TimeoutError``."""


class BatchEmbedError(InferenceKeyError):
    """``embed_many`` could not embed every input: a batch failed in a way retries could not cure.

    Nothing finished is lost: the vectors that were embedded come with the error, so a job can resume with only the
    failed inputs (and, for an iterator, the ones it has not read yet). ``__cause__`` is the first batch's error, whose
    ``status_code``, ``code`` and ``request_id`` this error repeats.

    Attributes:
        failed_indices: Input positions that were read but not embedded, in order.
        completed_indices: Input positions that were embedded, in order.
        vectors: Their vectors, row ``i`` for ``completed_indices[i]`` (a NumPy array or lists, like the result).
        consumed: How many inputs were read; an iterator's later inputs are still in it.
    """

    def __init__(
        self,
        message: str,
        *,
        failed_indices: list[int] | None = None,
        completed_indices: list[int] | None = None,
        vectors: object = None,
        consumed: int = 0,
        cause: InferenceKeyError | None = None,
    ) -> None:
        super().__init__(
            message,
            status_code=None if cause is None else cause.status_code,
            code=None if cause is None else cause.code,
            request_id=None if cause is None else cause.request_id,
            body=None if cause is None else cause.body,
        )
        # Defaults only serve unpickling, which restores the attributes after calling the class with the message.
        self.failed_indices = failed_indices if failed_indices is not None else []
        self.completed_indices = completed_indices if completed_indices is not None else []
        self.vectors = vectors
        self.consumed = consumed


class WaitTimeoutError(InferenceKeyError, TimeoutError):
    """``wait_until_ready`` reached its deadline before the workload was ready; also a builtin ``TimeoutError``."""


class DriftWarning(UserWarning):
    """Emitted by ``ensure(on_drift=OnDrift.WARN)`` when the live workload differs from the spec.

    Attributes:
        plan: The computed ``Plan`` (what would change), when available.
    """

    def __init__(self, message: str, *, plan: Plan | None = None) -> None:
        super().__init__(message)
        self.plan = plan
