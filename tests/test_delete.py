# delete(): True then False (idempotent), a raced 404 is False, the lookup by canonical slug, project fallback,
# and the permission errors (another project's token, a token without workload:delete).
from __future__ import annotations

import pytest
from conftest import ALL_SCOPES, PROJECT, WORKLOADS_PATH, Admin, live_workload, make_spec

from inferencekey import ManagementClient, PermissionDenied
from inferencekey.local import LocalPlatform


def test_delete_true_then_false(mgmt: ManagementClient, admin: Admin) -> None:
    mgmt.ensure(make_spec())
    workload_id = live_workload(mgmt)["id"]
    admin.clear_journal()
    assert mgmt.delete("support-bot") is True
    entries = admin.journal()
    assert [(e["method"], e["path"]) for e in entries] == [
        ("GET", WORKLOADS_PATH),
        ("DELETE", f"/api/workloads/{workload_id}"),
    ]
    assert entries[1]["status"] == 204
    assert mgmt.list_workloads() == []
    admin.clear_journal()
    assert mgmt.delete("support-bot") is False
    assert admin.calls() == [("GET", WORKLOADS_PATH)]


def test_delete_only_touches_the_named_workload(mgmt: ManagementClient) -> None:
    mgmt.ensure(make_spec(slug="keep-me"))
    mgmt.ensure(make_spec(slug="drop-me"))
    assert mgmt.delete("Drop_Me") is True
    assert [w["slug"] for w in mgmt.list_workloads()] == ["keep-me"]


def test_delete_raced_by_another_deleter_is_false(mgmt: ManagementClient, admin: Admin) -> None:
    mgmt.ensure(make_spec())
    admin.clear_journal()
    fault = admin.fault(
        "delete", {"type": "status", "status": 404, "body": {"error": {"code": "not_found", "message": "gone"}}}
    )
    assert mgmt.delete("support-bot") is False
    assert admin.fired(fault) == 1
    assert [m for m, _ in admin.calls()] == ["GET", "DELETE"]


def test_delete_uses_the_project_argument(platform: LocalPlatform, admin: Admin) -> None:
    admin.project("acme")
    home = ManagementClient(base_url=platform.url, sdk_token=platform.sdk_token, project=PROJECT)
    home.ensure(make_spec())
    elsewhere = ManagementClient(base_url=platform.url, sdk_token=platform.sdk_token, project="acme")
    admin.clear_journal()
    assert elsewhere.delete("support-bot", project=PROJECT) is True
    assert admin.calls()[0] == ("GET", WORKLOADS_PATH)


def test_delete_with_another_projects_token_is_permission_denied(
    platform: LocalPlatform, mgmt: ManagementClient, admin: Admin
) -> None:
    mgmt.ensure(make_spec())
    admin.project("acme")
    foreign = admin.token("sdk", project="acme", scopes=ALL_SCOPES)
    other = ManagementClient(base_url=platform.url, sdk_token=foreign, project=PROJECT)
    with pytest.raises(PermissionDenied) as info:
        other.delete("support-bot")
    assert (info.value.status_code, info.value.code) == (403, "project_scope_mismatch")
    assert str(info.value) == f'permission denied [project_scope_mismatch]: token is not scoped to project "{PROJECT}"'
    assert [w["slug"] for w in mgmt.list_workloads()] == ["support-bot"]


def test_delete_without_the_delete_scope_is_scope_insufficient(
    platform: LocalPlatform, mgmt: ManagementClient, admin: Admin
) -> None:
    mgmt.ensure(make_spec())
    token = admin.token("sdk", scopes=["workload:read", "workload:write"])
    limited = ManagementClient(base_url=platform.url, sdk_token=token, project=PROJECT)
    admin.clear_journal()
    with pytest.raises(PermissionDenied) as info:
        limited.delete("support-bot")
    assert (info.value.status_code, info.value.code) == (403, "scope_insufficient")
    assert str(info.value).startswith("permission denied [scope_insufficient]: ")
    assert [m for m, _ in admin.calls()] == ["GET", "DELETE"]
    assert [w["slug"] for w in mgmt.list_workloads()] == ["support-bot"]
