# Blocking calls run on the calling thread's own runtime, with one connection pool per thread: a stream opened on one
# thread is read from another, threads that exit leave no connection open, and a stream interrupted by Ctrl+C closes
# its connection at once.
from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psutil
import pytest
from conftest import ENDLESS_MS, HANG_GUARD, PROMPT, Admin, Deploy, LineReader, child_env
from test_stream import chat_streams, slow_endpoint, wait_for_disconnect

from inferencekey import DataClient, TextStream
from inferencekey.local import LocalPlatform


@contextlib.contextmanager
def child(platform: LocalPlatform, script: str, stdin: int) -> Iterator[tuple[subprocess.Popen[bytes], LineReader]]:
    """A Python child running `script` against the platform, and a reader of its output lines; killed (its pipes
    closed) when the block ends, however it ends."""
    with subprocess.Popen(
        [sys.executable, "-c", script], env=child_env(platform), stdin=stdin, stdout=subprocess.PIPE
    ) as proc:
        try:
            assert proc.stdout is not None
            yield proc, LineReader(proc.stdout.fileno())
        finally:
            proc.kill()


def connections_to(platform: LocalPlatform, pid: int | None = None) -> list[Any]:
    """The established TCP connections of this process (or of `pid`) to the platform."""
    port = int(platform.url.rsplit(":", 1)[1])
    return [
        c
        for c in psutil.Process(pid).net_connections(kind="tcp")
        if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED
    ]


def test_a_stream_opened_on_one_thread_is_read_on_another(deploy: Deploy) -> None:
    endpoint = slow_endpoint(deploy)
    expected = endpoint.generate_text(prompt=PROMPT, max_tokens=12).text
    opened: list[TextStream] = []
    # The opening thread has exited before the first chunk is read: its runtime is driven by the reader.
    opener = threading.Thread(target=lambda: opened.append(endpoint.generate_text_stream(prompt=PROMPT, max_tokens=12)))
    opener.start()
    opener.join(timeout=HANG_GUARD)
    with opened[0] as stream:
        assert "".join(chunk.text for chunk in stream) == expected


def test_a_stream_is_closed_from_another_thread(deploy: Deploy, admin: Admin) -> None:
    stream = slow_endpoint(deploy).generate_text_stream(prompt=PROMPT, max_tokens=60)
    next(stream)
    closer = threading.Thread(target=stream.close)
    closer.start()
    closer.join(timeout=HANG_GUARD)
    wait_for_disconnect(admin)


def test_threads_share_one_client_and_new_threads_reuse_the_connections_of_old_ones(
    platform: LocalPlatform, deploy: Deploy, data: DataClient, admin: Admin
) -> None:
    endpoint = deploy()
    expected = endpoint.generate_text(prompt=PROMPT, max_tokens=8).text
    seen = {c.laddr.port for c in connections_to(platform)}
    kept = len(seen)

    def calls(_: int) -> list[str]:
        texts = [endpoint.generate_text(prompt=PROMPT, max_tokens=8).text for _ in range(3)]
        with endpoint.generate_text_stream(prompt=PROMPT, max_tokens=8) as stream:
            texts.append("".join(chunk.text for chunk in stream))
        return texts

    for _ in range(3):  # three pools of threads, one after another
        with ThreadPoolExecutor(8) as pool:
            results = [text for texts in pool.map(calls, range(16)) for text in texts]
        assert results == [expected] * 64
        seen |= {c.laddr.port for c in connections_to(platform)}
    # Unary calls and streams share one pool of direct connections (at most one per thread in flight: 8): the later
    # rounds opened none, where a connection per thread and round would have opened 24.
    assert len(seen) <= kept + 8, seen
    assert len(chat_streams(admin.journal())) == 48


INTERRUPTED_STREAM = """
import os, signal, threading, time
from inferencekey import DataClient
endpoint = DataClient.from_env().endpoint("support-bot")
stream = endpoint.generate_text_stream(prompt="hello", max_tokens=60)
next(stream)
threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
try:
    for _ in stream:
        pass
except KeyboardInterrupt:
    print("interrupted", flush=True)
time.sleep(60)
"""


