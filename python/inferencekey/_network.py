"""Types of the network arguments every client takes (``verify=``, ``cert=``, ``proxy=``); the checks and the
TLS stack are the native core's."""

from __future__ import annotations

import os
from typing import Union

CertFiles = Union[str, "os.PathLike[str]", tuple[Union[str, "os.PathLike[str]"], Union[str, "os.PathLike[str]"]]]
"""``cert=``: the path of a PEM file with the certificate and its key, or a ``(cert, key)`` pair of paths."""

__all__ = ["CertFiles", "no_proxy_with", "proxy_free_env"]


def no_proxy_with(existing: str, *hosts: str) -> str:
    """A ``NO_PROXY`` list with ``hosts`` added to ``existing`` (its entries kept, in order, none twice)."""
    entries = [entry.strip() for entry in existing.split(",") if entry.strip()]
    for host in hosts:
        if host not in entries:
            entries.append(host)
    return ",".join(entries)


def proxy_free_env(url: str) -> dict[str, str]:
    """``NO_PROXY`` and ``no_proxy`` for reaching ``url``'s host (a local platform on loopback) without a proxy: the
    current environment's entries, plus that host and ``localhost``. A corporate ``HTTP_PROXY`` set for other traffic
    then never gets the loopback requests, as curl and httpx decide it by ``NO_PROXY`` alone."""
    host = url.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0].strip("[]")
    existing = os.environ.get("NO_PROXY") or os.environ.get("no_proxy") or ""
    value = no_proxy_with(existing, host, "localhost")
    return {"NO_PROXY": value, "no_proxy": value}
