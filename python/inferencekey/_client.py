"""What the control-plane and data-plane clients share around their native client: the base URL, copies with other
settings that share the connection pool, and pickling as configuration."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from inferencekey._core import DataClient as NativeDataClient
from inferencekey._core import ManagementClient as NativeManagementClient
from inferencekey._pickling import rebuild_client

__all__ = ["ClientBase"]

_C = TypeVar("_C", bound="ClientBase")


class ClientBase:
    """The face every client class shares over its native client."""

    _native: NativeManagementClient | NativeDataClient

    @property
    def base_url(self) -> str:
        """The platform base URL this client talks to (no trailing slash)."""
        return self._native.base_url

    @property
    def project(self) -> str | None:
        """The client's default project slug, if it has one."""
        return self._native.project

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r}, project={self.project!r})"

    def with_options(
        self: _C,
        *,
        timeout: float | None = None,
        max_retries: int | None = None,
        default_headers: Mapping[str, str] | None = None,
    ) -> _C:
        """A copy of this client with other settings that shares its connection pool (no new connections, cheap to
        make per request or per tenant); each argument left ``None`` keeps this client's. ``default_headers`` are
        added to this client's (a header of the same name replaces it); ``Authorization`` is refused, since the
        client sends its own credential.

        Raises:
            ValidationError: A value is out of range, or a header is invalid or is ``Authorization``.
        """
        copy = type(self).__new__(type(self))
        headers = None if default_headers is None else dict(default_headers)
        copy._native = self._native.with_options(timeout, max_retries, headers)
        return copy

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle as the configuration, credentials included (see ``inferencekey._pickling``); never a connection."""
        return (rebuild_client, (type(self), self._native.config()))
