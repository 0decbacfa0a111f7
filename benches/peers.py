"""The operations the benchmark times, written once per client: inferencekey (sync and async), openai (OpenAI and
AsyncOpenAI), and httpx with hand parsing (Client and AsyncClient).

Every operation returns what the scenario counts or checks (characters, chunk texts, vectors), so the clients can be
compared on the same data before they are timed. Only what a real caller needs is read from each answer: the chunk's
text (`chunk.raw` only in the leg that measures it), the completion's text, the embedding matrix.
"""

from __future__ import annotations

import array
import asyncio
import base64
import json
from dataclasses import dataclass
from typing import Any

import httpx
import httpx2  # openai's HTTP client (openai 3.x speaks over httpx2, not httpx)
import numpy
import openai

from inferencekey import AsyncDataClient, DataClient

PROMPT = "bench"
CHAT_TOKENS = 16


@dataclass(frozen=True)
class Target:
    """Where the workloads live and the key that reaches them."""

    url: str
    project: str
    api_key: str
    chat_slug: str
    embed_slug: str

    def v1(self, slug: str) -> str:
        return f"{self.url}/endpoint/{self.project}/{slug}/v1"


def chat_body(slug: str, tokens: int, stream: bool) -> dict[str, Any]:
    """The hand-written clients' chat request, the same one the SDK and openai send."""
    messages = [{"role": "user", "content": PROMPT}]
    return {"model": slug, "messages": messages, "stream": stream, "max_tokens": tokens}


def sse_texts(line: str) -> str | None:
    """The delta text of one SSE line, parsed by hand (`None` for lines that carry no text)."""
    if not line.startswith("data:"):
        return None
    data = line[5:].strip()
    if data == "[DONE]":
        return None
    choices = json.loads(data)["choices"]
    return (choices[0]["delta"].get("content") or "") if choices else None


def b64_matrix(items: list[dict[str, Any]]) -> numpy.ndarray:
    """An (n, dim) float32 matrix from base64 embedding items, by hand: b64decode + frombuffer."""
    items = sorted(items, key=lambda item: item["index"])
    joined = b"".join(base64.b64decode(item["embedding"]) for item in items)
    return numpy.frombuffer(joined, dtype="<f4").reshape(len(items), -1)


def float32(vectors: Any) -> numpy.ndarray:
    """A list of vectors as the (n, dim) float32 matrix a NumPy caller wants."""
    return numpy.asarray(vectors, dtype=numpy.float32)


def has_native_numpy(result: Any) -> bool:
    """Whether the SDK's embed result builds its NumPy matrix itself (``EmbedResult.to_numpy``)."""
    return callable(getattr(result, "to_numpy", None))


def sdk_matrix(result: Any) -> numpy.ndarray:
    """The SDK's (n, dim) float32 matrix: ``to_numpy()`` when the result has it, else from its lists."""
    if has_native_numpy(result):
        matrix: numpy.ndarray = result.to_numpy()
        return matrix
    return float32(result.embeddings)


