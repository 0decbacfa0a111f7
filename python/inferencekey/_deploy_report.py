"""How the deploy commands show what they did (``inferencekey plan``, ``apply``, ``delete``, ``status``): text lines on
stdout as they go, or one JSON document with ``--json``; an error is one line on stderr. Everything printed goes
through the core's redaction, so no full token can reach the output. The commands themselves are in ``_deploy``.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from inferencekey._core import Ensured, redact
from inferencekey.types import FieldChange, Plan

__all__ = [
    "EXIT_CHANGES",
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "Report",
    "counts",
    "outcome",
    "plan_data",
    "status_table",
]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CHANGES = 2
EXIT_INTERRUPTED = 130


class Report:
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
            sys.stdout.write(redact(text) + "\n")
            sys.stdout.flush()

    def note(self, text: str) -> None:
        """A one-line note on stderr, in both output modes."""
        sys.stderr.write(f"inferencekey {self.command}: {one_line(text)}\n")
        sys.stderr.flush()

    def finish(self, exit_code: int) -> int:
        """Print the JSON document (with ``--json``) and return ``exit_code``."""
        if self.as_json:
            self.document["exit_code"] = exit_code
            sys.stdout.write(redact(json.dumps(self.document, ensure_ascii=False)) + "\n")
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
            self.document["error"]["plan"] = plan_data(plan)
        return self.finish(exit_code)


def one_line(text: str) -> str:
    """The first line of ``text``, redacted, with control characters and runs of spaces collapsed."""
    lines = redact(text).splitlines() or [""]
    return " ".join(lines[0].split())


def plan_data(plan: Plan) -> dict[str, Any]:
    return {
        "slug": plan.workload_slug,
        "project": plan.project,
        "action": plan.action,
        "changes": [change_data(change) for change in plan.changes],
        "rendered": plan.rendered,
    }


def change_data(change: FieldChange) -> dict[str, Any]:
    return {"field": change.field, "live": change.live, "desired": change.desired}


def counts(actions: list[str]) -> dict[str, int]:
    return {action: actions.count(action) for action in ("create", "update", "noop")}


def outcome(ensured: Ensured, on_drift: str) -> str:
    """What ensure did, in a word or three."""
    action = ensured.plan.action
    if action == "noop":
        return "unchanged"
    if ensured.applied:
        return "created" if action == "create" else "updated"
    if action == "create":
        return "not created (dry run)"
    return f"drifted, not changed (on_drift={on_drift})"


def status_table(report: Report, rows: list[dict[str, Any]]) -> None:
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
