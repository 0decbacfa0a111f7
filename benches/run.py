"""Client benchmarks: inferencekey against openai and httpx (+ hand-written SSE parsing), one local platform.

The platform runs in its own process (`inferencekey local serve`) in bench mode, so the CPU measured here is the
client's alone (all threads of this process). Each scenario runs several times; the table shows medians and the
ratio of each peer to inferencekey. Run it with `make bench` (which installs the peers into .venv).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import openai

from inferencekey import Backend, DataClient, ManagementClient, TaskType, WorkloadSpec


@dataclass
class Platform:
    """The ready line of a local platform process."""

    url: str
    project: str
    sdk_token: str
    api_key: str
    admin_token: str

    def admin(self, method: str, path: str, body: Any) -> None:
        """One admin API call."""
        request = urllib.request.Request(self.url + path, data=json.dumps(body).encode(), method=method)
        request.add_header("Authorization", f"Bearer {self.admin_token}")
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=10):
            pass


@contextmanager
def platform_process() -> Iterator[Platform]:
    """Start `inferencekey local serve` in a child process and stop it after."""
    child = subprocess.Popen(
        [sys.executable, "-m", "inferencekey", "local", "serve", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        ready = json.loads(child.stdout.readline())
        yield Platform(**{key: ready[key] for key in ("url", "project", "sdk_token", "api_key", "admin_token")})
    finally:
        child.terminate()
        child.wait(timeout=10)


@dataclass
class Sample:
    """One timed run: wall seconds, CPU seconds of this process, and how many units it handled."""

    wall: float
    cpu: float
    units: int


def measure(run: Callable[[], int]) -> Sample:
    """Time one run of `run` (which returns how many units it handled)."""
    wall, cpu = time.perf_counter(), time.process_time()
    units = run()
    return Sample(time.perf_counter() - wall, time.process_time() - cpu, units)


def median_sample(run: Callable[[], int], repeats: int) -> Sample:
    """Warm up once, then the median of `repeats` runs by CPU time."""
    run()
    samples = sorted((measure(run) for _ in range(repeats)), key=lambda s: s.cpu)
    return samples[len(samples) // 2]


class Peers:
    """The same operations through each client."""

    def __init__(self, lp: Platform, chat_slug: str, embed_slug: str) -> None:
        self.ik = DataClient(base_url=lp.url, project=lp.project, api_key=lp.api_key)
        self.ik_chat = self.ik.endpoint(chat_slug)
        self.ik_embed = self.ik.endpoint(embed_slug)
        base = f"{lp.url}/endpoint/{lp.project}"
        self.oa_chat = openai.OpenAI(base_url=f"{base}/{chat_slug}/v1", api_key=lp.api_key, max_retries=0)
        self.oa_embed = openai.OpenAI(base_url=f"{base}/{embed_slug}/v1", api_key=lp.api_key, max_retries=0)
        self.hx = httpx.Client(headers={"Authorization": f"Bearer {lp.api_key}"}, timeout=60)
        self.hx_chat_url = f"{base}/{chat_slug}/v1/chat/completions"
        self.hx_embed_url = f"{base}/{embed_slug}/v1/embeddings"
        self.chat_slug, self.embed_slug = chat_slug, embed_slug

    # Streaming: returns the number of characters received, checked against the other clients.
    def stream_ik(self, chunks: int) -> int:
        with self.ik_chat.generate_text_stream(prompt="bench", max_tokens=chunks) as stream:
            return sum(len(chunk.text) for chunk in stream)

    def stream_openai(self, chunks: int) -> int:
        stream = self.oa_chat.chat.completions.create(
            model=self.chat_slug, messages=[{"role": "user", "content": "bench"}], stream=True, max_tokens=chunks
        )
        return sum(len(c.choices[0].delta.content or "") for c in stream if c.choices)

    def stream_httpx(self, chunks: int) -> int:
        body = {"model": self.chat_slug, "messages": [{"role": "user", "content": "bench"}], "stream": True}
        body["max_tokens"] = chunks
        total = 0
        with self.hx.stream("POST", self.hx_chat_url, json=body) as response:
            for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                choices = json.loads(data)["choices"]
                if choices:
                    total += len(choices[0]["delta"].get("content") or "")
        return total

    # Unary chat: returns the text length.
    def unary_ik(self) -> int:
        return len(self.ik_chat.generate_text(prompt="bench", max_tokens=16).text)

    def unary_openai(self) -> int:
        out = self.oa_chat.chat.completions.create(
            model=self.chat_slug, messages=[{"role": "user", "content": "bench"}], max_tokens=16
        )
        return len(out.choices[0].message.content or "")

    def unary_httpx(self) -> int:
        body = {"model": self.chat_slug, "messages": [{"role": "user", "content": "bench"}], "stream": False}
        body["max_tokens"] = 16
        out = self.hx.post(self.hx_chat_url, json=body).json()
        return len(out["choices"][0]["message"]["content"])

    # Embeddings: returns the number of floats decoded.
    def embed_ik(self, texts: list[str]) -> int:
        return sum(len(v) for v in self.ik_embed.embed(input=texts).embeddings)

    def embed_openai(self, texts: list[str]) -> int:
        out = self.oa_embed.embeddings.create(model=self.embed_slug, input=texts)
        return sum(len(item.embedding) for item in out.data)

    def embed_httpx(self, texts: list[str]) -> int:
        out = self.hx.post(self.hx_embed_url, json={"model": self.embed_slug, "input": texts}).json()
        return sum(len(item["embedding"]) for item in out["data"])


def import_cost(module: str, repeats: int) -> tuple[float, float]:
    """Median wall milliseconds of a fresh `import module`, and the child's resident memory after it in MiB."""
    # VmRSS, not ru_maxrss: Linux carries the peak over from the forking parent.
    code = (
        f"import time; t = time.perf_counter(); import {module}; ms = (time.perf_counter() - t) * 1000; "
        "rss = [line for line in open('/proc/self/status') if line.startswith('VmRSS')][0].split()[1]; "
        "print(ms, int(rss) / 1024)"
    )
    runs = []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        ms, rss = (float(x) for x in out.split())
        runs.append((ms, rss))
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


