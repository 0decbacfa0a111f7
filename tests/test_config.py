# Configuration: from_env precedence (explicit > environment > default), blank values, base URL normalisation,
# project fallback, the documented configuration messages, and the headers every request carries.
from __future__ import annotations

from collections.abc import Callable

import pytest
from conftest import (
    ALL_SCOPES,
    PROJECT,
    WORKLOADS_PATH,
    Admin,
    make_spec,
    redacted,
)

import inferencekey
from inferencekey import (
    ApiError,
    ConfigurationError,
    DataClient,
    ManagementClient,
    PermissionDenied,
    ValidationError,
    _core,
)
from inferencekey.local import LocalPlatform

DEFAULT_BASE_URL = "https://api.inferencekey.com"
NO_PROJECT = "No project configured. Set INFERENCEKEY_PROJECT, pass project=, or set spec.project."
NO_KEY = 'No ik_live_ key for workload "support-bot". Pass api_key= or set INFERENCEKEY_API_KEY.'


def authorization_of_last_request(admin: Admin) -> str:
    header: str = admin.journal()[-1]["headers"]["authorization"]
    return header


def test_management_from_env_reads_the_environment(env: LocalPlatform, admin: Admin) -> None:
    mgmt = ManagementClient.from_env()
    assert mgmt.base_url == env.url
    assert mgmt.project == PROJECT
    assert mgmt.list_workloads() == []
    assert authorization_of_last_request(admin) == "Bearer " + redacted(env.sdk_token)


def test_management_from_env_explicit_values_win(env: LocalPlatform, admin: Admin) -> None:
    admin.project("acme")
    other = admin.token("sdk", project="acme", scopes=ALL_SCOPES)
    mgmt = ManagementClient.from_env(project="acme", sdk_token=other, base_url=env.url + "/")
    assert mgmt.project == "acme"
    assert mgmt.base_url == env.url
    assert mgmt.list_workloads() == []
    assert admin.calls() == [("GET", "/api/projects/acme/workloads")]
    assert authorization_of_last_request(admin) == "Bearer " + redacted(other)


def test_management_from_env_defaults(monkeypatch: pytest.MonkeyPatch, platform: LocalPlatform) -> None:
    monkeypatch.setenv("INFERENCEKEY_SDK_TOKEN", platform.sdk_token)
    mgmt = ManagementClient.from_env()
    assert mgmt.base_url == DEFAULT_BASE_URL
    assert mgmt.project is None


@pytest.mark.parametrize("blank", ["", "   ", "\t\n"])
def test_blank_environment_values_count_as_unset(
    monkeypatch: pytest.MonkeyPatch, platform: LocalPlatform, blank: str
) -> None:
    monkeypatch.setenv("INFERENCEKEY_SDK_TOKEN", platform.sdk_token)
    monkeypatch.setenv("INFERENCEKEY_BASE_URL", blank)
    monkeypatch.setenv("INFERENCEKEY_PROJECT", blank)
    mgmt = ManagementClient.from_env()
    assert mgmt.base_url == DEFAULT_BASE_URL
    assert mgmt.project is None


def test_environment_values_are_trimmed_and_the_slash_stripped(
    monkeypatch: pytest.MonkeyPatch, platform: LocalPlatform, admin: Admin
) -> None:
    monkeypatch.setenv("INFERENCEKEY_SDK_TOKEN", f"  {platform.sdk_token}\n")
    monkeypatch.setenv("INFERENCEKEY_BASE_URL", f"  {platform.url}/  ")
    monkeypatch.setenv("INFERENCEKEY_PROJECT", f"  {PROJECT} ")
    mgmt = ManagementClient.from_env()
    assert mgmt.base_url == platform.url
    assert mgmt.project == PROJECT
    assert mgmt.list_workloads() == []
    assert admin.calls() == [("GET", WORKLOADS_PATH)]


def test_explicit_base_url_trailing_slash_is_stripped(platform: LocalPlatform, admin: Admin) -> None:
    mgmt = ManagementClient(base_url=platform.url + "/", sdk_token=platform.sdk_token, project=PROJECT)
    data = DataClient(base_url=platform.url + "/", project=PROJECT, api_key=platform.api_key)
    assert mgmt.base_url == platform.url
    assert data.endpoint("support-bot").base_url == f"{platform.url}/endpoint/{PROJECT}/support-bot/v1"
    mgmt.list_workloads()
    assert admin.calls() == [("GET", WORKLOADS_PATH)]


