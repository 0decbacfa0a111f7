"""Testing an application against the local platform: ``LocalAdmin`` drives its admin API (fault rules, readiness
profiles, engine settings, extra tokens, the request journal) with plain Python methods.

The pytest plugin (``inferencekey.pytest_plugin``, loaded automatically when this package is installed) hands one to
each test as the ``inferencekey_local`` fixture, on a platform reset before the test::

    def test_my_app_retries_on_429(inferencekey_local, inferencekey_env):
        inferencekey_local.create_workload("support-bot")
        inferencekey_local.fail_next("chat", 429, times=2, retry_after=0)
        assert my_app.answer("Hola")                     # uses DataClient.from_env()
        assert [e["status"] for e in inferencekey_local.requests("chat")] == [429, 429, 200]
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from inferencekey.local import LocalPlatform

__all__ = ["ROUTES", "LocalAdmin"]

Entry = dict[str, Any]

# The platform routes a fault rule or a journal filter can name, and the path each ends with.
ROUTES: dict[str, str] = {
    "chat": "/chat/completions",
    "chat_stream": "/chat/completions",
    "embeddings": "/embeddings",
    "rerank": "/rerank",
    "readiness": "/readiness-events",
}


# The admin API is on loopback: never through a proxy, whatever HTTP_PROXY says (urllib would honour it).
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class LocalAdmin:
    """The admin API (``/_local/``) of a running ``LocalPlatform``, on the standard library only.

    Every method is one or two HTTP calls; a refused call raises ``AssertionError`` with the platform's answer.
    """

    def __init__(self, platform: LocalPlatform) -> None:
        self.platform = platform
        self.url = platform.url
        self._token = platform.admin_token

    def __repr__(self) -> str:
        return f"{type(self).__name__}(url={self.url!r})"

    # --- the raw API ---------------------------------------------------------------------------------------------

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """Send one admin request and return its decoded JSON answer (None for an empty one)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self._token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with _DIRECT.open(request, timeout=10) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as err:
            status, raw = err.code, err.read()
        answer = json.loads(raw) if raw else None
        if status >= 400:
            raise AssertionError(f"admin {method} {path} -> {status}: {answer!r}")
        return answer

    def reset(self) -> None:
        """Drop workloads, extra tokens, faults, the journal and default settings."""
        self.call("POST", "/_local/reset")

    def fault(self, route: str, fault: dict[str, Any], **rule: Any) -> str:
        """Install one fault rule (``route``, the ``fault`` object, and ``count``/``probability``/``workload``) and
        return its id. See the local platform's documentation for every fault type."""
        answer: dict[str, str] = self.call("POST", "/_local/faults", {"route": route, "fault": fault, **rule})
        return answer["id"]

    def fired(self, fault_id: str) -> int:
        """How many times the fault rule ``fault_id`` fired."""
        rules: list[dict[str, Any]] = self.call("GET", "/_local/faults")
        for rule in rules:
            if rule.get("id") == fault_id:
                return int(rule["fired"])
        raise AssertionError(f"no fault rule {fault_id} in {rules!r}")

    def clear_faults(self) -> None:
        """Remove every fault rule."""
        self.call("DELETE", "/_local/faults")

    def defaults(self, **settings: Any) -> None:
        """Engine settings for workloads created from now on (``readiness``, ``ttft_ms``, ``embedding_dim``...)."""
        self.call("PUT", "/_local/defaults", settings)

    def settings(self, slug: str, project: str | None = None, **settings: Any) -> None:
        """Engine settings of one existing workload (a new ``readiness`` profile restarts its readiness)."""
        project = project or self.platform.project
        self.call("PUT", f"/_local/projects/{project}/workloads/{slug}/settings", settings)

    def token(self, kind: str, project: str | None = None, **extra: Any) -> str:
        """Mint an extra ``ik_sdk_`` (``kind="sdk"``, ``scopes=[...]``) or ``ik_live_`` (``kind="live"``,
        ``workload=...``) token."""
        body = {"kind": kind, "project": project or self.platform.project, **extra}
        answer: dict[str, str] = self.call("POST", "/_local/tokens", body)
        return answer["token"]

    def project(self, slug: str) -> None:
        """Create an extra project."""
        self.call("POST", "/_local/projects", {"slug": slug})

    def journal(self) -> list[Entry]:
        """Every non-admin request the platform saw, oldest first (method, path, redacted headers, body, status,
        outcome, fault, timings)."""
        result: list[Entry] = self.call("GET", "/_local/journal")
        return result

    def clear_journal(self) -> None:
        """Forget the requests seen so far."""
        self.call("DELETE", "/_local/journal")

    # --- what a test usually says ---------------------------------------------------------------------------------

    def create_workload(
        self, slug: str, *, backend: str = "vllm", task_type: str = "text2text", model: str = "test/model"
    ) -> None:
        """Create (or keep) a workload ``slug`` that is ready at once: readiness ``immediate`` for it."""
        from inferencekey._management import ManagementClient
        from inferencekey.types import WorkloadSpec

        spec = WorkloadSpec(name=slug, slug=slug, model=model, backend=backend, task_type=task_type)
        with ManagementClient(
            base_url=self.url, sdk_token=self.platform.sdk_token, project=self.platform.project
        ) as client:
            client.ensure(spec)
        self.readiness(slug, "immediate")

    def fail_next(
        self,
        route: str,
        status: int,
        *,
        times: int | None = 1,
        retry_after: float | None = None,
        body: Any = None,
        workload: str | None = None,
    ) -> str:
        """The next ``times`` requests of ``route`` (``chat``, ``chat_stream``, ``embeddings``, ``rerank``, ``list``,
        ``create``, ``patch``, ``delete``, ``readiness`` or ``*``) answer ``status``, with ``Retry-After`` and a JSON
        ``body`` when given; ``times=None`` never stops. Returns the rule's id."""
        fault: dict[str, Any] = {"type": "status", "status": status}
        if retry_after is not None:
            fault["retry_after"] = retry_after
        if body is not None:
            fault["body"] = body
        return self.fault(route, fault, count=times, **_narrowed(workload))

    def drop_next(self, route: str, *, times: int | None = 1, workload: str | None = None) -> str:
        """The next ``times`` requests of ``route`` get their connection closed with no response."""
        return self.fault(route, {"type": "reset"}, count=times, **_narrowed(workload))

    def stall_next(self, route: str, ms: int, *, times: int | None = 1, workload: str | None = None) -> str:
        """The next ``times`` requests of ``route`` wait ``ms`` before their response starts."""
        return self.fault(route, {"type": "stall", "at": "headers", "ms": ms}, count=times, **_narrowed(workload))

    def readiness(self, slug: str, profile: str, *, error_message: str | None = None) -> None:
        """Restart ``slug``'s readiness with ``profile``: ``immediate``, ``fast`` (every phase in ~300 ms),
        ``realistic`` (~5 s), ``stuck`` (never leaves provisioning), ``error`` or ``flapping``."""
        settings: dict[str, Any] = {"readiness": profile}
        if error_message is not None:
            settings["error_message"] = error_message
        self.settings(slug, **settings)

    def fail_readiness(self, slug: str, message: str = "CUDA out of memory") -> None:
        """``slug``'s readiness goes through scheduling and provisioning, then fails while loading the model
        (after ``model_load``) with ``message``: ``wait_until_ready`` raises ``ApiError``."""
        self.readiness(slug, "error", error_message=message)

    def requests(self, route: str | None = None, *, method: str | None = None) -> list[Entry]:
        """The journal's requests, optionally only those of ``route`` (``chat``, ``chat_stream``, ``embeddings``,
        ``rerank``, ``readiness``) and of one HTTP ``method``."""
        entries = self.journal()
        if route is not None:
            suffix = ROUTES.get(route)
            if suffix is None:
                raise ValueError(f"route must be one of {', '.join(ROUTES)}; got {route!r}")
            entries = [e for e in entries if e["path"].endswith(suffix)]
            if route in ("chat", "chat_stream"):
                streamed = route == "chat_stream"
                entries = [
                    e for e in entries if isinstance(e["body"], dict) and bool(e["body"].get("stream")) == streamed
                ]
        if method is not None:
            entries = [e for e in entries if e["method"] == method]
        return entries

    def wait_journal(self, predicate: Callable[[list[Entry]], bool], timeout: float = 30.0) -> list[Entry]:
        """Poll the journal until ``predicate`` holds (a streamed request is completed asynchronously)."""
        deadline = time.monotonic() + timeout
        while True:
            entries = self.journal()
            if predicate(entries):
                return entries
            if time.monotonic() > deadline:
                seen = [(e["method"], e["path"], e.get("status"), e.get("outcome")) for e in entries]
                raise AssertionError(f"journal never matched within {timeout} s: {seen}")
            time.sleep(0.05)


def _narrowed(workload: str | None) -> dict[str, Any]:
    return {} if workload is None else {"workload": workload}


def _is_stream(entry: Entry) -> bool:
    body = entry["body"]
    return isinstance(body, dict) and bool(body.get("stream"))
