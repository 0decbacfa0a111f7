# Process-level behaviour in child interpreters: Ctrl+C interrupts a blocked call, and a client used before os.fork()
# keeps working in the child and in the parent.
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from conftest import ENDLESS_MS, HANG_GUARD, WORKLOADS_PATH, Admin, LineReader, child_env, make_spec, run_python

from inferencekey import ManagementClient
from inferencekey.local import LocalPlatform

CALLS = {
    "stalled-request": ("client.list_workloads()", WORKLOADS_PATH),
    "stuck-readiness": (
        'client.wait_until_ready("support-bot", timeout=600, silent=True)',
        f"{WORKLOADS_PATH}/support-bot/readiness-events",
    ),
}

CTRL_C_SCRIPT = """
from inferencekey import ManagementClient
client = ManagementClient.from_env()
print("calling", flush=True)
{call}
print("returned", flush=True)
"""


@pytest.mark.skipif(
    sys.platform == "win32", reason="sends SIGINT and reads a pipe with select(): POSIX only (Windows has CTRL_C_EVENT)"
)
@pytest.mark.parametrize("call", list(CALLS))
def test_ctrl_c_interrupts_a_blocked_call(
    platform: LocalPlatform, mgmt: ManagementClient, admin: Admin, call: str
) -> None:
    mgmt.ensure(make_spec())
    admin.settings("support-bot", readiness="stuck")
    # Both calls would block for ten minutes: only the interrupt can end them within the guard.
    admin.fault("list", {"type": "stall", "at": "headers", "ms": ENDLESS_MS})
    admin.clear_journal()
    code, path = CALLS[call]
    proc = subprocess.Popen(
        [sys.executable, "-c", CTRL_C_SCRIPT.format(call=code)],
        env=child_env(platform),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        assert LineReader(proc.stdout.fileno()).line(timeout=HANG_GUARD) == "calling"
        # The blocked request is in flight: the interrupt lands while the native call waits.
        admin.wait_journal(lambda entries: [e["path"] for e in entries] == [path], timeout=HANG_GUARD)
        assert proc.poll() is None, "the call returned before the interrupt"
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=HANG_GUARD)
        stdout, stderr = proc.communicate(timeout=HANG_GUARD)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert b"KeyboardInterrupt" in stderr, stderr
    assert b"returned" not in stdout
    assert proc.returncode != 0


FORK_SCRIPT = """
import os
from inferencekey import DataClient, ManagementClient

mgmt = ManagementClient.from_env()
endpoint = DataClient.from_env().endpoint("support-bot")
assert [w["slug"] for w in mgmt.list_workloads()] == ["support-bot"]
before = endpoint.generate_text(prompt="before the fork").text
pid = os.fork()
if pid == 0:
    code = 0
    try:
        assert [w["slug"] for w in mgmt.list_workloads()] == ["support-bot"]
        assert endpoint.generate_text(prompt="before the fork").text == before
        assert "".join(c.text for c in endpoint.generate_text_stream(prompt="before the fork")) == before
    except BaseException as exc:
        print("child failed:", repr(exc), flush=True)
        code = 1
    os._exit(code)
_, status = os.waitpid(pid, 0)
print("child exit", os.waitstatus_to_exitcode(status), flush=True)
assert endpoint.generate_text(prompt="before the fork").text == before
assert [w["slug"] for w in mgmt.list_workloads()] == ["support-bot"]
print("parent ok", flush=True)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no os.fork() on this platform")
def test_clients_survive_fork(platform: LocalPlatform, mgmt: ManagementClient, admin: Admin) -> None:
    mgmt.ensure(make_spec())
    admin.clear_journal()
    result = run_python(FORK_SCRIPT, child_env(platform), timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == ["child exit 0", "parent ok"]
    lists = [e for e in admin.journal() if e["method"] == "GET" and e["path"] == WORKLOADS_PATH]
    assert len(lists) == 3


EMBED_MANY_SCRIPT = """
from inferencekey import DataClient
endpoint = DataClient.from_env().endpoint("embedder")
print("calling", flush=True)
endpoint.embed_many(["some text"] * 1000, batch_size=10, max_concurrency=3, silent=True)
print("returned", flush=True)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="sends SIGINT and reads a pipe with select(): POSIX only")
def test_ctrl_c_stops_embed_many_and_every_request_in_flight(
    platform: LocalPlatform, mgmt: ManagementClient, admin: Admin
) -> None:
    mgmt.ensure(make_spec(slug="embedder", task_type="embedding"))
    # Every request stalls: only the interrupt can end the job within the guard.
    admin.fault("embeddings", {"type": "stall", "at": "headers", "ms": ENDLESS_MS}, count=None)
    admin.clear_journal()
    proc = subprocess.Popen(
        [sys.executable, "-c", EMBED_MANY_SCRIPT],
        env=child_env(platform),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        assert LineReader(proc.stdout.fileno()).line(timeout=HANG_GUARD) == "calling"
        admin.wait_journal(lambda entries: len(entries) == 3, timeout=HANG_GUARD)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=HANG_GUARD)
        stdout, stderr = proc.communicate(timeout=HANG_GUARD)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        admin.call("DELETE", "/_local/faults")
    assert b"KeyboardInterrupt" in stderr, stderr
    assert b"returned" not in stdout
    assert len(admin.journal()) == 3  # the limit held, and nothing was sent after the interrupt
