# Regression tests of the reliability issue: values that crashed the interpreter, secrets that leaked, routes a
# request could leave, streams that grew without bound or hung, and errors that did not say what was wrong.
from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import warnings
from typing import Any

import pytest
from conftest import (
    ELLIPSIS,
    PROJECT,
    WORKLOADS_PATH,
    Admin,
    Deploy,
    child_env,
    exception_text,
    http_json,
    make_spec,
    management,
    run_python,
)

from inferencekey import (
    ApiError,
    AsyncDataClient,
    AsyncManagementClient,
    ConfigurationError,
    DataClient,
    DriftWarning,
    ManagementClient,
    OnDrift,
    ValidationError,
)
from inferencekey.local import LocalPlatform

SECRETS = "configuration error: secrets must never go in specs"
OFFLINE = "http://127.0.0.1:9"
LIVE = "ik_live_a1b2c3d4_" + "0f" * 32

# One secret of every format the guard recognises, with the words it uses for it. Built by concatenation so that
# no full credential shape sits in this file.
FORMATS = [
    ("hf_" + "AbCdEfGhIjKlMnOpQrStUvWxYz01234567", "a Hugging Face token"),
    ("sk-" + "proj-Ab3dEfGhIjKlMnOpQrStUvWxYz0123456789", "an OpenAI API key"),
    ("sk-" + "ant-api03-Ab3dEfGhIjKlMnOpQrStUvWxYz0123456789", "an Anthropic API key"),
    ("AKIA" + "IOSFODNN7EXAMPLE", "an AWS access key"),
    ("ghp_" + "abcdefghijklmnopqrstuvwxyz0123456789", "a GitHub token"),
    ("github_pat_" + "11ABCDEFG0123456789_abcdefghijklmnop", "a GitHub token"),
    ("xoxb-" + "123456789012-1234567890123-AbCdEfGhIjKl", "a Slack token"),
    ("-----BEGIN " + "PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----", "a private key"),
    ("https://alice:" + "s3cr3t-pa55word@models.example.com/m", "a password in a URL"),
    (
        "eyJ" + "hbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        "a JSON Web Token",
    ),
    ("ik_admin_" + "0a1b2c3d_" + "00112233445566778899aabbccddeeff", "an InferenceKey token"),
    ("IK_LIVE_" + "A1B2C3D4_" + "0123456789ABCDEF0123456789ABCDEF", "an InferenceKey token"),
    ("ik%5Fsdk%5F" + "a1b2c3d4%5F0123456789abcdef0123456789", "an InferenceKey token"),
]


def hidden(secret: str) -> str:
    """A part of `secret` that must never be shown: a key block's body, a URL's password, else its last 12
    characters."""
    if "PRIVATE KEY" in secret:
        return secret.split("\n")[1]
    if "://" in secret:
        return secret.split("@")[0].rsplit(":", 1)[1]
    return secret[-12:]


def assert_hidden(text: str, secret: str) -> None:
    assert hidden(secret) not in text, f"secret leaked in: {text!r}"


# --- 1. values JSON cannot carry ---------------------------------------------------------------------------------

CRASHERS = """
import threading
from inferencekey import DataClient, ManagementClient, ValidationError, WorkloadSpec

ep = DataClient(base_url="http://127.0.0.1:9", project="p", api_key="ik_live_a1b2c3d4_x").endpoint("w")
cyclic = {}
cyclic["self"] = cyclic
deep = []
for _ in range(10_000):
    deep = [deep]
cyclic_list = []
cyclic_list.append(cyclic_list)
results = []

def check(call, expected):
    try:
        call()
    except ValidationError as err:
        results.append(str(err) == expected or str(err))
    else:
        results.append("no error")

def run_all():
    check(lambda: ep.generate_text(messages=[{"role": "user", "content": "hi", "meta": cyclic}]),
          "validation error: messages holds a reference cycle, which JSON cannot carry")
    check(lambda: ep.generate_text(messages=[{"role": "user", "content": deep}]),
          "validation error: messages nests deeper than 128 levels")
    check(lambda: ep.generate_text(messages=cyclic_list),
          "validation error: messages holds a reference cycle, which JSON cannot carry")
    mgmt = ManagementClient(base_url="http://127.0.0.1:9", sdk_token="ik_sdk_a1b2c3d4_x", project="p")
    spec = WorkloadSpec(name="w", slug="w", model="m", backend="vllm", config={"a": cyclic})
    check(lambda: mgmt.ensure(spec), "validation error: config holds a reference cycle, which JSON cannot carry")
    spec = WorkloadSpec(name="w", slug="w", model="m", backend="vllm", execution_policy_config={"d": deep})
    check(lambda: mgmt.plan(spec), "validation error: execution_policy_config nests deeper than 128 levels")

run_all()
worker = threading.Thread(target=run_all)
worker.start()
worker.join()
print(results)
"""


