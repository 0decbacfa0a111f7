# ensure(): the create body on the wire (platform-wire section 3), idempotency, slug canonicalisation in every call,
# project resolution, local validation and the secret scan (nothing sent), and the create race.
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
from conftest import MODEL, PROJECT, WORKLOADS_PATH, Admin, live_workload, make_spec

from inferencekey import (
    Backend,
    ConfigurationError,
    DataClient,
    EndpointRef,
    ExecutionPolicy,
    ManagementClient,
    PermissionDenied,
    TaskType,
    ValidationError,
    WorkloadSpec,
)
from inferencekey.local import LocalPlatform

SECRETS = "configuration error: secrets must never go in specs"
MESSY_SLUG = "  Mixed_Case--Slug  "


def create_body(admin: Admin) -> dict[str, Any]:
    """The body of the one create request in the journal."""
    posts = [e for e in admin.journal() if e["method"] == "POST" and e["path"] == WORKLOADS_PATH]
    assert len(posts) == 1, posts
    body: dict[str, Any] = posts[0]["body"]
    return body


def test_minimal_create_body(mgmt: ManagementClient, admin: Admin) -> None:
    ref = mgmt.ensure(make_spec())
    assert ref == EndpointRef(project_slug=PROJECT, workload_slug="support-bot")
    assert admin.calls() == [("GET", WORKLOADS_PATH), ("POST", WORKLOADS_PATH)]
    assert create_body(admin) == {
        "name": "Support Bot",
        "slug": "support-bot",
        "task_type": "text2text",
        "backend": "vllm",
        "model_name": MODEL,
    }
    with pytest.raises(dataclasses.FrozenInstanceError):
        ref.workload_slug = "other"  # type: ignore[misc]


def test_full_create_body(mgmt: ManagementClient, admin: Admin) -> None:
    spec = WorkloadSpec(
        name="Support Bot",
        slug="support-bot",
        model=MODEL,
        backend=Backend.VLLM,
        project=PROJECT,
        description="answers tickets",
        command="vllm serve m --max-model-len 8192",
        vllm_version="0.6.3",
        task_type=TaskType.TEXT2TEXT,
        config={"max_model_len": 8192, "command": "overridden", "vllm_version": "0.1.0", "nested": {"a": [1, 2]}},
        execution_policy=ExecutionPolicy.AUTOSCALING,
        execution_policy_config={"min_replicas": 1, "max_replicas": 3},
        worker_id="worker-7",
        gpu_resource_id="gpu-3",
    )
    mgmt.ensure(spec)
    assert create_body(admin) == {
        "name": "Support Bot",
        "slug": "support-bot",
        "description": "answers tickets",
        "task_type": "text2text",
        "backend": "vllm",
        "model_name": MODEL,
        "config": {
            "max_model_len": 8192,
            "command": "vllm serve m --max-model-len 8192",
            "vllm_version": "0.6.3",
            "nested": {"a": [1, 2]},
        },
        "execution_policy": "autoscaling",
        "execution_policy_config": {"min_replicas": 1, "max_replicas": 3},
        "worker_id": "worker-7",
        "gpu_resource_id": "gpu-3",
    }


@pytest.mark.parametrize(
    ("fields", "config"),
    [
        ({"vllm_version": "0.6.3"}, {"vllm_version": "0.6.3"}),
        ({"command": "vllm serve m"}, {"command": "vllm serve m"}),
        ({"config": {"max_model_len": 4096}}, {"max_model_len": 4096}),
        ({"config": {"command": "from config"}}, {"command": "from config"}),
        ({"config": {"max_model_len": 1}, "vllm_version": "0.7"}, {"max_model_len": 1, "vllm_version": "0.7"}),
        ({"config": {}}, None),
    ],
    ids=["version-without-command", "command", "config", "config-command", "config-and-version", "empty"],
)
def test_config_is_spec_config_with_explicit_fields_laid_over(
    mgmt: ManagementClient, admin: Admin, fields: dict[str, Any], config: dict[str, Any] | None
) -> None:
    mgmt.ensure(make_spec(**fields))
    body = create_body(admin)
    if config is None:
        assert "config" not in body
    else:
        assert body["config"] == config


@pytest.mark.parametrize("backend", list(Backend))
def test_every_backend_is_sent_as_its_wire_string(mgmt: ManagementClient, admin: Admin, backend: Backend) -> None:
    mgmt.ensure(make_spec(backend=backend))
    assert create_body(admin)["backend"] == backend.value
    assert live_workload(mgmt)["backend"] == backend.value


def test_enum_and_string_forms_send_the_same_body(mgmt: ManagementClient, admin: Admin) -> None:
    mgmt.ensure(make_spec(backend=Backend.SGLANG, task_type=TaskType.EMBEDDING, execution_policy=ExecutionPolicy.FIXED))
    with_enums = create_body(admin)
    admin.reset()
    admin.defaults(readiness="immediate")
    mgmt.ensure(make_spec(backend="sglang", task_type="embedding", execution_policy="fixed"))
    assert create_body(admin) == with_enums
    assert (with_enums["backend"], with_enums["task_type"], with_enums["execution_policy"]) == (
        "sglang",
        "embedding",
        "fixed",
    )


