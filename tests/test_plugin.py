# The pytest plugin, as a user meets it: installed with the package, it gives a test suite a reset local platform,
# clients, the INFERENCEKEY_ variables and the admin API as plain methods, with no setup. The suite's own fixtures
# (conftest.py) are built on it too.
from __future__ import annotations

import pytest

from inferencekey import ApiError, DataClient, ManagementClient, WorkloadSpec
from inferencekey.testing import LocalAdmin

pytest_plugins = ["pytester"]

# What a user writes: no conftest, no fixtures of their own.
USER_TESTS = '''
import pytest
from inferencekey import ApiError, DataClient, ManagementClient, WorkloadSpec


def answer(prompt):
    """The app under test: retries once on a 429 of its own, else gives up."""
    ep = DataClient.from_env(max_retries=0).endpoint("support-bot")
    for attempt in range(2):
        try:
            return ep.generate_text(prompt=prompt, max_tokens=4).text
        except ApiError as error:
            if error.status_code != 429 or attempt == 1:
                raise


def test_the_app_retries_a_429(inferencekey_local, inferencekey_env):
    inferencekey_local.create_workload("support-bot")
    inferencekey_local.fail_next("chat", 429, times=1, retry_after=0)
    assert answer("Hola")
    assert [e["status"] for e in inferencekey_local.requests("chat")] == [429, 200]


def test_the_app_gives_up_after_two(inferencekey_local, inferencekey_env):
    inferencekey_local.create_workload("support-bot")
    inferencekey_local.fail_next("chat", 429, times=2)
    with pytest.raises(ApiError):
        answer("Hola")


def test_each_test_starts_clean(inferencekey_local, inferencekey_management):
    assert inferencekey_management.list_workloads() == []
    assert inferencekey_local.journal() == [e for e in inferencekey_local.journal() if "/workloads" in e["path"]]


def test_readiness_that_fails(inferencekey_local, inferencekey_management):
    spec = WorkloadSpec(name="bot", slug="bot", model="m", backend="vllm")
    inferencekey_management.ensure(spec)
    inferencekey_local.fail_readiness("bot", "CUDA out of memory")
    with pytest.raises(ApiError, match="CUDA out of memory"):
        inferencekey_management.wait_until_ready("bot", timeout=30, silent=True)
'''


def test_a_user_suite_gets_the_fixtures_with_no_setup(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user_app=USER_TESTS)
    # A fresh interpreter: the plugin must come from the installed entry point, not from this suite.
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)


def test_fixtures_give_clients_and_environment(
    inferencekey_local: LocalAdmin,
    inferencekey_env: dict[str, str],
    inferencekey_management: ManagementClient,
    inferencekey_data: DataClient,
) -> None:
    assert set(inferencekey_env) == {
        "INFERENCEKEY_BASE_URL",
        "INFERENCEKEY_PROJECT",
        "INFERENCEKEY_SDK_TOKEN",
        "INFERENCEKEY_API_KEY",
        "NO_PROXY",
        "no_proxy",
    }
    assert "127.0.0.1" in inferencekey_env["NO_PROXY"].split(",")
    assert ManagementClient.from_env().base_url == inferencekey_env["INFERENCEKEY_BASE_URL"]
    inferencekey_management.ensure(WorkloadSpec(name="b", slug="b", model="m", backend="vllm"))
    inferencekey_management.wait_until_ready("b", timeout=30, silent=True)  # ready at once by default
    assert inferencekey_data.endpoint("b").generate_text(prompt="x", max_tokens=2).text


def test_admin_shorthands_install_the_documented_faults(
    inferencekey_local: LocalAdmin, inferencekey_data: DataClient
) -> None:
    inferencekey_local.create_workload("bot")
    stalled = inferencekey_local.stall_next("chat", 1, times=2)
    dropped = inferencekey_local.drop_next("embeddings", workload="bot")
    failing = inferencekey_local.fail_next("rerank", 503, times=None, retry_after=1, body={"error": {"message": "x"}})
    rules = {rule["id"]: rule for rule in inferencekey_local.call("GET", "/_local/faults")}
    assert rules[stalled]["fault"] == {"type": "stall", "at": "headers", "ms": 1}
    assert rules[stalled]["count"] == 2
    assert rules[dropped]["fault"] == {"type": "reset"} and rules[dropped]["workload"] == "bot"
    assert rules[failing]["count"] is None and rules[failing]["fault"]["retry_after"] == 1
    inferencekey_data.endpoint("bot").generate_text(prompt="x", max_tokens=2)
    assert inferencekey_local.fired(stalled) == 1
    assert len(inferencekey_local.requests("chat")) == 1 and inferencekey_local.requests("chat_stream") == []
    inferencekey_local.clear_faults()
    assert inferencekey_local.call("GET", "/_local/faults") == []
    with pytest.raises(ValueError, match="route must be one of"):
        inferencekey_local.requests("nope")
    assert isinstance(ApiError("x"), Exception)
