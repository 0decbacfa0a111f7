# Every example of the Python API reference, run as written against the local platform (project "acme",
# credentials in the environment), with the journal and the printed output checked.
from __future__ import annotations

from dataclasses import dataclass

import pytest
from conftest import ALL_SCOPES, Admin, redacted

from inferencekey import (
    AuthError,
    Backend,
    DataClient,
    InferenceKeyError,
    ManagementClient,
    PermissionDenied,
    TaskType,
    WorkloadSpec,
)
from inferencekey.local import LocalPlatform

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
COMMAND = "vllm serve meta-llama/Llama-3.1-8B-Instruct --max-model-len 8192"
ACME_WORKLOADS = "/api/projects/acme/workloads"
ACME_CHAT = "/endpoint/acme/support-bot/v1/chat/completions"


@dataclass(frozen=True)
class Acme:
    """The credentials of the reference's project "acme" (also exported as INFERENCEKEY_ variables)."""

    sdk_token: str
    api_key: str


@pytest.fixture
def acme(platform: LocalPlatform, admin: Admin, monkeypatch: pytest.MonkeyPatch) -> Acme:
    admin.project("acme")
    creds = Acme(
        sdk_token=admin.token("sdk", project="acme", scopes=ALL_SCOPES), api_key=admin.token("live", project="acme")
    )
    monkeypatch.setenv("INFERENCEKEY_BASE_URL", platform.url)
    monkeypatch.setenv("INFERENCEKEY_SDK_TOKEN", creds.sdk_token)
    monkeypatch.setenv("INFERENCEKEY_API_KEY", creds.api_key)
    return creds


def support_bot() -> WorkloadSpec:
    """The reference's spec, as written."""
    return WorkloadSpec(
        name="support-bot", slug="support-bot",
        model="meta-llama/Llama-3.1-8B-Instruct", backend=Backend.VLLM,
        command="vllm serve meta-llama/Llama-3.1-8B-Instruct --max-model-len 8192",
    )  # fmt: skip


def test_provision(acme: Acme, admin: Admin, capsys: pytest.CaptureFixture[str]) -> None:
    mgmt = ManagementClient.from_env(project="acme")  # reads INFERENCEKEY_SDK_TOKEN
    ref = mgmt.ensure(support_bot())
    print(ref.project_slug, ref.workload_slug)
    assert capsys.readouterr().out == "acme support-bot\n"
    entries = admin.journal()
    assert [(e["method"], e["path"]) for e in entries] == [("GET", ACME_WORKLOADS), ("POST", ACME_WORKLOADS)]
    assert entries[1]["body"] == {
        "name": "support-bot",
        "slug": "support-bot",
        "task_type": "text2text",
        "backend": "vllm",
        "model_name": MODEL,
        "config": {"command": COMMAND},
    }
    assert entries[1]["headers"]["authorization"] == "Bearer " + redacted(acme.sdk_token)


def test_wait_until_ready_both_ways(acme: Acme, admin: Admin, capsys: pytest.CaptureFixture[str]) -> None:
    mgmt = ManagementClient.from_env(project="acme")
    spec = support_bot()
    ref = mgmt.ensure(spec)
    mgmt.wait_until_ready(ref.workload_slug, timeout=600)
    # or handle progress yourself:
    mgmt.wait_until_ready(ref.workload_slug, on_progress=lambda e: print(e.phase, e.message))
    out, err = capsys.readouterr()
    assert err.strip().splitlines()[-1].split("] ", 1)[1].startswith("ready")
    assert out.startswith("ready")
    assert out.count("\n") == 1


def test_delete(acme: Acme, admin: Admin, capsys: pytest.CaptureFixture[str]) -> None:
    mgmt = ManagementClient.from_env(project="acme")
    ref = mgmt.ensure(support_bot())
    existed = mgmt.delete(ref.workload_slug)
    print("deleted" if existed else "already gone")
    existed = mgmt.delete(ref.workload_slug)
    print("deleted" if existed else "already gone")
    assert capsys.readouterr().out == "deleted\nalready gone\n"
    assert mgmt.list_workloads() == []


def test_endpoint_and_generate_text(acme: Acme, admin: Admin, capsys: pytest.CaptureFixture[str]) -> None:
    ref = ManagementClient.from_env(project="acme").ensure(support_bot())
    admin.clear_journal()
    data = DataClient.from_env(project="acme")
    ep = data.endpoint(ref.workload_slug, api_key=acme.api_key)
    out = ep.generate_text(prompt="Hola", temperature=0.2, max_tokens=300)
    print(out.text, out.model)
    assert capsys.readouterr().out == f"{out.text} support-bot\n"
    assert out.text
    entries = admin.journal()
    assert [(e["method"], e["path"]) for e in entries] == [("POST", ACME_CHAT)]
    assert entries[0]["body"] == {
        "model": "support-bot",
        "messages": [{"role": "user", "content": "Hola"}],
        "stream": False,
        "temperature": 0.2,
        "max_tokens": 300,
    }


