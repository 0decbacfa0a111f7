# Errors: the status -> exception mapping, every error body shape, structured attributes (status_code, code,
# request_id, body), the documented messages, local wrong-credential checks, and that no error path leaks a token.
from __future__ import annotations

import logging
from typing import Any

import pytest
from conftest import (
    ALL_SCOPES,
    BOGUS_LIVE_KEY,
    BOGUS_SDK_TOKEN,
    PROJECT,
    Admin,
    assert_no_token,
    exception_text,
    make_spec,
    management,
    platform_tokens,
    redacted,
    unused_port,
)

from inferencekey import (
    ApiConnectionError,
    ApiError,
    AuthError,
    ConfigurationError,
    DataClient,
    InferenceKeyError,
    ManagementClient,
    NotFoundError,
    PermissionDenied,
    RateLimitError,
    ValidationError,
)
from inferencekey.local import LocalPlatform

AUTH_FAILED = "authentication failed: invalid or expired credentials"
LIVE_TO_MGMT = (
    "permission denied [wrong_credential_type]: {key} is a data key; the management plane requires an ik_sdk_ token"
)


def assert_clean(exc: BaseException, caplog: pytest.LogCaptureFixture, *tokens: str) -> None:
    """Neither the exception nor any log line shows a full token."""
    assert_no_token(exception_text(exc), *tokens)
    assert_no_token(caplog.text, *tokens)
    for record in caplog.records:
        assert_no_token(record.getMessage(), *tokens)


@pytest.fixture(autouse=True)
def debug_logs(caplog: pytest.LogCaptureFixture) -> None:
    """Every test here captures the SDK's logs at DEBUG, so leaks into logs are seen."""
    caplog.set_level(logging.DEBUG)


