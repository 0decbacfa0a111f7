# Shared fixtures and helpers of the suite: one local platform per session, reset before every test, its admin client
# (journal, faults, settings, tokens), spec builders, raw HTTP, subprocess helpers and the token-leak check.
from __future__ import annotations

import json
import math
import os
import select
import socket
import subprocess
import sys
import time
import traceback
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

from inferencekey import Backend, DataClient, Endpoint, ManagementClient, WorkloadSpec
from inferencekey.local import LocalPlatform
from inferencekey.testing import LocalAdmin

PROJECT = "local"
ELLIPSIS = "\u2026"
ALL_SCOPES = ["workload:read", "workload:write", "workload:delete", "assignment:write"]
STREAM_BACKENDS = ["vllm", "llamacpp", "ollama", "sglang"]
PHASES = ["scheduling", "provisioning", "bootstrapping", "ready"]
MODEL = "meta-llama/Llama-3.1-8B-Instruct"
PROMPT = "Cuéntame algo sobre el café de Japón"
BOGUS_SDK_TOKEN = "ik_sdk_deadbeef_" + "ab" * 32
BOGUS_LIVE_KEY = "ik_live_deadbeef_" + "cd" * 32
WORKLOADS_PATH = f"/api/projects/{PROJECT}/workloads"
# Bounds a wait that must end by itself (a deadline, an error, an interrupt, a closed connection). Only a hang, or a
# wait for something minutes away, runs into it, never a slow machine; tests assert behaviour, not speed.
HANG_GUARD = 30.0
# A stall no test outlives: only the client going away (or a deadline, or a timeout) can end a request it holds.
ENDLESS_MS = 600_000

Entry = dict[str, Any]


class Admin(LocalAdmin):
    """The plugin's ``LocalAdmin`` (``inferencekey.testing``) with this suite's shorthands."""

    def calls(self) -> list[tuple[str, str]]:
        """The journal as (method, path) pairs."""
        return [(entry["method"], entry["path"]) for entry in self.journal()]

    def only(self, method: str, path: str) -> dict[str, Any]:
        """The body of the journal's only request, which must be `method path`."""
        entries = self.journal()
        assert [(e["method"], e["path"]) for e in entries] == [(method, path)], summarise(entries)
        body: dict[str, Any] = entries[0]["body"]
        return body

    def requests(self, method: str, path_suffix: str = "") -> list[Entry]:  # type: ignore[override]
        """The journal entries of one method whose path ends with `path_suffix`."""
        return [e for e in self.journal() if e["method"] == method and e["path"].endswith(path_suffix)]


def summarise(entries: list[Entry]) -> list[tuple[Any, ...]]:
    """A short view of journal entries for assertion messages."""
    return [(e["method"], e["path"], e.get("status"), e.get("outcome")) for e in entries]


