# wait_until_ready: every readiness profile, the deadline, reconnects after a dropped stream, on_progress events,
# and the built-in progress view (silent, plain lines off a TTY or under CI, the phase bar on a TTY).
from __future__ import annotations

import asyncio
import io
import os
import re
import subprocess
import sys
import time
from typing import Any

import pytest
from conftest import (
    HANG_GUARD,
    PHASES,
    PROJECT,
    WORKLOADS_PATH,
    Admin,
    LineReader,
    assert_no_token,
    child_env,
    make_spec,
    platform_tokens,
)

from inferencekey import ApiError, InferenceKeyError, ManagementClient, ReadinessEvent, WaitTimeoutError
from inferencekey.local import LocalPlatform

if sys.platform != "win32":
    import pty
    import termios

READINESS_PATH = f"{WORKLOADS_PATH}/support-bot/readiness-events"
ON_A_TTY = pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal (pty, termios): POSIX only")
PLAIN_LINE = re.compile(r"^\[\s*\d+\.\d+s\] (scheduling|provisioning|bootstrapping|ready|error)\b.*$")


class FakeTerminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def with_profile(mgmt: ManagementClient, admin: Admin, readiness: str, **settings: Any) -> None:
    """Create `support-bot` and restart its readiness clock under `readiness`."""
    mgmt.ensure(make_spec())
    admin.settings("support-bot", readiness=readiness, **settings)
    admin.clear_journal()


class SwitchAtProvisioning:
    """on_progress for `support-bot` started `stuck`: once the wait has seen stuck's last stage (provisioning), the
    workload switches to `readiness`, so the wait goes through that profile from its very first stage, however late
    any task runs. `after` holds the events of the new timeline."""

    def __init__(self, admin: Admin, readiness: str) -> None:
        self.admin = admin
        self.readiness = readiness
        self.events: list[ReadinessEvent] = []
        self.switched_at: int | None = None

    def __call__(self, event: ReadinessEvent) -> None:
        self.events.append(event)
        if self.switched_at is None and event.phase == "provisioning":
            self.switched_at = len(self.events)
            self.admin.settings("support-bot", readiness=self.readiness)

    @property
    def after(self) -> list[ReadinessEvent]:
        assert self.switched_at is not None, "the stuck workload never reported provisioning"
        return self.events[self.switched_at :]


def collect(mgmt: ManagementClient, timeout: float = 10.0) -> list[ReadinessEvent]:
    """Wait for `support-bot` and return the events given to on_progress."""
    events: list[ReadinessEvent] = []
    mgmt.wait_until_ready("support-bot", timeout=timeout, on_progress=events.append)
    return events


def assert_phases_in_order(events: list[ReadinessEvent]) -> None:
    assert events, "no progress event"
    assert all(isinstance(event, ReadinessEvent) for event in events)
    order = [PHASES.index(event.phase) for event in events]
    assert order == sorted(order), [event.phase for event in events]
    elapsed = [event.elapsed_ms for event in events]
    assert elapsed == sorted(elapsed)
    assert all(isinstance(event.message, str) for event in events)


def test_immediate_returns_with_one_ready_event(mgmt: ManagementClient, admin: Admin) -> None:
    mgmt.ensure(make_spec())
    admin.clear_journal()
    events = collect(mgmt)
    assert [event.phase for event in events] == ["ready"]
    entries = admin.wait_journal(lambda j: len(j) >= 1)
    assert [(e["method"], e["path"]) for e in entries] == [("GET", READINESS_PATH)]
    assert entries[0]["headers"]["accept"] == "text/event-stream"


def test_fast_reports_every_phase_in_order(mgmt: ManagementClient, admin: Admin) -> None:
    with_profile(mgmt, admin, "stuck")
    progress = SwitchAtProvisioning(admin, "fast")
    mgmt.wait_until_ready("support-bot", timeout=HANG_GUARD, on_progress=progress)
    events = progress.after
    assert_phases_in_order(events)
    assert [(event.phase, event.step) for event in events] == [
        ("scheduling", None),
        ("provisioning", None),
        ("bootstrapping", "image_pull"),
        ("bootstrapping", "model_download"),
        ("bootstrapping", "model_load"),
        ("ready", None),
    ]
    # SDK time never goes back, not even where the platform restarted the timeline.
    elapsed = [event.elapsed_ms for event in progress.events]
    assert elapsed == sorted(elapsed)
    assert [e["path"] for e in admin.wait_journal(lambda j: len(j) >= 1)] == [READINESS_PATH]


