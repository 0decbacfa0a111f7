# Clients for workers: ManagementClient, DataClient, Endpoint and their async twins pickle as their configuration,
# never a connection; unpickled in another process (multiprocessing spawn or fork) they work at once, and their repr
# still redacts. A client also keeps working in a child made by os.fork().
from __future__ import annotations

import asyncio
import multiprocessing
import os
import pickle
import sys
from typing import Any

import pytest
from conftest import PROMPT, Deploy

from inferencekey import (
    AsyncDataClient,
    AsyncEndpoint,
    AsyncManagementClient,
    DataClient,
    Endpoint,
    ManagementClient,
)
from inferencekey.local import LocalPlatform


def clients(platform: LocalPlatform) -> list[Any]:
    kwargs: dict[str, Any] = {"base_url": platform.url, "timeout": 42.0, "connect_timeout": 3.0, "max_retries": 5}
    return [
        ManagementClient(sdk_token=platform.sdk_token, project=platform.project, **kwargs),
        DataClient(project=platform.project, api_key=platform.api_key, **kwargs),
        AsyncManagementClient(sdk_token=platform.sdk_token, project=platform.project, **kwargs),
        AsyncDataClient(project=platform.project, api_key=platform.api_key, **kwargs),
    ]


def test_clients_pickle_as_their_configuration(platform: LocalPlatform, deploy: Deploy) -> None:
    deploy()
    for client in clients(platform):
        clone = pickle.loads(pickle.dumps(client))
        assert type(clone) is type(client)
        assert clone._native.config() == client._native.config()
        assert clone._native.config()["max_retries"] == 5 and clone._native.config()["timeout"] == 42.0
        assert platform.api_key not in repr(clone) and platform.sdk_token not in repr(clone)
    data = DataClient(base_url=platform.url, project=platform.project, api_key=platform.api_key)
    endpoint = pickle.loads(pickle.dumps(data.endpoint("support-bot")))
    assert type(endpoint) is Endpoint and endpoint.workload_slug == "support-bot"
    assert endpoint.generate_text(prompt=PROMPT, max_tokens=4).text
    aendpoint = pickle.loads(
        pickle.dumps(
            AsyncDataClient(base_url=platform.url, project=platform.project, api_key=platform.api_key).endpoint(
                "support-bot"
            )
        )
    )
    assert type(aendpoint) is AsyncEndpoint
    assert asyncio.run(aendpoint.generate_text(prompt=PROMPT, max_tokens=4)).text


def test_an_endpoint_keeps_its_own_key(platform: LocalPlatform, deploy: Deploy, admin: Any) -> None:
    deploy()
    other = admin.token("live", workload="support-bot")
    data = DataClient(base_url=platform.url, project=platform.project, api_key=platform.api_key)
    clone = pickle.loads(pickle.dumps(data.endpoint("support-bot", api_key=other)))
    clone.generate_text(prompt=PROMPT, max_tokens=2)
    sent = admin.journal()[-1]["headers"]["authorization"]
    assert other[:16] in sent and platform.api_key[:16] not in sent


def _work(endpoint: Endpoint, texts: list[str]) -> list[list[float]]:
    """Runs in a worker process: embed with an endpoint that arrived pickled."""
    return [list(map(float, row)) for row in endpoint.embed_many(texts, batch_size=2, silent=True)]


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_workers_get_endpoints_through_multiprocessing(platform: LocalPlatform, deploy: Deploy, method: str) -> None:
    if method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"no {method} start method on this platform")
    ep = deploy("embedder", task_type="embedding")
    ep.embed(input="warm the pool before forking")  # a live pool in the parent must not leak into children
    chunks = [["a b", "c d", "e"], ["f g h", "i"]]
    with multiprocessing.get_context(method).Pool(2) as pool:
        results = pool.starmap(_work, [(ep, chunk) for chunk in chunks])
    for chunk, rows in zip(chunks, results, strict=True):
        assert rows == ep.embed(input=chunk).embeddings


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")
def test_a_client_works_in_a_forked_child(platform: LocalPlatform, deploy: Deploy) -> None:
    ep = deploy()
    expected = ep.generate_text(prompt=PROMPT, max_tokens=4).text
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: same client object, fresh runtime and pool
        try:
            ok = ep.generate_text(prompt=PROMPT, max_tokens=4).text == expected
            os.write(write, b"ok" if ok else b"bad")
        finally:
            os._exit(0)
    os.close(write)
    answer = os.read(read, 16)
    os.close(read)
    os.waitpid(pid, 0)
    assert answer == b"ok"
    assert ep.generate_text(prompt=PROMPT, max_tokens=4).text == expected  # and still in the parent
    assert sys.modules["inferencekey"]
