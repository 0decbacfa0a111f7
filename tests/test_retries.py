# Transport retries and timeouts: which statuses and failures are retried for GET, DELETE and POST, Retry-After,
# max_retries, connection failures, and the idle-read timeout (ApiTimeoutError).
from __future__ import annotations

import time
from typing import Any

import pytest
from conftest import (
    ENDLESS_MS,
    HANG_GUARD,
    PROJECT,
    PROMPT,
    WORKLOADS_PATH,
    Admin,
    Deploy,
    make_spec,
    management,
    unused_port,
)

from inferencekey import (
    ApiConnectionError,
    ApiError,
    ApiTimeoutError,
    AuthError,
    InferenceKeyError,
    ManagementClient,
    PermissionDenied,
    ValidationError,
)
from inferencekey.local import LocalPlatform

CHAT_PATH = f"/endpoint/{PROJECT}/support-bot/v1/chat/completions"


def status_fault(status: int, retry_after: int | None = None) -> dict[str, Any]:
    """A `status` fault with a nested error body, and Retry-After when given."""
    fault: dict[str, Any] = {"type": "status", "status": status, "body": {"error": {"code": "f", "message": "fault"}}}
    if retry_after is not None:
        fault["retry_after"] = retry_after
    return fault


def statuses(admin: Admin, method: str, path: str) -> list[int]:
    """The statuses answered to `method path`, in order."""
    return [e["status"] for e in admin.journal() if e["method"] == method and e["path"] == path]


@pytest.mark.parametrize("status", [503, 429])
def test_get_is_retried_on_retry_after(platform: LocalPlatform, admin: Admin, status: int) -> None:
    admin.fault("list", status_fault(status, retry_after=0), count=2)
    assert management(platform).list_workloads() == []
    assert statuses(admin, "GET", WORKLOADS_PATH) == [status, status, 200]


@pytest.mark.parametrize("status", [502, 504, 408])
def test_get_is_retried_on_gateway_errors(platform: LocalPlatform, admin: Admin, status: int) -> None:
    admin.fault("list", status_fault(status))
    assert management(platform).list_workloads() == []
    assert statuses(admin, "GET", WORKLOADS_PATH) == [status, 200]


def test_retry_after_is_honoured(platform: LocalPlatform, admin: Admin) -> None:
    admin.fault("list", status_fault(429, retry_after=1))
    started = time.monotonic()
    management(platform).list_workloads()
    # Lower bounds: the client waited, and the platform saw the retry a second after the first attempt.
    assert time.monotonic() - started >= 0.95
    assert statuses(admin, "GET", WORKLOADS_PATH) == [429, 200]
    first, retry = admin.requests("GET", WORKLOADS_PATH)
    assert retry["started_ms"] - first["started_ms"] >= 950


@pytest.mark.parametrize(
    ("status", "cls"),
    [(400, ValidationError), (401, AuthError), (403, PermissionDenied), (404, ApiError), (500, ApiError)],
)
def test_get_is_never_retried_on_client_errors(
    platform: LocalPlatform, admin: Admin, status: int, cls: type[InferenceKeyError]
) -> None:
    admin.fault("list", status_fault(status, retry_after=0), count=3)
    with pytest.raises(cls) as info:
        management(platform).list_workloads()
    assert info.value.status_code == status
    assert statuses(admin, "GET", WORKLOADS_PATH) == [status]


def test_max_retries_zero_sends_once(platform: LocalPlatform, admin: Admin) -> None:
    admin.fault("list", status_fault(503, retry_after=0), count=3)
    with pytest.raises(ApiError) as info:
        management(platform, max_retries=0).list_workloads()
    assert info.value.status_code == 503
    assert statuses(admin, "GET", WORKLOADS_PATH) == [503]


def test_max_retries_bounds_the_attempts(platform: LocalPlatform, admin: Admin) -> None:
    admin.fault("list", status_fault(503, retry_after=0), count=5)
    with pytest.raises(ApiError):
        management(platform, max_retries=1).list_workloads()
    assert statuses(admin, "GET", WORKLOADS_PATH) == [503, 503]


def test_get_is_retried_after_a_reset(platform: LocalPlatform, admin: Admin) -> None:
    admin.fault("list", {"type": "reset"})
    assert management(platform).list_workloads() == []
    entries = admin.wait_journal(lambda j: len(j) == 2 and j[1]["outcome"] != "in_progress")
    assert [e["outcome"] for e in entries] == ["reset", "ok"]


