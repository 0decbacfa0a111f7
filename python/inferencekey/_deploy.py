"""The deploy commands of ``inferencekey``: ``plan`` and ``apply`` for the workloads of a TOML file, ``delete`` and
``status`` by slug.

The file is read and checked by the native core (``_core.load_manifest``); every request is the SDK's own
(``ManagementClient.from_env``, so the same ``INFERENCEKEY_`` variables apply). This module only sequences the calls and
shows what they returned: text on stdout as it goes, or one JSON document with ``--json``; an error is one line on
stderr. Everything printed goes through the core's redaction, so no full token can reach the output.

Exit codes: 0 success (for ``plan``: nothing would change), 2 (``plan`` only) changes to apply, 1 any error, usage
errors included, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from inferencekey import _core
from inferencekey._management import ManagementClient
from inferencekey.enums import OnDrift
from inferencekey.exceptions import DriftError, InferenceKeyError
from inferencekey.types import FieldChange, Plan, WorkloadSpec

__all__ = ["COMMANDS", "add_commands", "run"]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CHANGES = 2
EXIT_INTERRUPTED = 130

COMMANDS = ("plan", "apply", "delete", "status")


class _Parser(argparse.ArgumentParser):
    """The parser of a deploy command: a usage error exits 1, like any other error, because ``plan``'s exit code 2
    means "changes to apply" and a script must not read a mistyped flag as that."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message}\n")

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        # The top-level parser would report leftover arguments itself, with its exit code: report them here.
        parsed, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed, extras


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``plan``, ``apply``, ``delete`` and ``status`` on the ``inferencekey`` command's subcommands."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--project", default=None, help="project slug (default: INFERENCEKEY_PROJECT; a workload's own project wins)"
    )
    common.add_argument("--json", action="store_true", help="print one JSON document on stdout instead of text")

    def add(name: str, help: str, description: str) -> argparse.ArgumentParser:
        parser = commands.add_parser(name, parents=[common], help=help, description=description)
        # add_parser builds the parent's class; only the deploy commands change how usage errors exit.
        parser.__class__ = _Parser
        return parser

    plan = add(
        "plan",
        "show what apply would change",
        "Show, for every workload of FILE, what apply would do: + create, ~ update (field: live -> desired), or "
        "nothing. Changes nothing. Exits 0 when nothing would change, 2 when something would, 1 on error.",
    )
    plan.add_argument("file", metavar="FILE", help="TOML file of [[workload]] tables")

    apply = add(
        "apply",
        "create or update the workloads of a file and wait until they serve",
        "Ensure every workload of FILE in order, then wait until it is ready. Stops at the first failure, leaving "
        "the workloads before it as applied and those after it untouched. Exits 0 when all are ready, 1 on error.",
    )
    apply.add_argument("file", metavar="FILE", help="TOML file of [[workload]] tables")
    apply.add_argument(
        "--on-drift",
        default=OnDrift.RECONCILE.value,
        choices=[mode.value for mode in OnDrift],
        help="what to do with a workload that differs from the file (default: reconcile)",
    )
    apply.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="longest wait for each workload to become ready (default: 600)",
    )

    delete = add(
        "delete",
        "delete workloads",
        "Delete each workload named; one already gone is not an error. Stops at the first failure.",
    )
    delete.add_argument("slugs", nargs="+", metavar="SLUG", help="workload slug")

    status = add(
        "status",
        "show the readiness of workloads",
        "Show the phase and readiness of one workload, or of every workload of the project.",
    )
    status.add_argument("slug", nargs="?", default=None, metavar="SLUG", help="one workload (default: all)")
    status.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="longest wait for each workload's current phase (default: 30)",
    )


def run(args: argparse.Namespace) -> int:
    """Run the deploy command ``args.group`` and return its exit code."""
    report = _Report(args.group, args.json)
    command: Callable[[argparse.Namespace, _Report], int] = {
        "plan": _plan,
        "apply": _apply,
        "delete": _delete,
        "status": _status,
    }[args.group]
    try:
        return command(args, report)
    except DriftError as err:
        # The plan that stopped apply under --on-drift fail: shown like every other plan, and in the document.
        if err.plan is not None:
            report.text(err.plan.rendered)
        return report.fail(type(err).__name__, str(err), code=err.code, status_code=err.status_code, plan=err.plan)
    except InferenceKeyError as err:
        return report.fail(type(err).__name__, str(err), code=err.code, status_code=err.status_code)
    except _NotFound as err:
        return report.fail("NotFound", str(err))
    except KeyboardInterrupt:
        return report.fail("Interrupted", "interrupted", exit_code=EXIT_INTERRUPTED)


class _NotFound(Exception):
    """A workload named on the command line does not exist."""


