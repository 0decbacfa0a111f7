# Embedding on a real Dask distributed cluster (worker processes, spawn), through the documented pattern of
# examples/embed_at_scale.py: one pickled endpoint shipped to each worker once, embed_many per partition, vectors
# written back to Parquet. Every row must come back once, in order, with the vector a direct embed call gives.
from __future__ import annotations

import importlib
import math
import os
import sys
from pathlib import Path
from typing import Any

import numpy
import pytest
from conftest import Admin

from inferencekey import DataClient, Endpoint, ManagementClient
from inferencekey.local import LocalPlatform

dask = pytest.importorskip("dask")
distributed = pytest.importorskip("distributed")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
psutil = pytest.importorskip("psutil")  # a dependency of distributed

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
example = importlib.import_module("embed_at_scale")  # spawned workers get this sys.path, so they import it too

ROWS = 3_000
ROWS_PER_PARTITION = 250
WORKERS = 2


def direct(endpoint: Endpoint, texts: list[str]) -> numpy.ndarray[Any, numpy.dtype[numpy.float32]]:
    """The vectors of `texts` by plain embed calls of 100 inputs, for comparison."""
    chunks = [endpoint.embed(input=texts[i : i + 100]).to_numpy() for i in range(0, len(texts), 100)]
    return numpy.concatenate(chunks)


def test_a_dataset_is_embedded_on_a_cluster_exactly_once_and_in_order(
    platform: LocalPlatform, admin: Admin, tmp_path: Path
) -> None:
    # Worker processes must start clean, not as copies of this process (its platform, runtime and threads).
    assert dask.config.get("distributed.worker.multiprocessing-method") in ("spawn", "forkserver")
    source, out_dir = tmp_path / "texts.parquet", tmp_path / "embeddings"
    example.make_dataset(source, ROWS, ROWS_PER_PARTITION)
    with (
        ManagementClient(base_url=platform.url, project=platform.project, sdk_token=platform.sdk_token) as mgmt,
        DataClient(base_url=platform.url, project=platform.project, api_key=platform.api_key) as data,
    ):
        endpoint = data.endpoint(example.ensure_embedder(mgmt))
        admin.clear_journal()
        with (
            distributed.LocalCluster(
                n_workers=WORKERS, threads_per_worker=1, processes=True, dashboard_address=None
            ) as cluster,
            distributed.Client(cluster) as client,
        ):
            client.wait_for_workers(WORKERS)
            worker_pids = set(client.run(os.getpid).values())
            assert not any(client.run(lambda: "conftest" in sys.modules).values())  # not forks of this process
            parts = example.embed_dataset(client, endpoint, source, out_dir)
        # The cluster is gone: none of its worker processes is left behind.
        children = {child.pid for child in psutil.Process().children(recursive=True)}
        assert len(worker_pids) == WORKERS and not worker_pids & children

        # Every partition ran once, in a worker process, which built its endpoint once for all its partitions.
        partitions = ROWS // ROWS_PER_PARTITION
        assert [p.row_group for p in parts] == list(range(partitions))
        assert all(p.rows == ROWS_PER_PARTITION for p in parts)
        assert {p.pid for p in parts} == worker_pids  # both workers took part
        for pid in {p.pid for p in parts}:
            assert len({p.endpoint_id for p in parts if p.pid == pid}) == 1, f"worker {pid} rebuilt its endpoint"

        # Each text reached the platform exactly once, in requests of at most embed_many's default batch size.
        requests = admin.requests("POST", "/embeddings")
        sent = [text for entry in requests for text in entry["body"]["input"]]
        inputs = pq.read_table(source)
        assert sorted(sent) == sorted(inputs.column("text").to_pylist())
        assert all(entry["status"] == 200 for entry in requests)
        assert len(requests) == partitions * math.ceil(ROWS_PER_PARTITION / 32)

        # The output: the input rows, once each and in order, plus the vector a direct call gives for each text.
        output = pq.read_table(out_dir)
        assert output.num_rows == ROWS
        assert output.schema.field("embedding").type == pa.list_(pa.float32(), 64)
        assert output.column("id").to_pylist() == list(range(ROWS))
        assert output.column("text").to_pylist() == inputs.column("text").to_pylist()
        vectors = output.column("embedding").combine_chunks().flatten().to_numpy().reshape(ROWS, 64)
        assert numpy.array_equal(vectors, direct(endpoint, inputs.column("text").to_pylist()))
