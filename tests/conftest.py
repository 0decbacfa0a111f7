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
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from inferencekey import Backend, DataClient, Endpoint, ManagementClient, WorkloadSpec
from inferencekey.local import LocalPlatform

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


class Admin:
    """A small client of the local platform's admin API (`/_local/`), on the standard library only."""

    def __init__(self, platform: LocalPlatform) -> None:
        self.platform = platform
        self.url = platform.url
        self.admin_token = platform.admin_token

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """Send one admin request and return its decoded JSON answer (None for an empty one)."""
        status, _, answer = http_json(method, self.url + path, self.admin_token, body)
        if status >= 400:
            raise AssertionError(f"admin {method} {path} -> {status}: {answer!r}")
        return answer

    def reset(self) -> None:
        """Drop workloads, extra tokens, faults, the journal and defaults."""
        self.call("POST", "/_local/reset")

    def journal(self) -> list[Entry]:
        """Every non-admin request the platform saw, oldest first."""
        result: list[Entry] = self.call("GET", "/_local/journal")
        return result

    def clear_journal(self) -> None:
        """Forget the requests seen so far."""
        self.call("DELETE", "/_local/journal")

    def calls(self) -> list[tuple[str, str]]:
        """The journal as (method, path) pairs."""
        return [(entry["method"], entry["path"]) for entry in self.journal()]

    def only(self, method: str, path: str) -> dict[str, Any]:
        """The body of the journal's only request, which must be `method path`."""
        entries = self.journal()
        assert [(e["method"], e["path"]) for e in entries] == [(method, path)], summarise(entries)
        body: dict[str, Any] = entries[0]["body"]
        return body

    def requests(self, method: str, path_suffix: str = "") -> list[Entry]:
        """The journal entries of one method whose path ends with `path_suffix`."""
        return [e for e in self.journal() if e["method"] == method and e["path"].endswith(path_suffix)]

    def wait_journal(self, predicate: Callable[[list[Entry]], bool], timeout: float = HANG_GUARD) -> list[Entry]:
        """Poll the journal until `predicate` holds (entries of streams are completed asynchronously)."""
        deadline = time.monotonic() + timeout
        while True:
            entries = self.journal()
            if predicate(entries):
                return entries
            if time.monotonic() > deadline:
                raise AssertionError(f"journal never matched within {timeout} s: {summarise(entries)}")
            time.sleep(0.05)

    def fault(self, route: str, fault: dict[str, Any], **rule: Any) -> str:
        """Install one fault rule and return its id."""
        body = {"route": route, "fault": fault, **rule}
        answer: dict[str, str] = self.call("POST", "/_local/faults", body)
        return answer["id"]

    def fired(self, fault_id: str) -> int:
        """How many times the fault rule `fault_id` fired."""
        rules: list[dict[str, Any]] = self.call("GET", "/_local/faults")
        for rule in rules:
            if rule.get("id") == fault_id:
                return int(rule["fired"])
        raise AssertionError(f"no fault rule {fault_id} in {rules!r}")

    def defaults(self, **settings: Any) -> None:
        """Engine settings for workloads created from now on."""
        self.call("PUT", "/_local/defaults", settings)

    def settings(self, slug: str, project: str | None = None, **settings: Any) -> None:
        """Engine settings of one existing workload."""
        project = project or self.platform.project
        self.call("PUT", f"/_local/projects/{project}/workloads/{slug}/settings", settings)

    def token(self, kind: str, project: str | None = None, **extra: Any) -> str:
        """Mint an extra ik_sdk_ (kind="sdk", scopes=[...]) or ik_live_ (kind="live", workload=...) token."""
        body = {"kind": kind, "project": project or self.platform.project, **extra}
        answer: dict[str, str] = self.call("POST", "/_local/tokens", body)
        return answer["token"]

    def project(self, slug: str) -> None:
        """Create an extra project."""
        self.call("POST", "/_local/projects", {"slug": slug})


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
def platform() -> Iterator[LocalPlatform]:
    """One in-process local platform for the whole test session."""
    with LocalPlatform(project=PROJECT) as lp:
        yield lp


@pytest.fixture(autouse=True)
def no_inferencekey_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests start without INFERENCEKEY_ variables, whatever the shell running pytest has set."""
    for name in ("INFERENCEKEY_BASE_URL", "INFERENCEKEY_PROJECT", "INFERENCEKEY_SDK_TOKEN", "INFERENCEKEY_API_KEY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def admin(platform: LocalPlatform) -> Admin:
    """The admin client, with the platform reset to a clean state (readiness `immediate` by default)."""
    client = Admin(platform)
    client.reset()
    client.defaults(readiness="immediate")
    return client


@pytest.fixture
def env(platform: LocalPlatform, monkeypatch: pytest.MonkeyPatch) -> LocalPlatform:
    """The four INFERENCEKEY_ variables pointing at the local platform."""
    for name, value in platform.env.items():
        monkeypatch.setenv(name, value)
    return platform


@pytest.fixture
def mgmt(platform: LocalPlatform, admin: Admin) -> Iterator[ManagementClient]:
    """A management client on the default project."""
    client = ManagementClient(base_url=platform.url, sdk_token=platform.sdk_token, project=platform.project)
    yield client
    client.close()


@pytest.fixture
def data(platform: LocalPlatform, admin: Admin) -> Iterator[DataClient]:
    """A data client on the default project with the default ik_live_ key."""
    client = DataClient(base_url=platform.url, project=platform.project, api_key=platform.api_key)
    yield client
    client.close()


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
