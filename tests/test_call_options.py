# Per-call and per-copy settings: extra_headers, timeout and max_retries on one chat call, default_headers on every
# client, and with_options copies; an Authorization header is refused before anything is sent.
from __future__ import annotations

import asyncio
import pickle
import time

import pytest
from conftest import PROJECT, Admin, Deploy

from inferencekey import (
    ApiTimeoutError,
    AsyncDataClient,
    AsyncManagementClient,
    DataClient,
    ManagementClient,
    ValidationError,
)
from inferencekey.local import LocalPlatform


def data_client(platform: LocalPlatform, **kwargs: object) -> DataClient:
    return DataClient(base_url=platform.url, project=PROJECT, api_key=platform.api_key, **kwargs)  # type: ignore[arg-type]


def test_extra_headers_go_with_one_call_only(platform: LocalPlatform, deploy: Deploy, admin: Admin) -> None:
    deploy()
    with data_client(platform, default_headers={"X-Team": "search", "X-Tenant": "default"}) as data:
        ep = data.endpoint("support-bot")
        ep.generate_text(prompt="a", extra_headers={"X-Tenant": "acme", "X-Trace": "t1"})
        with ep.generate_text_stream(prompt="b", extra_headers={"X-Trace": "t2"}) as stream:
            list(stream)
        ep.generate_text(prompt="c")
    first, second, third = admin.wait_journal(lambda entries: len(entries) == 3) and [
        e["headers"] for e in admin.journal()
    ]
    assert (first["x-team"], first["x-tenant"], first["x-trace"]) == ("search", "acme", "t1")
    assert (second["x-tenant"], second["x-trace"]) == ("default", "t2")
    assert (third["x-tenant"], "x-trace" in third) == ("default", False)
    assert all(h["authorization"].startswith("Bearer ik_live_") for h in (first, second, third))


@pytest.mark.parametrize("name", ["Authorization", "authorization", "Proxy-Authorization"])
def test_an_authorization_header_is_refused_before_sending(
    platform: LocalPlatform, deploy: Deploy, admin: Admin, name: str
) -> None:
    ep = deploy()
    with pytest.raises(ValidationError, match=f"extra_headers must not set {name}") as refused:
        ep.generate_text(prompt="a", extra_headers={name: "Bearer ik_live_stolen"})
    assert "stolen" not in str(refused.value)
    with pytest.raises(ValidationError, match=f"default_headers must not set {name}"):
        data_client(platform, default_headers={name: "Bearer x"})
    with pytest.raises(ValidationError, match="default_headers must not set"):
        ManagementClient(base_url=platform.url, sdk_token=platform.sdk_token, default_headers={name: "x"})
    with pytest.raises(ValidationError, match="default_headers must not set"):
        data_client(platform).with_options(default_headers={name: "x"})
    assert admin.journal() == []


def test_header_values_are_checked(platform: LocalPlatform, deploy: Deploy) -> None:
    ep = deploy()
    with pytest.raises(ValidationError, match="not a valid header name"):
        ep.generate_text(prompt="a", extra_headers={"bad header": "x"})
    with pytest.raises(ValidationError, match="not a valid header value"):
        ep.generate_text(prompt="a", extra_headers={"X-A": "line\nbreak"})
    with pytest.raises(ValidationError, match="holds a secret"):
        ep.generate_text(prompt="a", extra_headers={"X-Key": platform.sdk_token})
    with pytest.raises(TypeError, match="extra_headers must be a dict of str to str"):
        ep.generate_text(prompt="a", extra_headers=[("a", "b")])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r'extra_headers\["X-A"\] must be a str, not int'):
        ep.generate_text(prompt="a", extra_headers={"X-A": 1})  # type: ignore[dict-item]


