"""The asyncio side of a native call: ``run`` starts a ``Pending`` call and awaits the future it resolves.

A request (chat, embeddings, rerank, a stream's open and its batches) runs on the loop's own thread where it can: it
goes as far as the network allows, and waits in the loop's poller to go on, with no other thread involved. Any other
call runs on the native I/O runtime, and is settled on this loop's thread, converting the result there: woken through
the loop's own ``LoopWaker`` socket where the loop can watch one, else through ``call_soon_threadsafe``.
"""

from __future__ import annotations

import logging
import os
import sys
import weakref
from typing import TYPE_CHECKING, TypeVar

from inferencekey._core import LoopWaker, Pending

if TYPE_CHECKING:
    import asyncio

_T = TypeVar("_T")

logger = logging.getLogger("inferencekey")

# Each event loop's waker, held weakly: only the loop's reader holds it, so a closed loop releases it (and the requests
# still waiting in it). A forked child forgets them all: the sockets are shared with the parent.
_WAKERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, weakref.ref[LoopWaker] | None] = (
    weakref.WeakKeyDictionary()
)

if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_WAKERS.clear)


def _waker(loop: asyncio.AbstractEventLoop) -> LoopWaker | None:
    """The loop's waker, made and watched on first use; None where the loop cannot watch a descriptor."""
    try:
        known = _WAKERS[loop]
    except KeyError:
        pass
    except TypeError:
        # A loop that cannot be weakly referenced cannot keep a waker here: the resolver thread serves it.
        return None
    else:
        if known is None:
            return None
        alive = known()
        if alive is not None:
            return alive
        # Released: the loop's reader was removed (the loop is running, so it was not closed). A new one serves it.
    waker: LoopWaker | None
    try:
        waker = LoopWaker()
    except NotImplementedError:
        # Off Unix: the resolver thread wakes this loop (and every other).
        waker = None
    except Exception as exc:
        # No poller to be made now (no descriptor left, say): this call goes through the I/O thread, the next one
        # tries again.
        logger.debug("no poller for the event loop (%s); this call runs on the I/O thread", exc)
        return None
    else:
        try:
            loop.add_reader(waker.fileno(), waker.drain)
        except Exception as exc:
            # Windows' proactor loop raises NotImplementedError; a loop that watches only some kinds of descriptor
            # may raise anything. Every call of this loop goes through the I/O thread instead: nothing is lost.
            logger.debug("the event loop cannot watch the SDK's poller (%s); its calls run on the I/O thread", exc)
            waker = None
    try:
        _WAKERS[loop] = None if waker is None else weakref.ref(waker)
    except TypeError:
        # A loop that cannot be weakly referenced cannot keep its waker here: the resolver thread serves it.
        if waker is not None:
            loop.remove_reader(waker.fileno())
        return None
    return waker


async def run(pending: Pending[_T]) -> _T:
    """Run ``pending`` and await its result.

    Cancelling the await cancels the call: a request on the loop's thread is dropped, a task on the native runtime
    aborted, and either way its connection is closed.
    """
    # asyncio is loaded by whoever awaits this, so `import inferencekey` does not pay for it (~50 ms).
    loop = sys.modules["asyncio"].get_running_loop()
    future: asyncio.Future[_T] = loop.create_future()
    call = pending.start(future, _waker(loop))
    if call is None:
        return await future
    try:
        return await future
    except BaseException:
        # Cancelled (or settled with an error): a request still running is dropped, which closes its connection.
        call.close()
        raise
