# Spec points found untested by an audit of the SDK against platform-wire.md and the API reference: readiness
# deadline and reconnect rules, the attributes of in-band and malformed-reply errors, stream replies that are not
# event streams, POST retry rules on the data plane and PATCH, and the call-time project fallback.
from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import (
    ENDLESS_MS,
    HANG_GUARD,
    MODEL,
    PROJECT,
    PROMPT,
    WORKLOADS_PATH,
    Admin,
    Deploy,
    assert_no_token,
    exception_text,
    http_json,
    make_spec,
    management,
    platform_tokens,
    redacted,
    unused_port,
)

from inferencekey import (
    ApiError,
    ApiTimeoutError,
    AuthError,
    DriftError,
    InferenceKeyError,
    ManagementClient,
    PermissionDenied,
    ReadinessEvent,
    WaitTimeoutError,
)
from inferencekey.local import LocalPlatform

READINESS_PATH = f"{WORKLOADS_PATH}/support-bot/readiness-events"
CHAT_PATH = f"/endpoint/{PROJECT}/support-bot/v1/chat/completions"


def status_fault(status: int, retry_after: int | None = None, body: Any = None) -> dict[str, Any]:
    fault: dict[str, Any] = {
        "type": "status",
        "status": status,
        "body": body if body is not None else {"error": {"code": "f", "message": "fault"}},
    }
    if retry_after is not None:
        fault["retry_after"] = retry_after
    return fault


def readiness_statuses(admin: Admin) -> list[int | None]:
    return [e["status"] for e in admin.journal() if e["path"] == READINESS_PATH]


# --- section 6 / 10: the wait deadline ---------------------------------------------------------------------------


def test_wait_on_an_unreachable_host_times_out_within_the_deadline(platform: LocalPlatform) -> None:
    mgmt = ManagementClient(base_url=f"http://127.0.0.1:{unused_port()}", sdk_token=platform.sdk_token, project=PROJECT)
    started = time.monotonic()
    with pytest.raises(WaitTimeoutError) as info:
        mgmt.wait_until_ready("support-bot", timeout=1.5, silent=True)
    elapsed = time.monotonic() - started
    # It kept reconnecting until the deadline; without one the reconnects would go on forever (the guard).
    assert 1.45 <= elapsed < HANG_GUARD, elapsed
    exc = info.value
    assert isinstance(exc, TimeoutError)
    assert isinstance(exc, InferenceKeyError)
    assert not isinstance(exc, ApiError)
    assert (exc.status_code, exc.code, exc.request_id, exc.body) == (None, None, None, None)


def test_wait_on_a_silent_server_times_out_within_the_deadline(mgmt: ManagementClient, admin: Admin) -> None:
    mgmt.ensure(make_spec())
    admin.fault("readiness", {"type": "stall", "at": "headers", "ms": ENDLESS_MS})
    started = time.monotonic()
    with pytest.raises(WaitTimeoutError):
        mgmt.wait_until_ready("support-bot", timeout=1.0, silent=True)
    # The head never comes: only the deadline can end the wait. The guard only catches a deadline that never fires.
    assert 0.95 <= time.monotonic() - started < HANG_GUARD


# --- section 6: which readiness failures are transient ----------------------------------------------------------


@pytest.mark.parametrize("status", [502, 504])
def test_gateway_statuses_on_readiness_are_transient(mgmt: ManagementClient, admin: Admin, status: int) -> None:
    mgmt.ensure(make_spec())
    admin.clear_journal()
    admin.fault("readiness", status_fault(status))
    events: list[ReadinessEvent] = []
    mgmt.wait_until_ready("support-bot", timeout=20, on_progress=events.append)
    assert [event.phase for event in events] == ["ready"]
    assert readiness_statuses(admin) == [status, 200]


def test_429_on_readiness_honours_retry_after(mgmt: ManagementClient, admin: Admin) -> None:
    mgmt.ensure(make_spec())
    admin.clear_journal()
    admin.fault("readiness", status_fault(429, retry_after=2))
    mgmt.wait_until_ready("support-bot", timeout=HANG_GUARD, silent=True)
    assert readiness_statuses(admin) == [429, 200]
    # Retry-After replaces the 1 s backoff: the reconnect came no sooner than the 2 s the platform asked for. (That
    # a Retry-After of 0 means no wait at all is the core's `reconnect_delay` unit test: an upper bound on a clock
    # is luck.)
    first, retry = (e for e in admin.journal() if e["path"] == READINESS_PATH)
    assert retry["started_ms"] - first["started_ms"] >= 1950


