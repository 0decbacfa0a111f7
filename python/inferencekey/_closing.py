"""``Closing`` and ``AsyncClosing``: the context-manager protocols of everything that holds a connection or a server.

Clients, streams and the local platform each define ``close()``; leaving a ``with`` block calls it.
"""

from __future__ import annotations

from types import TracebackType
from typing import TypeVar

_C = TypeVar("_C", bound="Closing")


class Closing:
    """Base of the closable objects: ``with obj: ...`` calls ``obj.close()`` on the way out."""

    def close(self) -> None:
        """Release what the object holds; idempotent."""
        raise NotImplementedError

    def __enter__(self: _C) -> _C:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


_A = TypeVar("_A", bound="AsyncClosing")


class AsyncClosing:
    """Base of the asynchronously closable objects: ``async with obj: ...`` awaits ``obj.close()`` on the way out."""

    async def close(self) -> None:
        """Release what the object holds; idempotent."""
        raise NotImplementedError

    async def __aenter__(self: _A) -> _A:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()
