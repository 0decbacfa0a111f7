"""Where earlier builds defined the asyncio classes, which now sit beside their sync twins (``_management``,
``_data``). Kept so that pickles naming this module still load."""

from inferencekey._data import AsyncDataClient, AsyncEndpoint, AsyncTextStream
from inferencekey._management import AsyncManagementClient

__all__ = ["AsyncDataClient", "AsyncEndpoint", "AsyncManagementClient", "AsyncTextStream"]