@pytest.mark.parametrize("blank", ["", "   "])
def test_blank_sdk_token_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch, platform: LocalPlatform, admin: Admin, blank: str
) -> None:
    with pytest.raises(ConfigurationError) as info:
        ManagementClient(base_url=platform.url, sdk_token=blank, project=PROJECT)
    assert info.value.status_code is None
    monkeypatch.setenv("INFERENCEKEY_SDK_TOKEN", blank)
    monkeypatch.setenv("INFERENCEKEY_BASE_URL", platform.url)
    with pytest.raises(ConfigurationError) as info:
        ManagementClient.from_env(project=PROJECT)
    assert "INFERENCEKEY_SDK_TOKEN" in str(info.value)
    assert admin.journal() == []


def test_no_project_anywhere_is_the_documented_error(platform: LocalPlatform, admin: Admin) -> None:
    mgmt = ManagementClient(base_url=platform.url, sdk_token=platform.sdk_token)
    calls: list[Callable[[], object]] = [
        lambda: mgmt.ensure(make_spec()),
        lambda: mgmt.plan(make_spec()),
        lambda: mgmt.delete("support-bot"),
        lambda: mgmt.wait_until_ready("support-bot", timeout=5, silent=True),
        lambda: mgmt.list_workloads(),
    ]
    for call in calls:
        with pytest.raises(ConfigurationError) as info:
            call()
        assert str(info.value) == NO_PROJECT
        assert info.value.status_code is None
        assert info.value.request_id is None
    assert admin.journal() == []


def test_project_falls_back_to_the_environment_at_call_time(
    monkeypatch: pytest.MonkeyPatch, platform: LocalPlatform, admin: Admin
) -> None:
    mgmt = ManagementClient(base_url=platform.url, sdk_token=platform.sdk_token)
    monkeypatch.setenv("INFERENCEKEY_PROJECT", PROJECT)
    ref = mgmt.ensure(make_spec())
    assert ref.project_slug == PROJECT
    assert mgmt.delete("support-bot") is True
    assert [path for _, path in admin.calls()][:2] == [WORKLOADS_PATH, WORKLOADS_PATH]


def test_data_from_env_reads_the_environment(env: LocalPlatform, admin: Admin) -> None:
    data = DataClient.from_env()
    endpoint = data.endpoint("  Support Bot ")
    assert endpoint.workload_slug == "support-bot"
    assert endpoint.project == PROJECT
    assert endpoint.base_url == f"{env.url}/endpoint/{PROJECT}/support-bot/v1"


def test_data_from_env_explicit_values_win(env: LocalPlatform, mgmt: ManagementClient, admin: Admin) -> None:
    mgmt.ensure(make_spec())
    scoped = admin.token("live", workload="support-bot")
    admin.clear_journal()
    data = DataClient.from_env(project=PROJECT, api_key=scoped)
    data.endpoint("support-bot").generate_text(prompt="hi")
    assert authorization_of_last_request(admin) == "Bearer " + redacted(scoped)
    data.endpoint("support-bot", api_key=env.api_key).generate_text(prompt="hi")
    assert authorization_of_last_request(admin) == "Bearer " + redacted(env.api_key)


def test_endpoint_key_argument_beats_the_client_default(
    platform: LocalPlatform, mgmt: ManagementClient, admin: Admin
) -> None:
    mgmt.ensure(make_spec())
    scoped = admin.token("live", workload="support-bot")
    admin.clear_journal()
    data = DataClient(base_url=platform.url, project=PROJECT, api_key=platform.api_key)
    data.endpoint("support-bot", api_key=scoped).generate_text(prompt="hi")
    assert authorization_of_last_request(admin) == "Bearer " + redacted(scoped)


@pytest.mark.parametrize("blank", ["", "  "])
def test_blank_data_project_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch, platform: LocalPlatform, blank: str
) -> None:
    with pytest.raises(ConfigurationError):
        DataClient(base_url=platform.url, project=blank, api_key=platform.api_key)
    monkeypatch.setenv("INFERENCEKEY_PROJECT", blank)
    with pytest.raises(ConfigurationError):
        DataClient.from_env(base_url=platform.url, api_key=platform.api_key)