class _Report:
    """What a command shows: text lines on stdout as it goes, or, with ``--json``, one document at the end; errors as
    one line on stderr. Every string is redacted on its way out."""

    def __init__(self, command: str, as_json: bool) -> None:
        self.command = command
        self.as_json = as_json
        self.document: dict[str, Any] = {"command": command, "ok": True}
        self.workload: dict[str, Any] | None = None

    def at(self, index: int, total: int, slug: str) -> None:
        """Name the workload being worked on, for the error if it fails."""
        self.workload = {"index": index, "total": total, "slug": slug}

    def text(self, text: str = "") -> None:
        """A line (or lines) of the text output."""
        if not self.as_json:
            sys.stdout.write(_core.redact(text) + "\n")
            sys.stdout.flush()

    def note(self, text: str) -> None:
        """A one-line note on stderr, in both output modes."""
        sys.stderr.write(f"inferencekey {self.command}: {_one_line(text)}\n")
        sys.stderr.flush()

    def finish(self, exit_code: int) -> int:
        """Print the JSON document (with ``--json``) and return ``exit_code``."""
        if self.as_json:
            self.document["exit_code"] = exit_code
            sys.stdout.write(_core.redact(json.dumps(self.document, ensure_ascii=False)) + "\n")
            sys.stdout.flush()
        return exit_code

    def fail(
        self,
        kind: str,
        message: str,
        *,
        code: str | None = None,
        status_code: int | None = None,
        plan: Plan | None = None,
        exit_code: int = EXIT_ERROR,
    ) -> int:
        """Report an error: one line on stderr naming the workload it happened to, and the JSON document (with the
        drift ``plan`` that stopped apply, if that was the error)."""
        where = self.workload
        prefix = "" if where is None else f"workload #{where['index']} ({where['slug']}) failed: "
        self.note(prefix + message)
        self.document["ok"] = False
        self.document["error"] = {
            "type": kind,
            "message": message,
            "code": code,
            "status_code": status_code,
            "workload": where,
        }
        if plan is not None:
            self.document["error"]["plan"] = _plan_data(plan)
        return self.finish(exit_code)


def _one_line(text: str) -> str:
    """The first line of ``text``, redacted, with control characters and runs of spaces collapsed."""
    lines = _core.redact(text).splitlines() or [""]
    return " ".join(lines[0].split())


def _load(path: str) -> list[WorkloadSpec]:
    """The workloads of the manifest at ``path``, read and checked by the core."""
    return [WorkloadSpec(**fields) for fields in _core.load_manifest(path)]


def _client(args: argparse.Namespace) -> ManagementClient:
    """The management client of the environment (``INFERENCEKEY_``), with ``--project`` as its project."""
    return ManagementClient.from_env(project=args.project)


def _plan_data(plan: Plan) -> dict[str, Any]:
    return {
        "slug": plan.workload_slug,
        "project": plan.project,
        "action": plan.action,
        "changes": [_change_data(change) for change in plan.changes],
        "rendered": plan.rendered,
    }


def _change_data(change: FieldChange) -> dict[str, Any]:
    return {"field": change.field, "live": change.live, "desired": change.desired}


def _counts(actions: list[str]) -> dict[str, int]:
    return {action: actions.count(action) for action in ("create", "update", "noop")}


def _plan(args: argparse.Namespace, report: _Report) -> int:
    specs = _load(args.file)
    plans: list[dict[str, Any]] = []
    report.document["workloads"] = plans
    actions: list[str] = []
    with _client(args) as client:
        for index, spec in enumerate(specs, 1):
            report.at(index, len(specs), _core.canonical_slug(spec.slug))
            plan = client.plan(spec)
            plans.append(_plan_data(plan))
            actions.append(plan.action)
            report.text(plan.rendered + "\n")
    report.workload = None
    counts = _counts(actions)
    changes = counts["create"] + counts["update"] > 0
    report.document["changes"] = changes
    report.document["summary"] = counts
    report.text(f"Plan: {counts['create']} to create, {counts['update']} to update, {counts['noop']} unchanged.")
    return report.finish(EXIT_CHANGES if changes else EXIT_OK)


def _outcome(ensured: _core.Ensured, on_drift: str) -> str:
    """What ensure did, in a word or three."""
    action = ensured.plan.action
    if action == "noop":
        return "unchanged"
    if ensured.applied:
        return "created" if action == "create" else "updated"
    if action == "create":
        return "not created (dry run)"
    return f"drifted, not changed (on_drift={on_drift})"