def test_delete_is_retried_on_retry_after(platform: LocalPlatform, mgmt: ManagementClient, admin: Admin) -> None:
    mgmt.ensure(make_spec())
    admin.clear_journal()
    admin.fault("delete", status_fault(503, retry_after=0))
    assert mgmt.delete("support-bot") is True
    assert [e["status"] for e in admin.journal() if e["method"] == "DELETE"] == [503, 204]


@pytest.mark.parametrize("status", [503, 429])
def test_create_is_retried_on_retry_after(mgmt: ManagementClient, admin: Admin, status: int) -> None:
    admin.fault("create", status_fault(status, retry_after=0))
    assert mgmt.ensure(make_spec()).workload_slug == "support-bot"
    assert statuses(admin, "POST", WORKLOADS_PATH) == [status, 201]
    assert [w["slug"] for w in mgmt.list_workloads()] == ["support-bot"]


@pytest.mark.parametrize("retry_after", [None, 0])
@pytest.mark.parametrize("status", [500, 502])
def test_create_is_not_retried_on_server_errors(
    mgmt: ManagementClient, admin: Admin, status: int, retry_after: int | None
) -> None:
    admin.fault("create", status_fault(status, retry_after=retry_after))
    with pytest.raises(ApiError) as info:
        mgmt.ensure(make_spec())
    assert info.value.status_code == status
    assert statuses(admin, "POST", WORKLOADS_PATH) == [status]


def test_create_is_not_retried_on_503_without_retry_after(mgmt: ManagementClient, admin: Admin) -> None:
    admin.fault("create", status_fault(503))
    with pytest.raises(ApiError):
        mgmt.ensure(make_spec())
    assert statuses(admin, "POST", WORKLOADS_PATH) == [503]


def test_create_is_not_retried_after_a_reset(mgmt: ManagementClient, admin: Admin) -> None:
    admin.fault("create", {"type": "reset"})
    with pytest.raises(ApiError):
        mgmt.ensure(make_spec())
    assert len(statuses(admin, "POST", WORKLOADS_PATH)) == 1


def test_chat_is_retried_on_retry_after_but_not_on_502(deploy: Deploy, admin: Admin) -> None:
    endpoint = deploy()
    admin.fault("chat", status_fault(503, retry_after=0))
    assert endpoint.generate_text(prompt=PROMPT).text
    assert statuses(admin, "POST", CHAT_PATH) == [503, 200]
    admin.clear_journal()
    admin.fault("chat", status_fault(502))
    with pytest.raises(ApiError):
        endpoint.generate_text(prompt=PROMPT)
    assert statuses(admin, "POST", CHAT_PATH) == [502]


def test_embeddings_are_retried_on_429_with_retry_after(deploy: Deploy, admin: Admin) -> None:
    endpoint = deploy(slug="embedder", task_type="embedding")
    admin.fault("embeddings", status_fault(429, retry_after=0), count=2)
    assert len(endpoint.embed(input=["a"]).embeddings) == 1
    assert [e["status"] for e in admin.journal()] == [429, 429, 200]


def test_connection_refused_is_api_connection_error(platform: LocalPlatform) -> None:
    mgmt = ManagementClient(
        base_url=f"http://127.0.0.1:{unused_port()}", sdk_token=platform.sdk_token, project=PROJECT, max_retries=1
    )
    with pytest.raises(ApiConnectionError) as info:
        mgmt.list_workloads()
    assert isinstance(info.value, ApiError)
    assert not isinstance(info.value, TimeoutError)


def test_silence_longer_than_the_timeout_raises_api_timeout(platform: LocalPlatform, admin: Admin) -> None:
    admin.fault("list", {"type": "stall", "at": "headers", "ms": ENDLESS_MS})
    started = time.monotonic()
    with pytest.raises(ApiTimeoutError) as info:
        management(platform, timeout=0.5, max_retries=0).list_workloads()
    # The head never comes: only the idle timeout can end the call. The guard only catches a timeout that never fires.
    assert time.monotonic() - started < HANG_GUARD
    assert isinstance(info.value, ApiError)
    assert isinstance(info.value, TimeoutError)
    assert info.value.status_code is None


def test_short_stall_within_the_timeout_succeeds(platform: LocalPlatform, admin: Admin) -> None:
    admin.fault("list", {"type": "stall", "at": "headers", "ms": 300})
    assert management(platform, timeout=5, max_retries=0).list_workloads() == []