@pytest.mark.parametrize(
    ("status", "cls"),
    [(500, ApiError), (408, ApiError), (409, ApiError), (400, InferenceKeyError), (401, AuthError)],
)
def test_other_readiness_statuses_are_permanent(
    mgmt: ManagementClient, admin: Admin, status: int, cls: type[InferenceKeyError]
) -> None:
    mgmt.ensure(make_spec())
    admin.clear_journal()
    admin.fault("readiness", status_fault(status), count=None)
    with pytest.raises(cls) as info:
        mgmt.wait_until_ready("support-bot", timeout=HANG_GUARD, silent=True)
    assert info.value.status_code == status
    assert not isinstance(info.value, TimeoutError)
    # Raised at once: one request, no reconnect.
    assert readiness_statuses(admin) == [status]


def test_readiness_permission_error_is_not_a_timeout(platform: LocalPlatform, admin: Admin) -> None:
    admin.project("acme")
    with pytest.raises(PermissionDenied) as info:
        management(platform, project="acme").wait_until_ready("support-bot", timeout=20, silent=True)
    assert info.value.code == "project_scope_mismatch"
    assert not isinstance(info.value, TimeoutError)


def test_error_phase_carries_the_request_id(mgmt: ManagementClient, admin: Admin) -> None:
    mgmt.ensure(make_spec())
    admin.settings("support-bot", readiness="error", error_message="CUDA out of memory")
    with pytest.raises(ApiError) as info:
        mgmt.wait_until_ready("support-bot", timeout=20, silent=True)
    exc = info.value
    assert "CUDA out of memory" in str(exc)
    assert exc.status_code is None
    assert isinstance(exc.request_id, str) and exc.request_id.startswith("req_")


# --- section 7: in-band errors and replies that are not event streams -------------------------------------------


@pytest.mark.parametrize("shape", ["nested", "flat", "event"])
def test_in_band_stream_error_attributes(deploy: Deploy, admin: Admin, shape: str) -> None:
    endpoint = deploy()
    admin.fault("chat_stream", {"type": "inband_error", "after_events": 1, "shape": shape, "message": "boom"})
    with pytest.raises(ApiError) as info:
        list(endpoint.generate_text_stream(prompt=PROMPT))
    exc = info.value
    assert "boom" in str(exc)
    assert type(exc) is ApiError
    assert exc.status_code is None
    assert isinstance(exc.request_id, str) and exc.request_id.startswith("req_")
    assert isinstance(exc.body, dict)


def test_in_band_error_in_a_200_reply_raises(deploy: Deploy, admin: Admin) -> None:
    endpoint = deploy()
    body = {"error": {"message": "engine crashed", "type": "server_error", "code": 500}}
    admin.fault("chat", status_fault(200, body=body) | {"headers": {"x-request-id": "req_inband"}})
    with pytest.raises(ApiError) as info:
        endpoint.generate_text(prompt=PROMPT)
    exc = info.value
    assert "engine crashed" in str(exc)
    assert exc.request_id == "req_inband"
    assert exc.body == body


def test_truncated_stream_error_carries_the_request_id(deploy: Deploy, admin: Admin) -> None:
    endpoint = deploy()
    admin.fault("chat_stream", {"type": "truncate", "after_events": 1})
    with pytest.raises(ApiError) as info:
        list(endpoint.generate_text_stream(prompt=PROMPT))
    assert isinstance(info.value.request_id, str) and info.value.request_id.startswith("req_")


def test_plain_text_reply_to_a_stream_request_raises(deploy: Deploy, admin: Admin) -> None:
    endpoint = deploy()
    admin.fault("chat_stream", status_fault(200, body="hello there"))
    with pytest.raises(ApiError) as info:
        list(endpoint.generate_text_stream(prompt=PROMPT))
    assert info.value.status_code is None or info.value.status_code == 200


def test_empty_reply_to_a_stream_request_is_never_zero_chunks(deploy: Deploy, admin: Admin) -> None:
    endpoint = deploy()
    fault = status_fault(200)
    fault["body"] = None
    admin.fault("chat_stream", fault)
    with pytest.raises(ApiError):
        list(endpoint.generate_text_stream(prompt=PROMPT))


# --- sections 9 / 10: POST retries on the data plane and PATCH ---------------------------------------------------


def test_chat_is_not_retried_after_a_reset(deploy: Deploy, admin: Admin) -> None:
    endpoint = deploy()
    admin.fault("chat", {"type": "reset"})
    with pytest.raises(ApiError):
        endpoint.generate_text(prompt=PROMPT)
    assert len([e for e in admin.journal() if e["path"] == CHAT_PATH]) == 1


@pytest.mark.parametrize("status", [429, 503])
def test_chat_without_retry_after_is_not_retried(deploy: Deploy, admin: Admin, status: int) -> None:
    endpoint = deploy()
    admin.fault("chat", status_fault(status))
    with pytest.raises(ApiError) as info:
        endpoint.generate_text(prompt=PROMPT)
    assert info.value.status_code == status
    assert len([e for e in admin.journal() if e["path"] == CHAT_PATH]) == 1


