"""The asyncio side of a native call: ``call`` creates the future a native ``*_async`` method resolves, ``_resolve``
runs on the loop thread to convert the native outcome (the native task only schedules it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Concatenate, ParamSpec, TypeVar

from inferencekey import _core

_T = TypeVar("_T")
_P = ParamSpec("_P")


async def call(start: Callable[Concatenate[asyncio.Future[_T], _P], None], *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """Start the native ``*_async`` method ``start`` on a new future of the running loop and await its result.

    Cancelling the await cancels the future, which aborts the native task (closing its connection).
    """
    future: asyncio.Future[_T] = asyncio.get_running_loop().create_future()
    start(future, *args, **kwargs)
    return await future


def _resolve(future: asyncio.Future[_T], outcome: _core.Outcome[_T]) -> None:
    """Settle ``future`` with the native ``outcome`` (converted here, on the loop thread) unless it was cancelled."""
    if future.cancelled():
        return
    try:
        result = outcome.take()
    except BaseException as exc:  # the call's exception, whatever it is, belongs to the awaiting task
        future.set_exception(exc)
    else:
        future.set_result(result)
