"""The lean peers of the per-request scenarios (issue 16): what a caller who wants the least per-request cost writes
by hand. Each sends the same chat request as the SDK and reads only the completion's text (unary) or each chunk's
delta text (streams), with `orjson` for the JSON.

- `RawSocket`: about 60 lines of Python on one keep-alive socket: the request bytes built once, `sendall`, `recv`,
  the status line checked, `content-length` or chunked framing parsed by hand: the floor of what a Python client
  can spend per request.
- `AsyncRawSocket`: the same request and parsing with the I/O through the running asyncio loop (`sock_sendall`,
  `sock_recv` on one nonblocking socket, so one request in flight): the floor of what an asyncio client can spend.
- `pyreqwest` (a generic Rust-backed HTTP client, reqwest inside) + `orjson`, sync and async.
- `aiohttp` + `orjson`, async.
"""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson
from peers import CHAT_TOKENS, Target, chat_body
from pyreqwest.client import ClientBuilder, SyncClientBuilder


def delta_text(event: bytes) -> str | None:
    """The delta text of one SSE event (`data: {...}`); `None` for `[DONE]` and events without text."""
    if not event.startswith(b"data:"):
        return None
    data = event[5:].strip()
    if data == b"[DONE]":
        return None
    choices = orjson.loads(data)["choices"]
    return (choices[0]["delta"].get("content") or "") if choices else None


def split_events(buffer: bytes) -> tuple[list[bytes], bytes]:
    """The complete SSE events at the start of `buffer`, and the rest."""
    *events, rest = buffer.split(b"\n\n")
    return events, rest


class RawSocket:
    """HTTP/1.1 on one keep-alive socket, by hand. Reconnects when the platform closes the connection."""

    def __init__(self, target: Target) -> None:
        parts = urlsplit(target.url)
        self.address = (parts.hostname or "127.0.0.1", parts.port or 80)
        path = urlsplit(target.v1(target.chat_slug)).path + "/chat/completions"
        head = f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nAuthorization: Bearer {target.api_key}\r\n"
        head += "Content-Type: application/json\r\n"

        def request(stream: bool, tokens: int) -> bytes:
            body = orjson.dumps(chat_body(target.chat_slug, tokens, stream))
            return f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body

        self.request = request
        self.unary_request = request(False, CHAT_TOKENS)
        self.sock: socket.socket | None = None
        self.buffer = b""

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def _send(self, data: bytes) -> None:
        if self.sock is None:
            self.sock = socket.create_connection(self.address)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.buffer = b""
        self.sock.sendall(data)

    def _fill(self) -> None:
        assert self.sock is not None
        more = self.sock.recv(262144)
        if not more:
            self.close()
            raise ConnectionError("the platform closed the connection")
        self.buffer += more

    def _head(self) -> dict[bytes, bytes]:
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            self._fill()
        lines = self.buffer[:end].split(b"\r\n")
        self.buffer = self.buffer[end + 4 :]
        if not lines[0].startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"unexpected answer: {lines[0]!r}")
        return dict(line.lower().split(b": ", 1) for line in lines[1:])

    def _exactly(self, n: int) -> bytes:
        while len(self.buffer) < n:
            self._fill()
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def _chunks(self) -> Any:
        """The chunks of a chunked body, as they arrive."""
        while True:
            while (end := self.buffer.find(b"\r\n")) < 0:
                self._fill()
            size = int(self.buffer[:end], 16)
            self.buffer = self.buffer[end + 2 :]
            data = self._exactly(size + 2)[:-2]
            if size == 0:
                return
            yield data

    def chat(self) -> str:
        self._send(self.unary_request)
        headers = self._head()
        body = self._exactly(int(headers[b"content-length"]))
        text: str = orjson.loads(body)["choices"][0]["message"]["content"]
        return text

    def stream_texts(self, tokens: int) -> list[str]:
        """The delta texts of one stream (empty ones included), read as they arrive."""
        self._send(self.request(True, tokens))
        headers = self._head()
        assert headers.get(b"transfer-encoding") == b"chunked", headers
        texts: list[str] = []
        pending = b""
        for chunk in self._chunks():
            events, pending = split_events(pending + chunk)
            texts.extend(t for t in map(delta_text, events) if t is not None)
        return texts

    def stream(self, tokens: int) -> int:
        return sum(map(len, self.stream_texts(tokens)))

    def first_chunk(self, tokens: int) -> float:
        """Seconds from the call to the first non-empty delta text; the rest of the stream is read too."""
        started = time.perf_counter()
        self._send(self.request(True, tokens))
        self._head()
        first = 0.0
        pending = b""
        for chunk in self._chunks():
            events, pending = split_events(pending + chunk)
            for text in map(delta_text, events):
                if text and not first:
                    first = time.perf_counter() - started
        return first


