"""The deploy commands of ``inferencekey``: ``plan`` and ``apply`` for the workloads of a TOML file, ``delete`` and
``status`` by slug.

The file is read and checked by the native core (``load_manifest``); every request is the SDK's own, made through
``ManagementClient`` (``from_env``, so the same ``INFERENCEKEY_`` variables apply). This module parses the command
line and sequences the calls; ``_deploy_report`` shows what they returned (text, or one JSON document with
``--json``), always redacted.

Exit codes: 0 success (for ``plan``: nothing would change), 2 (``plan`` only) changes to apply, 1 any error, usage
errors included, 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from inferencekey._core import canonical_slug, load_manifest
from inferencekey._deploy_report import (
    EXIT_CHANGES,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    Report,
    counts,
    outcome,
    plan_data,
    status_table,
)
from inferencekey._management import ManagementClient
from inferencekey.enums import OnDrift
from inferencekey.exceptions import DriftError, InferenceKeyError
from inferencekey.types import WorkloadSpec

__all__ = ["COMMANDS", "add_commands", "run"]

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
    report = Report(args.group, args.json)
    command: Callable[[argparse.Namespace, Report], int] = {
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


def _load(path: str) -> list[WorkloadSpec]:
    """The workloads of the manifest at ``path``, read and checked by the core."""
    return [WorkloadSpec(**fields) for fields in load_manifest(path)]


def _client(args: argparse.Namespace) -> ManagementClient:
    """The management client of the environment (``INFERENCEKEY_``), with ``--project`` as its project."""
    return ManagementClient.from_env(project=args.project)


def _plan(args: argparse.Namespace, report: Report) -> int:
    specs = _load(args.file)
    plans: list[dict[str, Any]] = []
    report.document["workloads"] = plans
    actions: list[str] = []
    with _client(args) as client:
        for index, spec in enumerate(specs, 1):
            report.at(index, len(specs), canonical_slug(spec.slug))
            plan = client.plan(spec)
            plans.append(plan_data(plan))
            actions.append(plan.action)
            report.text(plan.rendered + "\n")
    report.workload = None
    summary = counts(actions)
    changes = summary["create"] + summary["update"] > 0
    report.document["changes"] = changes
    report.document["summary"] = summary
    report.text(f"Plan: {summary['create']} to create, {summary['update']} to update, {summary['noop']} unchanged.")
    return report.finish(EXIT_CHANGES if changes else EXIT_OK)


def _apply(args: argparse.Namespace, report: Report) -> int:
    specs = _load(args.file)
    on_drift: str = args.on_drift
    waits = on_drift != OnDrift.DRY_RUN.value
    applied: list[dict[str, Any]] = []
    report.document.update(on_drift=on_drift, workloads=applied)
    with _client(args) as client:
        if waits:
            # The core checks the timeout (and that a project resolves) before anything changes; the watch it
            # returns opens no connection until it is iterated.
            client._readiness(specs[0].slug, project=specs[0].project, timeout=args.timeout)
        for index, spec in enumerate(specs, 1):
            report.at(index, len(specs), canonical_slug(spec.slug))
            # The whole outcome: the plan ensure acted on and whether it changed anything (the public ensure
            # returns only the ref, and shows drift as a Python warning, which is not for a command line).
            ensured = client._ensure_outcome(spec, on_drift=on_drift)
            ref = ensured.endpoint_ref
            result = outcome(ensured, on_drift)
            entry: dict[str, Any] = {
                "slug": ref.workload_slug,
                "project": ref.project_slug,
                "action": ensured.plan.action,
                "applied": ensured.applied,
                "outcome": result,
                "ready": False,
                "plan": plan_data(ensured.plan),
            }
            applied.append(entry)
            report.text(ensured.plan.rendered)
            report.text(f"{ref.workload_slug}: {result}")
            if ensured.warning is not None:
                report.note("warning: " + ensured.warning)
            if waits:
                client.wait_until_ready(ref.workload_slug, project=ref.project_slug, timeout=args.timeout)
                entry["ready"] = True
                report.text(f"{ref.workload_slug}: ready")
            report.text()
    report.workload = None
    summary = counts([entry["action"] for entry in applied])
    report.document["summary"] = summary
    if not waits:
        report.text(
            f"Dry run, nothing changed: {summary['create']} to create, {summary['update']} to update, "
            f"{summary['noop']} unchanged."
        )
        return report.finish(EXIT_OK)
    outcomes = [(entry["action"], entry["applied"]) for entry in applied]
    done = (
        f"{outcomes.count(('create', True))} created, {outcomes.count(('update', True))} updated, "
        f"{summary['noop']} unchanged"
    )
    drifted = outcomes.count(("update", False))
    if drifted:
        done += f", {drifted} drifted and left as they are"
    report.text(f"Apply complete: {len(applied)} workloads ready ({done}).")
    return report.finish(EXIT_OK)


def _delete(args: argparse.Namespace, report: Report) -> int:
    slugs: list[str] = args.slugs
    deleted: list[dict[str, Any]] = []
    report.document["workloads"] = deleted
    with _client(args) as client:
        for index, slug in enumerate(slugs, 1):
            report.at(index, len(slugs), slug)
            gone = client.delete(slug)
            shown = canonical_slug(slug)
            deleted.append({"slug": shown, "deleted": gone})
            report.text(f"{shown}: deleted" if gone else f"{shown}: not found, nothing to delete")
    report.workload = None
    return report.finish(EXIT_OK)


def _status(args: argparse.Namespace, report: Report) -> int:
    rows: list[dict[str, Any]] = []
    report.document["workloads"] = rows
    with _client(args) as client:
        workloads = client.list_workloads()
        if args.slug is not None:
            wanted = canonical_slug(args.slug)
            workloads = [w for w in workloads if w.get("slug") == wanted]
            if not workloads:
                raise _NotFound(f"workload {args.slug!r} not found")
        for index, workload in enumerate(workloads, 1):
            slug = str(workload.get("slug"))
            project = workload.get("project_slug")
            report.at(index, len(workloads), slug)
            # The workload object carries no phase: the readiness stream starts with a snapshot of the current one.
            watch = client._readiness(slug, project=project if isinstance(project, str) else None, timeout=args.timeout)
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
    status_table(report, rows)
    return report.finish(EXIT_OK)
