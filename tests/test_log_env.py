# INFERENCEKEY_LOG: the inferencekey logger at the named level with a stderr handler, set up at import (each case in a
# fresh interpreter, since import is when it happens); an unknown value is ignored with one warning; unset, nothing.
from __future__ import annotations

import logging

import pytest
from conftest import BOGUS_LIVE_KEY, assert_no_token, child_env, platform_tokens, run_python

from inferencekey.local import LocalPlatform

# One control-plane request that succeeds and one data-plane request refused (401) for a bogus key, then the state of
# the `inferencekey` logger on stdout.
SCRIPT = f"""
import logging
import inferencekey
from inferencekey import AuthError, DataClient, ManagementClient

ManagementClient.from_env().list_workloads()
try:
    DataClient.from_env(api_key={BOGUS_LIVE_KEY!r}).endpoint("support-bot").generate_text(prompt="hi")
except AuthError:
    pass
logger = logging.getLogger("inferencekey")
print(logging.getLevelName(logger.level), [type(h).__name__ for h in logger.handlers])
"""


def run(platform: LocalPlatform, value: str | None) -> tuple[str, str]:
    env = child_env(platform) if value is None else child_env(platform, INFERENCEKEY_LOG=value)
    proc = run_python(SCRIPT, env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip(), proc.stderr


@pytest.mark.parametrize("value", ["debug", "DEBUG", " Debug "])
def test_debug_shows_each_request_on_stderr_with_tokens_redacted(platform: LocalPlatform, value: str) -> None:
    state, err = run(platform, value)
    assert state == "DEBUG ['StreamHandler']"
    lines = err.splitlines()
    listed = [line for line in lines if f"{platform.url}/api/projects/local/workloads -> 200 in" in line]
    assert len(listed) == 1, err
    assert " DEBUG inferencekey.inferencekey_core.transport: Get " in listed[0]
    assert any("/v1/chat/completions -> 401 in" in line for line in lines), err
    assert_no_token(err, BOGUS_LIVE_KEY, *platform_tokens(platform))


@pytest.mark.parametrize(("value", "level"), [("info", "INFO"), ("Warning", "WARNING"), ("error", "ERROR")])
def test_other_levels_hide_the_debug_lines(platform: LocalPlatform, value: str, level: str) -> None:
    state, err = run(platform, value)
    assert state == f"{level} ['StreamHandler']"
    assert err == ""


def test_unset_or_blank_configures_nothing(platform: LocalPlatform) -> None:
    for value in (None, "", "  "):
        state, err = run(platform, value)
        assert state == "NOTSET ['NullHandler']"
        assert err == ""


def test_an_unknown_value_is_ignored_with_one_warning(platform: LocalPlatform) -> None:
    state, err = run(platform, "verbose")
    assert state == "NOTSET ['NullHandler']"
    warning = "RuntimeWarning: INFERENCEKEY_LOG='verbose' is not one of debug, info, warning, error; it is ignored"
    assert err.count(warning) == 1, err
    assert err.count("Warning") == 1, err
    # A credential pasted into the variable is not echoed whole.
    state, err = run(platform, platform.sdk_token)
    assert "is not one of debug, info, warning, error" in err
    assert_no_token(err, *platform_tokens(platform))


def test_records_follow_the_logger_level_from_one_call_to_the_next(caplog: pytest.LogCaptureFixture) -> None:
    # Records below the `inferencekey` logger's level are dropped where they are made (no per-request work); a level
    # changed between calls applies to the next call.
    from inferencekey import ManagementClient
    from inferencekey.local import LocalPlatform

    with LocalPlatform() as lp:
        mgmt = ManagementClient(base_url=lp.url, sdk_token=lp.sdk_token, project=lp.project)
        logger = logging.getLogger("inferencekey")
        previous = logger.level
        try:
            logger.setLevel(logging.WARNING)
            with caplog.at_level(logging.WARNING, logger="inferencekey"):
                mgmt.list_workloads()
            assert not [r for r in caplog.records if "/workloads -> 200" in r.getMessage()]
            caplog.clear()
            logger.setLevel(logging.DEBUG)
            with caplog.at_level(logging.DEBUG, logger="inferencekey"):
                mgmt.list_workloads()
            assert [r for r in caplog.records if "/workloads -> 200" in r.getMessage()]
        finally:
            logger.setLevel(previous)