class SyncPeers:
    """The synchronous clients, one of each, each with its own connection pool."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.ik = DataClient(base_url=target.url, project=target.project, api_key=target.api_key)
        self.ik_chat = self.ik.endpoint(target.chat_slug)
        self.ik_embed = self.ik.endpoint(target.embed_slug)
        key = target.api_key
        self.oa_chat = openai.OpenAI(base_url=target.v1(target.chat_slug), api_key=key, max_retries=0)
        self.oa_embed = openai.OpenAI(base_url=target.v1(target.embed_slug), api_key=key, max_retries=0)
        self.hx = httpx.Client(headers={"Authorization": f"Bearer {key}"}, timeout=120)
        self.hx_chat_url = target.v1(target.chat_slug) + "/chat/completions"
        self.hx_embed_url = target.v1(target.embed_slug) + "/embeddings"

    def close(self) -> None:
        self.ik.close()
        self.oa_chat.close()
        self.oa_embed.close()
        self.hx.close()

    # Streams: the number of characters received (`chunks_*`: the non-empty chunk texts, for the checks).
    def stream_ik(self, tokens: int) -> int:
        with self.ik_chat.generate_text_stream(prompt=PROMPT, max_tokens=tokens) as stream:
            return sum(len(chunk.text) for chunk in stream)

    def stream_ik_raw(self, tokens: int) -> int:
        with self.ik_chat.generate_text_stream(prompt=PROMPT, max_tokens=tokens) as stream:
            return sum(len(chunk.text) for chunk in stream if len(chunk.raw) > 0)

    def chunks_ik(self, tokens: int) -> list[str]:
        with self.ik_chat.generate_text_stream(prompt=PROMPT, max_tokens=tokens) as stream:
            return [chunk.text for chunk in stream if chunk.text]

    def _oa_stream(self, tokens: int) -> Any:
        messages = [{"role": "user", "content": PROMPT}]
        return self.oa_chat.chat.completions.create(
            model=self.target.chat_slug, messages=messages, stream=True, max_tokens=tokens
        )

    def stream_openai(self, tokens: int) -> int:
        return sum(len(c.choices[0].delta.content or "") for c in self._oa_stream(tokens) if c.choices)

    def chunks_openai(self, tokens: int) -> list[str]:
        texts = (c.choices[0].delta.content for c in self._oa_stream(tokens) if c.choices)
        return [text for text in texts if text]

    def _hx_texts(self, tokens: int) -> list[str]:
        body = chat_body(self.target.chat_slug, tokens, True)
        with self.hx.stream("POST", self.hx_chat_url, json=body) as response:
            response.raise_for_status()
            return [text for text in map(sse_texts, response.iter_lines()) if text]

    def stream_httpx(self, tokens: int) -> int:
        total = 0
        body = chat_body(self.target.chat_slug, tokens, True)
        with self.hx.stream("POST", self.hx_chat_url, json=body) as response:
            for line in response.iter_lines():
                text = sse_texts(line)
                if text:
                    total += len(text)
        return total

    def chunks_httpx(self, tokens: int) -> list[str]:
        return self._hx_texts(tokens)

    # Unary chat: the completion's text.
    def chat_ik(self) -> str:
        return self.ik_chat.generate_text(prompt=PROMPT, max_tokens=CHAT_TOKENS).text

    def chat_openai(self) -> str:
        messages = [{"role": "user", "content": PROMPT}]
        out = self.oa_chat.chat.completions.create(
            model=self.target.chat_slug, messages=messages, max_tokens=CHAT_TOKENS
        )
        return out.choices[0].message.content or ""

    def chat_httpx(self) -> str:
        response = self.hx.post(self.hx_chat_url, json=chat_body(self.target.chat_slug, CHAT_TOKENS, False))
        response.raise_for_status()
        text: str = json.loads(response.content)["choices"][0]["message"]["content"]
        return text

    # Embeddings to lists: one list of floats per input.
    def lists_ik(self, texts: list[str]) -> list[list[float]]:
        return self.ik_embed.embed(input=texts).embeddings

    def lists_openai(self, texts: list[str]) -> list[list[float]]:
        out = self.oa_embed.embeddings.create(model=self.target.embed_slug, input=texts)
        return [item.embedding for item in out.data]

    def lists_openai_float(self, texts: list[str]) -> list[list[float]]:
        out = self.oa_embed.embeddings.create(model=self.target.embed_slug, input=texts, encoding_format="float")
        return [item.embedding for item in out.data]

    def _hx_embed(self, texts: list[str], encoding: str) -> list[dict[str, Any]]:
        body = {"model": self.target.embed_slug, "input": texts, "encoding_format": encoding}
        response = self.hx.post(self.hx_embed_url, json=body)
        response.raise_for_status()
        data: list[dict[str, Any]] = json.loads(response.content)["data"]
        return data

    def lists_httpx_float(self, texts: list[str]) -> list[list[float]]:
        return [item["embedding"] for item in sorted(self._hx_embed(texts, "float"), key=lambda i: i["index"])]

    def lists_httpx_b64(self, texts: list[str]) -> list[list[float]]:
        items = sorted(self._hx_embed(texts, "base64"), key=lambda i: i["index"])
        return [array.array("f", base64.b64decode(item["embedding"])).tolist() for item in items]

    # Embeddings to NumPy: one (n, dim) float32 matrix.
    def numpy_ik(self, texts: list[str]) -> numpy.ndarray:
        return sdk_matrix(self.ik_embed.embed(input=texts))

    def numpy_openai(self, texts: list[str]) -> numpy.ndarray:
        return float32(self.lists_openai(texts))

    def numpy_openai_float(self, texts: list[str]) -> numpy.ndarray:
        return float32(self.lists_openai_float(texts))

    def numpy_httpx_float(self, texts: list[str]) -> numpy.ndarray:
        return float32(self.lists_httpx_float(texts))

    def numpy_httpx_b64(self, texts: list[str]) -> numpy.ndarray:
        return b64_matrix(self._hx_embed(texts, "base64"))


class AsyncPeers:
    """The asyncio clients, one of each, to be used from one event loop."""

    def __init__(self, target: Target, connections: int = 1000) -> None:
        self.target = target
        self.ik = AsyncDataClient(base_url=target.url, project=target.project, api_key=target.api_key)
        self.ik_chat = self.ik.endpoint(target.chat_slug)
        key = target.api_key
        # openai's default pool (1,000 connections, 100 kept alive) and httpx's (100, 20) would cap or reopen
        # connections in the concurrent scenarios: both get the same explicit limits (the SDK's pool has none).
        limits = {"max_connections": connections, "max_keepalive_connections": connections}
        self.oa = openai.AsyncOpenAI(
            base_url=target.v1(target.chat_slug),
            api_key=key,
            max_retries=0,
            http_client=openai.DefaultAsyncHttpx2Client(limits=httpx2.Limits(**limits), timeout=120),
        )
        self.hx = httpx.AsyncClient(
            headers={"Authorization": f"Bearer {key}"}, timeout=120, limits=httpx.Limits(**limits)
        )
        self.hx_chat_url = target.v1(target.chat_slug) + "/chat/completions"

    async def close(self) -> None:
        await self.ik.close()
        await self.oa.close()
        await self.hx.aclose()

    async def stream_ik(self, tokens: int) -> int:
        total = 0
        async with await self.ik_chat.generate_text_stream(prompt=PROMPT, max_tokens=tokens) as stream:
            async for chunk in stream:
                total += len(chunk.text)
        return total

    async def stream_ik_raw(self, tokens: int) -> int:
        total = 0
        async with await self.ik_chat.generate_text_stream(prompt=PROMPT, max_tokens=tokens) as stream:
            async for chunk in stream:
                if len(chunk.raw) > 0:
                    total += len(chunk.text)
        return total

    async def chunks_ik(self, tokens: int) -> list[str]:
        async with await self.ik_chat.generate_text_stream(prompt=PROMPT, max_tokens=tokens) as stream:
            return [chunk.text async for chunk in stream if chunk.text]

    async def _oa_stream(self, tokens: int) -> Any:
        messages = [{"role": "user", "content": PROMPT}]
        return await self.oa.chat.completions.create(
            model=self.target.chat_slug, messages=messages, stream=True, max_tokens=tokens
        )

    async def stream_openai(self, tokens: int) -> int:
        total = 0
        async for c in await self._oa_stream(tokens):
            if c.choices:
                total += len(c.choices[0].delta.content or "")
        return total

    async def chunks_openai(self, tokens: int) -> list[str]:
        texts = []
        async for c in await self._oa_stream(tokens):
            if c.choices and c.choices[0].delta.content:
                texts.append(c.choices[0].delta.content)
        return texts

    async def stream_httpx(self, tokens: int) -> int:
        total = 0
        body = chat_body(self.target.chat_slug, tokens, True)
        async with self.hx.stream("POST", self.hx_chat_url, json=body) as response:
            async for line in response.aiter_lines():
                text = sse_texts(line)
                if text:
                    total += len(text)
        return total

    async def chunks_httpx(self, tokens: int) -> list[str]:
        body = chat_body(self.target.chat_slug, tokens, True)
        async with self.hx.stream("POST", self.hx_chat_url, json=body) as response:
            response.raise_for_status()
            return [text async for line in response.aiter_lines() if (text := sse_texts(line))]

    async def chat_ik(self) -> str:
        return (await self.ik_chat.generate_text(prompt=PROMPT, max_tokens=CHAT_TOKENS)).text

    async def chat_openai(self) -> str:
        messages = [{"role": "user", "content": PROMPT}]
        out = await self.oa.chat.completions.create(
            model=self.target.chat_slug, messages=messages, max_tokens=CHAT_TOKENS
        )
        return out.choices[0].message.content or ""

    async def chat_httpx(self) -> str:
        body = chat_body(self.target.chat_slug, CHAT_TOKENS, False)
        response = await self.hx.post(self.hx_chat_url, json=body)
        response.raise_for_status()
        text: str = json.loads(response.content)["choices"][0]["message"]["content"]
        return text


async def gather_all(count: int, make: Any) -> list[Any]:
    """Run `make(i)` for i in range(count) as concurrent tasks; exceptions are returned, not raised."""
    return await asyncio.gather(*(make(i) for i in range(count)), return_exceptions=True)