def test_custom_backend_string_passes_through(mgmt: ManagementClient, admin: Admin) -> None:
    mgmt.ensure(make_spec(backend="my-engine"))
    assert create_body(admin)["backend"] == "my-engine"


@pytest.mark.parametrize(("field", "value"), [("task_type", "text2telepathy"), ("execution_policy", "whenever")])
def test_unknown_strings_go_to_the_server_whose_400_is_a_validation_error(
    mgmt: ManagementClient, admin: Admin, field: str, value: str
) -> None:
    with pytest.raises(ValidationError) as info:
        mgmt.ensure(make_spec(**{field: value}))
    assert info.value.status_code == 400
    assert str(info.value).startswith("validation error: ")
    assert create_body(admin)[field] == value


def test_second_identical_ensure_sends_only_the_lookup(mgmt: ManagementClient, admin: Admin) -> None:
    spec = make_spec(
        description="d",
        command="vllm serve m",
        vllm_version="0.6.3",
        config={"max_model_len": 8192, "nested": {"k": [1, "two"]}},
        execution_policy="autoscaling",
        execution_policy_config={"min_replicas": 1},
    )
    first = mgmt.ensure(spec)
    admin.clear_journal()
    assert mgmt.ensure(spec) == first
    assert admin.calls() == [("GET", WORKLOADS_PATH)]


def test_project_is_only_in_the_url(mgmt: ManagementClient, admin: Admin) -> None:
    mgmt.ensure(make_spec(project=PROJECT))
    assert "project" not in create_body(admin)


def test_project_resolution_order(platform: LocalPlatform, admin: Admin) -> None:
    admin.project("acme")
    mgmt = ManagementClient(base_url=platform.url, sdk_token=platform.sdk_token, project="acme")
    assert mgmt.ensure(make_spec(slug="a", project=PROJECT)).project_slug == PROJECT
    assert mgmt.ensure(make_spec(slug="b", project="acme"), project=PROJECT).project_slug == PROJECT
    assert mgmt.plan(make_spec(slug="c", project=PROJECT)).project == PROJECT
    paths = {path for _, path in admin.calls()}
    assert paths == {WORKLOADS_PATH}
    admin.clear_journal()
    with pytest.raises(PermissionDenied):
        mgmt.ensure(make_spec(slug="d"))
    assert admin.calls() == [("GET", "/api/projects/acme/workloads")]


def test_list_workloads_returns_the_live_objects(mgmt: ManagementClient) -> None:
    assert mgmt.list_workloads() == []
    mgmt.ensure(make_spec(slug="one"))
    mgmt.ensure(make_spec(slug="two", description="second"))
    workloads = {w["slug"]: w for w in mgmt.list_workloads()}
    assert set(workloads) == {"one", "two"}
    assert workloads["two"]["description"] == "second"
    assert workloads["one"]["model_name"] == MODEL
    assert workloads["one"]["id"] != workloads["two"]["id"]


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        (MESSY_SLUG, "mixed-case-slug"),
        ("Gemma 4 26B (llama.cpp / GGUF) on R9700", "gemma-4-26b-llama-cpp-gguf-on-r9700"),
        ("--edge--", "edge"),
    ],
)
def test_ensure_canonicalises_the_slug(mgmt: ManagementClient, admin: Admin, raw: str, canonical: str) -> None:
    ref = mgmt.ensure(make_spec(slug=raw))
    assert ref.workload_slug == canonical
    assert create_body(admin)["slug"] == canonical
    admin.clear_journal()
    assert mgmt.ensure(make_spec(slug=canonical.upper())).workload_slug == canonical
    assert admin.calls() == [("GET", WORKLOADS_PATH)]


def test_every_call_canonicalises_the_slug(
    platform: LocalPlatform, mgmt: ManagementClient, data: DataClient, admin: Admin
) -> None:
    mgmt.ensure(make_spec(slug=MESSY_SLUG))
    assert mgmt.plan(make_spec(slug=MESSY_SLUG)).workload_slug == "mixed-case-slug"
    admin.clear_journal()
    mgmt.wait_until_ready(MESSY_SLUG, timeout=10, silent=True)
    endpoint = data.endpoint(MESSY_SLUG)
    assert endpoint.workload_slug == "mixed-case-slug"
    endpoint.generate_text(prompt="hi")
    assert mgmt.delete(MESSY_SLUG) is True
    entries = {entry["path"]: entry for entry in admin.journal()}
    assert f"{WORKLOADS_PATH}/mixed-case-slug/readiness-events" in entries
    assert entries[f"/endpoint/{PROJECT}/mixed-case-slug/v1/chat/completions"]["body"]["model"] == "mixed-case-slug"
    assert mgmt.list_workloads() == []