def test_missing_data_key_is_the_documented_error(
    monkeypatch: pytest.MonkeyPatch, platform: LocalPlatform, admin: Admin
) -> None:
    data = DataClient(base_url=platform.url, project=PROJECT)
    with pytest.raises(ConfigurationError) as info:
        data.endpoint("support-bot")
    assert str(info.value) == NO_KEY
    monkeypatch.setenv("INFERENCEKEY_API_KEY", "   ")
    with pytest.raises(ConfigurationError) as info:
        DataClient.from_env(base_url=platform.url, project=PROJECT).endpoint(" Support--Bot ")
    assert str(info.value) == NO_KEY
    assert admin.journal() == []


def test_clients_are_context_managers(platform: LocalPlatform, admin: Admin) -> None:
    with ManagementClient(base_url=platform.url, sdk_token=platform.sdk_token, project=PROJECT) as mgmt:
        assert isinstance(mgmt, ManagementClient)
        assert mgmt.list_workloads() == []
    with DataClient(base_url=platform.url, project=PROJECT, api_key=platform.api_key) as data:
        assert isinstance(data, DataClient)
    assert admin.calls() == [("GET", WORKLOADS_PATH)]


def test_requests_carry_user_agent_and_redactable_bearer(
    platform: LocalPlatform, mgmt: ManagementClient, data: DataClient, admin: Admin
) -> None:
    mgmt.ensure(make_spec())
    data.endpoint("support-bot").generate_text(prompt="hi")
    entries = admin.journal()
    assert [(e["method"], e["path"]) for e in entries] == [
        ("GET", WORKLOADS_PATH),
        ("POST", WORKLOADS_PATH),
        ("POST", f"/endpoint/{PROJECT}/support-bot/v1/chat/completions"),
    ]
    for entry in entries:
        assert entry["headers"]["user-agent"] == f"inferencekey-python/{inferencekey.__version__}"
    assert entries[0]["headers"]["authorization"] == "Bearer " + redacted(platform.sdk_token)
    assert entries[2]["headers"]["authorization"] == "Bearer " + redacted(platform.api_key)
    for entry in entries[1:]:
        assert entry["headers"]["content-type"].startswith("application/json")


@pytest.mark.parametrize(("project", "encoded"), [("my project", "my%20project"), ("a/b", "a%2Fb"), ("ü", "%C3%BC")])
def test_path_segments_are_percent_encoded(platform: LocalPlatform, admin: Admin, project: str, encoded: str) -> None:
    mgmt = ManagementClient(base_url=platform.url, sdk_token=platform.sdk_token, project=project)
    with pytest.raises(PermissionDenied):
        mgmt.list_workloads()
    assert admin.calls() == [("GET", f"/api/projects/{encoded}/workloads")]


def test_data_key_falls_back_to_the_environment_at_call_time(
    monkeypatch: pytest.MonkeyPatch, platform: LocalPlatform, admin: Admin
) -> None:
    data = DataClient(base_url=platform.url, project=PROJECT)
    monkeypatch.setenv("INFERENCEKEY_API_KEY", f"  {platform.api_key}  ")
    endpoint = data.endpoint("support-bot")
    assert admin.journal() == []
    with pytest.raises(ApiError):  # no such workload: the point is which key went over the wire
        endpoint.generate_text(prompt="Hola")
    (entry,) = admin.journal()
    assert entry["headers"]["authorization"] == f"Bearer {_core.redact(platform.api_key)}"


def test_out_of_range_integers_are_validation_errors_before_any_request(
    platform: LocalPlatform, data: DataClient, admin: Admin
) -> None:
    with pytest.raises(ValidationError, match="max_retries must be an integer of at least 0"):
        ManagementClient(base_url=platform.url, sdk_token=platform.sdk_token, max_retries=-1)
    with pytest.raises(ValidationError, match="max_retries"):
        DataClient(base_url=platform.url, project=PROJECT, max_retries=2**40)
    endpoint = data.endpoint("support-bot")
    with pytest.raises(ValidationError, match="max_tokens must be an integer of at least 1"):
        endpoint.generate_text(prompt="Hola", max_tokens=0)
    with pytest.raises(ValidationError, match="max_tokens"):
        endpoint.generate_text_stream(prompt="Hola", max_tokens=-5)
    with pytest.raises(ValidationError, match="top_n must be an integer of at least 1"):
        endpoint.rerank(query="q", documents=["a"], top_n=0)
    assert admin.journal() == []