def test_cyclic_and_deep_values_are_validation_errors_on_every_thread() -> None:
    # In a child: before the fix these crashed the interpreter (SIGSEGV), which would end the whole suite.
    done = run_python(CRASHERS, child_env())
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert done.stdout.strip() == str([True] * 10), done.stdout


def test_nesting_up_to_the_limit_is_sent(deploy: Deploy, admin: Admin) -> None:
    ep = deploy()
    nested: Any = "leaf"
    for _ in range(120):
        nested = {"n": nested}
    result = ep.generate_text(messages=[{"role": "user", "content": "hi", "meta": nested}])
    assert result.text
    (entry,) = [e for e in admin.journal() if e["path"].endswith("/chat/completions")]
    assert entry["status"] == 200


# --- 2. the secret guard -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("secret", "words"), FORMATS, ids=[words for _, words in FORMATS])
def test_every_common_secret_format_is_refused_in_a_spec(
    mgmt: ManagementClient, admin: Admin, secret: str, words: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="inferencekey")
    with pytest.raises(ConfigurationError) as info:
        mgmt.ensure(make_spec(config={"env": {"SOME_SETTING": secret}}))
    assert str(info.value) == f"{SECRETS} (config.env.SOME_SETTING holds {words})"
    assert_hidden(exception_text(info.value) + caplog.text, secret)
    with pytest.raises(ConfigurationError):
        mgmt.plan(make_spec(command=f"serve --model m {secret}"))
    assert admin.journal() == []


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"env": {"HF_TOKEN": "not-a-known-shape-but-a-token"}}, "config.env.HF_TOKEN"),
        (
            {"env": {"AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}},
            "config.env.AWS_SECRET_ACCESS_KEY",
        ),
        ({"auth": {"password": "correct-horse-battery"}}, "config.auth.password"),
        ({"args": ["--api-key", "x", "--hf-token=abcdefgh12345678"]}, "config.args[2]"),
    ],
)
def test_secret_named_settings_are_refused(mgmt: ManagementClient, config: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        mgmt.ensure(make_spec(config=config))
    assert str(info.value).startswith(f"{SECRETS} ({field} holds ")


def test_ordinary_specs_are_not_secrets(mgmt: ManagementClient, admin: Admin) -> None:
    spec = make_spec(
        model="meta-llama/Llama-3.1-8B-Instruct",
        command="vllm serve meta-llama/Llama-3.1-8B-Instruct --api-key $VLLM_API_KEY --max-model-len 8192",
        config={
            "revision": "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678",
            "download_dir": "/models/cache",
            "env": {"HF_TOKEN": "$HF_TOKEN", "HF_HUB_ENABLE_HF_TRANSFER": "1"},
            "bos_token": "<|begin_of_text|>",
            "max_tokens": 4096,
        },
    )
    mgmt.ensure(spec)
    assert [e["method"] for e in admin.journal()] == ["GET", "POST"]


def test_a_secret_already_on_the_platform_never_leaves_the_sdk(
    platform: LocalPlatform, mgmt: ManagementClient, admin: Admin, caplog: pytest.LogCaptureFixture
) -> None:
    # Put there by another tool: the SDK refuses to send it, but shows the live workload in plans and warnings.
    secret = FORMATS[0][0]
    body = {
        "name": "bot",
        "slug": "bot",
        "model_name": "m",
        "backend": "vllm",
        "config": {"env": {"HF_TOKEN": secret, "PASSWORD": "hunter2hunter2"}},
    }
    status, _, _ = http_json("POST", platform.url + WORKLOADS_PATH, platform.sdk_token, body)
    assert status == 201
    spec = make_spec(slug="bot", name="bot", model="m", config={"env": {"HF_HUB_OFFLINE": "1"}})
    caplog.set_level(logging.DEBUG, logger="inferencekey")
    plan = mgmt.plan(spec)
    shown = plan.rendered + repr(plan) + str(plan.changes)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mgmt.ensure(spec, on_drift=OnDrift.WARN)
    shown += "".join(str(w.message) for w in caught if issubclass(w.category, DriftWarning))
    mgmt.ensure(spec, on_drift=OnDrift.DRY_RUN)
    shown += caplog.text
    assert "config.env" in plan.rendered
    assert_hidden(shown, secret)
    assert "hunter2hunter2" not in shown
    status_json = subprocess.run(
        [sys.executable, "-m", "inferencekey", "status", "--json"],
        env=child_env(platform),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert status_json.returncode == 0, status_json.stderr
    assert_hidden(status_json.stdout + status_json.stderr, secret)
    assert "hunter2hunter2" not in status_json.stdout


# --- 3. a token used as a slug --------------------------------------------------------------------------------------


def test_a_token_given_as_a_slug_is_refused_and_never_printed(
    platform: LocalPlatform, mgmt: ManagementClient, admin: Admin, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="inferencekey")
    token = platform.sdk_token
    for call in (
        lambda: mgmt.delete(token),
        lambda: mgmt.wait_until_ready(token, timeout=1),
        lambda: DataClient(base_url=platform.url, project=PROJECT, api_key=platform.api_key).endpoint(token),
    ):
        with pytest.raises(ConfigurationError) as info:
            call()
        assert str(info.value) == (
            "configuration error: slug holds an InferenceKey token; secrets must never go in slugs or URLs"
        )
    assert admin.journal() == []
    assert_hidden(caplog.text, token)
    cli = subprocess.run(
        [sys.executable, "-m", "inferencekey", "delete", token],
        env=child_env(platform),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert cli.returncode != 0
    assert_hidden(cli.stdout + cli.stderr, token)
    assert token.split("_")[2][:8] not in cli.stdout + cli.stderr or ELLIPSIS in cli.stdout + cli.stderr


# --- 4. credentials in base_url -------------------------------------------------------------------------------------


@pytest.mark.parametrize("base_url", ["http://user:hunter2pass@127.0.0.1:9", f"http://{LIVE}@127.0.0.1:9/x"])
def test_base_url_with_credentials_is_a_configuration_error(base_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    attempts = [
        lambda: ManagementClient(base_url=base_url, sdk_token="ik_sdk_a1b2c3d4_x", project="p"),
        lambda: DataClient(base_url=base_url, project="p", api_key=LIVE),
        lambda: AsyncDataClient(base_url=base_url, project="p", api_key=LIVE),
    ]
    monkeypatch.setenv("INFERENCEKEY_BASE_URL", base_url)
    monkeypatch.setenv("INFERENCEKEY_PROJECT", "p")
    monkeypatch.setenv("INFERENCEKEY_SDK_TOKEN", "ik_sdk_a1b2c3d4_x")
    attempts.append(lambda: ManagementClient.from_env())
    for attempt in attempts:
        with pytest.raises(ConfigurationError) as info:
            attempt()
        assert "base_url must not hold credentials" in str(info.value)
        text = exception_text(info.value)
        assert "hunter2pass" not in text and hidden(LIVE) not in text


# --- 5. errors keep nothing their messages hide --------------------------------------------------------------------


def test_error_bodies_and_request_ids_are_redacted(deploy: Deploy, admin: Admin, platform: LocalPlatform) -> None:
    ep = deploy()
    secret = FORMATS[0][0]
    admin.fault("chat_stream", {"type": "inband_error", "after_events": 1, "message": f"engine leaked {secret}"})
    with pytest.raises(ApiError) as streamed:
        list(ep.generate_text_stream(prompt="hi"))
    admin.fail_next("chat", 500, body={"error": {"code": "boom", "message": f"key {LIVE} rejected"}})
    admin.fault("chat", {"type": "status", "status": 503, "headers": {"x-request-id": LIVE}}, count=3)
    with pytest.raises(ApiError) as unary:
        ep.generate_text(prompt="hi")
    with pytest.raises(ApiError) as tagged:
        ep.generate_text(prompt="hi")
    for err in (streamed.value, unary.value, tagged.value):
        text = exception_text(err) + json.dumps(err.body) + str(err.request_id) + str(err.code)
        assert_hidden(text, secret)
        assert_hidden(text, LIVE)
    assert tagged.value.request_id == "ik_live_a1b2c3d4" + ELLIPSIS


# --- 9. path segments ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("project", [".", ".."])
def test_dot_projects_cannot_leave_their_route(platform: LocalPlatform, admin: Admin, project: str) -> None:
    with pytest.raises(ValidationError) as info:
        DataClient(base_url=platform.url, project=project, api_key=platform.api_key)
    assert str(info.value) == f'validation error: project "{project}" is not a project slug'
    mgmt = ManagementClient(base_url=platform.url, sdk_token=platform.sdk_token, project=project)
    with pytest.raises(ValidationError):
        mgmt.list_workloads()
    with pytest.raises(ValidationError):
        management(platform).ensure(make_spec(project=project))
    assert admin.journal() == []


# --- 11. readiness error frames ------------------------------------------------------------------------------------


def test_a_readiness_error_frame_raises_at_once_with_the_servers_message(mgmt: ManagementClient, admin: Admin) -> None:
    mgmt.ensure(make_spec())
    admin.readiness("support-bot", "stuck")
    admin.fault("readiness", {"type": "inband_error", "after_events": 1, "message": "node pool exhausted"})
    with pytest.raises(ApiError) as info:
        # The default deadline is 600 s: before the fix this reconnected until it.
        mgmt.wait_until_ready("support-bot", silent=True)
    assert str(info.value) == "the readiness stream reported an error: node pool exhausted"
    assert info.value.request_id is not None
    assert info.value.code == "internal_error"


def test_a_readiness_error_frame_raises_at_once_async(platform: LocalPlatform, admin: Admin) -> None:
    async def main() -> None:
        async with AsyncManagementClient(base_url=platform.url, sdk_token=platform.sdk_token, project=PROJECT) as mgmt:
            await mgmt.ensure(make_spec())
            admin.readiness("support-bot", "stuck")
            admin.fault("readiness", {"type": "inband_error", "after_events": 1, "message": "quota"})
            with pytest.raises(ApiError, match="reported an error: quota"):
                await asyncio.wait_for(mgmt.wait_until_ready("support-bot", silent=True), 30)

    asyncio.run(main())


# --- 12. errors that say what is wrong -----------------------------------------------------------------------------


def test_wrong_types_name_the_argument() -> None:
    ep = DataClient(base_url=OFFLINE, project="p", api_key=LIVE, max_retries=0).endpoint("w")
    cases: list[tuple[Any, type[Exception], str]] = [
        (lambda: ep.generate_text(prompt=123), TypeError, "prompt must be a str, not int"),
        (lambda: ep.generate_text(prompt="x", temperature="hot"), TypeError, "temperature must be a number, not str"),
        (lambda: ep.generate_text(prompt="x", max_tokens="5"), TypeError, "max_tokens must be an int, not str"),
        (lambda: ep.generate_text(prompt="x", max_tokens=True), TypeError, "max_tokens must be an int, not bool"),
        (
            lambda: ep.generate_text(prompt="x", max_tokens=2**70),
            ValidationError,
            "validation error: max_tokens is too large",
        ),
        (lambda: ep.embed(input=5), TypeError, "input must be a str or a list of str, not int"),  # type: ignore[arg-type]
        (lambda: ep.embed(input=["a", 5]), TypeError, "input[1] must be a str, not int"),  # type: ignore[list-item]
        (lambda: ep.rerank(query="q", documents="doc"), TypeError, "documents must be a list of str, not str"),
        (lambda: DataClient(base_url=OFFLINE, project=5, api_key=LIVE), TypeError, "project must be a str, not int"),  # type: ignore[arg-type]
        (
            lambda: DataClient(base_url=OFFLINE, project="p", max_retries=2**70),
            ValidationError,
            "validation error: max_retries is too large",
        ),
        (
            lambda: DataClient(base_url=OFFLINE, project="p", timeout=float("inf")),
            ValidationError,
            "validation error: timeout must be a positive, finite number of seconds",
        ),
    ]
    for call, exc_type, message in cases:
        with pytest.raises(exc_type) as info:
            call()
        assert str(info.value) == message


def test_a_success_reply_without_choices_is_a_malformed_response(deploy: Deploy, admin: Admin) -> None:
    ep = deploy()
    admin.fault("chat", {"type": "status", "status": 200, "body": {"id": "chatcmpl-1", "object": "chat.completion"}})
    with pytest.raises(ApiError) as info:
        ep.generate_text(prompt="hi")
    assert str(info.value) == "malformed response: chat completion without a choices list"
    assert info.value.request_id is not None


# --- every secret format through every error path ------------------------------------------------------------------


def error_paths(secret: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(name, route, fault) for each way a server's words reach an exception, each carrying `secret`."""
    said = f"rejected {secret} here"
    # A key block spans lines, which no header can carry.
    header = (
        []
        if "\n" in secret
        else [("request id", "chat", {"type": "status", "status": 500, "headers": {"x-request-id": secret}})]
    )
    return [
        *header,
        ("status body", "chat", {"type": "status", "status": 500, "body": {"error": {"code": "x", "message": said}}}),
        ("validation body", "chat", {"type": "status", "status": 400, "body": {"message": said, "param": secret}}),
        ("permission body", "chat", {"type": "status", "status": 403, "body": {"error": {"code": secret}}}),
        ("text body", "chat", {"type": "status", "status": 502, "body": said}),
        ("in-band nested", "chat_stream", {"type": "inband_error", "after_events": 1, "message": said}),
        ("in-band flat", "chat_stream", {"type": "inband_error", "after_events": 1, "shape": "flat", "message": said}),
        (
            "in-band event",
            "chat_stream",
            {"type": "inband_error", "after_events": 1, "shape": "event", "message": said},
        ),
        ("readiness frame", "readiness", {"type": "inband_error", "after_events": 1, "message": said}),
    ]


@pytest.mark.parametrize(("secret", "words"), FORMATS, ids=[words for _, words in FORMATS])
def test_no_secret_of_any_format_leaves_through_any_error_path(
    mgmt: ManagementClient, deploy: Deploy, admin: Admin, secret: str, words: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="inferencekey")
    ep = deploy()
    mgmt.ensure(make_spec(slug="warming"))
    for name, route, fault in error_paths(secret):
        admin.fault(route, fault, **({"workload": "warming"} if route == "readiness" else {}))
        if route == "readiness":
            admin.readiness("warming", "stuck")
        with pytest.raises(Exception) as info:
            if route == "chat":
                ep.generate_text(prompt="hi")
            elif route == "chat_stream":
                list(ep.generate_text_stream(prompt="hi"))
            else:
                mgmt.wait_until_ready("warming", timeout=30, silent=True)
        err = info.value
        seen = exception_text(err) + caplog.text
        for attribute in ("body", "request_id", "code", "status_code"):
            seen += json.dumps(getattr(err, attribute, None))
        assert hidden(secret) not in seen, f"{name}: {seen!r}"
    # Every path was taken: nine faults fired.
    assert len([e for e in admin.journal() if e.get("fault")]) == len(error_paths(secret))


def test_local_platform_arguments_are_checked() -> None:
    for kwargs, exc_type, message in [
        ({"port": 70000}, ValidationError, "validation error: port must be an integer from 0 to 65535"),
        ({"port": -1}, ValidationError, "validation error: port must be an integer from 0 to 65535"),
        ({"port": "8080"}, TypeError, "port must be an int, not str"),
        ({"seed": 2**64}, ValidationError, "validation error: seed must be an integer from 0 to 18446744073709551615"),
        ({"project": 3}, TypeError, "project must be a str, not int"),
    ]:
        with pytest.raises(exc_type) as info:
            LocalPlatform(**kwargs)
        assert str(info.value) == message


# --- found on the way: an abort at exit ------------------------------------------------------------------------------

LATE_RESULT_AT_EXIT = """
import asyncio, logging, os, threading, time

class SlowOffMain(logging.Handler):
    # Emitting from an SDK thread takes a while (without the interpreter lock), so the result reaches the loop
    # late, and the program exits while the thread that handed it over is still inside that call.
    def emit(self, record):
        if threading.current_thread() is not threading.main_thread():
            time.sleep(0.02)

logger = logging.getLogger("inferencekey")
logger.setLevel(logging.DEBUG)
logger.addHandler(SlowOffMain())
from inferencekey import AsyncDataClient

env = os.environ
ep = AsyncDataClient(base_url=env["INFERENCEKEY_BASE_URL"], project=env["INFERENCEKEY_PROJECT"],
                     api_key=env["INFERENCEKEY_API_KEY"]).endpoint("support-bot")

async def main():
    await ep.generate_text(prompt="hi")

asyncio.run(main())
print("done")
"""


def test_a_program_that_exits_right_after_an_async_result_exits_cleanly(
    platform: LocalPlatform, deploy: Deploy
) -> None:
    # Before the fix, 14 of 20 such programs were killed by SIGABRT after they had finished: the thread that handed
    # the result to the loop took the interpreter lock back during finalization and was ended inside our frames.
    deploy()
    for _ in range(10):
        done = run_python(LATE_RESULT_AT_EXIT, child_env(platform))
        assert (done.returncode, done.stdout.strip()) == (0, "done"), done.stderr[-2000:]
