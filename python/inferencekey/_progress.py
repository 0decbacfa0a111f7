"""The built-in progress view of ``ManagementClient.wait_until_ready``, written to stderr.

On an interactive terminal (and ``CI`` unset) it redraws one phase-bar line in place, at most about ten times a second
(a phase change is always drawn at once; the final state always shows); otherwise it prints one plain line per event,
which reads well in CI logs and files. It writes only what the stream can show: no escape sequences on
Windows (a legacy console prints them as text), and characters the stream's encoding lacks degrade to ASCII.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import TextIO

from inferencekey._core import redact
from inferencekey.types import ReadinessEvent

PHASES = ("scheduling", "provisioning", "bootstrapping", "ready")

# Carriage return plus "erase line": redraws the bar without leaving the previous, longer text behind. A Windows
# console shows escape sequences as text unless a program turns them on, so there the bar is padded with spaces to
# the line's end instead, which erases the same way.
_ERASE_WITH_ESCAPES = sys.platform != "win32"
_CLEAR_LINE = "\r\x1b[2K"

#: The shortest time between two redraws of a live line, in seconds: faster updates only cost terminal writes (100,000
#: texts through ``embed_many`` once made 3,127 redraws in a second) and cannot be read anyway.
MIN_REDRAW_INTERVAL_S = 0.1


class LiveLine:
    """One line of progress on a stream (stderr by default): redrawn in place on an interactive terminal (``CI``
    unset), else printed as plain lines. Shared by the readiness view and ``embed_many``'s view.

    Redraws are throttled to one per ``MIN_REDRAW_INTERVAL_S``: a text that comes sooner is kept, and drawn by the next
    redraw that is due or by ``end()``, so the last state always shows. Plain lines are never throttled."""

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        interactive: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream = stream if stream is not None else sys.stderr
        if interactive is None:
            interactive = _is_tty(self._stream) and not os.environ.get("CI")
        self.interactive = interactive
        self._drawn = False
        self._clock = clock
        self._drawn_at: float | None = None
        self._pending: str | None = None

    def redraw(self, text: str, *, now: bool = False) -> None:
        """Replace the line on screen with ``text`` (cut to the terminal's width), unless the last redraw was less
        than ``MIN_REDRAW_INTERVAL_S`` ago: then ``text`` waits for the next redraw or ``end()``. ``now`` draws it
        regardless (a change the reader must see, like a new readiness phase)."""
        at = self._clock()
        if not now and self._drawn_at is not None and at - self._drawn_at < MIN_REDRAW_INTERVAL_S:
            self._pending = text
            return
        self._drawn_at = at
        self._draw(text)

    def _draw(self, text: str) -> None:
        self._pending = None
        width = _width(self._stream)
        line = _fit(_encodable(text, self._stream), width)
        self._write(_CLEAR_LINE + line if _ERASE_WITH_ESCAPES else "\r" + line.ljust(width - 1))
        self._drawn = True

    def print(self, text: str) -> None:
        """Print ``text`` as its own line."""
        self._write(_encodable(text, self._stream) + "\n")

    def end(self) -> None:
        """Draw the text a throttled redraw kept, if any, then leave the line on screen and move to the next line."""
        if self._pending is not None:
            self._draw(self._pending)
        if self._drawn:
            self._write("\n")
            self._drawn = False

    def _write(self, text: str) -> None:
        self._stream.write(text)
        self._stream.flush()


class ProgressView:
    """Renders readiness events; call it with each event, then ``close()`` once the wait is over."""

    def __init__(self, stream: TextIO | None = None, *, interactive: bool | None = None) -> None:
        self._line = LiveLine(stream, interactive=interactive)
        self._shown: tuple[str, str | None] | None = None

    def __call__(self, event: ReadinessEvent) -> None:
        """Show one event: every one as a plain line; on the bar, a new phase or step at once, message updates at
        most about ten times a second."""
        if self._line.interactive:
            shown = (event.phase, event.step)
            self._line.redraw(bar_line(event), now=shown != self._shown)
            self._shown = shown
        else:
            self._line.print(plain_line(event))

    def close(self) -> None:
        """End the view: the phase bar stays on screen and the cursor moves to the next line."""
        self._line.end()


def plain_line(event: ReadinessEvent) -> str:
    """One log line, e.g. ``[  1.2s] provisioning: Provisioning a GPU``."""
    phase = event.phase if event.step is None else f"{event.phase} ({event.step})"
    message = _printable(event.message)
    text = f"[{event.elapsed_ms / 1000:5.1f}s] {phase}"
    return f"{text}: {message}" if message else text


def bar_line(event: ReadinessEvent) -> str:
    """The phase bar: elapsed time, every phase with the current one bracketed, then the step and the message."""
    if event.phase in PHASES:
        current = PHASES.index(event.phase)
        phases = " > ".join(f"[{name}]" if i == current else name for i, name in enumerate(PHASES))
    else:
        phases = f"[{event.phase}]"
    line = f"{event.elapsed_ms / 1000:5.1f}s  {phases}"
    detail = ": ".join(part for part in (event.step, _printable(event.message)) if part)
    return f"{line}  {detail}" if detail else line


def _printable(message: str) -> str:
    # Server text goes to a terminal: no tokens, and no line breaks or control characters that would garble the view.
    kept = "".join(ch for ch in redact(message) if ch.isprintable() or ch.isspace())
    return " ".join(kept.split())


def _encodable(text: str, stream: TextIO) -> str:
    """``text`` as ``stream`` can encode it: a legacy code page (a Windows console's cp437, a file in cp1252) lacks
    characters the platform's messages use, like the ellipsis of a redacted token; they degrade, never raise."""
    encoding = getattr(stream, "encoding", None)
    if not encoding:
        return text
    try:
        text.encode(encoding)
    except UnicodeEncodeError:
        text = text.replace("\u2026", "...")
        return text.encode(encoding, errors="replace").decode(encoding)
    except LookupError:
        pass
    return text


def _fit(line: str, width: int) -> str:
    # A line that wraps cannot be redrawn in place with "\r", so cut it short of the terminal's last column.
    limit = width - 1
    return line if len(line) <= limit else line[: max(limit - 3, 0)] + "..."


def _width(stream: TextIO) -> int:
    """The terminal width for ``stream``: ``COLUMNS`` if set, else the terminal's own, else 80."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    try:
        size = os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, ValueError, OSError):
        size = 0
    # A terminal that reports no size (a fresh pty) gets the usual default.
    return size if size > 0 else 80


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
