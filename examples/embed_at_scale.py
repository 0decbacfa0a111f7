"""Embed a Parquet dataset on a Dask cluster: one Endpoint shipped to every worker, embed_many per partition.

    python examples/embed_at_scale.py --rows 100000 --workers 2

The driver ensures the embedding workload and builds ONE Endpoint. Dask ships it to each worker process once. An
endpoint pickles as its configuration (URL, project, timeouts, retries and its data key), so a worker that unpickles it
can call the platform straight away. Each task reads one row group of the input, embeds its texts with
`endpoint.embed_many` inside the worker (batched and concurrent on the SDK's I/O threads, slowing down on 429/503),
and writes them back as an `embedding` column (fixed-size list of float32) to its own Parquet file. Nothing but the
task arguments and a small summary passes through the driver.

Configuration comes from INFERENCEKEY_BASE_URL, INFERENCEKEY_PROJECT, INFERENCEKEY_SDK_TOKEN and INFERENCEKEY_API_KEY.
When no key is set, a local platform is started in this process. The workers are separate processes and reach it
over HTTP on 127.0.0.1. `--scheduler tcp://host:8786` uses an existing cluster instead of a local one. Then the input
and output paths must be on storage that every worker can read and write, and the platform must be reachable from them.

Requires `dask`, `distributed` and `pyarrow`. They are not dependencies of inferencekey.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq
from distributed import Client, LocalCluster, as_completed

from inferencekey import Backend, DataClient, Endpoint, ManagementClient, TaskType, WorkloadSpec
from inferencekey.local import LocalPlatform

EMBEDDING_MODEL = "BAAI/bge-small-en-v1.5"
EMBEDDER = WorkloadSpec(
    name="Docs Embedder",
    slug="docs-embedder",
    model=EMBEDDING_MODEL,
    backend=Backend.VLLM,
    task_type=TaskType.EMBEDDING,
    command=f"vllm serve {EMBEDDING_MODEL}",
)
WORDS = ("coffee", "tea", "japan", "kyoto", "roast", "bean", "grinder", "kettle", "filter", "espresso", "milk", "cup")


class Part(NamedTuple):
    """What one task reports back: rows embedded, and the worker process and endpoint object that did it."""

    row_group: int
    rows: int
    pid: int
    endpoint_id: int


def make_dataset(path: Path, rows: int, rows_per_partition: int) -> None:
    """Write `rows` generated texts (columns `id`, `text`) to one Parquet file, one row group per partition."""
    n = len(WORDS)
    texts = [
        f"note {i}: {WORDS[i % n]} {WORDS[i * 7 % n]} and {WORDS[i // n % n]} from batch {i // 1000}"
        for i in range(rows)
    ]
    table = pa.table({"id": pa.array(range(rows), pa.int64()), "text": pa.array(texts, pa.string())})
    pq.write_table(table, path, row_group_size=rows_per_partition)


def ensure_embedder(mgmt: ManagementClient) -> str:
    """Create the embedding workload (or find it, reconciling drift), wait until it serves, return its slug."""
    ref = mgmt.ensure(EMBEDDER)
    mgmt.wait_until_ready(ref.workload_slug, timeout=600)
    return ref.workload_slug


def embed_partition(row_group: int, *, endpoint: Endpoint, source: str, out_dir: str) -> Part:
    """Runs on a worker: embed one row group of `source` and write it, with its vectors, to `out_dir`."""
    table = pq.ParquetFile(source).read_row_group(row_group)
    # Every vector in input order, as one float32 array (rows, dim). Progress would interleave between workers.
    vectors = endpoint.embed_many(table.column("text").to_pylist(), silent=True)
    rows, dim = vectors.shape
    embedding = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), dim)
    # One file per partition, named by its position, so the output directory reads back in input order.
    pq.write_table(table.append_column("embedding", embedding), Path(out_dir) / f"part-{row_group:05d}.parquet")
    return Part(row_group, rows, os.getpid(), id(endpoint))


def embed_dataset(client: Client, endpoint: Endpoint, source: Path, out_dir: Path) -> list[Part]:
    """Embed every row group of `source` on the cluster of `client`, one task each; return the tasks' reports."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob("part-*.parquet"):  # a previous run's parts would read back as duplicate rows
        stale.unlink()
    # Ship the endpoint once: scatter(broadcast=True) sends its pickle to every worker. The worker unpickles it once and
    # keeps it in memory, and hands the same object to each of its tasks, so one connection pool per worker serves all
    # the partitions it runs. Passing the endpoint itself to client.map would instead put its pickle into every task
    # and build a new client, with new connections, for each partition. Dask keeps a scattered object in worker
    # memory, where it holds the data key in clear: do not send it to workers you would not give the key.
    shared = client.scatter(endpoint, broadcast=True)
    row_groups = range(pq.ParquetFile(source).num_row_groups)
    futures = client.map(embed_partition, row_groups, endpoint=shared, source=str(source), out_dir=str(out_dir))
    parts: list[Part] = []
    for future in as_completed(futures):  # a failed partition (e.g. BatchEmbedError) raises here
        parts.append(future.result())
        print(f"partitions {len(parts)}/{len(futures)}, texts {sum(p.rows for p in parts):,}", file=sys.stderr)
    return sorted(parts)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rows", type=int, default=100_000, help="texts to generate and embed (default 100000)")
    parser.add_argument("--rows-per-partition", type=int, default=5_000, help="rows per task (default 5000)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes of the local cluster (default 2)")
    parser.add_argument("--scheduler", help="address of an existing Dask scheduler instead of a local cluster")
    parser.add_argument("--dir", type=Path, help="where to write the input and output (default: a temporary directory)")
    args = parser.parse_args(argv)
    started = time.perf_counter()

    with ExitStack() as stack:
        if os.environ.get("INFERENCEKEY_API_KEY", "").strip():
            mgmt, data = ManagementClient.from_env(), DataClient.from_env()
        else:
            lp = stack.enter_context(LocalPlatform())  # closed last: it outlives the cluster
            mgmt = ManagementClient(base_url=lp.url, project=lp.project, sdk_token=lp.sdk_token)
            data = DataClient(base_url=lp.url, project=lp.project, api_key=lp.api_key)
        stack.enter_context(mgmt)
        stack.enter_context(data)
        endpoint = data.endpoint(ensure_embedder(mgmt))

        work = args.dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="embed-at-scale-")))
        work.mkdir(parents=True, exist_ok=True)
        source, out_dir = work / "texts.parquet", work / "embeddings"
        make_dataset(source, args.rows, args.rows_per_partition)

        if args.scheduler:
            client = stack.enter_context(Client(args.scheduler))
        else:
            # Worker processes (started with spawn, distributed's default), one thread each: embed_many already keeps
            # several requests in flight per partition, so more threads would only add partitions in memory at once.
            cluster = stack.enter_context(
                LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=None)
            )
            client = stack.enter_context(Client(cluster))
        client.wait_for_workers(1)

        embedding_started = time.perf_counter()
        parts = embed_dataset(client, endpoint, source, out_dir)
        seconds = time.perf_counter() - embedding_started

        rows = sum(p.rows for p in parts)
        workers = len({p.pid for p in parts})
        print(f"embedded {rows:,} texts in {len(parts)} partitions on {workers} workers in {seconds:.2f} s")
        print(f"throughput: {rows / seconds:,.0f} texts/s")
        print(f"output: {out_dir}" + ("" if args.dir else " (temporary, removed on exit; --dir DIR keeps it)"))
    print(f"total wall time: {time.perf_counter() - started:.2f} s (platform, dataset, cluster start-up and shutdown)")


if __name__ == "__main__":  # required: worker processes are spawned and import this file
    main()