def row(name: str, unit: str, samples: dict[str, Sample]) -> str:
    """One table row: per client, CPU per unit and units per second, and the peers' CPU ratio to inferencekey."""
    base = samples["inferencekey"].cpu / samples["inferencekey"].units
    cells = []
    for client in ("inferencekey", "openai", "httpx"):
        s = samples[client]
        per_unit = s.cpu / s.units
        ratio = "" if client == "inferencekey" else f" ({per_unit / base:.1f}x)"
        cells.append(f"{per_unit * 1e6:,.1f} µs{ratio}, {s.units / s.wall:,.0f}/s")
    return f"| {name} | {unit} | " + " | ".join(cells) + " |"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="smaller runs, to check the script")
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    chunks, streams = 2000 // scale, 20 // scale
    unary_calls = 300 // scale
    texts = [f"text number {i} about GPUs and inference" for i in range(256)]
    embed_calls = 20 // scale
    concurrency, concurrent_chunks = 16, 1000 // scale

    with platform_process() as lp:
        lp.admin("PUT", "/_local/defaults", {"readiness": "immediate", "bench": True, "embedding_dim": 384})
        with ManagementClient(base_url=lp.url, sdk_token=lp.sdk_token, project=lp.project) as mgmt:
            chat = mgmt.ensure(WorkloadSpec(name="bench", slug="bench", model="m", backend=Backend.VLLM))
            emb = mgmt.ensure(
                WorkloadSpec(
                    name="bench-embed",
                    slug="bench-embed",
                    model="e",
                    backend=Backend.VLLM,
                    task_type=TaskType.EMBEDDING,
                )
            )
        peers = Peers(lp, chat.workload_slug, emb.workload_slug)
        clients = ("inferencekey", "openai", "httpx")
        suffix = {"inferencekey": "ik", "openai": "openai", "httpx": "httpx"}

        def scenario(make: Callable[[str], Callable[[], int]]) -> dict[str, Sample]:
            return {client: median_sample(make(suffix[client]), args.repeats) for client in clients}

        def streaming(kind: str) -> Callable[[], int]:
            fn = getattr(peers, f"stream_{kind}")
            return lambda: sum(1 for _ in range(streams) if fn(chunks) >= 0) * chunks

        def concurrent(kind: str) -> Callable[[], int]:
            fn = getattr(peers, f"stream_{kind}")

            def run() -> int:
                with ThreadPoolExecutor(concurrency) as pool:
                    list(pool.map(lambda _: fn(concurrent_chunks), range(concurrency)))
                return concurrency * concurrent_chunks

            return run

        def unary(kind: str) -> Callable[[], int]:
            fn = getattr(peers, f"unary_{kind}")
            return lambda: sum(1 for _ in range(unary_calls) if fn() >= 0)

        def embedding(kind: str) -> Callable[[], int]:
            fn = getattr(peers, f"embed_{kind}")
            return lambda: sum(1 for _ in range(embed_calls) if fn(texts) > 0) * len(texts)

        # The three clients must see the same text before their speed means anything.
        lengths = {kind: getattr(peers, f"stream_{kind}")(50) for kind in suffix.values()}
        assert len(set(lengths.values())) == 1, lengths

        rows = [
            row("stream, 1 at a time", "per chunk", scenario(streaming)),
            row(f"stream, {concurrency} threads", "per chunk", scenario(concurrent)),
            row("chat completion", "per request", scenario(unary)),
            row(f"embeddings, {len(texts)} x 384", "per vector", scenario(embedding)),
        ]

    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, medians of {args.repeats} runs")
    print("| scenario | unit | inferencekey | openai | httpx + SSE by hand |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))
    print()
    print("| import | wall ms | RSS after import, MiB |")
    print("|---|---|---|")
    for module in ("inferencekey", "openai", "httpx"):
        ms, rss = import_cost(module, args.repeats)
        print(f"| `import {module}` | {ms:.1f} | {rss:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