def _apply(args: argparse.Namespace, report: _Report) -> int:
    specs = _load(args.file)
    on_drift: str = args.on_drift
    waits = on_drift != OnDrift.DRY_RUN.value
    applied: list[dict[str, Any]] = []
    report.document.update(on_drift=on_drift, workloads=applied)
    with _client(args) as client:
        if waits:
            # The core checks the timeout (and that a project resolves) before anything changes; the watch it
            # returns opens no connection.
            client._native.watch_readiness(specs[0].slug, specs[0].project, args.timeout)
        for index, spec in enumerate(specs, 1):
            report.at(index, len(specs), _core.canonical_slug(spec.slug))
            # The native outcome: the plan ensure acted on and whether it changed anything (the public ensure
            # returns only the ref, and shows drift as a Python warning, which is not for a command line).
            ensured = client._native.ensure(spec, on_drift, None).wait()
            ref = ensured.endpoint_ref
            outcome = _outcome(ensured, on_drift)
            entry: dict[str, Any] = {
                "slug": ref.workload_slug,
                "project": ref.project_slug,
                "action": ensured.plan.action,
                "applied": ensured.applied,
                "outcome": outcome,
                "ready": False,
                "plan": _plan_data(ensured.plan),
            }
            applied.append(entry)
            report.text(ensured.plan.rendered)
            report.text(f"{ref.workload_slug}: {outcome}")
            if ensured.warning is not None:
                report.note("warning: " + ensured.warning)
            if waits:
                client.wait_until_ready(ref.workload_slug, project=ref.project_slug, timeout=args.timeout)
                entry["ready"] = True
                report.text(f"{ref.workload_slug}: ready")
            report.text()
    report.workload = None
    counts = _counts([entry["action"] for entry in applied])
    report.document["summary"] = counts
    if not waits:
        report.text(
            f"Dry run, nothing changed: {counts['create']} to create, {counts['update']} to update, "
            f"{counts['noop']} unchanged."
        )
        return report.finish(EXIT_OK)
    outcomes = [(entry["action"], entry["applied"]) for entry in applied]
    done = (
        f"{outcomes.count(('create', True))} created, {outcomes.count(('update', True))} updated, "
        f"{counts['noop']} unchanged"
    )
    drifted = outcomes.count(("update", False))
    if drifted:
        done += f", {drifted} drifted and left as they are"
    report.text(f"Apply complete: {len(applied)} workloads ready ({done}).")
    return report.finish(EXIT_OK)


def _delete(args: argparse.Namespace, report: _Report) -> int:
    slugs: list[str] = args.slugs
    deleted: list[dict[str, Any]] = []
    report.document["workloads"] = deleted
    with _client(args) as client:
        for index, slug in enumerate(slugs, 1):
            report.at(index, len(slugs), slug)
            gone = client.delete(slug)
            shown = _core.canonical_slug(slug)
            deleted.append({"slug": shown, "deleted": gone})
            report.text(f"{shown}: deleted" if gone else f"{shown}: not found, nothing to delete")
    report.workload = None
    return report.finish(EXIT_OK)


def _status(args: argparse.Namespace, report: _Report) -> int:
    rows: list[dict[str, Any]] = []
    report.document["workloads"] = rows
    with _client(args) as client:
        workloads = client.list_workloads()
        if args.slug is not None:
            wanted = _core.canonical_slug(args.slug)
            workloads = [w for w in workloads if w.get("slug") == wanted]
            if not workloads:
                raise _NotFound(f"workload {args.slug!r} not found")
        for index, workload in enumerate(workloads, 1):
            slug = str(workload.get("slug"))
            project = workload.get("project_slug")
            report.at(index, len(workloads), slug)
            # The workload object carries no phase: the readiness stream starts with a snapshot of the current one.
            watch = client._native.watch_readiness(slug, project if isinstance(project, str) else None, args.timeout)
            event = next(watch)
            rows.append(
                {
                    "slug": slug,
                    "project": project,
                    "phase": event.phase,
                    "ready": event.phase == "ready",
                    "step": event.step,
                    "message": event.message,
                    "workload": workload,
                }
            )
    report.workload = None
    _status_table(report, rows)
    return report.finish(EXIT_OK)


def _status_table(report: _Report, rows: list[dict[str, Any]]) -> None:
    if not rows:
        report.text("No workloads.")
        return
    header = ("SLUG", "PHASE", "READY", "BACKEND", "MODEL", "MESSAGE")
    table = [header] + [
        (
            row["slug"],
            row["phase"] if row["step"] is None else f"{row['phase']} ({row['step']})",
            "yes" if row["ready"] else "no",
            str(row["workload"].get("backend") or "-"),
            str(row["workload"].get("model_name") or "-"),
            " ".join(str(row["message"]).split()),
        )
        for row in rows
    ]
    widths = [max(len(line[column]) for line in table) for column in range(len(header) - 1)]
    for line in table:
        cells = [cell.ljust(width) for cell, width in zip(line[:-1], widths, strict=True)]
        report.text("  ".join([*cells, line[-1]]).rstrip())
