"""The batch-embedding job of issue 7, written once per client: embed a list of texts in batches of `BATCH_SIZE`
with `CONCURRENCY` requests in flight and return one (n, dim) float32 matrix in input order.

- inferencekey: `Endpoint.embed_many` and `AsyncEndpoint.embed_many` (the batching, the concurrency and the ordering
  are the SDK's).
- openai: what a user writes around the official client: the same batches through `OpenAI` in a
  `ThreadPoolExecutor` of `CONCURRENCY` threads (`pool.map` keeps input order), or through `AsyncOpenAI` with
  `asyncio.gather` over every batch and a semaphore of `CONCURRENCY`; each batch's vectors become a float32 array
  (`numpy.asarray`) and the batches are joined with `numpy.concatenate`. openai asks for base64 by default and
  decodes it into lists of floats, which is what a caller gets from `item.embedding`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy
import openai

from inferencekey import AsyncDataClient, DataClient, EmbedProgress

BATCH_SIZE = 32
CONCURRENCY = 8
# The text of input i; the 1,000,000-text child builds the same texts from it, so its first rows can be checked.
TEXT = "text number {i} about GPUs and inference"


def texts(n: int) -> list[str]:
    return [TEXT.format(i=i) for i in range(n)]


def batches(items: list[str]) -> Iterator[list[str]]:
    return (items[i : i + BATCH_SIZE] for i in range(0, len(items), BATCH_SIZE))


def openai_matrix(response: Any) -> numpy.ndarray:
    """One batch's answer as the float32 rows a NumPy caller keeps."""
    return numpy.asarray([item.embedding for item in response.data], dtype=numpy.float32)


class Clients:
    """One client of each kind on the embedding workload at `url`, to be used from one thread (the async ones from
    `loop`)."""

    def __init__(self, url: str, project: str, api_key: str, slug: str, loop: asyncio.AbstractEventLoop) -> None:
        self.slug, self.loop = slug, loop
        self.ik = DataClient(base_url=url, project=project, api_key=api_key)
        self.ik_embed = self.ik.endpoint(slug)
        self.aik = AsyncDataClient(base_url=url, project=project, api_key=api_key)
        self.aik_embed = self.aik.endpoint(slug)
        v1 = f"{url}/endpoint/{project}/{slug}/v1"
        # Default connection pools (100 kept alive): plenty for 8 requests in flight.
        self.oa = openai.OpenAI(base_url=v1, api_key=api_key, max_retries=0)
        self.aoa = openai.AsyncOpenAI(base_url=v1, api_key=api_key, max_retries=0)

    def close(self) -> None:
        self.ik.close()
        self.oa.close()
        self.loop.run_until_complete(self.aik.close())
        self.loop.run_until_complete(self.aoa.close())

    def ik_sync(self, items: list[str], on_progress: Callable[[EmbedProgress], None] | None = None) -> numpy.ndarray:
        matrix: numpy.ndarray = self.ik_embed.embed_many(
            items, batch_size=BATCH_SIZE, max_concurrency=CONCURRENCY, on_progress=on_progress, silent=True
        )
        return matrix

    def ik_async(self, items: list[str]) -> numpy.ndarray:
        async def job() -> numpy.ndarray:
            matrix: numpy.ndarray = await self.aik_embed.embed_many(
                items, batch_size=BATCH_SIZE, max_concurrency=CONCURRENCY, silent=True
            )
            return matrix

        return self.loop.run_until_complete(job())

    def openai_threads(self, items: list[str]) -> numpy.ndarray:
        def one(batch: list[str]) -> numpy.ndarray:
            return openai_matrix(self.oa.embeddings.create(model=self.slug, input=batch))

        with ThreadPoolExecutor(CONCURRENCY) as pool:
            return numpy.concatenate(list(pool.map(one, batches(items))))

    def openai_async(self, items: list[str]) -> numpy.ndarray:
        async def job() -> numpy.ndarray:
            gate = asyncio.Semaphore(CONCURRENCY)

            async def one(batch: list[str]) -> numpy.ndarray:
                async with gate:
                    response = await self.aoa.embeddings.create(model=self.slug, input=batch)
                return openai_matrix(response)

            return numpy.concatenate(await asyncio.gather(*(one(batch) for batch in batches(items))))

        return self.loop.run_until_complete(job())


def concurrency_summary(trace: list[tuple[float, int]]) -> dict[str, Any]:
    """What `EmbedProgress.concurrency` did over a job, from its (elapsed seconds, concurrency) reports: min, max,
    mean over reports, mean over time (each value holds until the next report), the final value, and the mean over
    time in each tenth of the job (how it settles)."""
    values = [c for _, c in trace]
    end = trace[-1][0]
    spans = [(t, (trace[i + 1][0] if i + 1 < len(trace) else end), c) for i, (t, c) in enumerate(trace)]
    time_mean = sum((b - a) * c for a, b, c in spans) / max(end - trace[0][0], 1e-9)
    tenths = []
    for k in range(10):
        lo, hi = trace[0][0] + (end - trace[0][0]) * k / 10, trace[0][0] + (end - trace[0][0]) * (k + 1) / 10
        weight = [(min(b, hi) - max(a, lo), c) for a, b, c in spans if min(b, hi) > max(a, lo)]
        total = sum(w for w, _ in weight)
        tenths.append(sum(w * c for w, c in weight) / total if total else float(values[-1]))
    return {
        "reports": len(values),
        "min": min(values),
        "max": max(values),
        "mean": sum(values) / len(values),
        "time_mean": time_mean,
        "final": values[-1],
        "tenths": tenths,
    }