def test_patch_is_not_retried_on_502_but_on_503_with_retry_after(mgmt: ManagementClient, admin: Admin) -> None:
    mgmt.ensure(make_spec(command="vllm serve m"))
    admin.clear_journal()
    admin.fault("patch", status_fault(502))
    with pytest.raises(ApiError):
        mgmt.ensure(make_spec(command="vllm serve m --x"))
    assert [e["status"] for e in admin.journal() if e["method"] == "PATCH"] == [502]
    admin.clear_journal()
    admin.fault("patch", status_fault(503, retry_after=0))
    mgmt.ensure(make_spec(command="vllm serve m --x"))
    assert [e["status"] for e in admin.journal() if e["method"] == "PATCH"] == [503, 200]


def test_delete_is_retried_on_gateway_errors(mgmt: ManagementClient, admin: Admin) -> None:
    mgmt.ensure(make_spec())
    admin.clear_journal()
    admin.fault("delete", status_fault(502))
    assert mgmt.delete("support-bot") is True
    assert [e["status"] for e in admin.journal() if e["method"] == "DELETE"] == [502, 204]


# --- section 10: project fallback at call time -------------------------------------------------------------------


def test_plan_and_wait_fall_back_to_the_environment_project(
    monkeypatch: pytest.MonkeyPatch, platform: LocalPlatform, admin: Admin
) -> None:
    mgmt = ManagementClient(base_url=platform.url, sdk_token=platform.sdk_token)
    monkeypatch.setenv("INFERENCEKEY_PROJECT", f" {PROJECT} ")
    assert mgmt.plan(make_spec()).action == "create"
    mgmt.ensure(make_spec())
    mgmt.wait_until_ready("support-bot", timeout=10, silent=True)
    assert ("GET", READINESS_PATH) in admin.calls()


# --- section 8: no full token in any repr ------------------------------------------------------------------------


def test_plan_repr_hides_a_token_held_by_the_live_workload(platform: LocalPlatform, mgmt: ManagementClient) -> None:
    body = {"name": "Support Bot", "slug": "support-bot", "model_name": MODEL, "backend": "vllm"}
    body["config"] = {"note": platform.api_key}
    status, _, _ = http_json("POST", platform.url + WORKLOADS_PATH, platform.sdk_token, body)
    assert status == 201
    plan = mgmt.plan(make_spec(config={"note": "plain"}))
    assert plan.action == "update"
    with pytest.raises(DriftError) as info:
        mgmt.ensure(make_spec(config={"note": "plain"}), on_drift="fail")
    for text in (repr(plan), str(plan), repr(plan.changes), repr(info.value.plan), exception_text(info.value)):
        assert_no_token(text, *platform_tokens(platform))
    assert redacted(platform.api_key) in repr(plan)


# --- sections 6 / 10: a host that never completes the TCP handshake ----------------------------------------------


@pytest.fixture
def hanging_port() -> Iterator[int]:
    """A loopback port whose listen backlog is full, so a new connection hangs in the handshake."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port: int = server.getsockname()[1]
    fillers = []
    for _ in range(8):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    time.sleep(0.05)
    yield port
    for sock in (*fillers, server):
        sock.close()


def test_connect_timeout_is_an_api_timeout_error(platform: LocalPlatform, hanging_port: int) -> None:
    mgmt = ManagementClient(
        base_url=f"http://127.0.0.1:{hanging_port}",
        sdk_token=platform.sdk_token,
        project=PROJECT,
        connect_timeout=0.3,
        max_retries=0,
    )
    started = time.monotonic()
    with pytest.raises(ApiTimeoutError) as info:
        mgmt.list_workloads()
    # An ignored connect timeout would leave the connect to the OS's retries (minutes): the guard only catches that.
    assert time.monotonic() - started < HANG_GUARD
    exc = info.value
    assert isinstance(exc, ApiError) and isinstance(exc, TimeoutError)
    assert (exc.status_code, exc.request_id) == (None, None)


def test_wait_is_bounded_when_the_connect_hangs(platform: LocalPlatform, hanging_port: int) -> None:
    mgmt = ManagementClient(
        base_url=f"http://127.0.0.1:{hanging_port}",
        sdk_token=platform.sdk_token,
        project=PROJECT,
        connect_timeout=600,
    )
    started = time.monotonic()
    with pytest.raises(WaitTimeoutError):
        mgmt.wait_until_ready("support-bot", timeout=1.0, silent=True)
    # The connect would hang for its ten-minute timeout: only the deadline can cut it within the guard.
    assert time.monotonic() - started < HANG_GUARD
