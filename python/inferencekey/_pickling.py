"""How clients and endpoints pickle: as their configuration (base URL, project, timeouts, retries and credentials),
never as a connection. Unpickled in another process (a Ray, Dask or Spark worker), a client builds its own connection
pool and works at once. A pickle holds the credentials in clear, because the worker needs them: treat it as a secret.
"""

from __future__ import annotations

from typing import Any


def rebuild_client(cls: type[Any], config: dict[str, Any]) -> Any:
    """A client of class ``cls`` from its constructor arguments."""
    return cls(**config)


def rebuild_endpoint(client_cls: type[Any], config: dict[str, Any]) -> Any:
    """An endpoint from its client's constructor arguments, its workload slug and its own key."""
    config = dict(config)
    workload_slug = config.pop("workload_slug")
    api_key = config.pop("endpoint_api_key")
    return client_cls(**config).endpoint(workload_slug, api_key=api_key)
