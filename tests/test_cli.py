# The `inferencekey` command (--version, `local serve`, `local exec`) and the in-process LocalPlatform handle
# (ready text, env, seeds, repr, stop).
from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import LineReader, assert_no_token, child_env, http_json, make_spec, platform_tokens

import inferencekey
from inferencekey import ManagementClient
from inferencekey.local import LocalPlatform

SDK_TOKEN = re.compile(r"^ik_sdk_[0-9a-f]{8}_[0-9a-f]{64}$")
LIVE_KEY = re.compile(r"^ik_live_[0-9a-f]{8}_[0-9a-f]{64}$")
CLI = [sys.executable, "-m", "inferencekey"]
POSIX_SIGNALS = pytest.mark.skipif(
    sys.platform == "win32", reason="sends SIGINT/SIGTERM and reads a pipe with select(): POSIX only"
)

EXEC_SCRIPT = """
import json, os, sys
from inferencekey import ManagementClient
names = ["INFERENCEKEY_BASE_URL", "INFERENCEKEY_PROJECT", "INFERENCEKEY_SDK_TOKEN", "INFERENCEKEY_API_KEY"]
print(json.dumps({name: os.environ.get(name) for name in names}))
print(json.dumps(ManagementClient.from_env().list_workloads()))
sys.exit(7)
"""


def refuses_connections(url: str) -> bool:
    """True when nothing answers at `url` any more."""
    try:
        urllib.request.urlopen(url + "/api/projects/x/workloads", timeout=2)
    except urllib.error.HTTPError:
        return False
    except OSError:
        return True
    return False