@pytest.mark.parametrize(
    "call",
    [
        lambda m, d: m.ensure(make_spec(slug="!!!")),
        lambda m, d: m.plan(make_spec(slug="-- __ --")),
        lambda m, d: m.delete("???"),
        lambda m, d: m.wait_until_ready("***", timeout=5, silent=True),
        lambda m, d: d.endpoint("///"),
    ],
    ids=["ensure", "plan", "delete", "wait_until_ready", "endpoint"],
)
def test_slug_canonicalising_to_nothing_is_refused_before_any_request(
    mgmt: ManagementClient, data: DataClient, admin: Admin, call: Callable[[ManagementClient, DataClient], Any]
) -> None:
    with pytest.raises(ValidationError) as info:
        call(mgmt, data)
    assert str(info.value).startswith("validation error: ")
    assert info.value.status_code is None
    assert admin.journal() == []


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": ""}, "validation error: name must not be empty"),
        ({"name": "   "}, "validation error: name must not be empty"),
        ({"slug": ""}, "validation error: slug must not be empty"),
        ({"slug": " \t "}, "validation error: slug must not be empty"),
        ({"model": ""}, "validation error: model must not be empty"),
        ({"model": "  \n"}, "validation error: model must not be empty"),
        ({"name": " ", "slug": " ", "model": " "}, "validation error: name must not be empty"),
    ],
)
def test_required_fields_are_checked_before_any_request(
    mgmt: ManagementClient, admin: Admin, fields: dict[str, Any], message: str
) -> None:
    for call in (mgmt.ensure, mgmt.plan):
        with pytest.raises(ValidationError) as info:
            call(make_spec(**fields))
        assert str(info.value) == message
    assert admin.journal() == []


@pytest.mark.parametrize(
    "fields",
    [
        {"description": "key: ik_live_abc123"},
        {"config": {"auth": {"keys": ["fine", "ik_sdk_Z9"]}}},
        {"config": {"headers": [{"Authorization": "Bearer ik_live_0a1b2c3d_ffff"}]}},
        {"command": "vllm serve m --api-key ik_live_7"},
        {"execution_policy_config": {"webhook": "https://x/?t=ik_sdk_q"}},
        {"name": "bot ik_sdk_x"},
    ],
    ids=["description", "config-nested-list", "config-list-dict", "command", "policy-config", "name"],
)
def test_secret_scan_refuses_tokens_before_any_request(
    mgmt: ManagementClient, admin: Admin, fields: dict[str, Any]
) -> None:
    with pytest.raises(ConfigurationError) as info:
        mgmt.ensure(make_spec(**fields))
    assert str(info.value).startswith(SECRETS + " (")
    assert admin.journal() == []


@pytest.mark.parametrize("text", ["prefix ik_live_", "ik_sdk_-dash", "see ik_live_ docs"])
def test_token_prefix_without_a_token_is_not_a_secret(mgmt: ManagementClient, admin: Admin, text: str) -> None:
    mgmt.ensure(make_spec(description=text))
    assert create_body(admin)["description"] == text


def test_create_race_ends_with_one_workload(mgmt: ManagementClient, admin: Admin) -> None:
    admin.fault("create", {"type": "race_create"})
    ref = mgmt.ensure(make_spec(command="vllm serve m"))
    assert ref == EndpointRef(project_slug=PROJECT, workload_slug="support-bot")
    survivors = mgmt.list_workloads()
    assert [w["slug"] for w in survivors] == ["support-bot"]
    deletes = admin.requests("DELETE")
    assert len(deletes) == 1
    assert deletes[0]["path"].startswith("/api/workloads/")
    assert deletes[0]["path"] != f"/api/workloads/{survivors[0]['id']}"
    admin.clear_journal()
    assert mgmt.ensure(make_spec(command="vllm serve m")) == ref
    assert admin.calls() == [("GET", WORKLOADS_PATH)]


@pytest.mark.parametrize(
    "listing",
    [
        [{"name": "no id or slug"}, {"id": "wl_odd", "slug": "odd", "backend": "quantum", "task_type": "dreams"}],
        {"workloads": [{"id": "wl_odd", "slug": "odd", "execution_policy": "lunar", "config": None, "x": [1]}]},
        {"workloads": None},
        "null",
    ],
    ids=["bare-array-with-odd-items", "wrapped-with-odd-item", "wrapped-null", "json-null"],
)
def test_tolerates_every_list_shape_and_odd_workloads(mgmt: ManagementClient, admin: Admin, listing: Any) -> None:
    admin.fault("list", {"type": "status", "status": 200, "body": listing})
    assert mgmt.ensure(make_spec()).workload_slug == "support-bot"
    assert admin.calls() == [("GET", WORKLOADS_PATH), ("POST", WORKLOADS_PATH)]