def test_stream(acme: Acme, capsys: pytest.CaptureFixture[str]) -> None:
    ref = ManagementClient.from_env(project="acme").ensure(support_bot())
    ep = DataClient.from_env(project="acme").endpoint(ref.workload_slug, api_key=acme.api_key)
    expected = ep.generate_text(prompt="Hola").text
    for chunk in ep.generate_text_stream(prompt="Hola"):
        print(chunk.text, end="", flush=True)
    assert capsys.readouterr().out == expected


def test_embed(acme: Acme, capsys: pytest.CaptureFixture[str]) -> None:
    ManagementClient.from_env(project="acme").ensure(
        WorkloadSpec(name="billing", slug="billing", model="bge-small", backend="vllm", task_type=TaskType.EMBEDDING)
    )
    data = DataClient.from_env(project="acme")
    emb = data.endpoint("billing", api_key=acme.api_key).embed(input=["a", "b"])
    print(emb.embeddings)  # list[list[float]]
    assert capsys.readouterr().out == f"{emb.embeddings}\n"
    assert len(emb.embeddings) == 2
    assert emb.embeddings[0] != emb.embeddings[1]


def run_with_cleanup(spec: WorkloadSpec, fail_with: BaseException | None) -> None:
    """The reference's "Clean up on exit" pattern, with an optional failure while the workload is in use."""
    mgmt = ManagementClient.from_env(project="acme")
    ref = mgmt.ensure(spec)
    try:
        mgmt.wait_until_ready(ref.workload_slug, timeout=600)
        # … use the endpoint …
        if fail_with is not None:
            raise fail_with
    finally:
        mgmt.delete(ref.workload_slug)  # idempotent; safe to always call


@pytest.mark.parametrize(
    "failure", [None, RuntimeError("job failed"), KeyboardInterrupt()], ids=["clean", "error", "ctrl-c"]
)
def test_clean_up_on_exit(acme: Acme, admin: Admin, failure: BaseException | None) -> None:
    if failure is None:
        run_with_cleanup(support_bot(), None)
    else:
        with pytest.raises(type(failure)):
            run_with_cleanup(support_bot(), failure)
    assert ManagementClient.from_env(project="acme").list_workloads() == []
    assert len([e for e in admin.journal() if e["method"] == "DELETE"]) == 1


def provision_with_handling(mgmt: ManagementClient) -> None:
    """The reference's exception-handling example, as written."""
    spec = support_bot()
    try:
        ref = mgmt.ensure(spec)  # noqa: F841 - as in the reference
    except PermissionDenied:
        print("This token cannot provision — is it an ik_sdk_ key for this project?")
    except AuthError:
        print("Check INFERENCEKEY_SDK_TOKEN.")
    except InferenceKeyError as e:
        print(f"Provisioning failed: {e}")


def test_exception_handling_example(
    platform: LocalPlatform, acme: Acme, admin: Admin, capsys: pytest.CaptureFixture[str]
) -> None:
    foreign = ManagementClient(base_url=platform.url, sdk_token=platform.sdk_token, project="acme")
    provision_with_handling(foreign)
    bogus = ManagementClient(base_url=platform.url, sdk_token="ik_sdk_0badc0de_" + "0" * 64, project="acme")
    provision_with_handling(bogus)
    admin.fault(
        "create", {"type": "status", "status": 500, "body": {"error": {"code": "internal", "message": "kaput"}}}
    )
    provision_with_handling(ManagementClient.from_env(project="acme"))
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == [
        "This token cannot provision — is it an ik_sdk_ key for this project?",
        "Check INFERENCEKEY_SDK_TOKEN.",
    ]
    assert lines[2].startswith("Provisioning failed: ")
    assert "kaput" in lines[2]
    assert len(lines) == 3


def test_end_to_end(acme: Acme, admin: Admin, capsys: pytest.CaptureFixture[str]) -> None:
    from inferencekey import Backend, ManagementClient, WorkloadSpec

    mgmt = ManagementClient.from_env(project="acme")  # reads INFERENCEKEY_SDK_TOKEN
    ref = mgmt.ensure(WorkloadSpec(
        name="support-bot", slug="support-bot",
        model="meta-llama/Llama-3.1-8B-Instruct", backend=Backend.VLLM,
        command="vllm serve meta-llama/Llama-3.1-8B-Instruct --max-model-len 8192",
    ))  # fmt: skip

    from inferencekey import DataClient

    data = DataClient.from_env(project="acme")
    ep = data.endpoint(ref.workload_slug, api_key=acme.api_key)
    out = ep.generate_text(prompt="Hola", temperature=0.2, max_tokens=300)
    print(out.text)

    mgmt.delete(ref.workload_slug)

    assert capsys.readouterr().out == f"{out.text}\n"
    assert [m for m, _ in admin.calls()] == ["GET", "POST", "POST", "GET", "DELETE"]
    assert mgmt.list_workloads() == []
