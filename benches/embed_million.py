"""The peak memory of one large `embed_many` job, in a fresh process (started by run.py with `--million`).

Reads its job as JSON on stdin: the workload (`url`, `project`, `api_key`, `slug`), `n` texts built from the
template `text` (`text.format(i=i)`), `batch_size`, `max_concurrency`, and `check_rows` with `check_sha256`: the
SHA-256 of the first rows of the matrix as the benchmark's own run embedded them. It imports only the SDK and NumPy,
builds the client, reads its resident memory (the "constant": interpreter, SDK, NumPy, client), then embeds the
texts from a generator, so the input never exists as a list and does not count, with `output="numpy"`. At the end it
reads its own high-water mark, VmHWM (not ru_maxrss, which Linux carries over from the forking parent), and only then
checks the matrix. Prints JSON.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time

import numpy
from fanout import status_kib

from inferencekey import DataClient


def main() -> int:
    job = json.load(sys.stdin)
    client = DataClient(base_url=job["url"], project=job["project"], api_key=job["api_key"])
    endpoint = client.endpoint(job["slug"])
    n, template = job["n"], job["text"]
    rss_before = status_kib("VmRSS")
    wall, cpu = time.perf_counter(), time.process_time()
    matrix = endpoint.embed_many(
        (template.format(i=i) for i in range(n)),
        batch_size=job["batch_size"],
        max_concurrency=job["max_concurrency"],
        output="numpy",
        silent=True,
    )
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    peak, rss_after = status_kib("VmHWM"), status_kib("VmRSS")
    # Checked after the high-water mark is read: the copy hashed here is not the job's memory.
    head = numpy.ascontiguousarray(matrix[: job["check_rows"]])
    print(
        json.dumps(
            {
                "n": n,
                "shape": list(matrix.shape),
                "dtype": str(matrix.dtype),
                "output_bytes": matrix.nbytes,
                "rss_before_kib": rss_before,
                "peak_rss_kib": peak,
                "rss_after_kib": rss_after,
                "wall": wall,
                "cpu": cpu,
                "head_equal": hashlib.sha256(head.tobytes()).hexdigest() == job["check_sha256"],
                "zero_rows": int((~matrix.any(axis=1)).sum()),
            }
        )
    )
    client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