def test_module_version() -> None:
    result = subprocess.run([*CLI, "--version"], capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    assert inferencekey.__version__ in result.stdout


def console_script() -> str:
    """The installed `inferencekey` command of this interpreter's environment (bin/inferencekey,
    Scripts\\inferencekey.exe on Windows)."""
    scripts = sysconfig.get_path("scripts")
    script = shutil.which("inferencekey", path=scripts)
    assert script, f"console script not installed in {scripts}"
    return script


def test_console_script_version() -> None:
    result = subprocess.run([console_script(), "--version"], capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    assert inferencekey.__version__ in result.stdout


@pytest.mark.parametrize("entry_point", ["module", "console-script"])
def test_local_exec_runs_the_command_with_the_variables(entry_point: str) -> None:
    cli = CLI if entry_point == "module" else [console_script()]
    result = subprocess.run(
        [*cli, "local", "exec", "--", sys.executable, "-c", EXEC_SCRIPT],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 7, result.stderr
    lines = result.stdout.splitlines()
    variables = json.loads(lines[0])
    assert variables["INFERENCEKEY_BASE_URL"].startswith("http://127.0.0.1:")
    assert variables["INFERENCEKEY_PROJECT"] == "local"
    assert SDK_TOKEN.match(variables["INFERENCEKEY_SDK_TOKEN"])
    assert LIVE_KEY.match(variables["INFERENCEKEY_API_KEY"])
    assert json.loads(lines[1]) == []
    assert refuses_connections(variables["INFERENCEKEY_BASE_URL"])


def test_local_exec_propagates_success_and_a_missing_command() -> None:
    ok = subprocess.run(
        [*CLI, "local", "exec", "--", sys.executable, "-c", "pass"], env=child_env(), timeout=60, check=False
    )
    assert ok.returncode == 0
    missing = subprocess.run(
        [*CLI, "local", "exec", "--", "no-such-command-inferencekey"],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert missing.returncode == 127
    assert "no-such-command-inferencekey" in missing.stderr


@POSIX_SIGNALS
@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_local_serve_prints_the_ready_line_and_stops(stop_signal: signal.Signals) -> None:
    proc = subprocess.Popen(
        [*CLI, "local", "serve", "--port", "0", "--project", "demo", "--seed", "7"],
        env=child_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        reader = LineReader(proc.stdout.fileno())
        ready = json.loads(reader.line(timeout=30))
        exports = [reader.line(timeout=5) for _ in range(4)]
        assert set(ready) == {"url", "project", "sdk_token", "api_key", "admin_token"}
        assert ready["project"] == "demo"
        assert ready["url"].startswith("http://127.0.0.1:")
        assert SDK_TOKEN.match(ready["sdk_token"])
        assert LIVE_KEY.match(ready["api_key"])
        assert exports == [
            f"export INFERENCEKEY_BASE_URL={ready['url']}",
            "export INFERENCEKEY_PROJECT=demo",
            f"export INFERENCEKEY_SDK_TOKEN={ready['sdk_token']}",
            f"export INFERENCEKEY_API_KEY={ready['api_key']}",
        ]
        status, _, info = http_json("GET", ready["url"] + "/_local/info", ready["admin_token"])
        assert (status, info) == (200, ready)
        with LocalPlatform(project="demo", seed=7) as same_seed:
            assert (same_seed.sdk_token, same_seed.api_key) == (ready["sdk_token"], ready["api_key"])
        proc.send_signal(stop_signal)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pipe in (proc.stdout, proc.stderr):
            if pipe:
                pipe.close()
    assert refuses_connections(ready["url"])


def test_local_platform_handle() -> None:
    with LocalPlatform(project="handle", seed=3) as lp:
        assert lp.project == "handle"
        assert lp.url.startswith("http://127.0.0.1:")
        assert SDK_TOKEN.match(lp.sdk_token)
        assert LIVE_KEY.match(lp.api_key)
        no_proxy = lp.env["NO_PROXY"]
        assert "127.0.0.1" in no_proxy.split(",")
        assert lp.env == {
            "INFERENCEKEY_BASE_URL": lp.url,
            "INFERENCEKEY_PROJECT": "handle",
            "INFERENCEKEY_SDK_TOKEN": lp.sdk_token,
            "INFERENCEKEY_API_KEY": lp.api_key,
            "NO_PROXY": no_proxy,
            "no_proxy": no_proxy,
        }
        lines = lp.ready_text.splitlines()
        assert json.loads(lines[0]) == {
            "url": lp.url,
            "project": "handle",
            "sdk_token": lp.sdk_token,
            "api_key": lp.api_key,
            "admin_token": lp.admin_token,
        }
        assert lines[1:] == [
            f"export INFERENCEKEY_BASE_URL={lp.url}",
            "export INFERENCEKEY_PROJECT=handle",
            f"export INFERENCEKEY_SDK_TOKEN={lp.sdk_token}",
            f"export INFERENCEKEY_API_KEY={lp.api_key}",
        ]
        assert_no_token(repr(lp), *platform_tokens(lp))
        url = lp.url
        assert not refuses_connections(url)
    assert refuses_connections(url)


def test_seeds_decide_the_tokens() -> None:
    with LocalPlatform(seed=11) as first, LocalPlatform(seed=11) as second, LocalPlatform(seed=12) as third:
        assert first.url != second.url
        assert (first.sdk_token, first.api_key) == (second.sdk_token, second.api_key)
        assert first.sdk_token != third.sdk_token
        assert first.api_key != third.api_key


def test_tokens_are_random_without_a_seed(tmp_path: Path) -> None:
    with LocalPlatform() as first, LocalPlatform() as second, LocalPlatform(seed=0) as zero:
        mine = platform_tokens(first)
        for other in (second, zero):
            assert all(a != b for a, b in zip(mine, platform_tokens(other), strict=True))
        assert SDK_TOKEN.match(first.sdk_token)
        assert LIVE_KEY.match(first.api_key)
    # A state directory keeps them across restarts.
    with LocalPlatform(state_dir=str(tmp_path)) as kept:
        tokens = platform_tokens(kept)
    with LocalPlatform(state_dir=str(tmp_path)) as again:
        assert platform_tokens(again) == tokens


def test_a_state_dir_serves_one_platform_at_a_time(tmp_path: Path) -> None:
    with LocalPlatform(state_dir=str(tmp_path)) as first:
        with pytest.raises(inferencekey.ConfigurationError, match="in use by another running local platform") as raised:
            LocalPlatform(state_dir=str(tmp_path))
        assert str(tmp_path) in str(raised.value)
        assert not refuses_connections(first.url)
    with LocalPlatform(state_dir=str(tmp_path)) as after:
        assert not refuses_connections(after.url)


def test_stop_is_idempotent() -> None:
    lp = LocalPlatform()
    url = lp.url
    lp.stop()
    lp.stop()
    assert refuses_connections(url)


def test_state_dir_keeps_workloads_and_tokens_across_restarts(tmp_path: Path) -> None:
    with LocalPlatform(state_dir=str(tmp_path), seed=5) as first:
        tokens = (first.sdk_token, first.api_key)
        mgmt = ManagementClient(base_url=first.url, sdk_token=first.sdk_token, project=first.project)
        mgmt.ensure(make_spec(description="persisted"))
    with LocalPlatform(state_dir=str(tmp_path), seed=5) as second:
        assert (second.sdk_token, second.api_key) == tokens
        mgmt = ManagementClient(base_url=second.url, sdk_token=second.sdk_token, project=second.project)
        assert [(w["slug"], w["description"]) for w in mgmt.list_workloads()] == [("support-bot", "persisted")]