def test_flapping_returns_at_the_first_ready(mgmt: ManagementClient, admin: Admin) -> None:
    with_profile(mgmt, admin, "flapping")
    events = collect(mgmt)
    assert events[-1].phase == "ready"
    assert [event.phase for event in events].count("ready") == 1


def test_error_phase_raises_api_error_with_the_server_message(mgmt: ManagementClient, admin: Admin) -> None:
    with_profile(mgmt, admin, "error", error_message="CUDA out of memory")
    events: list[ReadinessEvent] = []
    with pytest.raises(ApiError) as info:
        mgmt.wait_until_ready("support-bot", timeout=HANG_GUARD, on_progress=events.append)
    assert "CUDA out of memory" in str(info.value)
    # Raised at the error phase, not at the deadline (that would be a WaitTimeoutError, a TimeoutError).
    assert not isinstance(info.value, TimeoutError)
    assert events[-1].phase == "error"
    assert len(admin.wait_journal(lambda j: len(j) >= 1)) == 1


def test_stuck_raises_wait_timeout_within_the_deadline(mgmt: ManagementClient, admin: Admin) -> None:
    with_profile(mgmt, admin, "stuck")
    events: list[ReadinessEvent] = []
    started = time.monotonic()
    with pytest.raises(WaitTimeoutError) as info:
        mgmt.wait_until_ready("support-bot", timeout=1.0, on_progress=events.append)
    elapsed = time.monotonic() - started
    # The wait lasted its whole timeout; the upper bound only catches a deadline that never fires (stuck never ends).
    assert 0.9 <= elapsed < HANG_GUARD
    assert isinstance(info.value, TimeoutError)
    assert isinstance(info.value, InferenceKeyError)
    assert not isinstance(info.value, ApiError)
    # How far a stuck workload got before the deadline depends on the machine; the error names the last phase seen.
    assert {event.phase for event in events} <= {"scheduling", "provisioning"}
    last = f"last phase: {events[-1].phase}" if events else "no phase reported"
    assert f"({last})" in str(info.value)


def test_unknown_workload_is_not_a_timeout(mgmt: ManagementClient, admin: Admin) -> None:
    with pytest.raises(ApiError) as info:
        mgmt.wait_until_ready("nobody-here", timeout=HANG_GUARD, silent=True)
    assert info.value.status_code == 404
    assert not isinstance(info.value, TimeoutError)
    # Raised at once: one readiness request, no reconnect; then the one list that looks for similar slugs.
    assert [(e["method"], e["path"], e["status"]) for e in admin.journal()] == [
        ("GET", f"{WORKLOADS_PATH}/nobody-here/readiness-events", 404),
        ("GET", WORKLOADS_PATH, 200),
    ]
    assert str(info.value) == (
        'HTTP 404 [not_found]: workload "nobody-here" not found (no workload in project "local" has a similar slug)'
    )


@pytest.mark.parametrize(
    ("asked", "hint"),
    [
        ("suport-bot", ' (did you mean "support-bot"?)'),
        ("support-bot-3", ' (did you mean "support-bot-2", "support-bot" or "support-bot-12"?)'),
        ("support", ' (did you mean "support-bot", "support-bot-2" or "support-bot-12"?)'),
        ("billing", ' (no workload in project "local" has a similar slug)'),
    ],
)
def test_a_404_names_similar_slugs_of_the_project(mgmt: ManagementClient, admin: Admin, asked: str, hint: str) -> None:
    for slug in ("support-bot", "support-bot-2", "support-bot-12", "embedder"):
        mgmt.ensure(make_spec(slug=slug))
    admin.clear_journal()
    with pytest.raises(ApiError) as info:
        mgmt.wait_until_ready(asked, timeout=HANG_GUARD, silent=True)
    assert str(info.value) == f'HTTP 404 [not_found]: workload "{asked}" not found{hint}'
    assert (info.value.status_code, info.value.code) == (404, "not_found")
    assert [e["status"] for e in admin.journal()] == [404, 200]


