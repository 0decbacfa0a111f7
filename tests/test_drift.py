# Drift: the OnDrift matrix (5 modes x absent / in sync / drifted, enum and string forms), DriftError and
# DriftWarning, DRY_RUN logging, the comparison rules (declared keys, numbers by value), PATCH bodies and plan().
from __future__ import annotations

import logging
import warnings
from typing import Any

import pytest
from conftest import PROJECT, WORKLOADS_PATH, Admin, http_json, live_workload, make_spec

from inferencekey import (
    DriftError,
    DriftWarning,
    EndpointRef,
    FieldChange,
    ManagementClient,
    OnDrift,
    Plan,
    ValidationError,
)
from inferencekey.local import LocalPlatform

LIVE_COMMAND = "vllm serve m"
NEW_COMMAND = "vllm serve m --max-model-len 16384"
REF = EndpointRef(project_slug=PROJECT, workload_slug="support-bot")
STATES = ["absent", "in_sync", "drifted"]


def patches(admin: Admin) -> list[dict[str, Any]]:
    """The PATCH requests in the journal."""
    return [e for e in admin.journal() if e["method"] == "PATCH"]


def raw_patch(platform: LocalPlatform, mgmt: ManagementClient, body: dict[str, Any]) -> None:
    """Change the live workload outside the spec, as another tool or the server itself would."""
    workload_id = live_workload(mgmt)["id"]
    status, _, answer = http_json("PATCH", f"{platform.url}/api/workloads/{workload_id}", platform.sdk_token, body)
    assert status == 200, answer


