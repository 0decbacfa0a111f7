"""One client's leg of the concurrent-streams scenario, in a fresh process (started by run.py, one per run).

Reads its job as JSON on stdin: `client` (inferencekey, openai or httpx), the workload (`url`, `project`, `api_key`,
`slug`), `tokens` (one stream per entry, its `max_tokens`), `expected` (the non-empty chunk texts of a stream of each
length) and `connections`. It imports only the client under test, opens every stream at once as asyncio tasks on one
client, once to warm up and once timed, and prints JSON: wall and CPU seconds of the timed round, the chunks lost,
extra or out of place in both rounds, the failed streams, and the peak resident memory of this process.

Peak memory is VmHWM from /proc/self/status, the high-water mark of this process's own memory: ru_maxrss would carry
over the parent's peak on Linux (the child is forked from the benchmark process before it runs this program).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

PROMPT = "bench"


def status_kib(field: str) -> int:
    """A memory field of /proc/self/status (VmHWM, VmRSS), KiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def misplaced(got: list[str], expected: list[str]) -> int:
    """Chunks of `got` lost, extra or out of place against `expected`."""
    if got == expected:
        return 0
    return sum(a != b for a, b in zip(got, expected, strict=False)) + abs(len(got) - len(expected))


def inferencekey_stream(job: dict[str, Any]) -> tuple[Callable[[int], Awaitable[list[str]]], Callable[[], Any]]:
    from inferencekey import AsyncDataClient

    client = AsyncDataClient(base_url=job["url"], project=job["project"], api_key=job["api_key"])
    endpoint = client.endpoint(job["slug"])

    async def stream(tokens: int) -> list[str]:
        async with await endpoint.generate_text_stream(prompt=PROMPT, max_tokens=tokens) as chunks:
            return [chunk.text async for chunk in chunks if chunk.text]

    return stream, client.close


def openai_stream(job: dict[str, Any]) -> tuple[Callable[[int], Awaitable[list[str]]], Callable[[], Any]]:
    import httpx2  # openai's HTTP client
    import openai

    n = job["connections"]
    client = openai.AsyncOpenAI(
        base_url=f"{job['url']}/endpoint/{job['project']}/{job['slug']}/v1",
        api_key=job["api_key"],
        max_retries=0,
        http_client=openai.DefaultAsyncHttpx2Client(
            limits=httpx2.Limits(max_connections=n, max_keepalive_connections=n), timeout=300
        ),
    )
    messages = [{"role": "user", "content": PROMPT}]

    async def stream(tokens: int) -> list[str]:
        texts = []
        chunks = await client.chat.completions.create(
            model=job["slug"], messages=messages, stream=True, max_tokens=tokens
        )
        async for chunk in chunks:
            if chunk.choices and chunk.choices[0].delta.content:
                texts.append(chunk.choices[0].delta.content)
        return texts

    return stream, client.close


def httpx_stream(job: dict[str, Any]) -> tuple[Callable[[int], Awaitable[list[str]]], Callable[[], Any]]:
    import httpx

    n = job["connections"]
    client = httpx.AsyncClient(
        headers={"Authorization": f"Bearer {job['api_key']}"},
        timeout=300,
        limits=httpx.Limits(max_connections=n, max_keepalive_connections=n),
    )
    url = f"{job['url']}/endpoint/{job['project']}/{job['slug']}/v1/chat/completions"
    messages = [{"role": "user", "content": PROMPT}]

    async def stream(tokens: int) -> list[str]:
        body = {"model": job["slug"], "messages": messages, "stream": True, "max_tokens": tokens}
        texts = []
        async with client.stream("POST", url, json=body) as response:
            response.raise_for_status()
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                choices = json.loads(data)["choices"]
                if choices and (text := choices[0]["delta"].get("content")):
                    texts.append(text)
        return texts

    return stream, client.aclose


CLIENTS = {"inferencekey": inferencekey_stream, "openai": openai_stream, "httpx": httpx_stream}


async def run(job: dict[str, Any]) -> dict[str, Any]:
    stream, close = CLIENTS[job["client"]](job)
    rss_idle = status_kib("VmRSS")  # the client imported and built, no stream yet
    tokens: list[int] = job["tokens"]
    expected = {int(n): texts for n, texts in job["expected"].items()}
    lost, failed, first_error = 0, 0, None

    async def round_() -> None:
        nonlocal lost, failed, first_error
        results = await asyncio.gather(*(stream(n) for n in tokens), return_exceptions=True)
        for n, result in zip(tokens, results, strict=True):
            if isinstance(result, BaseException):
                failed += 1
                lost += len(expected[n])
                first_error = first_error or f"{type(result).__name__}: {result}"
            else:
                lost += misplaced(result, expected[n])

    await round_()  # warm-up: connections, caches
    wall, cpu = time.perf_counter(), time.process_time()
    await round_()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    await close()
    return {
        "wall": wall,
        "cpu": cpu,
        "units": sum(tokens),
        "misplaced": lost,
        "failed": failed,
        "first_error": first_error,
        "peak_rss_kib": status_kib("VmHWM"),
        "rss_idle_kib": rss_idle,
    }


def main() -> int:
    job = json.load(sys.stdin)
    print(json.dumps(asyncio.run(run(job))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
