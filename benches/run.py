"""Client benchmarks: inferencekey against openai, httpx with hand parsing and a Rust floor, on one local platform.

The platform runs in its own process (`inferencekey local serve`) in bench mode, so the CPU measured here is the
client's alone: `time.process_time()` of this whole process (all threads, including the SDK's I/O threads), or of
the child process a leg runs in. The Rust floor is `crates/inferencekey-core/examples/bench_floor.rs`, a minimal
consumer of the same streams, chat completions and embeddings through the SDK's Rust core, built here and driven as
a child process that reports its own CPU time. Each leg is warmed up once, then the legs of a scenario take turns
for `--repeats` rounds and each shows its median run by CPU. Before timing, every client's data is compared.
The batch-embedding group of issue 7 (`--only embed-many`; `benches/embed_many.py`) runs `embed_many` against openai
with threads and with asyncio, then with injected 429s, and with `--million` one large job for its peak memory.
Run it with `make bench` (which installs the peers into .venv and builds the floor); see benches/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import hashlib
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import embed_many
import lean
import numpy
from peers import CHAT_TOKENS, AsyncPeers, SyncPeers, Target, has_native_numpy

import inferencekey
from inferencekey import Backend, BatchEmbedError, EmbedProgress, ManagementClient, TaskType, WorkloadSpec

BENCHES = Path(__file__).resolve().parent
ROOT = BENCHES.parent
FLOOR_EXAMPLE = "bench_floor"
EMBED_DIM = 1024
EMBED_TEXTS = 256
# Concurrent streams get 21..31 tokens (26 on average): a stream that received another's chunks shows.
FANOUT_TOKENS = range(21, 32)
# Batch embedding (issue 7) runs on a workload of its own at the platform's default dimension, 64: short texts, many
# of them (the 1,024 of the other embedding scenarios would make the 1,000,000-text output 4 GB).
EMBED_MANY_SLUG = "bench-embed-many"
EMBED_MANY_DIM = 64
MILLION = 1_000_000
# One embeddings request in five refused with 429 and `Retry-After: 0`, for as long as the rule is installed.
FAULT_429 = {
    "route": "embeddings",
    "count": None,
    "probability": 0.2,
    "fault": {"type": "status", "status": 429, "retry_after": 0},
}


# --- the platform ---------------------------------------------------------------------------------------------


@dataclass
class Platform:
    """The ready line of a local platform process."""

    url: str
    project: str
    sdk_token: str
    api_key: str
    admin_token: str

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        """One admin API call; its JSON answer, if any."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.admin_token}")
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read()
        return json.loads(text) if text else None


def snapshot_sdk(into: Path) -> dict[str, str]:
    """The environment of every child process: a copy of the inferencekey package this process imported, first on
    PYTHONPATH, with its bytecode compiled.

    The copy keeps one run on one build of the SDK even when the tree is rebuilt meanwhile (`make develop` in a
    shared checkout), and the compiled bytecode makes `import inferencekey` cost what it costs once installed: an
    editable install under PYTHONDONTWRITEBYTECODE would compile it from source at every import, while pip
    compiled openai's and httpx's at install time.
    """
    package = into / "inferencekey"
    shutil.copytree(Path(inferencekey.__file__).parent, package, ignore=shutil.ignore_patterns("__pycache__"))
    compileall.compile_dir(package, quiet=1)
    path = [str(into), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path)}


@contextmanager
def platform_process(env: dict[str, str]) -> Iterator[Platform]:
    """Start `inferencekey local serve` in a child process and stop it after."""
    command = [sys.executable, "-m", "inferencekey", "local", "serve", "--port", "0"]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert child.stdout is not None
        ready = json.loads(child.stdout.readline())
        yield Platform(**{key: ready[key] for key in ("url", "project", "sdk_token", "api_key", "admin_token")})
    finally:
        child.terminate()
        child.wait(timeout=10)


# --- samples --------------------------------------------------------------------------------------------------


@dataclass
class Sample:
    """One timed run: wall and CPU seconds, the units handled, and what else the leg reports."""

    wall: float
    cpu: float
    units: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def cpu_per_unit(self) -> float:
        return self.cpu / self.units

    @property
    def wall_per_unit(self) -> float:
        return self.wall / self.units

    @property
    def rate(self) -> float:
        return self.units / self.wall