def test_wrong_token_is_auth_error(platform: LocalPlatform, admin: Admin, caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(AuthError) as info:
        management(platform, BOGUS_SDK_TOKEN).list_workloads()
    exc = info.value
    assert str(exc) == AUTH_FAILED
    assert exc.status_code == 401
    assert isinstance(exc.body, dict)
    assert exc.code == exc.body["error"]["code"]
    assert isinstance(exc.request_id, str)
    assert exc.request_id.startswith("req_")
    assert_clean(exc, caplog, BOGUS_SDK_TOKEN, *platform_tokens(platform))
    assert admin.journal()[0]["status"] == 401


def test_wrong_data_key_is_auth_error(
    platform: LocalPlatform, mgmt: ManagementClient, admin: Admin, caplog: pytest.LogCaptureFixture
) -> None:
    mgmt.ensure(make_spec())
    data = DataClient(base_url=platform.url, project=PROJECT, api_key=BOGUS_LIVE_KEY)
    with pytest.raises(AuthError) as info:
        data.endpoint("support-bot").generate_text(prompt="hi")
    assert str(info.value) == AUTH_FAILED
    assert info.value.status_code == 401
    assert_clean(info.value, caplog, BOGUS_LIVE_KEY, *platform_tokens(platform))


def test_token_of_another_project_is_project_scope_mismatch(
    platform: LocalPlatform, admin: Admin, caplog: pytest.LogCaptureFixture
) -> None:
    admin.project("acme")
    with pytest.raises(PermissionDenied) as info:
        management(platform, project="acme").ensure(make_spec())
    exc = info.value
    assert str(exc) == 'permission denied [project_scope_mismatch]: token is not scoped to project "acme"'
    assert (exc.status_code, exc.code) == (403, "project_scope_mismatch")
    assert exc.request_id is not None
    assert admin.calls() == [("GET", "/api/projects/acme/workloads")]
    assert_clean(exc, caplog, *platform_tokens(platform))


def test_data_key_of_another_workload_is_permission_denied(
    platform: LocalPlatform, mgmt: ManagementClient, admin: Admin, caplog: pytest.LogCaptureFixture
) -> None:
    mgmt.ensure(make_spec(slug="first"))
    mgmt.ensure(make_spec(slug="second"))
    key = admin.token("live", workload="first")
    data = DataClient(base_url=platform.url, project=PROJECT, api_key=key)
    assert data.endpoint("first").generate_text(prompt="hi").text
    with pytest.raises(PermissionDenied) as info:
        data.endpoint("second").generate_text(prompt="hi")
    assert info.value.status_code == 403
    assert info.value.code in ("project_scope_mismatch", "scope_insufficient", "wrong_credential_type")
    assert str(info.value).startswith(f"permission denied [{info.value.code}]: ")
    assert_clean(info.value, caplog, key, *platform_tokens(platform))


def test_missing_scope_is_scope_insufficient(
    platform: LocalPlatform, admin: Admin, caplog: pytest.LogCaptureFixture
) -> None:
    read_only = admin.token("sdk", scopes=["workload:read"])
    with pytest.raises(PermissionDenied) as info:
        management(platform, read_only).ensure(make_spec())
    exc = info.value
    assert (exc.status_code, exc.code) == (403, "scope_insufficient")
    assert str(exc).startswith("permission denied [scope_insufficient]: ")
    assert [m for m, _ in admin.calls()] == ["GET", "POST"]
    assert_clean(exc, caplog, read_only, *platform_tokens(platform))


def test_pinning_a_worker_needs_assignment_scope(platform: LocalPlatform, admin: Admin) -> None:
    token = admin.token("sdk", scopes=["workload:read", "workload:write", "workload:delete"])
    with pytest.raises(PermissionDenied) as info:
        management(platform, token).ensure(make_spec(worker_id="worker-1"))
    assert info.value.code == "scope_insufficient"
    assert management(platform, token).ensure(make_spec()).workload_slug == "support-bot"


def test_live_key_given_to_management_client_is_refused_locally(
    monkeypatch: pytest.MonkeyPatch, platform: LocalPlatform, admin: Admin, caplog: pytest.LogCaptureFixture
) -> None:
    expected = LIVE_TO_MGMT.format(key=redacted(platform.api_key))
    with pytest.raises(PermissionDenied) as info:
        management(platform, platform.api_key)
    exc = info.value
    assert str(exc) == expected
    assert (exc.status_code, exc.code, exc.request_id) == (None, "wrong_credential_type", None)
    assert_clean(exc, caplog, *platform_tokens(platform))
    monkeypatch.setenv("INFERENCEKEY_SDK_TOKEN", platform.api_key)
    with pytest.raises(PermissionDenied) as info:
        ManagementClient.from_env(base_url=platform.url, project=PROJECT)
    assert str(info.value) == expected
    assert admin.journal() == []


def test_sdk_token_given_to_endpoint_is_refused_locally(
    platform: LocalPlatform, admin: Admin, caplog: pytest.LogCaptureFixture
) -> None:
    data = DataClient(base_url=platform.url, project=PROJECT, api_key=platform.api_key)
    with pytest.raises(PermissionDenied) as info:
        data.endpoint("support-bot", api_key=platform.sdk_token)
    exc = info.value
    assert str(exc).startswith("permission denied [wrong_credential_type]: " + redacted(platform.sdk_token))
    assert (exc.status_code, exc.code, exc.request_id) == (None, "wrong_credential_type", None)
    assert_clean(exc, caplog, *platform_tokens(platform))
    default_sdk = DataClient(base_url=platform.url, project=PROJECT, api_key=platform.sdk_token)
    with pytest.raises(PermissionDenied):
        default_sdk.endpoint("support-bot")
    assert admin.journal() == []


@pytest.mark.parametrize(
    ("status", "cls", "message"),
    [
        (400, ValidationError, "validation error: custom failure"),
        (422, ValidationError, "validation error: custom failure"),
        (401, AuthError, "authentication failed: custom failure"),
        (403, PermissionDenied, "permission denied [custom_code]: custom failure"),
        (404, NotFoundError, None),
        (409, ApiError, None),
        (429, RateLimitError, None),
        (500, ApiError, None),
        (503, ApiError, None),
    ],
)
def test_status_maps_to_exception(
    platform: LocalPlatform, admin: Admin, status: int, cls: type[InferenceKeyError], message: str | None
) -> None:
    body = {"error": {"code": "custom_code", "message": "custom failure"}}
    admin.fault("list", {"type": "status", "status": status, "body": body, "headers": {"x-request-id": "req_pin"}})
    with pytest.raises(InferenceKeyError) as info:
        management(platform, max_retries=0).list_workloads()
    exc = info.value
    assert type(exc) is cls
    assert (exc.status_code, exc.code, exc.request_id, exc.body) == (status, "custom_code", "req_pin", body)
    if message is None:
        assert "custom failure" in str(exc)
        assert str(status) in str(exc)
    else:
        assert str(exc) == message
    assert len(admin.journal()) == 1


@pytest.mark.parametrize(
    ("body", "code", "text"),
    [
        ({"error": "bad_input"}, "bad_input", "bad_input"),
        ({"error": {"code": "bad_input", "message": "slug is odd"}}, "bad_input", "slug is odd"),
        ({"message": "slug is odd"}, None, "slug is odd"),
        ({"detail": "slug is odd"}, None, "slug is odd"),
        ({"object": "error", "message": "slug is odd", "type": "BadRequestError", "code": 400}, None, "slug is odd"),
        ("slug is odd", None, "slug is odd"),
    ],
    ids=["error-code", "nested", "message", "detail", "flat-object", "plain-text"],
)
def test_every_error_body_shape_is_understood(
    platform: LocalPlatform, admin: Admin, body: Any, code: str | None, text: str
) -> None:
    admin.fault("list", {"type": "status", "status": 400, "body": body})
    with pytest.raises(ValidationError) as info:
        management(platform).list_workloads()
    exc = info.value
    assert str(exc).startswith("validation error: ")
    assert text in str(exc)
    assert exc.body == body
    if code is not None:
        assert exc.code == code


def test_request_id_is_the_response_header(platform: LocalPlatform, admin: Admin) -> None:
    admin.fault(
        "create",
        {"type": "status", "status": 409, "body": {"error": "conflict"}, "headers": {"x-request-id": "req_42"}},
    )
    with pytest.raises(ApiError) as info:
        management(platform).ensure(make_spec())
    assert (info.value.request_id, info.value.status_code) == ("req_42", 409)


def test_local_errors_carry_no_http_data(platform: LocalPlatform, admin: Admin) -> None:
    mgmt = management(platform)
    with pytest.raises(ValidationError) as validation:
        mgmt.ensure(make_spec(name=" "))
    with pytest.raises(ConfigurationError) as configuration:
        mgmt.ensure(make_spec(description="ik_live_abc"))
    for exc in (validation.value, configuration.value):
        assert (exc.status_code, exc.request_id) == (None, None)
    assert admin.journal() == []


def test_secret_in_spec_is_not_echoed(platform: LocalPlatform, admin: Admin, caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(ConfigurationError) as info:
        management(platform).ensure(make_spec(config={"api_key": platform.api_key}))
    assert (
        str(info.value)
        == "configuration error: secrets must never go in specs (config.api_key holds an InferenceKey token)"
    )
    assert_clean(info.value, caplog, *platform_tokens(platform))


def test_transport_failure_is_api_connection_error(platform: LocalPlatform, caplog: pytest.LogCaptureFixture) -> None:
    mgmt = ManagementClient(
        base_url=f"http://127.0.0.1:{unused_port()}", sdk_token=platform.sdk_token, project=PROJECT, max_retries=0
    )
    with pytest.raises(ApiConnectionError) as info:
        mgmt.list_workloads()
    assert info.value.status_code is None
    assert not isinstance(info.value, TimeoutError)
    assert_clean(info.value, caplog, *platform_tokens(platform))
    data = DataClient(base_url=f"http://127.0.0.1:{unused_port()}", project=PROJECT, max_retries=0)
    with pytest.raises(ApiConnectionError) as info:
        data.endpoint("x", api_key=platform.api_key).generate_text(prompt="hi")
    assert_clean(info.value, caplog, *platform_tokens(platform))


def test_successful_calls_log_no_token(platform: LocalPlatform, admin: Admin, caplog: pytest.LogCaptureFixture) -> None:
    extra = admin.token("sdk", scopes=ALL_SCOPES)
    mgmt = management(platform, extra)
    mgmt.ensure(make_spec())
    mgmt.wait_until_ready("support-bot", timeout=10, silent=True)
    endpoint = DataClient(base_url=platform.url, project=PROJECT, api_key=platform.api_key).endpoint("support-bot")
    endpoint.generate_text(prompt="hi")
    for _ in endpoint.generate_text_stream(prompt="hi"):
        pass
    mgmt.delete("support-bot")
    assert any(record.name.startswith("inferencekey") for record in caplog.records), "the SDK logged nothing"
    assert_no_token(caplog.text, extra, *platform_tokens(platform))


def test_reprs_hide_tokens(platform: LocalPlatform) -> None:
    mgmt = management(platform)
    data = DataClient(base_url=platform.url, project=PROJECT, api_key=platform.api_key)
    for value in (platform, mgmt, data, data.endpoint("support-bot")):
        for text in (repr(value), str(value)):
            assert_no_token(text, *platform_tokens(platform))
    assert platform.url in repr(platform)