def inferencekey_records(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    """Messages logged at `level` on the `inferencekey` logger."""
    return [r.getMessage() for r in caplog.records if r.name == "inferencekey" and r.levelno == level]


@pytest.mark.parametrize("form", ["enum", "string"])
@pytest.mark.parametrize("mode", list(OnDrift))
@pytest.mark.parametrize("state", STATES)
def test_on_drift_matrix(mgmt: ManagementClient, admin: Admin, state: str, mode: OnDrift, form: str) -> None:
    if state != "absent":
        mgmt.ensure(make_spec(command=LIVE_COMMAND))
        admin.clear_journal()
    desired = make_spec(command=NEW_COMMAND if state == "drifted" else LIVE_COMMAND)
    on_drift: OnDrift | str = mode if form == "enum" else mode.value
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if state == "drifted" and mode is OnDrift.FAIL:
            with pytest.raises(DriftError) as info:
                mgmt.ensure(desired, on_drift=on_drift)
            assert isinstance(info.value, ValidationError)
            assert str(info.value).splitlines()[0] == "workload drifted from spec: command"
            assert info.value.plan is not None
            assert info.value.plan.changes == (FieldChange("command", LIVE_COMMAND, NEW_COMMAND),)
        else:
            assert mgmt.ensure(desired, on_drift=on_drift) == REF
    methods = [method for method, _ in admin.calls()]

    expected = ["GET"]
    if state == "absent" and mode is not OnDrift.DRY_RUN:
        expected.append("POST")
    if state == "drifted" and mode is OnDrift.RECONCILE:
        expected.append("PATCH")
    assert methods == expected

    drift_warnings = [w for w in caught if issubclass(w.category, DriftWarning)]
    assert len(drift_warnings) == (1 if state == "drifted" and mode is OnDrift.WARN else 0)

    if state == "absent" and mode is OnDrift.DRY_RUN:
        assert mgmt.list_workloads() == []
    else:
        changed = state == "absent" or (state == "drifted" and mode is OnDrift.RECONCILE)
        command = live_workload(mgmt)["config"]["command"]
        assert command == (desired.command if changed else LIVE_COMMAND)


def test_unknown_on_drift_string_is_refused_before_any_request(mgmt: ManagementClient, admin: Admin) -> None:
    with pytest.raises(ValidationError) as info:
        mgmt.ensure(make_spec(), on_drift="sometimes")
    message = str(info.value)
    assert message.startswith("validation error: ")
    for accepted in ("reconcile", "fail", "dry_run", "warn", "ignore"):
        assert accepted in message
    assert info.value.status_code is None
    assert admin.journal() == []


def test_fail_lists_drifted_fields_in_comparison_order(mgmt: ManagementClient, admin: Admin) -> None:
    live = make_spec(
        description="a",
        command="c1",
        vllm_version="0.6.3",
        config={"max_model_len": 1},
        worker_id="w1",
        gpu_resource_id="g1",
        execution_policy="fixed",
        execution_policy_config={"min_replicas": 1},
    )
    desired = make_spec(
        name="Other Name",
        backend="sglang",
        model="other/model",
        description="b",
        task_type="embedding",
        command="c2",
        vllm_version="0.7.0",
        config={"max_model_len": 2},
        worker_id="w2",
        gpu_resource_id="g2",
        execution_policy="autoscaling",
        execution_policy_config={"min_replicas": 1},
    )
    fields = [
        "name", "backend", "model", "description", "task_type", "command", "vllm_version", "config.max_model_len",
        "worker_id", "gpu_resource_id", "execution_policy",
    ]  # fmt: skip
    mgmt.ensure(live)
    admin.clear_journal()
    with pytest.raises(DriftError) as info:
        mgmt.ensure(desired, on_drift=OnDrift.FAIL)
    lines = str(info.value).splitlines()
    assert lines[0] == "workload drifted from spec: " + ", ".join(fields)
    plan = info.value.plan
    assert plan is not None
    assert [change.field for change in plan.changes] == fields
    assert len(lines) > 1
    assert "\n".join(lines[1:]).strip() == plan.rendered.strip()
    assert admin.calls() == [("GET", WORKLOADS_PATH)]

    mgmt.ensure(desired)
    assert [e["body"] for e in patches(admin)] == [
        {
            "name": "Other Name",
            "backend": "sglang",
            "model_name": "other/model",
            "description": "b",
            "task_type": "embedding",
            "config": {"max_model_len": 2, "command": "c2", "vllm_version": "0.7.0"},
            "worker_id": "w2",
            "gpu_resource_id": "g2",
            "execution_policy": "autoscaling",
            "execution_policy_config": {"min_replicas": 1},
        }
    ]
    admin.clear_journal()
    assert mgmt.plan(desired).drifted is False
    mgmt.ensure(desired)
    assert [m for m, _ in admin.calls()] == ["GET", "GET"]


def test_reconcile_patches_only_drifted_fields(mgmt: ManagementClient, admin: Admin) -> None:
    mgmt.ensure(make_spec(description="old", task_type="text2text", command=LIVE_COMMAND))
    admin.clear_journal()
    mgmt.ensure(make_spec(description="new", task_type="text2text", command=LIVE_COMMAND))
    patch = patches(admin)
    assert len(patch) == 1
    assert patch[0]["path"] == f"/api/workloads/{live_workload(mgmt)['id']}"
    assert patch[0]["body"] == {"description": "new"}
    assert patch[0]["headers"]["content-type"].startswith("application/json")


def test_task_type_is_patchable(mgmt: ManagementClient, admin: Admin) -> None:
    mgmt.ensure(make_spec())
    mgmt.ensure(make_spec(task_type="embedding"))
    assert [e["body"] for e in patches(admin)] == [{"task_type": "embedding"}]
    assert live_workload(mgmt)["task_type"] == "embedding"


def test_drifted_policy_carries_its_declared_config(mgmt: ManagementClient, admin: Admin) -> None:
    mgmt.ensure(make_spec(execution_policy="fixed", execution_policy_config={"min_replicas": 1, "max_replicas": 2}))
    admin.clear_journal()
    mgmt.ensure(make_spec(execution_policy="autoscaling", execution_policy_config={"min_replicas": 1}))
    assert [e["body"] for e in patches(admin)] == [
        {"execution_policy": "autoscaling", "execution_policy_config": {"min_replicas": 1}}
    ]


def test_unset_spec_fields_never_drift(mgmt: ManagementClient, admin: Admin) -> None:
    mgmt.ensure(make_spec(description="kept", command=LIVE_COMMAND, execution_policy="fixed", worker_id="w1"))
    admin.clear_journal()
    mgmt.ensure(make_spec())
    assert admin.calls() == [("GET", WORKLOADS_PATH)]


def test_server_added_config_keys_are_not_drift(platform: LocalPlatform, mgmt: ManagementClient, admin: Admin) -> None:
    spec = make_spec(command=LIVE_COMMAND, config={"max_model_len": 8192, "sampling": {"top_p": 0.9}})
    mgmt.ensure(spec)
    raw_patch(
        platform,
        mgmt,
        {
            "config": {
                "max_model_len": 8192,
                "command": LIVE_COMMAND,
                "sampling": {"top_p": 0.9, "top_k": 40},
                "served_by": "node-1",
            }
        },
    )
    admin.clear_journal()
    assert mgmt.plan(spec).drifted is False
    mgmt.ensure(spec)
    assert [m for m, _ in admin.calls()] == ["GET", "GET"]
    drifted = mgmt.plan(make_spec(command=LIVE_COMMAND, config={"max_model_len": 8192, "sampling": {"top_p": 0.5}}))
    assert len(drifted.changes) == 1
    assert drifted.changes[0].field.startswith("config.sampling")


@pytest.mark.parametrize(("live", "desired"), [(5, 5.0), (5.0, 5), (0, 0.0)])
def test_numbers_compare_by_value(mgmt: ManagementClient, admin: Admin, live: float, desired: float) -> None:
    mgmt.ensure(make_spec(config={"max_num_seqs": live}))
    admin.clear_journal()
    mgmt.ensure(make_spec(config={"max_num_seqs": desired}))
    assert admin.calls() == [("GET", WORKLOADS_PATH)]
    assert mgmt.plan(make_spec(config={"max_num_seqs": 5.5})).drifted is True


def test_types_still_matter(mgmt: ManagementClient) -> None:
    mgmt.ensure(make_spec(config={"max_num_seqs": 5}))
    assert mgmt.plan(make_spec(config={"max_num_seqs": "5"})).drifted is True


def test_warn_emits_drift_warning_and_logs(
    mgmt: ManagementClient, admin: Admin, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="inferencekey")
    mgmt.ensure(make_spec(command=LIVE_COMMAND))
    with pytest.warns(DriftWarning) as record:
        assert mgmt.ensure(make_spec(command=NEW_COMMAND), on_drift="warn") == REF
    assert len(record) == 1
    warning = record[0]
    assert warning.filename == __file__
    plan = warning.message.plan  # type: ignore[union-attr]
    assert isinstance(plan, Plan)
    assert plan.drifted
    assert plan.changes == (FieldChange("command", LIVE_COMMAND, NEW_COMMAND),)
    logged = inferencekey_records(caplog, logging.WARNING)
    assert len(logged) == 1
    assert "command" in logged[0]
    assert live_workload(mgmt)["config"]["command"] == LIVE_COMMAND


def test_warn_in_sync_is_silent(mgmt: ManagementClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="inferencekey")
    mgmt.ensure(make_spec())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mgmt.ensure(make_spec(), on_drift=OnDrift.WARN)
    assert inferencekey_records(caplog, logging.WARNING) == []


def test_ignore_is_silent(mgmt: ManagementClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="inferencekey")
    mgmt.ensure(make_spec(command=LIVE_COMMAND))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mgmt.ensure(make_spec(command=NEW_COMMAND), on_drift=OnDrift.IGNORE)
    assert inferencekey_records(caplog, logging.WARNING) == []


def test_dry_run_logs_the_create_plan_and_creates_nothing(
    mgmt: ManagementClient, admin: Admin, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="inferencekey")
    assert mgmt.ensure(make_spec(), on_drift=OnDrift.DRY_RUN) == REF
    logged = inferencekey_records(caplog, logging.INFO)
    assert any("+ create support-bot" in message for message in logged), logged
    assert admin.calls() == [("GET", WORKLOADS_PATH)]
    assert mgmt.list_workloads() == []


def test_dry_run_logs_the_update_plan_and_changes_nothing(
    mgmt: ManagementClient, admin: Admin, caplog: pytest.LogCaptureFixture
) -> None:
    mgmt.ensure(make_spec(command=LIVE_COMMAND))
    plan = mgmt.plan(make_spec(command=NEW_COMMAND))
    caplog.set_level(logging.INFO, logger="inferencekey")
    admin.clear_journal()
    mgmt.ensure(make_spec(command=NEW_COMMAND), on_drift="dry_run")
    logged = inferencekey_records(caplog, logging.INFO)
    assert any(plan.rendered in message for message in logged), logged
    assert admin.calls() == [("GET", WORKLOADS_PATH)]
    assert live_workload(mgmt)["config"]["command"] == LIVE_COMMAND


def test_plan_for_an_absent_workload(mgmt: ManagementClient, admin: Admin) -> None:
    plan = mgmt.plan(make_spec())
    assert (plan.action, plan.project, plan.workload_slug) == ("create", PROJECT, "support-bot")
    assert "+ create support-bot" in plan.rendered
    assert str(plan) == plan.rendered
    assert admin.calls() == [("GET", WORKLOADS_PATH)]
    assert mgmt.list_workloads() == []


def test_plan_in_sync(mgmt: ManagementClient, admin: Admin) -> None:
    mgmt.ensure(make_spec(command=LIVE_COMMAND))
    plan = mgmt.plan(make_spec(command=LIVE_COMMAND))
    assert (plan.action, plan.changes, plan.drifted) == ("noop", (), False)


def test_plan_renders_a_terraform_like_diff(mgmt: ManagementClient, admin: Admin) -> None:
    mgmt.ensure(make_spec(command=LIVE_COMMAND, config={"max_model_len": 8192}))
    admin.clear_journal()
    plan = mgmt.plan(make_spec(command=NEW_COMMAND, config={"max_model_len": 16384}))
    assert plan.action == "update"
    assert plan.drifted is True
    assert plan.changes == (
        FieldChange("command", LIVE_COMMAND, NEW_COMMAND),
        FieldChange("config.max_model_len", 8192, 16384),
    )
    assert f'~ command: "{LIVE_COMMAND}" -> "{NEW_COMMAND}"' in plan.rendered
    assert "~ config.max_model_len: 8192 -> 16384" in plan.rendered
    assert str(plan) == plan.rendered
    assert admin.calls() == [("GET", WORKLOADS_PATH)]
    assert live_workload(mgmt)["config"] == {"command": LIVE_COMMAND, "max_model_len": 8192}