class AsyncRawSocket:
    """`RawSocket`'s unary request through the running loop: one connection, one request in flight."""

    def __init__(self, target: Target) -> None:
        self.address = RawSocket(target).address
        self.unary_request = RawSocket(target).unary_request
        self.sock: socket.socket | None = None

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    async def chat(self) -> str:
        loop = asyncio.get_running_loop()
        if self.sock is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await loop.sock_connect(sock, self.address)
            self.sock = sock
        await loop.sock_sendall(self.sock, self.unary_request)
        buffer = b""
        while (end := buffer.find(b"\r\n\r\n")) < 0:
            buffer += await self._recv(loop)
        lines = buffer[:end].split(b"\r\n")
        if not lines[0].startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"unexpected answer: {lines[0]!r}")
        headers = dict(line.lower().split(b": ", 1) for line in lines[1:])
        length = int(headers[b"content-length"])
        while len(buffer) < end + 4 + length:
            buffer += await self._recv(loop)
        text: str = orjson.loads(buffer[end + 4 : end + 4 + length])["choices"][0]["message"]["content"]
        return text

    async def _recv(self, loop: asyncio.AbstractEventLoop) -> bytes:
        assert self.sock is not None
        more = await loop.sock_recv(self.sock, 262144)
        if not more:
            self.close()
            raise ConnectionError("the platform closed the connection")
        return more


class SyncReqwest:
    """`pyreqwest`'s `SyncClient` (its default single-threaded runtime) + `orjson`."""

    def __init__(self, target: Target) -> None:
        self.client = SyncClientBuilder().build()
        self.url = target.v1(target.chat_slug) + "/chat/completions"
        self.auth = f"Bearer {target.api_key}"
        self.slug = target.chat_slug

    def close(self) -> None:
        self.client.close()

    def _post(self, stream: bool, tokens: int) -> Any:
        body = orjson.dumps(chat_body(self.slug, tokens, stream))
        builder = self.client.post(self.url).header("Authorization", self.auth)
        return builder.header("Content-Type", "application/json").body_bytes(body)

    def chat(self) -> str:
        response = self._post(False, CHAT_TOKENS).build().send()
        text: str = orjson.loads(memoryview(response.bytes()))["choices"][0]["message"]["content"]
        return text

    def stream(self, tokens: int) -> int:
        total = 0
        pending = b""
        with self._post(True, tokens).build_streamed() as response:
            reader = response.body_reader
            while (chunk := reader.read_chunk()) is not None:
                events, pending = split_events(pending + bytes(chunk))
                total += sum(len(t) for t in map(delta_text, events) if t)
        return total


class AsyncReqwest:
    """`pyreqwest`'s async `Client` + `orjson`."""

    def __init__(self, target: Target) -> None:
        self.client = ClientBuilder().build()
        self.url = target.v1(target.chat_slug) + "/chat/completions"
        self.auth = f"Bearer {target.api_key}"
        self.slug = target.chat_slug

    async def close(self) -> None:
        await self.client.close()

    def _post(self, stream: bool, tokens: int) -> Any:
        body = orjson.dumps(chat_body(self.slug, tokens, stream))
        builder = self.client.post(self.url).header("Authorization", self.auth)
        return builder.header("Content-Type", "application/json").body_bytes(body)

    async def chat(self) -> str:
        response = await self._post(False, CHAT_TOKENS).build().send()
        text: str = orjson.loads(memoryview(await response.bytes()))["choices"][0]["message"]["content"]
        return text

    async def stream(self, tokens: int) -> int:
        total = 0
        pending = b""
        async with self._post(True, tokens).build_streamed() as response:
            reader = response.body_reader
            while (chunk := await reader.read_chunk()) is not None:
                events, pending = split_events(pending + bytes(chunk))
                total += sum(len(t) for t in map(delta_text, events) if t)
        return total


class AsyncAiohttp:
    """`aiohttp.ClientSession` (no connection limit, like the SDK's pool) + `orjson`. Made inside the event loop."""

    def __init__(self, target: Target) -> None:
        self.session = aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {target.api_key}", "Content-Type": "application/json"},
            connector=aiohttp.TCPConnector(limit=0),
        )
        self.url = target.v1(target.chat_slug) + "/chat/completions"
        self.slug = target.chat_slug
        self.unary_body = orjson.dumps(chat_body(self.slug, CHAT_TOKENS, False))

    async def close(self) -> None:
        await self.session.close()

    async def chat(self) -> str:
        async with self.session.post(self.url, data=self.unary_body) as response:
            response.raise_for_status()
            text: str = orjson.loads(await response.read())["choices"][0]["message"]["content"]
            return text

    async def stream(self, tokens: int) -> int:
        total = 0
        pending = b""
        async with self.session.post(self.url, data=orjson.dumps(chat_body(self.slug, tokens, True))) as response:
            response.raise_for_status()
            async for chunk in response.content.iter_any():
                events, pending = split_events(pending + chunk)
                total += sum(len(t) for t in map(delta_text, events) if t)
        return total
