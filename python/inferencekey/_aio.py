"""The asyncio side of a native call: ``run`` starts a ``Pending`` call on the native I/O runtime and awaits the
future it resolves (the native side settles it on this loop's thread, converting the result there).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, TypeVar

from inferencekey._core import Pending

if TYPE_CHECKING:
    import asyncio

_T = TypeVar("_T")


async def run(pending: Pending[_T]) -> _T:
    """Run ``pending`` on the native runtime and await its result.

    Cancelling the await cancels the future, which aborts the native task (closing its connection).
    """
    # asyncio is loaded by whoever awaits this, so `import inferencekey` does not pay for it (~50 ms).
    future: asyncio.Future[_T] = sys.modules["asyncio"].get_running_loop().create_future()
    pending.start(future)
    return await future
