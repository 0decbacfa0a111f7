# The deploy commands (`inferencekey plan|apply|delete|status`) end to end against the local platform: in-process
# through `cli.main` (output captured), and once through the installed console script in a child process.
from __future__ import annotations

import json
import shutil
import subprocess
import sysconfig
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    ALL_SCOPES,
    BOGUS_LIVE_KEY,
    BOGUS_SDK_TOKEN,
    HANG_GUARD,
    WORKLOADS_PATH,
    Admin,
    assert_no_token,
    child_env,
    http_json,
    live_workload,
    make_spec,
    platform_tokens,
)

from inferencekey import ApiError, ManagementClient
from inferencekey.cli import main
from inferencekey.local import LocalPlatform

MANIFEST = """
[[workload]]
name = "First"
slug = "first"
model = "test/first"
backend = "vllm"
command = "vllm serve test/first"

[[workload]]
name = "Second"
slug = "second"
model = "test/second"
backend = "ollama"

[workload.config]
max_model_len = 8192
"""


def workload_table(slug: str, **fields: Any) -> str:
    """One [[workload]] table for `slug` (name = slug, vLLM), with `fields` as TOML strings."""
    lines = ["[[workload]]", f'name = "{slug}"', f'slug = "{slug}"', 'model = "test/model"', 'backend = "vllm"']
    lines += [f"{key} = {json.dumps(value)}" for key, value in fields.items()]
    return "\n".join(lines) + "\n"