def test_a_404_stays_as_it_was_when_the_list_fails(mgmt: ManagementClient, admin: Admin) -> None:
    # The list is one attempt with no retry (a 503 would otherwise be retried), and its failure never replaces the 404.
    admin.fault("list", {"type": "status", "status": 503, "retry_after": 0, "body": {"error": "busy"}})
    with pytest.raises(ApiError) as info:
        mgmt.wait_until_ready("suport-bot", timeout=HANG_GUARD, silent=True)
    assert str(info.value) == 'HTTP 404 [not_found]: workload "suport-bot" not found'
    assert info.value.status_code == 404
    assert [e["status"] for e in admin.journal()] == [404, 503]


def test_no_hint_when_the_workload_is_listed(mgmt: ManagementClient, admin: Admin) -> None:
    # A 404 for a workload the list shows is about something else: "did you mean" would mislead.
    mgmt.ensure(make_spec())
    admin.clear_journal()
    gone = {"error": {"code": "not_found", "message": "x"}}
    admin.fault("readiness", {"type": "status", "status": 404, "body": gone})
    with pytest.raises(ApiError) as info:
        mgmt.wait_until_ready("support-bot", timeout=HANG_GUARD, silent=True)
    assert str(info.value) == "HTTP 404 [not_found]: x"
    assert [e["status"] for e in admin.journal()] == [404, 200]


def test_async_wait_gets_the_same_hint(platform: LocalPlatform, mgmt: ManagementClient) -> None:
    from inferencekey import AsyncManagementClient

    mgmt.ensure(make_spec())

    async def wait() -> None:
        async with AsyncManagementClient(base_url=platform.url, sdk_token=platform.sdk_token, project=PROJECT) as amgmt:
            await amgmt.wait_until_ready("support-bott", timeout=HANG_GUARD, silent=True)

    with pytest.raises(ApiError, match=r'not found \(did you mean "support-bot"\?\)$'):
        asyncio.run(wait())


def test_a_phase_bar_flooded_with_updates_redraws_each_phase_and_little_else() -> None:
    from inferencekey._progress import MIN_REDRAW_INTERVAL_S, ProgressView

    terminal = FakeTerminal()
    view = ProgressView(terminal, interactive=True)
    started = time.monotonic()
    for phase in PHASES:
        for n in range(200):
            view(ReadinessEvent(phase=phase, message=f"update {n}", elapsed_ms=n, step=None))
    view.close()
    elapsed = time.monotonic() - started
    drawn = terminal.getvalue()
    # Each phase change at once, message updates at most once per interval, and the final state at the end.
    assert drawn.count("\r") <= len(PHASES) + elapsed / MIN_REDRAW_INTERVAL_S + 2, (drawn.count("\r"), elapsed)
    for phase in PHASES:
        assert f"[{phase}]" in drawn
    assert drawn.endswith("[ready]  update 199\n")


def test_dropped_stream_is_reconnected(mgmt: ManagementClient, admin: Admin) -> None:
    with_profile(mgmt, admin, "fast")
    fault = admin.fault("readiness", {"type": "truncate", "after_events": 1})
    events = collect(mgmt, timeout=20)
    assert admin.fired(fault) == 1
    assert events[-1].phase == "ready"
    assert_phases_in_order(events)
    assert events[-1].elapsed_ms >= 900
    entries = admin.wait_journal(lambda j: len(j) >= 2)
    assert [(e["method"], e["path"]) for e in entries] == [("GET", READINESS_PATH)] * 2


def test_transient_status_on_readiness_is_retried(mgmt: ManagementClient, admin: Admin) -> None:
    mgmt.ensure(make_spec())
    admin.clear_journal()
    admin.fault("readiness", {"type": "status", "status": 503, "retry_after": 0, "body": {"error": "busy"}})
    assert [event.phase for event in collect(mgmt, timeout=20)] == ["ready"]
    assert [e["status"] for e in admin.wait_journal(lambda j: len(j) >= 2)] == [503, 200]


def test_silent_prints_nothing(mgmt: ManagementClient, admin: Admin, capsys: pytest.CaptureFixture[str]) -> None:
    with_profile(mgmt, admin, "fast")
    mgmt.wait_until_ready("support-bot", timeout=10, silent=True)
    assert capsys.readouterr() == ("", "")


def test_on_progress_replaces_the_view(
    mgmt: ManagementClient, admin: Admin, capsys: pytest.CaptureFixture[str]
) -> None:
    with_profile(mgmt, admin, "fast")
    assert collect(mgmt)[-1].phase == "ready"
    assert capsys.readouterr() == ("", "")