def test_per_call_timeout_overrides_the_clients(platform: LocalPlatform, deploy: Deploy, admin: Admin) -> None:
    deploy()
    admin.fault("chat", {"type": "stall", "at": "headers", "ms": 3000}, count=None)
    with data_client(platform, timeout=600.0, max_retries=0) as data:
        ep = data.endpoint("support-bot")
        started = time.monotonic()
        with pytest.raises(ApiTimeoutError, match=r"no data for 0\.3 s"):
            ep.generate_text(prompt="a", timeout=0.3)
        assert time.monotonic() - started < 2.5
    with pytest.raises(ValidationError, match="timeout must be a positive"):
        data_client(platform).endpoint("support-bot").generate_text(prompt="a", timeout=0)


def test_per_call_max_retries_overrides_the_clients(platform: LocalPlatform, deploy: Deploy, admin: Admin) -> None:
    deploy()
    admin.fault("chat", {"type": "status", "status": 503, "retry_after": 0}, count=None)
    with data_client(platform, max_retries=3) as data:
        ep = data.endpoint("support-bot")
        with pytest.raises(Exception, match="HTTP 503"):
            ep.generate_text(prompt="a", max_retries=0)
        assert len(admin.requests("POST", "/chat/completions")) == 1
        admin.clear_journal()
        with pytest.raises(Exception, match="HTTP 503"):
            ep.generate_text(prompt="a")
        assert len(admin.requests("POST", "/chat/completions")) == 4


def test_with_options_copies_keep_their_own_settings(platform: LocalPlatform, deploy: Deploy, admin: Admin) -> None:
    deploy()
    base = data_client(platform, default_headers={"X-Team": "search"}, max_retries=3)
    copy = base.with_options(timeout=0.3, max_retries=0, default_headers={"X-Tenant": "acme"})
    assert type(copy) is DataClient
    assert (copy.base_url, copy.project) == (base.base_url, base.project)
    copy.endpoint("support-bot").generate_text(prompt="a")
    base.endpoint("support-bot").generate_text(prompt="b")
    via_copy, via_base = [e["headers"] for e in admin.wait_journal(lambda entries: len(entries) == 2)]
    assert (via_copy["x-team"], via_copy["x-tenant"]) == ("search", "acme")
    assert "x-tenant" not in via_base
    # The copy's timeout and retries, not the base's.
    admin.fault("chat", {"type": "stall", "at": "headers", "ms": 3000})
    with pytest.raises(ApiTimeoutError, match=r"0\.3 s"):
        copy.endpoint("support-bot").generate_text(prompt="c")
    # A pickle of the copy carries its settings.
    config = pickle.loads(pickle.dumps(copy))._native.config()
    assert (config["timeout"], config["max_retries"]) == (0.3, 0)
    assert config["default_headers"] == {"x-team": "search", "x-tenant": "acme"}
    base.close()
    copy.close()


def test_management_and_async_clients_take_the_same_options(platform: LocalPlatform, admin: Admin) -> None:
    mgmt = ManagementClient(base_url=platform.url, sdk_token=platform.sdk_token, default_headers={"X-Team": "ops"})
    mgmt.with_options(default_headers={"X-Run": "7"}).list_workloads(project=PROJECT)
    (entry,) = admin.journal()
    assert (entry["headers"]["x-team"], entry["headers"]["x-run"]) == ("ops", "7")
    admin.clear_journal()

    async def main() -> None:
        async with AsyncManagementClient(
            base_url=platform.url, sdk_token=platform.sdk_token, default_headers={"X-A": "1"}
        ) as amgmt:
            await amgmt.with_options(max_retries=0).list_workloads(project=PROJECT)
        async with AsyncDataClient.from_env(
            base_url=platform.url, project=PROJECT, api_key=platform.api_key, default_headers={"X-B": "2"}
        ) as adata:
            assert type(adata.with_options(timeout=5.0)) is AsyncDataClient

    asyncio.run(main())
    (entry,) = admin.journal()
    assert entry["headers"]["x-a"] == "1"