def http_json(method: str, url: str, token: str | None, body: Any = None) -> tuple[int, dict[str, str], Any]:
    """One raw HTTP request outside the SDK: (status, lower-case headers, decoded JSON or text or None)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, headers, raw = response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        status, headers, raw = err.code, dict(err.headers), err.read()
    lower = {name.lower(): value for name, value in headers.items()}
    if not raw:
        return status, lower, None
    try:
        return status, lower, json.loads(raw)
    except ValueError:
        return status, lower, raw.decode()


def make_spec(**fields: Any) -> WorkloadSpec:
    """A valid spec for the workload `support-bot`, with `fields` overriding the defaults."""
    values: dict[str, Any] = {"name": "Support Bot", "slug": "support-bot", "model": MODEL, "backend": Backend.VLLM}
    values.update(fields)
    return WorkloadSpec(**values)


def management(
    platform: LocalPlatform, token: str | None = None, project: str = PROJECT, **options: Any
) -> ManagementClient:
    """A management client of the local platform with `token` (default: the platform's) and transport `options`."""
    return ManagementClient(base_url=platform.url, sdk_token=token or platform.sdk_token, project=project, **options)


def live_workload(mgmt: ManagementClient, slug: str = "support-bot") -> dict[str, Any]:
    """The live workload object named `slug` (through the SDK's list)."""
    matches = [w for w in mgmt.list_workloads() if w.get("slug") == slug]
    assert len(matches) == 1, f"expected one workload {slug!r}, got {matches!r}"
    return matches[0]


def redacted(token: str) -> str:
    """The documented redacted form of a token: prefix, the first 8 characters of its id, U+2026."""
    prefix = token[: token.index("_", 3) + 1]
    return token[: len(prefix) + 8] + ELLIPSIS


def secret_part(token: str) -> str:
    """The secret tail of a token (`ik_sdk_<id>_<secret>` -> `<secret>`)."""
    return token.rsplit("_", 1)[-1]


def assert_no_token(text: str, *tokens: str) -> None:
    """Neither a full token nor its secret appears in `text`."""
    for token in tokens:
        assert token not in text, f"full token leaked in: {text!r}"
        assert secret_part(token) not in text, f"token secret leaked in: {text!r}"


def exception_text(exc: BaseException) -> str:
    """Everything a user could see of an exception: str, repr, args and the formatted traceback."""
    formatted = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return "\n".join([str(exc), repr(exc), repr(exc.args), formatted])


def platform_tokens(platform: LocalPlatform) -> tuple[str, str, str]:
    """The three secrets of the local platform."""
    return platform.sdk_token, platform.api_key, platform.admin_token


def is_unit_vector(vector: list[float]) -> bool:
    """L2 norm 1 within float32 precision."""
    return math.isclose(math.sqrt(sum(x * x for x in vector)), 1.0, rel_tol=1e-5)


def unused_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def child_env(platform: LocalPlatform | None = None, **extra: str) -> dict[str, str]:
    """The environment for a child process: ours without INFERENCEKEY_/CI, plus the platform's variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFERENCEKEY_") and k != "CI"}
    if platform is not None:
        env.update(platform.env)
    env.update(extra)
    return env


def run_python(code: str, env: dict[str, str], timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh interpreter (ours) and return the finished process."""
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


class LineReader:
    """Reads whole lines from a file descriptor with a deadline (a child that never prints cannot hang the test)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = b""

    def line(self, timeout: float) -> str:
        """The next line, without its newline."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no full line within {timeout} s; got {self.buffer!r}")
            ready, _, _ = select.select([self.fd], [], [], remaining)
            if ready:
                chunk = os.read(self.fd, 65536)
                if not chunk:
                    raise AssertionError(f"end of output before a full line; got {self.buffer!r}")
                self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode()

    def rest(self, timeout: float) -> bytes:
        """Everything until end of file (or the deadline)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                continue
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:  # a pty whose other side closed reports EIO
                break
            if not chunk:
                break
            self.buffer += chunk
        rest, self.buffer = self.buffer, b""
        return rest


@pytest.fixture(scope="session")
def platform(inferencekey_platform: LocalPlatform) -> LocalPlatform:
    """The plugin's session platform (one in-process local platform for the whole run)."""
    assert inferencekey_platform.project == PROJECT
    return inferencekey_platform


@pytest.fixture(autouse=True)
def no_inferencekey_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests start without INFERENCEKEY_ variables, whatever the shell running pytest has set."""
    for name in ("INFERENCEKEY_BASE_URL", "INFERENCEKEY_PROJECT", "INFERENCEKEY_SDK_TOKEN", "INFERENCEKEY_API_KEY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def admin(inferencekey_local: LocalAdmin) -> Admin:
    """The plugin's admin fixture (the platform reset, new workloads ready at once), with the suite's shorthands."""
    return Admin(inferencekey_local.platform)


@pytest.fixture
def env(platform: LocalPlatform, inferencekey_env: dict[str, str]) -> LocalPlatform:
    """The plugin's four INFERENCEKEY_ variables pointing at the local platform."""
    return platform


@pytest.fixture
def mgmt(admin: Admin, inferencekey_management: ManagementClient) -> ManagementClient:
    """The plugin's management client on the default project."""
    return inferencekey_management


@pytest.fixture
def data(admin: Admin, inferencekey_data: DataClient) -> DataClient:
    """The plugin's data client on the default project with the default ik_live_ key."""
    return inferencekey_data


Deploy = Callable[..., Endpoint]


@pytest.fixture
def deploy(mgmt: ManagementClient, data: DataClient, admin: Admin) -> Deploy:
    """Create a workload (readiness immediate), apply engine settings, clear the journal, return its endpoint."""

    def make(
        slug: str = "support-bot", backend: str = "vllm", task_type: str | None = None, **settings: Any
    ) -> Endpoint:
        mgmt.ensure(make_spec(slug=slug, backend=backend, task_type=task_type))
        if settings:
            admin.settings(slug, **settings)
        admin.clear_journal()
        return data.endpoint(slug)

    return make