def ctrl_c_mid_stream_closes_the_connection(platform: LocalPlatform, deploy: Deploy, admin: Admin, script: str) -> None:
    """Run `script` in a child: it opens a stream whose events stall after the first chunks, reads on, interrupts
    itself with Ctrl+C and prints "interrupted", then sleeps holding the stream. The interrupt must close the
    connection at once, the child living on."""
    slow_endpoint(deploy)
    # The stream stalls after its first chunks, so the interrupt lands while the read waits for more.
    admin.fault("chat_stream", {"type": "stall", "at": "mid_stream", "ms": ENDLESS_MS})
    with child(platform, script, stdin=subprocess.DEVNULL) as (proc, lines):
        assert lines.line(timeout=HANG_GUARD) == "interrupted"
        # The child lives on (sleeping, making no call, its stream object still referenced): the connection closed
        # when the interrupt dropped the read.
        wait_for_disconnect(admin)
        assert proc.poll() is None


@pytest.mark.skipif(sys.platform == "win32", reason="sends SIGINT to itself: POSIX only")
def test_ctrl_c_mid_stream_closes_the_connection_at_once(platform: LocalPlatform, deploy: Deploy, admin: Admin) -> None:
    ctrl_c_mid_stream_closes_the_connection(platform, deploy, admin, INTERRUPTED_STREAM)


INTERRUPTED_CALL = """
import os, signal, sys, threading, time
from inferencekey import DataClient
endpoint = DataClient.from_env().endpoint("support-bot")
print(endpoint.generate_text(prompt="hello", max_tokens=4).text != "", flush=True)
sys.stdin.readline()
threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
try:
    endpoint.generate_text(prompt="hello", max_tokens=4)
except KeyboardInterrupt:
    print("interrupted", flush=True)
time.sleep(60)
"""


def ctrl_c_during_a_stalled_call_closes_its_connection(platform: LocalPlatform, admin: Admin, script: str) -> None:
    """Run `script` in a child: its first call answers (it prints "True"); after a line on stdin it interrupts itself
    with Ctrl+C during a second call, which stalls before its answer, prints "interrupted" and sleeps. The interrupt
    must close that call's connection, the child living on."""
    with child(platform, script, stdin=subprocess.PIPE) as (proc, lines):
        assert proc.stdin is not None
        # The first call answers, and its connection is kept for the next one, which stalls before its answer.
        assert lines.line(timeout=HANG_GUARD) == "True"
        assert len(connections_to(platform, proc.pid)) == 1
        admin.fault("chat", {"type": "stall", "at": "headers", "ms": ENDLESS_MS})
        proc.stdin.write(b"go\n")
        proc.stdin.flush()
        assert lines.line(timeout=HANG_GUARD) == "interrupted"
        # The child lives on, making no call: the interrupt closed the stalled request's connection.
        assert proc.poll() is None
        assert connections_to(platform, proc.pid) == []


@pytest.mark.skipif(sys.platform == "win32", reason="sends SIGINT to itself: POSIX only")
def test_ctrl_c_during_a_stalled_call_closes_its_connection_at_once(
    platform: LocalPlatform, deploy: Deploy, admin: Admin
) -> None:
    deploy()
    ctrl_c_during_a_stalled_call_closes_its_connection(platform, admin, INTERRUPTED_CALL)


def test_sync_streams_read_to_their_end_leave_their_connection_for_the_next_call(
    platform: LocalPlatform, deploy: Deploy
) -> None:
    endpoint = deploy()
    expected = endpoint.generate_text(prompt=PROMPT, max_tokens=12).text
    kept = {c.laddr.port for c in connections_to(platform)}
    ports = set(kept)
    for _ in range(50):
        with endpoint.generate_text_stream(prompt=PROMPT, max_tokens=12) as stream:
            assert "".join(chunk.text for chunk in stream) == expected
        assert endpoint.generate_text(prompt=PROMPT, max_tokens=12).text == expected
        ports |= {c.laddr.port for c in connections_to(platform)}
    # The end of each stream's body was read with its last event, so streams and calls took turns on the connection
    # the first call kept (a connection per stream would have opened 50; one more is allowed for a body's end that
    # had not arrived yet when the last event was read).
    assert len(ports - kept) <= 1, ports - kept