def timed(run: Callable[[], Any], units: int, check: Callable[[Any], bool] | None = None) -> Sample:
    """Time one call of `run` in this process; `check` validates what it returned."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = run()
    sample = Sample(time.perf_counter() - wall, time.process_time() - cpu, units)
    if check is not None and not check(out):
        raise AssertionError(f"a timed run returned unexpected data: {str(out)[:200]}")
    return sample


def median(samples: list[Sample]) -> Sample:
    """The median run by CPU (extras such as peak memory take their own median)."""
    ordered = sorted(samples, key=lambda s: s.cpu)
    mid = ordered[len(ordered) // 2]
    extra = dict(mid.extra)
    for key in ("peak_rss_kib", "rss_idle_kib"):
        values = [s.extra[key] for s in samples if key in s.extra]
        if values:
            extra[key] = statistics.median(values)
    for key in ("misplaced", "failed", "crashes", "lost_vectors"):
        if any(key in s.extra for s in samples):
            extra[key] = sum(s.extra.get(key, 0) for s in samples)  # every run, not the median's
    return Sample(mid.wall, mid.cpu, mid.units, extra)


Leg = Callable[[], Sample]


# A warm-up run is a tenth of a timed one: enough for connections and caches, not a quarter of the run time.
WARM_SCALE = 0.1


def scaled(count: int, scale: float) -> int:
    return max(1, round(count * scale))


def run_legs(title: str, make: Callable[[float], dict[str, Leg]], repeats: int, warm: bool = True) -> dict[str, Sample]:
    """Warm every leg up once (`make(WARM_SCALE)`: the legs at a tenth of their size), then `repeats` rounds in which
    the legs (`make(1)`) take turns; the median run of each."""
    started = time.perf_counter()
    if warm:
        for leg in make(WARM_SCALE).values():
            leg()
    legs = make(1)
    samples: dict[str, list[Sample]] = {name: [] for name in legs}
    for _ in range(repeats):
        for name, leg in legs.items():
            samples[name].append(leg())
    medians = {name: median(runs) for name, runs in samples.items()}
    cpu = ", ".join(f"{name} {micros(s.cpu_per_unit)}" for name, s in medians.items())
    log(f"{title}: {time.perf_counter() - started:.0f} s; CPU per unit: {cpu}")
    return medians


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- the Rust floor -------------------------------------------------------------------------------------------


def build_floor() -> Path:
    """`cargo build --release --example bench_floor` (a no-op when fresh); the path of the binary."""
    command = ["cargo", "build", "--release", "-p", "inferencekey-core", "--example", FLOOR_EXAMPLE]
    out = subprocess.run(
        [*command, "--message-format=json-render-diagnostics"], cwd=ROOT, check=True, stdout=subprocess.PIPE, text=True
    ).stdout
    for line in out.splitlines():
        message = json.loads(line)
        artifact = message.get("reason") == "compiler-artifact" and message["target"]["name"] == FLOOR_EXAMPLE
        if artifact and message.get("executable"):
            return Path(message["executable"])
    raise RuntimeError(f"cargo built no {FLOOR_EXAMPLE} executable")


class Floor:
    """The Rust floor as a child process: one JSON command per line in, one JSON answer per line out."""

    def __init__(self, binary: Path, target: Target) -> None:
        args = ["--url", target.url, "--project", target.project, "--key", target.api_key]
        args += ["--chat", target.chat_slug, "--embed", target.embed_slug]
        self.child = subprocess.Popen([str(binary), *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def ask(self, command: dict[str, Any]) -> dict[str, Any]:
        assert self.child.stdin is not None and self.child.stdout is not None
        self.child.stdin.write(json.dumps(command) + "\n")
        self.child.stdin.flush()
        line = self.child.stdout.readline()
        if not line:
            raise RuntimeError(f"the Rust floor exited ({self.child.wait()})")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"the Rust floor failed: {answer['error']}")
        return answer

    def sample(self, command: dict[str, Any]) -> Sample:
        answer = self.ask(command)
        extra = {"peak_rss_kib": answer["peak_rss_kib"]}
        if "mismatches" in answer:
            extra["misplaced"] = answer["mismatches"]
        return Sample(answer["wall"], answer["cpu"], answer["units"], extra)

    def close(self) -> None:
        assert self.child.stdin is not None
        self.child.stdin.write('{"op": "exit"}\n')
        self.child.stdin.close()
        self.child.wait(timeout=30)


# --- the scenarios --------------------------------------------------------------------------------------------


@dataclass
class Sizes:
    long_stream: int
    short_streams: int
    short_tokens: int
    sequential_chats: int
    threads: int
    thread_chats: int
    tasks: int
    task_chats: int
    embed_requests: int
    fanout_streams: int
    embed_many_texts: int


FULL = Sizes(20_000, 2_000, 26, 500, 8, 800, 64, 1_280, 8, 1_000, 100_000)
QUICK = Sizes(2_000, 200, 26, 50, 8, 80, 64, 128, 2, 100, 10_000)


@dataclass
class Scenario:
    """The results of one scenario: per leg, the median sample."""

    key: str
    title: str
    unit: str
    legs: dict[str, Sample]
    reference: str = "inferencekey"
    notes: list[str] = field(default_factory=list)


LABELS = {
    "inferencekey": "inferencekey",
    "inferencekey+raw": "inferencekey, also reading chunk.raw",
    "openai": "openai",
    "httpx": "httpx + hand parsing",
    "rust": "Rust floor (inferencekey-core)",
    "embed_many": "inferencekey `Endpoint.embed_many`",
    "embed_many async": "inferencekey `AsyncEndpoint.embed_many`",
    "openai threads": f"openai `OpenAI`, ThreadPoolExecutor({embed_many.CONCURRENCY})",
    "openai async": f"openai `AsyncOpenAI`, gather + Semaphore({embed_many.CONCURRENCY})",
    "embed_many 429": "inferencekey `Endpoint.embed_many`, 20% 429s",
    "raw": "raw keep-alive socket + orjson (Python, by hand)",
    "raw unary": "raw socket, one unary request (the yardstick)",
    "raw asyncio": "raw socket through the asyncio loop + orjson (Python, by hand)",
    "inferencekey uvloop": "inferencekey on uvloop",
    "raw uvloop": "raw socket through uvloop + orjson (Python, by hand)",
    "pyreqwest": "pyreqwest + orjson",
    "aiohttp": "aiohttp + orjson",
}
OPENAI_BATCH_LEGS = ("openai threads", "openai async")


class Bench:
    def __init__(self, target: Target, floor_binary: Path, sizes: Sizes, repeats: int, env: dict[str, str]) -> None:
        self.target, self.floor_binary, self.env = target, floor_binary, env
        self.sizes, self.repeats = sizes, repeats
        self.sync = SyncPeers(target)
        self.loop = asyncio.new_event_loop()
        self.aio = AsyncPeers(target, connections=max(sizes.fanout_streams, sizes.tasks))
        self.floor = Floor(floor_binary, target)
        self.texts = [f"text number {i} about GPUs and inference" for i in range(EMBED_TEXTS)]
        self.reference: dict[int, list[str]] = {}
        self.notes: list[str] = []

    def close(self) -> None:
        self.floor.close()
        self.loop.run_until_complete(self.aio.close())
        self.loop.close()
        self.sync.close()

    def run_async(self, make: Callable[[], Awaitable[Any]]) -> Any:
        return self.loop.run_until_complete(make())

    def timed_async(self, make: Callable[[], Awaitable[Any]], units: int, check: Callable[[Any], bool]) -> Sample:
        return timed(lambda: self.run_async(make), units, check)

    # The data every client must agree on before it is timed.
    def chunks(self, tokens: int) -> list[str]:
        """The non-empty chunk texts of a stream of `tokens` tokens, read by hand (httpx)."""
        if tokens not in self.reference:
            self.reference[tokens] = self.sync.chunks_httpx(tokens)
        return self.reference[tokens]

    def check_same_data(self) -> None:
        for tokens in (50, self.sizes.short_tokens):
            expected = self.chunks(tokens)
            assert len(expected) == tokens, (tokens, len(expected))
            got = {
                "inferencekey": self.sync.chunks_ik(tokens),
                "openai": self.sync.chunks_openai(tokens),
                "httpx": self.sync.chunks_httpx(tokens),
                "inferencekey async": self.run_async(lambda t=tokens: self.aio.chunks_ik(t)),
                "openai async": self.run_async(lambda t=tokens: self.aio.chunks_openai(t)),
                "httpx async": self.run_async(lambda t=tokens: self.aio.chunks_httpx(t)),
                "rust": self.floor.ask({"op": "chunks", "tokens": tokens})["chunks"],
            }
            for client, chunks in got.items():
                assert chunks == expected, f"{client} received other chunks than httpx: {chunks[:5]} ..."
        texts = {
            "inferencekey": self.sync.chat_ik(),
            "openai": self.sync.chat_openai(),
            "httpx": self.sync.chat_httpx(),
            "inferencekey async": self.run_async(self.aio.chat_ik),
            "openai async": self.run_async(self.aio.chat_openai),
            "httpx async": self.run_async(self.aio.chat_httpx),
            "rust": self.floor.ask({"op": "chat_text"})["text"],
        }
        assert len(set(texts.values())) == 1, texts
        self.chat_text = texts["inferencekey"]
        matrices = {
            name: numpy.asarray(getattr(self.sync, f"{name}")(self.texts), dtype=numpy.float32)
            for name in (
                "lists_ik",
                "lists_openai",
                "lists_openai_float",
                "lists_httpx_float",
                "lists_httpx_b64",
                "numpy_ik",
                "numpy_openai",
                "numpy_openai_float",
                "numpy_httpx_float",
                "numpy_httpx_b64",
            )
        }
        reference = matrices["numpy_httpx_b64"]
        assert reference.shape == (EMBED_TEXTS, EMBED_DIM), reference.shape
        for name, matrix in matrices.items():
            assert matrix.shape == reference.shape and numpy.allclose(matrix, reference, atol=1e-6), name
        for wire in ("base64", "float"):
            answer = self.floor.ask({"op": "embed_sum", "texts": self.texts, "format": wire})
            assert (answer["rows"], answer["dim"]) == reference.shape, answer
            assert abs(answer["sum"] - float(reference.astype(numpy.float64).sum())) < 1e-3, answer
        log("every client received the same chunks, completion and embeddings")

    # Streaming, one stream after another.
    def streaming(self, key: str, title: str, all_tokens: list[int], run_async: bool) -> Scenario:
        peers: Any = self.aio if run_async else self.sync

        def legs(scale: float) -> dict[str, Leg]:
            if len(all_tokens) > 1:
                tokens = all_tokens[: scaled(len(all_tokens), scale)]
            else:
                tokens = [scaled(all_tokens[0], scale)]
            chars = sum(len("".join(self.chunks(n))) for n in tokens)
            units = sum(tokens)

            def check(total: Any) -> bool:
                return bool(total == chars)

            def sync_leg(fn: Callable[[int], int]) -> Leg:
                return lambda: timed(lambda: sum(fn(n) for n in tokens), units, check)

            def async_leg(fn: Callable[[int], Awaitable[int]]) -> Leg:
                async def all_streams() -> int:
                    total = 0
                    for n in tokens:
                        total += await fn(n)
                    return total

                return lambda: self.timed_async(all_streams, units, check)

            make = async_leg if run_async else sync_leg
            return {
                "inferencekey": make(peers.stream_ik),
                "inferencekey+raw": make(peers.stream_ik_raw),
                "openai": make(peers.stream_openai),
                "httpx": make(peers.stream_httpx),
                "rust": lambda: self.floor.sample({"op": "stream", "tokens": tokens, "concurrency": 1}),
            }

        return Scenario(key, title, "chunk", run_legs(title, legs, self.repeats))

    # Unary chat: sequential, threads on one client, asyncio tasks on one client.
    def chat(self) -> list[Scenario]:
        size, expected = self.sizes, len(self.chat_text)

        def sequential(fn: Callable[[], str], scale: float) -> Leg:
            n = scaled(size.sequential_chats, scale)
            return lambda: timed(lambda: [fn() for _ in range(n)], n, lambda out: {len(t) for t in out} == {expected})

        def threaded(fn: Callable[[], str], scale: float) -> Leg:
            per = scaled(size.thread_chats // size.threads, scale)

            def run() -> list[str]:
                with ThreadPoolExecutor(size.threads) as pool:
                    shares = pool.map(lambda _: [fn() for _ in range(per)], range(size.threads))
                    return [text for share in shares for text in share]

            return lambda: timed(run, per * size.threads, lambda out: {len(t) for t in out} == {expected})

        def tasks(fn: Callable[[], Awaitable[str]], scale: float) -> Leg:
            per = scaled(size.task_chats // size.tasks, scale)

            async def worker() -> list[str]:
                return [await fn() for _ in range(per)]

            async def run() -> list[str]:
                shares = await asyncio.gather(*(worker() for _ in range(size.tasks)))
                return [text for share in shares for text in share]

            return lambda: self.timed_async(run, per * size.tasks, lambda out: {len(t) for t in out} == {expected})

        def floor(requests: int, concurrency: int) -> Leg:
            command = {"op": "chat", "requests": requests, "concurrency": concurrency}
            return lambda: self.floor.sample(command)

        def legs(peers: Any, make: Callable[[Any, float], Leg], requests: int, concurrency: int) -> Any:
            def at(scale: float) -> dict[str, Leg]:
                out = {name: make(getattr(peers, f"chat_{short}"), scale) for name, short in self.clients()}
                out["rust"] = floor(concurrency * scaled(requests // concurrency, scale), concurrency)
                return out

            return at

        s, a = self.sync, self.aio
        out = []
        title = f"chat completion, sequential ({size.sequential_chats} requests)"
        make = legs(s, sequential, size.sequential_chats, 1)
        out.append(Scenario("chat_sequential", title, "request", run_legs(title, make, self.repeats)))
        title = f"chat completion, {size.threads} threads on one client ({size.thread_chats} requests)"
        make = legs(s, threaded, size.thread_chats, size.threads)
        out.append(Scenario("chat_threads", title, "request", run_legs(title, make, self.repeats)))
        title = f"chat completion, {size.tasks} asyncio tasks on one client ({size.task_chats} requests)"
        make = legs(a, tasks, size.task_chats, size.tasks)
        out.append(Scenario("chat_async", title, "request", run_legs(title, make, self.repeats)))
        return out

    @staticmethod
    def clients() -> list[tuple[str, str]]:
        return [("inferencekey", "ik"), ("openai", "openai"), ("httpx", "httpx")]

    # Embeddings, 256 texts at dimension 1,024.
    def embeddings(self) -> list[Scenario]:
        requests, texts = self.sizes.embed_requests, self.texts
        shape = (EMBED_TEXTS, EMBED_DIM)

        def leg(fn: Callable[[list[str]], Any], scale: float) -> Leg:
            n = scaled(requests, scale)

            def run() -> list[Any]:
                return [fn(texts) for _ in range(n)]

            def check(out: list[Any]) -> bool:
                return all(numpy.shape(m) == shape if isinstance(m, numpy.ndarray) else len(m) == shape[0] for m in out)

            return lambda: timed(run, n, check)

        def floor(wire: str, scale: float) -> Leg:
            command = {"op": "embed", "requests": scaled(requests, scale), "texts": texts, "format": wire}
            return lambda: self.floor.sample(command)

        s = self.sync

        def lists(scale: float) -> dict[str, Leg]:
            return {
                "inferencekey": leg(s.lists_ik, scale),
                "openai": leg(s.lists_openai, scale),
                "openai, float JSON": leg(s.lists_openai_float, scale),
                "httpx + json.loads, float JSON": leg(s.lists_httpx_float, scale),
                "httpx + b64decode + array.tolist": leg(s.lists_httpx_b64, scale),
                "Rust floor, base64": floor("base64", scale),
                "Rust floor, float JSON": floor("float", scale),
            }

        def to_numpy(scale: float) -> dict[str, Leg]:
            return {
                "inferencekey": leg(s.numpy_ik, scale),
                "openai": leg(s.numpy_openai, scale),
                "openai, float JSON": leg(s.numpy_openai_float, scale),
                "httpx + json.loads + asarray, float JSON": leg(s.numpy_httpx_float, scale),
                "httpx + b64decode + frombuffer": leg(s.numpy_httpx_b64, scale),
                "Rust floor, base64": floor("base64", scale),
            }

        native = has_native_numpy(s.ik_embed.embed(input=texts[:1]))
        numpy_note = (
            "inferencekey: EmbedResult.to_numpy() (float32, from the wire bytes)"
            if native
            else "inferencekey: EmbedResult.to_numpy() does not exist yet, so this leg is "
            "numpy.asarray(result.embeddings, dtype=float32): the native NumPy path is not measured"
        )
        wire_note = "base64 on the wire unless the leg says float JSON (inferencekey and openai ask base64 by default)"
        title = f"embeddings, {EMBED_TEXTS} x {EMBED_DIM}, to Python lists ({requests} requests)"
        out = [Scenario("embed_lists", title, "request", run_legs(title, lists, self.repeats), notes=[wire_note])]
        title = f"embeddings, {EMBED_TEXTS} x {EMBED_DIM}, to a NumPy float32 matrix ({requests} requests)"
        notes = [wire_note, numpy_note, "Rust floor: Vec<Vec<f32>>, its native form (same run as the lists leg)"]
        out.append(Scenario("embed_numpy", title, "request", run_legs(title, to_numpy, self.repeats), notes=notes))
        out[-1].legs["inferencekey"].extra["native_to_numpy"] = native
        return out

    # Many concurrent streams, each client in a fresh process.
    def fanout(self) -> Scenario:
        n = self.sizes.fanout_streams
        tokens = [FANOUT_TOKENS[i % len(FANOUT_TOKENS)] for i in range(n)]
        expected = {str(k): self.chunks(k) for k in FANOUT_TOKENS}
        job = {
            "url": self.target.url,
            "project": self.target.project,
            "api_key": self.target.api_key,
            "slug": self.target.chat_slug,
            "tokens": tokens,
            "expected": expected,
            "connections": n,
        }

        def child(client: str) -> Leg:
            def run() -> Sample:
                # A child that dies is a finding, not noise: it is reported (with faulthandler's traceback) and
                # counted against the client, and its run is made again once.
                crashes = 0
                while True:
                    done = subprocess.run(
                        [sys.executable, "-X", "faulthandler", str(BENCHES / "fanout.py")],
                        input=json.dumps({**job, "client": client}),
                        capture_output=True,
                        text=True,
                        env=self.env,
                    )
                    if done.returncode == 0:
                        break
                    crashes += 1
                    how = f"signal {-done.returncode}" if done.returncode < 0 else f"exit status {done.returncode}"
                    tail = " / ".join(done.stderr.strip().splitlines()[-12:])
                    self.notes.append(f"concurrent streams, {client}: the child process died ({how}): {tail}")
                    log(self.notes[-1])
                    if crashes > 1:
                        raise RuntimeError(self.notes[-1])
                answer = json.loads(done.stdout)
                if answer["first_error"]:
                    self.notes.append(
                        f"concurrent streams, {client}: {answer['failed']} failed: {answer['first_error']}"
                    )
                extra = {key: answer[key] for key in ("peak_rss_kib", "rss_idle_kib", "misplaced", "failed")}
                extra["crashes"] = crashes
                return Sample(answer["wall"], answer["cpu"], answer["units"], extra)

            return run

        def floor() -> Sample:
            fresh = Floor(self.floor_binary, self.target)
            try:
                command = {"op": "stream", "tokens": tokens, "concurrency": n, "expected": expected}
                warm = fresh.sample(command)
                sample = fresh.sample(command)
                sample.extra["misplaced"] += warm.extra["misplaced"]
                return sample
            finally:
                fresh.close()

        legs = {name: child(name) for name in ("inferencekey", "openai", "httpx")}
        legs["rust"] = floor
        title = f"{n:,} concurrent async streams on one client ({sum(tokens):,} chunks)"
        samples = run_legs(title, lambda _: legs, self.repeats, warm=False)  # each child warms itself up
        scenario = Scenario("fanout", title, "chunk", samples)
        scenario.notes.append(
            "each run is a fresh process (its own warm-up round, then the timed round); peak RSS is its VmHWM; "
            f"openai and httpx pools set to {n:,} connections, all kept alive"
        )
        return scenario


# --- per-request cost (issue 16) -------------------------------------------------------------------------------


@dataclass
class RequestSizes:
    requests: int
    in_flight: int
    concurrent_requests: int
    streams: int
    stream_tokens: int


REQUESTS_FULL = RequestSizes(1_000, 64, 2_560, 500, 26)
REQUESTS_QUICK = RequestSizes(100, 64, 256, 50, 26)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class PerRequest:
    """Issue 16's scenarios: the cost of one request (unary, and a chat-sized stream) against the leanest clients a
    caller could write: a raw socket, pyreqwest and aiohttp, each with orjson; and the time to the first chunk."""

    def __init__(self, target: Target, floor: Floor, sizes: RequestSizes, repeats: int) -> None:
        self.target, self.floor, self.sizes, self.repeats = target, floor, sizes, repeats
        self.ik = SyncPeers(target)
        self.raw = lean.RawSocket(target)
        self.reqwest = lean.SyncReqwest(target)
        self.loop = asyncio.new_event_loop()
        self.aio = AsyncPeers(target)

        async def make() -> tuple[lean.AsyncReqwest, lean.AsyncAiohttp]:
            return lean.AsyncReqwest(target), lean.AsyncAiohttp(target)

        self.areqwest, self.aiohttp = self.loop.run_until_complete(make())
        self.araw = lean.AsyncRawSocket(target)
        # The same SDK client and a raw socket of its own on uvloop, where it installs (not on Windows).
        self.uvloop: asyncio.AbstractEventLoop | None = None
        try:
            import uvloop

            self.uvloop = uvloop.new_event_loop()
        except ImportError:
            log("uvloop is not installed: no legs on it")
        self.uvraw = lean.AsyncRawSocket(target)

    def close(self) -> None:
        self.loop.run_until_complete(self.aio.close())
        self.loop.run_until_complete(self.areqwest.close())
        self.loop.run_until_complete(self.aiohttp.close())
        self.loop.close()
        if self.uvloop is not None:
            self.uvloop.close()
        self.ik.close()
        self.raw.close()
        self.araw.close()
        self.uvraw.close()
        self.reqwest.close()

    def check_same_data(self) -> None:
        """Every lean client reads the SDK's completion text and the same chunk texts, before anything is timed."""
        text = self.ik.chat_ik()
        texts = {
            "raw": self.raw.chat(),
            "pyreqwest": self.reqwest.chat(),
            "pyreqwest async": self.loop.run_until_complete(self.areqwest.chat()),
            "aiohttp": self.loop.run_until_complete(self.aiohttp.chat()),
            "raw asyncio": self.loop.run_until_complete(self.araw.chat()),
        }
        if self.uvloop is not None:
            texts["inferencekey uvloop"] = self.uvloop.run_until_complete(self.aio.chat_ik())
            texts["raw uvloop"] = self.uvloop.run_until_complete(self.uvraw.chat())
        assert set(texts.values()) == {text}, (text, texts)
        tokens = self.sizes.stream_tokens
        chars = len("".join(self.ik.chunks_ik(tokens)))
        assert [t for t in self.raw.stream_texts(tokens) if t] == self.ik.chunks_ik(tokens)
        for name, got in {
            "pyreqwest": self.reqwest.stream(tokens),
            "pyreqwest async": self.loop.run_until_complete(self.areqwest.stream(tokens)),
            "aiohttp": self.loop.run_until_complete(self.aiohttp.stream(tokens)),
        }.items():
            assert got == chars, (name, got, chars)
        self.chat_chars, self.stream_chars = len(text), chars

    def unary_check(self, out: list[str]) -> bool:
        return {len(t) for t in out} == {self.chat_chars}
        log("every lean client received the same completion and chunks as the SDK")

    def _async(
        self,
        fn: Callable[[], Awaitable[Any]],
        n: int,
        in_flight: int,
        check: Callable[[Any], bool],
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> Leg:
        """A leg of `n` awaits of `fn`, `in_flight` at a time, on `loop` (the standard asyncio loop by default)."""
        per = max(1, n // in_flight)
        on = loop or self.loop

        async def worker() -> list[Any]:
            return [await fn() for _ in range(per)]

        async def run() -> list[Any]:
            shares = await asyncio.gather(*(worker() for _ in range(in_flight)))
            return [out for share in shares for out in share]

        return lambda: timed(lambda: on.run_until_complete(run()), per * in_flight, check)

    def unary(self) -> list[Scenario]:
        size, chars = self.sizes, self.chat_chars

        def check(out: list[str]) -> bool:
            return {len(t) for t in out} == {chars}

        def sync(fn: Callable[[], str], n: int) -> Leg:
            return lambda: timed(lambda: [fn() for _ in range(n)], n, check)

        def sync_legs(scale: float) -> dict[str, Leg]:
            n = scaled(size.requests, scale)
            return {
                "inferencekey": sync(self.ik.chat_ik, n),
                "raw": sync(self.raw.chat, n),
                "pyreqwest": sync(self.reqwest.chat, n),
                "rust": lambda: self.floor.sample({"op": "chat", "requests": n, "concurrency": 1}),
            }

        def async_legs(in_flight: int, requests: int) -> Callable[[float], dict[str, Leg]]:
            def at(scale: float) -> dict[str, Leg]:
                n = max(in_flight, scaled(requests, scale))
                legs = {
                    "inferencekey": self._async(self.aio.chat_ik, n, in_flight, check),
                    "pyreqwest": self._async(self.areqwest.chat, n, in_flight, check),
                    "aiohttp": self._async(self.aiohttp.chat, n, in_flight, check),
                }
                if in_flight == 1:
                    legs["raw asyncio"] = self._async(self.araw.chat, n, 1, check)
                    if self.uvloop is not None:
                        legs["inferencekey uvloop"] = self._async(self.aio.chat_ik, n, 1, check, self.uvloop)
                        legs["raw uvloop"] = self._async(self.uvraw.chat, n, 1, check, self.uvloop)
                command = {"op": "chat", "requests": in_flight * max(1, n // in_flight), "concurrency": in_flight}
                legs["rust"] = lambda: self.floor.sample(command)
                return legs

            return at

        out = []
        title = f"per request: unary chat, sync, one after another ({size.requests:,} requests of {CHAT_TOKENS} tokens)"
        out.append(Scenario("request_sync", title, "request", run_legs(title, sync_legs, self.repeats)))
        title = f"per request: unary chat, asyncio, 1 in flight ({size.requests:,} requests)"
        legs = async_legs(1, size.requests)
        out.append(Scenario("request_async_1", title, "request", run_legs(title, legs, self.repeats)))
        title = f"per request: unary chat, asyncio, {size.in_flight} in flight ({size.concurrent_requests:,} requests)"
        legs = async_legs(size.in_flight, size.concurrent_requests)
        out.append(Scenario("request_async_64", title, "request", run_legs(title, legs, self.repeats)))
        return out

    def streams(self) -> list[Scenario]:
        size, tokens, chars = self.sizes, self.sizes.stream_tokens, self.stream_chars

        def check(out: list[int]) -> bool:
            return set(out) == {chars}

        def sync_legs(scale: float) -> dict[str, Leg]:
            n = scaled(size.streams, scale)

            def leg(fn: Callable[[int], int]) -> Leg:
                return lambda: timed(lambda: [fn(tokens) for _ in range(n)], n, check)

            return {
                "inferencekey": leg(self.ik.stream_ik),
                "raw": leg(self.raw.stream),
                "pyreqwest": leg(self.reqwest.stream),
                # The yardstick of the target: one raw-socket unary request (its CPU per request).
                "raw unary": lambda: timed(lambda: [self.raw.chat() for _ in range(n)], n, self.unary_check),
            }

        def async_legs(scale: float) -> dict[str, Leg]:
            n = scaled(size.streams, scale)
            legs = {
                "inferencekey": self._async(lambda: self.aio.stream_ik(tokens), n, 1, check),
                "pyreqwest": self._async(lambda: self.areqwest.stream(tokens), n, 1, check),
                "aiohttp": self._async(lambda: self.aiohttp.stream(tokens), n, 1, check),
            }
            if self.uvloop is not None:
                legs["inferencekey uvloop"] = self._async(lambda: self.aio.stream_ik(tokens), n, 1, check, self.uvloop)
            return legs

        out = []
        title = f"per stream: {size.streams:,} streams of {tokens} chunks, sync, one after another"
        out.append(Scenario("stream26_sync", title, "stream", run_legs(title, sync_legs, self.repeats)))
        title = f"per stream: {size.streams:,} streams of {tokens} chunks, asyncio, one after another"
        out.append(Scenario("stream26_async", title, "stream", run_legs(title, async_legs, self.repeats)))
        return out

    def first_chunk(self) -> Scenario:
        """Wall time from the call to the first non-empty chunk text, over many streams (every leg takes turns)."""
        n, tokens = self.sizes.streams, self.sizes.stream_tokens

        def ik_sync() -> float:
            started = time.perf_counter()
            with self.ik.ik_chat.generate_text_stream(prompt="bench", max_tokens=tokens) as stream:
                first = 0.0
                for chunk in stream:
                    if chunk.text and not first:
                        first = time.perf_counter() - started
            return first

        async def ik_async() -> float:
            started = time.perf_counter()
            first = 0.0
            async with await self.aio.ik_chat.generate_text_stream(prompt="bench", max_tokens=tokens) as stream:
                async for chunk in stream:
                    if chunk.text and not first:
                        first = time.perf_counter() - started
            return first

        clients: dict[str, Callable[[], float]] = {
            "inferencekey": ik_sync,
            "raw": lambda: self.raw.first_chunk(tokens),
            "inferencekey async": lambda: self.loop.run_until_complete(ik_async()),
        }
        for fn in clients.values():  # warm
            fn()
        seen: dict[str, list[float]] = {name: [] for name in clients}
        for _ in range(n):
            for name, fn in clients.items():
                seen[name].append(fn())
        legs = {}
        for name, values in seen.items():
            legs[name] = Sample(sum(values), 0.0, len(values), {"median": statistics.median(values)})
            legs[name].extra["p90"] = percentile(values, 0.9)
        title = f"time to the first chunk: {n:,} streams of {tokens} chunks per client, taking turns"
        scenario = Scenario("first_chunk", title, "stream", legs, reference="raw")
        log(title + ": " + ", ".join(f"{k} {micros(v.extra['median'])}" for k, v in legs.items()))
        return scenario


def per_request(lp: Platform, floor_binary: Path | None, quick: bool, repeats: int) -> list[Scenario]:
    """The scenarios of issue 16 on the same bench-mode platform."""
    with ManagementClient(base_url=lp.url, sdk_token=lp.sdk_token, project=lp.project) as mgmt:
        chat = mgmt.ensure(WorkloadSpec(name="bench", slug="bench", model="m", backend=Backend.VLLM))
    target = Target(lp.url, lp.project, lp.api_key, chat.workload_slug, chat.workload_slug)
    if floor_binary is None:
        log(f"building the Rust floor (cargo build --release --example {FLOOR_EXAMPLE})")
        floor_binary = build_floor()
    floor = Floor(floor_binary, target)
    bench = PerRequest(target, floor, REQUESTS_QUICK if quick else REQUESTS_FULL, repeats)
    try:
        bench.check_same_data()
        return [*bench.unary(), *bench.streams(), bench.first_chunk()]
    finally:
        bench.close()
        floor.close()


def targets_per_request(s: dict[str, Scenario]) -> list[Check]:
    """The targets of issue 16 (client CPU), each judged on this run's numbers."""

    def cpu(key: str, leg: str = "inferencekey") -> float:
        return s[key].legs[leg].cpu_per_unit

    out = []
    ratio = cpu("request_sync") / cpu("request_sync", "raw")
    out.append(Check("sync unary", "<= 1.0x the raw-socket Python client", f"{ratio:.2f}x", ratio <= 1.0))
    ratio = cpu("request_async_1") / cpu("request_sync", "raw")
    measured = f"{ratio:.2f}x ({micros(cpu('request_async_1'))} vs {micros(cpu('request_sync', 'raw'))})"
    out.append(Check("async unary, 1 in flight", "<= 1.5x the raw-socket sync client", measured, ratio <= 1.5))
    ratio = cpu("request_async_64") / cpu("request_async_64", "pyreqwest")
    out.append(Check("async unary, 64 in flight", "<= 0.5x pyreqwest + orjson", f"{ratio:.2f}x", ratio <= 0.5))
    ratio = cpu("stream26_sync") / cpu("stream26_sync", "raw unary")
    measured = f"{ratio:.2f}x ({micros(cpu('stream26_sync'))} vs {micros(cpu('stream26_sync', 'raw unary'))})"
    out.append(Check("a sync stream of 26 chunks", "<= 3x one raw-socket unary request", measured, ratio <= 3))
    ratio = cpu("stream26_async") / cpu("stream26_sync")
    measured = f"{ratio:.2f}x ({micros(cpu('stream26_async'))} vs {micros(cpu('stream26_sync'))})"
    out.append(Check("an async stream of 26 chunks", "<= 1.5x the same stream in sync", measured, ratio <= 1.5))
    # The floors the two tightest bars sit against, measured in the same run.
    ratio = cpu("request_async_1", "raw asyncio") / cpu("request_sync", "raw")
    measured = f"{ratio:.2f}x ({micros(cpu('request_async_1', 'raw asyncio'))} vs {micros(cpu('request_sync', 'raw'))})"
    floor = "the raw socket through asyncio vs the raw sync socket (reported)"
    out.append(Check("the asyncio floor", floor, measured, True))
    if "inferencekey uvloop" in s["request_async_1"].legs:
        ratio = cpu("request_async_1", "inferencekey uvloop") / cpu("request_sync", "raw")
        raw_uv = cpu("request_async_1", "raw uvloop") / cpu("request_sync", "raw")
        ours, base = micros(cpu("request_async_1", "inferencekey uvloop")), micros(cpu("request_sync", "raw"))
        measured = f"{ratio:.2f}x ({ours} vs {base}; the raw socket through uvloop {raw_uv:.2f}x)"
        out.append(Check("async unary on uvloop", "vs the raw sync socket (reported)", measured, True))
        ratio = cpu("stream26_async", "inferencekey uvloop") / cpu("stream26_sync")
        ours, base = micros(cpu("stream26_async", "inferencekey uvloop")), micros(cpu("stream26_sync"))
        measured = f"{ratio:.2f}x ({ours} vs {base})"
        out.append(Check("an async stream on uvloop", "vs the same stream in sync (reported)", measured, True))
    ratio = cpu("stream26_sync", "raw") / cpu("stream26_sync", "raw unary")
    measured = f"{ratio:.2f}x ({micros(cpu('stream26_sync', 'raw'))} vs {micros(cpu('stream26_sync', 'raw unary'))})"
    floor = "the raw socket's own 26-chunk stream vs its unary request (reported)"
    out.append(Check("the stream floor", floor, measured, True))
    first = s["first_chunk"].legs
    added = first["inferencekey"].extra["median"] - first["raw"].extra["median"]
    added_async = first["inferencekey async"].extra["median"] - first["raw"].extra["median"]
    measured = f"sync +{micros(added)}, asyncio +{micros(added_async)} (medians)"
    out.append(Check("time to the first chunk", "latency added over the raw socket (reported)", measured, True))
    return out


# --- batch embedding (issue 7) ----------------------------------------------------------------------------------


@dataclass
class BatchResults:
    """The batch-embedding group: its scenario (clean legs and the 429 leg), and the 1,000,000-text run if made."""

    scenario: Scenario
    texts: int
    dim: int
    repeats: int
    million: dict[str, Any] | None = None


def lost_vectors(out: Any, reference: numpy.ndarray) -> int:
    """Rows of `reference` that `out` (a matrix, or the BatchEmbedError of a job) lacks or has otherwise."""
    if isinstance(out, BatchEmbedError):
        rows, where = numpy.asarray(out.vectors, dtype=numpy.float32), out.completed_indices
        good = int((rows == reference[where]).all(axis=1).sum()) if where else 0
    elif out.shape != reference.shape:
        good = 0
    else:
        good = int((out == reference).all(axis=1).sum())
    return len(reference) - good


def batch_embedding(lp: Platform, env: dict[str, str], n: int, repeats: int, million: bool) -> BatchResults:
    """`n` short texts embedded in batches of 32 with 8 requests in flight: `embed_many` (sync and asyncio), openai in
    8 threads and AsyncOpenAI with a semaphore of 8; then `embed_many` again with 20% of the requests refused (429),
    as one more leg of the same rounds; and with `million`, one 1,000,000-text job in a fresh process for its peak
    memory."""
    with ManagementClient(base_url=lp.url, sdk_token=lp.sdk_token, project=lp.project) as mgmt:
        spec = WorkloadSpec(
            name=EMBED_MANY_SLUG, slug=EMBED_MANY_SLUG, model="e", backend=Backend.VLLM, task_type=TaskType.EMBEDDING
        )
        slug = mgmt.ensure(spec).workload_slug
    settings = f"/_local/projects/{lp.project}/workloads/{slug}/settings"
    lp.admin("PUT", settings, {"embedding_dim": EMBED_MANY_DIM})
    dim = lp.admin("GET", settings)["embedding_dim"]
    assert dim == EMBED_MANY_DIM, dim
    items = embed_many.texts(n)
    loop = asyncio.new_event_loop()
    clients = embed_many.Clients(lp.url, lp.project, lp.api_key, slug, loop)
    try:
        # Before anything is timed, each client does the whole job once (its warm-up) and must return the same
        # (n, dim) matrix as embed_many, bit for bit: they all decode the same base64 float32 bytes.
        reference = clients.ik_sync(items)
        assert reference.shape == (n, dim) and reference.dtype == numpy.float32, (reference.shape, reference.dtype)
        jobs = {
            "embed_many": clients.ik_sync,
            "embed_many async": clients.ik_async,
            "openai threads": clients.openai_threads,
            "openai async": clients.openai_async,
        }
        for name, job in jobs.items():
            got = job(items)
            assert got.shape == reference.shape and numpy.array_equal(got, reference), f"{label(name)}: other vectors"
        log(f"every batch-embedding client produced the same {n:,} x {dim} matrix")

        def same(out: numpy.ndarray) -> bool:
            return out.shape == reference.shape and numpy.array_equal(out, reference)

        def leg(job: Callable[[list[str]], numpy.ndarray]) -> Leg:
            return lambda: timed(lambda: job(items), n, same)

        def with_429s() -> Sample:
            trace: list[tuple[float, int]] = []

            def progress(p: EmbedProgress) -> None:
                trace.append((p.elapsed_s, p.concurrency))

            def run() -> Any:
                try:
                    return clients.ik_sync(items, progress)
                except BatchEmbedError as error:  # a batch refused 10 times: counted as lost, not a crash
                    return error

            lp.admin("DELETE", "/_local/faults")  # also restarts the probability draws: every run sees the same
            lp.admin("POST", "/_local/faults", FAULT_429)
            try:
                wall, cpu = time.perf_counter(), time.process_time()
                out = run()
                sample = Sample(time.perf_counter() - wall, time.process_time() - cpu, n)
                fired = sum(rule["fired"] for rule in lp.admin("GET", "/_local/faults"))
            finally:
                lp.admin("DELETE", "/_local/faults")
            sample.extra.update(
                lost_vectors=lost_vectors(out, reference),
                refused=fired,
                batches=-(-n // embed_many.BATCH_SIZE),
                concurrency=embed_many.concurrency_summary(trace),
                error=str(out) if isinstance(out, BatchEmbedError) else None,
            )
            return sample

        legs = {name: leg(job) for name, job in jobs.items()}
        legs["embed_many 429"] = with_429s
        title = (
            f"batch embedding: {n:,} short texts to a {n:,} x {dim} float32 matrix, batches of "
            f"{embed_many.BATCH_SIZE}, {embed_many.CONCURRENCY} requests in flight"
        )
        samples = run_legs(title, lambda _: legs, repeats, warm=False)  # the check above warmed every client up
        scenario = Scenario("embed_many", title, "text", samples, reference="embed_many")
        scenario.notes += batch_notes(scenario, n, dim, repeats)
        results = BatchResults(scenario, n, dim, repeats)
        if million:
            results.million = million_job(lp, slug, env, reference)
    finally:
        clients.close()
        loop.close()
    return results


def batch_notes(scenario: Scenario, n: int, dim: int, repeats: int) -> list[str]:
    f = scenario.legs["embed_many 429"]
    c = f.extra["concurrency"]
    tenths = " ".join(f"{x:.1f}" for x in c["tenths"])
    requests = f.extra["batches"] + f.extra["refused"]
    lost = f.extra["lost_vectors"]
    lengths = f"{len(embed_many.TEXT.format(i=0))}-{len(embed_many.TEXT.format(i=n - 1))}"
    return [
        f"Texts: `{embed_many.TEXT}` for i in 0..{n - 1:,} ({lengths} characters); embedding_dim {dim}; base64 on the "
        "wire for every client (openai's default, decoded by openai into lists of floats, then numpy.asarray per "
        "batch and numpy.concatenate); every timed run's matrix is compared with the SDK's clean one (bit for bit).",
        f"20% 429s: a fault rule `{json.dumps(FAULT_429)}` installed for that leg only; the median run: "
        f"{f.extra['refused']:,} of {requests:,} requests refused ({f.extra['refused'] / requests:.0%}); "
        f"{lost} vectors lost or different over all {repeats} runs"
        + (f"; error: {f.extra['error']}" if f.extra.get("error") else "")
        + ".",
        f"EmbedProgress.concurrency in that run ({c['reports']:,} reports, one per batch): min {c['min']}, "
        f"max {c['max']}, mean {c['mean']:.2f} (over time {c['time_mean']:.2f}), final {c['final']}; "
        f"mean over each tenth of the job: {tenths}.",
    ]


def million_job(lp: Platform, slug: str, env: dict[str, str], reference: numpy.ndarray) -> dict[str, Any]:
    """One 1,000,000-text embed_many job, texts from a generator, in a fresh process (benches/embed_million.py)."""
    head = min(len(reference), MILLION)
    job = {
        "url": lp.url,
        "project": lp.project,
        "api_key": lp.api_key,
        "slug": slug,
        "n": MILLION,
        "text": embed_many.TEXT,
        "batch_size": embed_many.BATCH_SIZE,
        "max_concurrency": embed_many.CONCURRENCY,
        "check_rows": head,
        "check_sha256": hashlib.sha256(numpy.ascontiguousarray(reference[:head]).tobytes()).hexdigest(),
    }
    log(f"embedding {MILLION:,} texts in a fresh process for its peak memory")
    done = subprocess.run(
        [sys.executable, "-X", "faulthandler", str(BENCHES / "embed_million.py")],
        input=json.dumps(job),
        capture_output=True,
        text=True,
        env=env,
    )
    if done.returncode != 0:
        tail = " / ".join(done.stderr.strip().splitlines()[-12:])
        raise RuntimeError(f"the {MILLION:,}-text child failed ({done.returncode}): {tail}")
    answer: dict[str, Any] = json.loads(done.stdout)
    answer["check_rows"] = head
    assert answer["shape"] == [MILLION, reference.shape[1]] and answer["dtype"] == "float32", answer
    log(f"{MILLION:,} texts: peak {answer['peak_rss_kib'] / 1024:.0f} MiB in {answer['wall']:.1f} s")
    return answer


def million_table(m: dict[str, Any]) -> list[str]:
    mib = 1024 * 1024
    out, before, peak = m["output_bytes"] / mib, m["rss_before_kib"] / 1024, m["peak_rss_kib"] / 1024
    return [
        f"### batch embedding, {m['n']:,} texts, peak memory (one run, a fresh process)",
        "",
        "| texts | output array (n x dim x 4 bytes) | RSS before the job (the constant) | peak RSS (VmHWM) | "
        "peak - constant | (peak - constant) / output | wall s | texts/s | CPU per text |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| {m['n']:,} | {out:.1f} MiB | {before:.1f} MiB | {peak:.1f} MiB | {peak - before:.1f} MiB | "
        f"{(peak - before) / out:.2f}x | {m['wall']:.1f} | {m['n'] / m['wall']:,.0f} | {micros(m['cpu'] / m['n'])} |",
        "",
        f"texts from a generator, output numpy; the first {m['check_rows']:,} rows equal the clean run's: "
        f"{'yes' if m['head_equal'] else '**no**'}; all-zero rows: {m['zero_rows']}; RSS after the job "
        f"{m['rss_after_kib'] / 1024:.1f} MiB",
        "",
    ]


def targets_batch(r: BatchResults) -> list[Check]:
    """The targets of issue 7 (batch embedding), judged on this run."""
    s = r.scenario
    ik = s.legs["embed_many"]
    fastest = max(OPENAI_BATCH_LEGS, key=lambda name: s.legs[name].rate)
    leanest = min(OPENAI_BATCH_LEGS, key=lambda name: s.legs[name].cpu_per_unit)
    name = f"embed_many, {r.texts:,} texts"
    speed = ik.rate / s.legs[fastest].rate
    cpu = s.legs[leanest].cpu_per_unit / ik.cpu_per_unit
    out = [
        Check(
            name,
            ">= 5x the texts/s of the best openai pattern",
            f"{ik.rate:,.0f} vs {s.legs[fastest].rate:,.0f} texts/s, {label(fastest)} ({speed:.1f}x)",
            speed >= 5,
        ),
        Check(
            name,
            "CPU/text <= 1/10 of the best openai pattern",
            f"{micros(ik.cpu_per_unit)} vs {micros(s.legs[leanest].cpu_per_unit)}, {label(leanest)} ({cpu:.1f}x)",
            cpu >= 10,
        ),
    ]
    f = s.legs["embed_many 429"]
    name = f"embed_many, {r.texts:,} texts, 20% 429s"
    lost = f.extra["lost_vectors"]
    out.append(
        Check(
            name,
            "every vector, equal to the clean run's",
            f"{lost} lost or different in {r.repeats} run(s) of {r.texts:,}",
            lost == 0,
        )
    )
    half = f.rate / ik.rate
    out.append(
        Check(
            name,
            ">= half the clean throughput",
            f"{f.rate:,.0f} vs {ik.rate:,.0f} texts/s ({half:.2f}x)",
            half >= 0.5,
        )
    )
    if r.million is not None:
        m = r.million
        growth = (m["peak_rss_kib"] - m["rss_before_kib"]) * 1024 / m["output_bytes"]
        out.append(
            Check(
                f"embed_many, {m['n']:,} texts to numpy",
                "peak RSS <= 1.5 x the output + a constant",
                f"{m['peak_rss_kib'] / 1024:.0f} MiB = {m['rss_before_kib'] / 1024:.0f} MiB before the job + "
                f"{growth:.2f} x the {m['output_bytes'] / 1024 / 1024:.0f} MiB output",
                growth <= 1.5 and m["head_equal"] and m["zero_rows"] == 0,
            )
        )
    return out


def import_cost(repeats: int, env: dict[str, str]) -> dict[str, dict[str, float]]:
    """Wall milliseconds of a fresh `import module` and the child's resident memory after it (MiB), medians."""
    # VmRSS, not ru_maxrss: Linux carries the peak over from the forking parent.
    code = (
        "import time, sys; t = time.perf_counter(); __import__(sys.argv[1]); ms = (time.perf_counter() - t) * 1000; "
        "rss = [line for line in open('/proc/self/status') if line.startswith('VmRSS')][0].split()[1]; "
        "print(ms, int(rss) / 1024)"
    )
    runs: dict[str, list[tuple[float, float]]] = {m: [] for m in ("inferencekey", "httpx", "openai")}
    for _ in range(repeats):
        for module, into in runs.items():
            command = [sys.executable, "-c", code, module]
            out = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
            ms, rss = (float(x) for x in out.stdout.split())
            into.append((ms, rss))
    return {
        m: {"wall_ms": statistics.median(r[0] for r in rs), "rss_mib": statistics.median(r[1] for r in rs)}
        for m, rs in runs.items()
    }


# --- report ---------------------------------------------------------------------------------------------------


def micros(seconds: float) -> str:
    us = seconds * 1e6
    return f"{us:,.0f} µs" if us >= 1000 else f"{us:,.2f} µs" if us < 10 else f"{us:,.1f} µs"


def label(name: str) -> str:
    return LABELS.get(name, name)


def table(scenario: Scenario) -> list[str]:
    ref = scenario.legs[scenario.reference]
    unit = scenario.unit
    lines = [f"### {scenario.title}", ""]
    if scenario.key == "fanout":
        head = f"| client | {unit}s/s | CPU per {unit} | x inferencekey | wall s | peak RSS MiB | lost or misplaced |"
        lines.append(head)
        lines.append("|---|---|---|---|---|---|---|")
        for name, s in scenario.legs.items():
            ratio = s.cpu_per_unit / ref.cpu_per_unit
            lost = str(s.extra.get("misplaced", 0))
            if s.extra.get("failed"):
                lost += f", {s.extra['failed']} streams failed"
            if s.extra.get("crashes"):
                lost += f", {s.extra['crashes']} processes died"
            lines.append(
                f"| {label(name)} | {s.rate:,.0f} | {micros(s.cpu_per_unit)} | {ratio:.2f}x | {s.wall:.2f} | "
                f"{s.extra['peak_rss_kib'] / 1024:.1f} | {lost} |"
            )
    elif scenario.key == "first_chunk":
        lines.append("| client | median | p90 | median over the raw socket |")
        lines.append("|---|---|---|---|")
        for name, s in scenario.legs.items():
            added = s.extra["median"] - ref.extra["median"]
            lines.append(
                f"| {label(name)} | {micros(s.extra['median'])} | {micros(s.extra['p90'])} | +{micros(added)} |"
            )
    elif scenario.key == "embed_many":
        lines.append(f"| client | {unit}s/s | CPU per {unit} | x inferencekey (CPU) | wall s | x inferencekey (wall) |")
        lines.append("|---|---|---|---|---|---|")
        for name, s in scenario.legs.items():
            cpu = f"{micros(s.cpu_per_unit)} | {s.cpu_per_unit / ref.cpu_per_unit:.2f}x"
            lines.append(f"| {label(name)} | {s.rate:,.0f} | {cpu} | {s.wall:.2f} | {s.wall / ref.wall:.2f}x |")
    else:
        wall_head = f" | wall per {unit} | x inferencekey (wall)" if unit in ("request", "stream") else ""
        lines.append(f"| client | CPU per {unit} | x inferencekey (CPU){wall_head} | {unit}s/s |")
        lines.append("|---|---|---|" + ("---|---|" if wall_head else "") + "---|")
        for name, s in scenario.legs.items():
            ratio = s.cpu_per_unit / ref.cpu_per_unit
            wall = f" | {micros(s.wall_per_unit)} | {s.wall_per_unit / ref.wall_per_unit:.2f}x" if wall_head else ""
            lines.append(f"| {label(name)} | {micros(s.cpu_per_unit)} | {ratio:.2f}x{wall} | {s.rate:,.0f} |")
    lines += [f"\n{note}" for note in scenario.notes]
    return [*lines, ""]


@dataclass
class Check:
    target: str
    criterion: str
    measured: str
    met: bool


def cpu_ratio(scenario: Scenario, peer: str, of: str = "inferencekey") -> float:
    """How many times more CPU per unit `peer` spends than `of`."""
    return scenario.legs[peer].cpu_per_unit / scenario.legs[of].cpu_per_unit


def targets(s: dict[str, Scenario], imports: dict[str, dict[str, float]], sizes: Sizes) -> list[Check]:
    """The targets of issue 6, each judged on this run's numbers (client CPU per unit unless it says wall)."""
    out = []
    long, short = f"1 x {sizes.long_stream:,} chunks", f"{sizes.short_streams:,} x {sizes.short_tokens} chunks"
    streams = {
        "stream_long": f"sync, {long}",
        "stream_short": f"sync, {short}",
        "stream_long_async": f"asyncio, {long}",
        "stream_short_async": f"asyncio, {short}",
    }
    for key, what in streams.items():
        name = f"streaming (documented TextChunk, raw readable), {what}"
        openai, hx, floor = cpu_ratio(s[key], "openai"), cpu_ratio(s[key], "httpx"), cpu_ratio(s[key], "rust")
        out.append(Check(name, "CPU/chunk <= 1/100 of openai", f"openai spends {openai:.1f}x", openai >= 100))
        out.append(Check(name, "CPU/chunk <= 1/5 of httpx hand parsing", f"httpx spends {hx:.1f}x", hx >= 5))
        out.append(Check(name, "CPU/chunk <= 5x the Rust floor", f"{1 / floor:.1f}x the floor", 1 / floor <= 5))
    chats = {"chat_sequential": "sequential", "chat_threads": f"{sizes.threads} threads, one client"}
    for key, what in chats.items():
        name = f"unary chat, {what}"
        openai, hx, floor = cpu_ratio(s[key], "openai"), cpu_ratio(s[key], "httpx"), cpu_ratio(s[key], "rust")
        out.append(Check(name, "CPU/request <= 1/10 of openai", f"openai spends {openai:.1f}x", openai >= 10))
        out.append(Check(name, "CPU/request <= 1/4 of httpx + json.loads", f"httpx spends {hx:.1f}x", hx >= 4))
        out.append(Check(name, "CPU/request <= 4x the Rust floor", f"{1 / floor:.1f}x the floor", 1 / floor <= 4))
    a = s["chat_async"]
    ratio = cpu_ratio(a, "openai")
    rates = f"{1 / a.legs['inferencekey'].cpu_per_unit:,.0f} vs {1 / a.legs['openai'].cpu_per_unit:,.0f}"
    out.append(
        Check(
            f"async unary ({sizes.tasks} tasks)",
            ">= 10x the requests per client CPU-second of AsyncOpenAI",
            f"{rates} requests per CPU-second ({ratio:.1f}x)",
            ratio >= 10,
        )
    )
    n = s["embed_numpy"]
    native = n.legs["inferencekey"].extra.get("native_to_numpy")
    name = f"embeddings {EMBED_TEXTS} x {EMBED_DIM} to NumPy" + ("" if native else " (no to_numpy() yet: asarray)")
    faster = min(cpu_ratio(n, "openai"), cpu_ratio(n, "openai, float JSON"))
    hand = cpu_ratio(n, "httpx + b64decode + frombuffer")
    out.append(Check(name, ">= 15x faster than openai", f"openai spends {faster:.1f}x", faster >= 15))
    out.append(Check(name, ">= 3x faster than httpx + base64 + frombuffer", f"httpx spends {hand:.1f}x", hand >= 3))
    lists = s["embed_lists"]
    faster = min(cpu_ratio(lists, "openai"), cpu_ratio(lists, "openai, float JSON"))
    name = f"embeddings {EMBED_TEXTS} x {EMBED_DIM} to lists"
    out.append(Check(name, ">= 5x faster than openai", f"openai spends {faster:.1f}x", faster >= 5))
    f = s["fanout"]
    name = f"{sizes.fanout_streams:,} concurrent async streams"
    ik, oa = f.legs["inferencekey"], f.legs["openai"]
    lost, failed, crashes = (ik.extra.get(key, 0) for key in ("misplaced", "failed", "crashes"))
    measured = f"{lost} chunks lost or misplaced, {failed} streams failed, {crashes} processes died"
    out.append(Check(name, "zero loss", measured, lost == failed == crashes == 0))
    single = s["stream_long_async"].legs["inferencekey"].cpu_per_unit
    one_by_one = s["stream_short_async"].legs["inferencekey"].cpu_per_unit
    growth = ik.cpu_per_unit / single
    out.append(
        Check(
            name,
            "CPU/chunk <= 3x the single-stream figure",
            f"{micros(ik.cpu_per_unit)} vs {micros(single)} for one asyncio stream ({growth:.1f}x); "
            f"{ik.cpu_per_unit / one_by_one:.1f}x the same short streams one at a time",
            growth <= 3,
        )
    )
    peak, oa_peak = ik.extra["peak_rss_kib"] / 1024, oa.extra["peak_rss_kib"] / 1024
    out.append(Check(name, "less peak memory than AsyncOpenAI", f"{peak:.0f} vs {oa_peak:.0f} MiB", peak < oa_peak))
    out.append(
        Check(
            name,
            ">= 10x less wall time than AsyncOpenAI",
            f"{ik.wall:.2f} vs {oa.wall:.2f} s ({oa.wall / ik.wall:.1f}x)",
            oa.wall / ik.wall >= 10,
        )
    )
    i, h = imports["inferencekey"], imports["httpx"]
    out.append(
        Check(
            "import inferencekey",
            "under import httpx (wall time)",
            f"{i['wall_ms']:.1f} vs {h['wall_ms']:.1f} ms (RSS {i['rss_mib']:.1f} vs {h['rss_mib']:.1f} MiB)",
            i["wall_ms"] < h["wall_ms"],
        )
    )
    return out


def report(
    meta: dict[str, Any],
    scenarios: list[Scenario],
    imports: dict[str, Any],
    checks: list[Check],
    batch: BatchResults | None,
    batch_checks: list[Check],
    request_checks: list[Check],
) -> str:
    lines = [
        f"{meta['date']}, {meta['machine']}, Python {meta['python']}, {meta['cores']} cores, "
        f"medians of {meta['repeats']} runs{' (--quick)' if meta['quick'] else ''}"
        f"{' (--only ' + meta['only'] + ')' if meta['only'] else ''}; "
        f"load average {meta['load_before']} before, {meta['load_after']} after; {meta['duration_s']:.0f} s",
        "",
        "CPU is client CPU (time.process_time of the client's process"
        + ("; the Rust floor's own threads" if scenarios else "")
        + "); `x inferencekey` is the peer's figure divided by inferencekey's (above 1: the peer spends more).",
        "",
    ]
    for scenario in scenarios:
        lines += table(scenario)
    if imports:
        lines += ["### import, fresh process", "", "| import | wall ms | RSS after import, MiB |", "|---|---|---|"]
        for module, cost in imports.items():
            lines.append(f"| `import {module}` | {cost['wall_ms']:.1f} | {cost['rss_mib']:.1f} |")
        lines.append("")
    if batch is not None:
        lines += table(batch.scenario)
        if batch.million is not None:
            lines += million_table(batch.million)
    groups = (
        ("Targets (issue 6)", checks),
        ("Targets (issue 7, batch embedding)", batch_checks),
        ("Targets (issue 16, per request)", request_checks),
    )
    for title, group in groups:
        if group:
            lines += [f"### {title}", "", "| target | criterion | measured | met |", "|---|---|---|---|"]
            for c in group:
                lines.append(f"| {c.target} | {c.criterion} | {c.measured} | {'yes' if c.met else '**no**'} |")
            lines.append("")
    lines += [f"{note}\n" for note in meta["notes"]]
    return "\n".join(lines).rstrip() + "\n"


def machine() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            model = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor() or platform.machine()
    return f"{platform.system()} {platform.machine()}, {model}"


def issue6(lp: Platform, env: dict[str, str], floor: Path | None, sizes: Sizes, repeats: int) -> tuple[Any, ...]:
    """The scenarios of issue 6 (streams, chat, embeddings 256 x 1024, concurrent streams) and the run's notes."""
    with ManagementClient(base_url=lp.url, sdk_token=lp.sdk_token, project=lp.project) as mgmt:
        chat = mgmt.ensure(WorkloadSpec(name="bench", slug="bench", model="m", backend=Backend.VLLM))
        spec = WorkloadSpec(
            name="bench-embed", slug="bench-embed", model="e", backend=Backend.VLLM, task_type=TaskType.EMBEDDING
        )
        emb = mgmt.ensure(spec)
    dim = lp.admin("GET", f"/_local/projects/{lp.project}/workloads/{emb.workload_slug}/settings")["embedding_dim"]
    assert dim == EMBED_DIM, dim
    target = Target(lp.url, lp.project, lp.api_key, chat.workload_slug, emb.workload_slug)
    if floor is None:
        log(f"building the Rust floor (cargo build --release --example {FLOOR_EXAMPLE})")
        floor = build_floor()
    bench = Bench(target, floor, sizes, repeats, env)
    try:
        bench.check_same_data()
        long, short = [sizes.long_stream], [sizes.short_tokens] * sizes.short_streams
        long_title = f"1 stream of {sizes.long_stream:,} chunks"
        short_title = f"{sizes.short_streams:,} streams of {sizes.short_tokens} chunks, one after another"
        scenarios = [
            bench.streaming("stream_long", f"streaming, sync: {long_title}", long, False),
            bench.streaming("stream_short", f"streaming, sync: {short_title}", short, False),
            bench.streaming("stream_long_async", f"streaming, asyncio: {long_title}", long, True),
            bench.streaming("stream_short_async", f"streaming, asyncio: {short_title}", short, True),
            *bench.chat(),
            *bench.embeddings(),
            bench.fanout(),
        ]
    finally:
        bench.close()
    return scenarios, bench.notes


def scenario_json(s: Scenario) -> dict[str, Any]:
    return {
        "title": s.title,
        "unit": s.unit,
        "notes": s.notes,
        "legs": {
            name: {
                **asdict(sample),
                "cpu_per_unit": sample.cpu_per_unit,
                "units_per_second": sample.rate,
                # None where the reference spent no measured CPU (time to first chunk is wall time only).
                "cpu_ratio_to_inferencekey": (
                    sample.cpu_per_unit / s.legs[s.reference].cpu_per_unit if s.legs[s.reference].cpu_per_unit else None
                ),
            }
            for name, sample in s.legs.items()
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per leg (the median is shown); default 3")
    parser.add_argument("--quick", action="store_true", help="10x smaller runs and one repeat: a smoke run")
    parser.add_argument("--json", type=Path, help="also write every number to this file")
    parser.add_argument("--floor", type=Path, help="a built bench_floor binary (default: cargo builds it here)")
    parser.add_argument(
        "--only",
        choices=("issue-6", "embed-many", "per-request"),
        help="run one group: issue 6's scenarios (streams, chat, embeddings, concurrent streams, import), the "
        "batch embedding of issue 7 (embed_many against openai, with 429s), or the per-request cost of issue 16 "
        "(unary and 26-chunk streams against a raw socket, pyreqwest and aiohttp)",
    )
    parser.add_argument(
        "--million",
        action="store_true",
        help=f"also embed {MILLION:,} texts once in a fresh process for embed_many's peak memory (~20 s)",
    )
    args = parser.parse_args()
    if args.million and args.only not in (None, "embed-many"):
        parser.error("--million belongs to the embed-many group")
    run_issue6, run_batch = args.only in (None, "issue-6"), args.only in (None, "embed-many")
    run_requests = args.only in (None, "per-request")
    repeats = 1 if args.quick else max(1, args.repeats)
    sizes = QUICK if args.quick else FULL
    # 1,000 concurrent streams need ~1,000 sockets in the client and in the platform (which inherits this limit).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 4 * sizes.fanout_streams + 256
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(
            resource.RLIMIT_NOFILE, (wanted if hard == resource.RLIM_INFINITY else min(wanted, hard), hard)
        )

    started = time.perf_counter()
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    snapshot = tempfile.TemporaryDirectory(prefix="inferencekey-bench-")
    env = snapshot_sdk(Path(snapshot.name))
    imports: dict[str, dict[str, float]] = {}
    if run_issue6:
        imports = import_cost(max(5, repeats), env)
        log("imports measured")
    scenarios: list[Scenario] = []
    request_scenarios: list[Scenario] = []
    notes: list[str] = []
    batch = None
    with platform_process(env) as lp:
        settings = {"readiness": "immediate", "bench": True, "embedding_dim": EMBED_DIM}
        lp.admin("PUT", "/_local/defaults", settings)
        if run_issue6:
            scenarios, notes = issue6(lp, env, args.floor, sizes, repeats)
        if run_requests:
            request_scenarios = per_request(lp, args.floor, args.quick, repeats)
        if run_batch:
            batch = batch_embedding(lp, env, sizes.embed_many_texts, repeats, args.million)
    snapshot.cleanup()
    checks = targets({s.key: s for s in scenarios}, imports, sizes) if run_issue6 else []
    batch_checks = targets_batch(batch) if batch is not None else []
    request_checks = targets_per_request({s.key: s for s in request_scenarios}) if request_scenarios else []
    scenarios += request_scenarios
    meta = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "python": platform.python_version(),
        "cores": os.cpu_count(),
        "repeats": repeats,
        "quick": args.quick,
        "only": args.only,
        "load_before": load_before,
        "load_after": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "duration_s": time.perf_counter() - started,
        "notes": notes,
    }
    sys.stdout.write(report(meta, scenarios, imports, checks, batch, batch_checks, request_checks))
    if args.json:
        data: dict[str, Any] = {
            "meta": meta,
            "scenarios": {s.key: scenario_json(s) for s in scenarios},
            "imports": imports,
            "targets": [asdict(c) for c in checks],
            "targets_issue16": [asdict(c) for c in request_checks],
        }
        if batch is not None:
            data["scenarios"][batch.scenario.key] = scenario_json(batch.scenario)
            data["million"] = batch.million
            data["targets_issue7"] = [asdict(c) for c in batch_checks]
        args.json.write_text(json.dumps(data, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
