# Shared fixtures: one local platform per test session, reset before every test, and an admin client for it.
# Tests talk to it over real HTTP; the admin API shapes its behaviour and its journal shows what went over the wire.
from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from inferencekey import DataClient, ManagementClient
from inferencekey.local import LocalPlatform


class Admin:
    """A small client of the local platform's admin API (`/_local/`), on the standard library only."""

    def __init__(self, platform: LocalPlatform) -> None:
        self.platform = platform
        self.url = platform.url
        self.token = platform.admin_token

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """Send one admin request and return its decoded JSON answer (None for an empty one)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                raw = response.read()
        except urllib.error.HTTPError as err:  # pragma: no cover - a broken admin call is a test bug
            raise AssertionError(f"admin {method} {path} -> {err.code}: {err.read()!r}") from err
        return json.loads(raw) if raw else None

    def reset(self) -> None:
        """Drop workloads, extra tokens, faults, the journal and defaults."""
        self.call("POST", "/_local/reset")

    def journal(self) -> list[dict[str, Any]]:
        """Every non-admin request the platform saw, oldest first."""
        result: list[dict[str, Any]] = self.call("GET", "/_local/journal")
        return result

    def clear_journal(self) -> None:
        """Forget the requests seen so far."""
        self.call("DELETE", "/_local/journal")

    def fault(self, route: str, fault: dict[str, Any], **rule: Any) -> str:
        """Install one fault rule and return its id."""
        body = {"route": route, "fault": fault, **rule}
        answer: dict[str, str] = self.call("POST", "/_local/faults", body)
        return answer["id"]

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


@pytest.fixture(scope="session")
def platform() -> Iterator[LocalPlatform]:
    """One in-process local platform for the whole test session."""
    with LocalPlatform() as lp:
        yield lp


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
    monkeypatch.setenv("INFERENCEKEY_BASE_URL", platform.url)
    monkeypatch.setenv("INFERENCEKEY_PROJECT", platform.project)
    monkeypatch.setenv("INFERENCEKEY_SDK_TOKEN", platform.sdk_token)
    monkeypatch.setenv("INFERENCEKEY_API_KEY", platform.api_key)
    return platform


@pytest.fixture
def mgmt(platform: LocalPlatform, admin: Admin) -> Iterator[ManagementClient]:
    """A management client on the default project, with fast retries."""
    client = ManagementClient(base_url=platform.url, sdk_token=platform.sdk_token, project=platform.project)
    yield client
    client.close()


@pytest.fixture
def data(platform: LocalPlatform, admin: Admin) -> Iterator[DataClient]:
    """A data client on the default project with the default ik_live_ key."""
    client = DataClient(base_url=platform.url, project=platform.project, api_key=platform.api_key)
    yield client
    client.close()