@pytest.mark.parametrize("ci", [None, "true"])
def test_default_view_prints_plain_lines_off_a_tty(
    monkeypatch: pytest.MonkeyPatch,
    platform: LocalPlatform,
    mgmt: ManagementClient,
    admin: Admin,
    capsys: pytest.CaptureFixture[str],
    ci: str | None,
) -> None:
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    with_profile(mgmt, admin, "fast")
    mgmt.wait_until_ready("support-bot", timeout=10)
    out, err = capsys.readouterr()
    assert out == ""
    assert "\r" not in err
    lines = err.splitlines()
    assert lines, "nothing printed"
    for line in lines:
        assert PLAIN_LINE.match(line), line
    assert lines[-1].split("] ", 1)[1].startswith("ready")
    assert_no_token(err, *platform_tokens(platform))


# The child restarts the readiness clock itself, from `stuck`; once the built-in view has drawn stuck's last stage
# (provisioning), it switches the workload to `fast`, so the view goes through every phase however late the child or
# the platform gets to run. The view is the built-in one; the child only adds the switch after it draws.
TTY_SCRIPT = """
import json, os, urllib.request
from inferencekey import ManagementClient
from inferencekey._progress import ProgressView

def set_readiness(profile):
    request = urllib.request.Request(
        os.environ["INFERENCEKEY_BASE_URL"] + "/_local/projects/local/workloads/support-bot/settings",
        data=json.dumps({"readiness": profile}).encode(),
        method="PUT",
        headers={"Authorization": "Bearer " + os.environ["IK_TEST_ADMIN_TOKEN"], "Content-Type": "application/json"},
    )
    urllib.request.urlopen(request, timeout=10).close()

draw = ProgressView.__call__
switched = []

def draw_then_switch(view, event):
    draw(view, event)
    if event.phase == "provisioning" and not switched:
        switched.append(True)
        set_readiness("fast")

ProgressView.__call__ = draw_then_switch
client = ManagementClient.from_env()
set_readiness("stuck")
client.wait_until_ready("support-bot", timeout=30)
"""


def run_on_a_tty(platform: LocalPlatform, **extra_env: str) -> str:
    """Run a `fast` wait_until_ready in a child whose stderr is a terminal; return what the terminal received."""
    master, slave = pty.openpty()
    attributes = termios.tcgetattr(slave)
    attributes[1] &= ~termios.ONLCR  # keep "\n" as written, so "\r" counts only the view's redraws
    termios.tcsetattr(slave, termios.TCSANOW, attributes)
    env = child_env(platform, IK_TEST_ADMIN_TOKEN=platform.admin_token, **extra_env)
    proc = subprocess.Popen(
        [sys.executable, "-c", TTY_SCRIPT], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave
    )
    os.close(slave)
    try:
        output = LineReader(master).rest(timeout=30)
        assert proc.wait(timeout=30) == 0, proc.stdout.read() if proc.stdout else b""
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()
    return output.decode()


@ON_A_TTY
def test_default_view_draws_a_phase_bar_on_a_tty(platform: LocalPlatform, mgmt: ManagementClient, admin: Admin) -> None:
    mgmt.ensure(make_spec())
    output = run_on_a_tty(platform)
    assert output.endswith("\n")
    assert output.count("\r") >= 2, repr(output)
    for phase in PHASES:
        assert phase in output
    assert_no_token(output, *platform_tokens(platform))


@ON_A_TTY
def test_ci_variable_turns_the_bar_into_plain_lines(
    platform: LocalPlatform, mgmt: ManagementClient, admin: Admin
) -> None:
    mgmt.ensure(make_spec())
    output = run_on_a_tty(platform, CI="true")
    assert "\r" not in output
    lines = output.splitlines()
    assert len(lines) >= 2
    for line in lines:
        assert PLAIN_LINE.match(line), line


def test_project_argument_selects_the_readiness_url(
    platform: LocalPlatform, mgmt: ManagementClient, admin: Admin
) -> None:
    admin.project("acme")
    mgmt.ensure(make_spec())
    admin.clear_journal()
    other = ManagementClient(base_url=platform.url, sdk_token=platform.sdk_token, project="acme")
    other.wait_until_ready("support-bot", project=PROJECT, timeout=10, silent=True)
    assert [e["path"] for e in admin.wait_journal(lambda j: len(j) >= 1)] == [READINESS_PATH]