def write(tmp_path: Path, text: str, name: str = "deploy.toml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """`inferencekey ARGV...` in-process: (exit code, stdout, stderr)."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def error_lines(err: str, command: str) -> list[str]:
    """The lines of stderr the command wrote itself (the readiness view writes the others)."""
    return [line for line in err.splitlines() if line.startswith(f"inferencekey {command}:")]


def slugs(mgmt: ManagementClient) -> list[str]:
    return sorted(str(w["slug"]) for w in mgmt.list_workloads())


def writes(admin: Admin) -> list[tuple[str, str]]:
    """The requests that changed something (create, patch, delete)."""
    return [(method, path) for method, path in admin.calls() if method in ("POST", "PATCH", "DELETE")]


def console_script() -> str:
    """The installed `inferencekey` command of this interpreter's environment."""
    scripts = sysconfig.get_path("scripts")
    script = shutil.which("inferencekey", path=scripts)
    assert script, f"console script not installed in {scripts}"
    return script


# --- plan and apply ---------------------------------------------------------------------------------------------------


def test_plan_shows_creates_and_exits_2_then_apply_then_noop_exits_0(
    env: LocalPlatform, admin: Admin, mgmt: ManagementClient, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    manifest = write(tmp_path, MANIFEST)
    code, out, err = run(capsys, "plan", manifest)
    assert code == 2, err
    assert "+ create first in project local" in out
    assert '  + command: "vllm serve test/first"' in out
    assert "+ create second in project local" in out
    assert "  + config.max_model_len: 8192" in out
    assert out.rstrip().endswith("Plan: 2 to create, 0 to update, 0 unchanged.")
    assert err == ""
    assert slugs(mgmt) == [], "plan must change nothing"

    code, out, err = run(capsys, "apply", manifest)
    assert code == 0, err
    assert "first: created" in out and "first: ready" in out
    assert "second: created" in out and "second: ready" in out
    assert out.rstrip().endswith("Apply complete: 2 workloads ready (2 created, 0 updated, 0 unchanged).")
    assert slugs(mgmt) == ["first", "second"]
    assert live_workload(mgmt, "second")["config"] == {"max_model_len": 8192}

    admin.clear_journal()
    code, out, err = run(capsys, "plan", manifest)
    assert code == 0, err
    assert "= first is in sync (project local)" in out
    assert out.rstrip().endswith("Plan: 0 to create, 0 to update, 2 unchanged.")
    code, out, err = run(capsys, "apply", manifest)
    assert code == 0, err
    assert "first: unchanged" in out and "second: unchanged" in out
    assert writes(admin) == [], "a second apply of the same file changes nothing"


def test_plan_exits_1_on_error(
    env: LocalPlatform,
    admin: Admin,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    manifest = write(tmp_path, MANIFEST)
    monkeypatch.delenv("INFERENCEKEY_SDK_TOKEN")
    code, out, err = run(capsys, "plan", manifest)
    assert code == 1
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("inferencekey plan: ")
    assert "INFERENCEKEY_SDK_TOKEN" in err

    code, out, err = run(capsys, "plan", str(tmp_path / "missing.toml"))
    assert code == 1
    assert err.startswith("inferencekey plan: configuration error: cannot read ")
    assert err.count("\n") == 1


def test_drift_under_reconcile_fail_dry_run_and_warn(
    env: LocalPlatform, admin: Admin, mgmt: ManagementClient, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    mgmt.ensure(make_spec(command="vllm serve a", config={"max_model_len": 4096}))
    manifest = write(
        tmp_path,
        '[[workload]]\nname = "Support Bot"\nslug = "support-bot"\nmodel = "meta-llama/Llama-3.1-8B-Instruct"\n'
        'backend = "vllm"\ncommand = "vllm serve b"\nconfig = { max_model_len = 8192 }\n',
    )
    code, out, _ = run(capsys, "plan", manifest)
    assert code == 2
    assert "~ update support-bot in project local" in out
    assert '  ~ command: "vllm serve a" -> "vllm serve b"' in out
    assert "  ~ config.max_model_len: 4096 -> 8192" in out
    assert "Plan: 0 to create, 1 to update, 0 unchanged." in out

    admin.clear_journal()
    code, out, err = run(capsys, "apply", "--on-drift", "fail", manifest)
    assert code == 1
    assert error_lines(err, "apply") == [
        "inferencekey apply: workload #1 (support-bot) failed: workload drifted from spec: command, "
        "config.max_model_len"
    ]
    assert '~ command: "vllm serve a" -> "vllm serve b"' in out, "the plan that stopped apply is shown"
    assert writes(admin) == []

    code, out, err = run(capsys, "apply", "--on-drift", "dry_run", manifest)
    assert code == 0, err
    assert "support-bot: drifted, not changed (on_drift=dry_run)" in out
    assert "Dry run, nothing changed: 0 to create, 1 to update, 0 unchanged." in out
    assert "ready" not in out, "a dry run waits for nothing"
    code, out, err = run(capsys, "apply", "--on-drift", "warn", manifest)
    assert code == 0, err
    assert "support-bot: drifted, not changed (on_drift=warn)" in out
    assert error_lines(err, "apply") == [
        "inferencekey apply: warning: workload 'support-bot' drifted from spec: command, config.max_model_len "
        "(on_drift=warn: not changed)"
    ]
    assert writes(admin) == [], "fail, dry_run and warn change nothing"
    assert live_workload(mgmt)["config"]["command"] == "vllm serve a"

    code, out, err = run(capsys, "apply", manifest)
    assert code == 0, err
    assert "support-bot: updated" in out and "support-bot: ready" in out
    assert "(0 created, 1 updated, 0 unchanged)" in out
    assert live_workload(mgmt)["config"] == {"command": "vllm serve b", "max_model_len": 8192}
    assert [method for method, _ in writes(admin)] == ["PATCH"]


def test_apply_stops_at_the_first_failure_and_leaves_the_others_as_they_were(
    env: LocalPlatform, admin: Admin, mgmt: ManagementClient, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # `first` exists and serves; workloads created from now on fail while loading their model.
    mgmt.ensure(make_spec(name="first", slug="first", model="test/model"))
    before = live_workload(mgmt, "first")
    admin.defaults(readiness="error", error_message="CUDA out of memory")
    manifest = write(tmp_path, workload_table("first") + workload_table("second") + workload_table("third"))
    admin.clear_journal()

    code, out, err = run(capsys, "apply", manifest)
    assert code == 1
    assert error_lines(err, "apply") == [
        'inferencekey apply: workload #2 (second) failed: workload "second" failed: CUDA out of memory'
    ]
    assert "first: unchanged" in out and "first: ready" in out
    assert "second: created" in out and "second: ready" not in out
    assert "third" not in out and "Apply complete" not in out
    assert slugs(mgmt) == ["first", "second"], "no rollback, and the workload after the failure is not created"
    assert live_workload(mgmt, "first") == before
    assert [method for method, _ in writes(admin)] == ["POST"], "only `second` was created"
    code, out, _ = run(capsys, "status", "first")
    assert code == 0
    assert out.splitlines()[1].split()[:3] == ["first", "ready", "yes"]


def test_apply_timeout(
    env: LocalPlatform, admin: Admin, mgmt: ManagementClient, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    admin.defaults(readiness="stuck")
    manifest = write(tmp_path, workload_table("slow"))
    code, _, err = run(capsys, "apply", "--timeout", "0.5", manifest)
    assert code == 1
    (line,) = error_lines(err, "apply")
    assert line.startswith('inferencekey apply: workload #1 (slow) failed: workload "slow" not ready after 0.5 s')

    # The core refuses a bad timeout before anything changes.
    code, _, err = run(capsys, "apply", "--timeout", "-1", write(tmp_path, workload_table("other"), "other.toml"))
    assert code == 1
    assert error_lines(err, "apply") == [
        "inferencekey apply: validation error: timeout must be a non-negative number of seconds"
    ]
    assert slugs(mgmt) == ["slow"]


def test_project_option_and_a_workload_s_own_project(
    env: LocalPlatform,
    admin: Admin,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    admin.project("other")
    token = admin.token("sdk", project="other", scopes=ALL_SCOPES)
    monkeypatch.setenv("INFERENCEKEY_SDK_TOKEN", token)
    code, out, err = run(capsys, "apply", "--project", "other", write(tmp_path, workload_table("bot")))
    assert code == 0, err
    with ManagementClient(base_url=env.url, sdk_token=token, project="other") as other:
        assert slugs(other) == ["bot"]
    # The file's `project` wins over --project (and the token is not scoped to it).
    code, out, err = run(
        capsys, "plan", "--project", "other", write(tmp_path, workload_table("bot", project="local"), "local.toml")
    )
    assert code == 1
    assert error_lines(err, "plan")[0].startswith("inferencekey plan: workload #1 (bot) failed: permission denied")
    assert_no_token(out + err, token)


# --- machine-readable output ------------------------------------------------------------------------------------------


def test_json_output_is_one_document(
    env: LocalPlatform, admin: Admin, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    manifest = write(tmp_path, MANIFEST)
    code, out, _ = run(capsys, "plan", "--json", manifest)
    assert code == 2
    plan = json.loads(out)
    assert plan["command"] == "plan" and plan["ok"] is True and plan["changes"] is True and plan["exit_code"] == 2
    assert plan["summary"] == {"create": 2, "update": 0, "noop": 0}
    first = plan["workloads"][0]
    assert (first["slug"], first["project"], first["action"]) == ("first", "local", "create")
    assert {"field": "command", "live": None, "desired": "vllm serve test/first"} in first["changes"]

    code, out, _ = run(capsys, "apply", manifest, "--json")
    assert code == 0
    applied = json.loads(out)
    assert applied["ok"] is True and applied["on_drift"] == "reconcile"
    assert [(w["slug"], w["outcome"], w["ready"]) for w in applied["workloads"]] == [
        ("first", "created", True),
        ("second", "created", True),
    ]

    admin.readiness("second", "stuck")
    code, out, _ = run(capsys, "status", "--json")
    assert code == 0
    status = json.loads(out)
    (first, second) = status["workloads"]
    assert (first["slug"], first["phase"], first["ready"]) == ("first", "ready", True)
    # A stuck workload never leaves provisioning (and may still be scheduling when asked).
    assert (second["slug"], second["ready"]) == ("second", False)
    assert second["phase"] in ("scheduling", "provisioning")
    assert first["workload"]["model_name"] == "test/first"

    code, out, _ = run(capsys, "delete", "first", "gone", "--json")
    assert code == 0
    assert json.loads(out)["workloads"] == [{"slug": "first", "deleted": True}, {"slug": "gone", "deleted": False}]

    code, out, err = run(
        capsys,
        "apply",
        "--json",
        write(tmp_path, MANIFEST.replace('backend = "vllm"', 'backend = "vllm"\noops = 1'), "bad.toml"),
    )
    assert code == 1
    failed = json.loads(out)
    assert failed["ok"] is False and failed["exit_code"] == 1
    assert failed["error"]["type"] == "ValidationError"
    assert 'unknown field "oops"' in failed["error"]["message"]
    assert len(error_lines(err, "apply")) == 1


def test_tokens_stored_on_the_platform_are_redacted_in_every_output(
    env: LocalPlatform, admin: Admin, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # Someone stored a key in a workload's command outside the SDK (whose secret scan would have refused it).
    status, _, _ = http_json(
        "POST",
        f"{env.url}{WORKLOADS_PATH}",
        env.sdk_token,
        {
            "name": "leaky",
            "slug": "leaky",
            "model_name": "test/model",
            "backend": "vllm",
            "config": {"command": f"vllm serve --api-key {BOGUS_LIVE_KEY}"},
        },
    )
    assert status == 201
    manifest = write(tmp_path, workload_table("leaky", command="vllm serve"))
    outputs = []
    runs = [
        (["plan"], 2),
        (["plan", "--json"], 2),
        (["apply", "--on-drift", "warn"], 0),
        (["apply", "--on-drift", "fail"], 1),
    ]
    for argv, expected in runs:
        code, out, err = run(capsys, *argv, manifest)
        assert code == expected, (argv, err)
        outputs.append(out + err)
    for argv in (["status"], ["status", "--json"]):
        code, out, err = run(capsys, *argv)
        assert code == 0, err
        outputs.append(out + err)
    shown = BOGUS_LIVE_KEY[:16] + "\u2026"
    assert all(shown in output for output in outputs[:4]), "the drifted command is shown, redacted"
    for output in outputs:
        assert_no_token(output, BOGUS_LIVE_KEY, *platform_tokens(env))


# --- bad input --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("unknown field", 'validation error: {path}:14: workload #2 ("second"): unknown field "modle"'),
        ("wrong type", 'validation error: {path}:12: workload #2 ("second"): model must be a string, got integer'),
        (
            "secret in the file",
            "configuration error: secrets must never go in specs ({path}:7 holds an InferenceKey token)",
        ),
        ("duplicate slug", 'validation error: {path}:9: workload #2 ("First") has the slug "first" of workload #1'),
        ("wrong token type", "permission denied [wrong_credential_type]: "),
    ],
)
@pytest.mark.parametrize("command", ["plan", "apply"])
def test_bad_input_is_one_line_on_stderr_and_exit_1(
    env: LocalPlatform,
    admin: Admin,
    mgmt: ManagementClient,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    case: str,
    expected: str,
    command: str,
) -> None:
    text = MANIFEST
    if case == "unknown field":
        text = text.replace('backend = "ollama"', 'backend = "ollama"\nmodle = "x"')
    elif case == "wrong type":
        text = text.replace('model = "test/second"', "model = 2")
    elif case == "secret in the file":
        text = text.replace('"vllm serve test/first"', f'"vllm serve test/first --api-key {BOGUS_LIVE_KEY}"')
    elif case == "duplicate slug":
        text = text.replace('slug = "second"', 'slug = "First"')
    else:
        monkeypatch.setenv("INFERENCEKEY_SDK_TOKEN", env.api_key)
    manifest = write(tmp_path, text)
    for as_json in (False, True):
        code, out, err = run(capsys, command, manifest, *(["--json"] if as_json else []))
        assert code == 1
        assert err.count("\n") == 1, err
        assert err.startswith(f"inferencekey {command}: " + expected.format(path=manifest)), err
        if as_json:
            assert json.loads(out)["error"]["message"] == err.split(": ", 1)[1].rstrip("\n")
        else:
            assert out == ""
        assert_no_token(out + err, *platform_tokens(env), BOGUS_LIVE_KEY)
    if case == "wrong token type":
        assert env.api_key[:16] + "\u2026" in err, "the key is shown redacted"
    assert slugs(mgmt) == [], "nothing was created"


def test_usage_errors_exit_1(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    manifest = write(tmp_path, MANIFEST)
    for argv in (["plan"], ["plan", manifest, "--bogus"], ["apply", manifest, "--on-drift", "sometimes"]):
        code, out, err = run(capsys, *argv)
        assert code == 1, argv
        assert "usage: inferencekey " in err
    code, out, _ = run(capsys, "apply", "--help")
    assert code == 0
    assert "--on-drift {reconcile,fail,dry_run,warn,ignore}" in out
    code, out, _ = run(capsys, "--help")
    assert code == 0
    assert all(name in out for name in ("plan", "apply", "delete", "status", "local"))


# --- delete and status ------------------------------------------------------------------------------------------------


def test_delete_and_status(
    env: LocalPlatform, admin: Admin, mgmt: ManagementClient, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, _ = run(capsys, "status")
    assert (code, out) == (0, "No workloads.\n")
    assert run(capsys, "apply", write(tmp_path, MANIFEST))[0] == 0
    admin.fail_readiness("second", "CUDA out of memory")
    with pytest.raises(ApiError, match="CUDA out of memory"):
        mgmt.wait_until_ready("second", silent=True, timeout=HANG_GUARD)

    code, out, err = run(capsys, "status")
    assert code == 0, err
    header, first, second = out.splitlines()
    assert header.split() == ["SLUG", "PHASE", "READY", "BACKEND", "MODEL", "MESSAGE"]
    assert first.split()[:5] == ["first", "ready", "yes", "vllm", "test/first"]
    assert second.split()[:2] == ["second", "error"]
    assert "CUDA out of memory" in second

    code, out, _ = run(capsys, "status", "Second")
    assert code == 0
    assert [line.split()[0] for line in out.splitlines()] == ["SLUG", "second"]
    code, out, err = run(capsys, "status", "nope")
    assert (code, out) == (1, "")
    assert err == "inferencekey status: workload 'nope' not found\n"

    admin.clear_journal()
    code, out, err = run(capsys, "delete", "first", "Second", "gone")
    assert code == 0, err
    assert out.splitlines() == ["first: deleted", "second: deleted", "gone: not found, nothing to delete"]
    assert slugs(mgmt) == []
    assert [method for method, _ in writes(admin)] == ["DELETE", "DELETE"]

    code, _, err = run(capsys, "delete", "x", "--project", "elsewhere")
    assert code == 1
    assert error_lines(err, "delete")[0].startswith(
        "inferencekey delete: workload #1 (x) failed: permission denied [project_scope_mismatch]"
    )


# --- the installed command --------------------------------------------------------------------------------------------


def test_console_script_plan_apply_status(platform: LocalPlatform, admin: Admin, tmp_path: Path) -> None:
    script = console_script()
    manifest = write(tmp_path, MANIFEST)

    def cli(*argv: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [script, *argv], env=child_env(platform, **env), capture_output=True, text=True, timeout=60, check=False
        )

    assert cli("plan", manifest).returncode == 2
    applied = cli("apply", manifest, "--json")
    assert applied.returncode == 0, applied.stderr
    assert [w["ready"] for w in json.loads(applied.stdout)["workloads"]] == [True, True]
    again = cli("plan", manifest)
    assert again.returncode == 0, again.stderr
    status = cli("status", "--json")
    assert [w["phase"] for w in json.loads(status.stdout)["workloads"]] == ["ready", "ready"]

    wrong = cli("plan", manifest, INFERENCEKEY_SDK_TOKEN=platform.api_key)
    assert wrong.returncode == 1
    assert wrong.stdout == ""
    assert wrong.stderr.startswith("inferencekey plan: permission denied [wrong_credential_type]: ")
    assert wrong.stderr.count("\n") == 1
    unknown = cli("plan", manifest, INFERENCEKEY_SDK_TOKEN=BOGUS_SDK_TOKEN)
    assert unknown.returncode == 1
    assert unknown.stderr.startswith("inferencekey plan: workload #1 (first) failed: authentication failed")
    for result in (applied, again, status, wrong, unknown):
        assert_no_token(result.stdout + result.stderr, *platform_tokens(platform), BOGUS_SDK_TOKEN)
