# Every ```python block of README.md, run as written: each one as a file in a child process, with the environment a
# user gets from `inferencekey local exec` (a fresh local platform per block, its four INFERENCEKEY_ variables and no
# others); a block of pytest tests runs under pytest, with the plugin as installed. A newcomer copies these first.
#
# Markers, an HTML comment on the line right before the fence:
#   <!-- requires: numpy, distributed -->   skipped unless each of these modules is importable
#   <!-- not-runnable: why -->              skipped, with that reason (prefer a runnable block, or a ```text fence)
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from inferencekey.local import LocalPlatform

# The checkout's README, or the copy next to the copied tests/ when the installed wheel is tested
# (.github/scripts/check_dist.py test-wheel copies both).
README = Path(__file__).resolve().parents[1] / "README.md"
PYTHON_FENCES = {"python", "py", "python3"}
MARKER = re.compile(r"<!--\s*(requires|not-runnable):\s*(.*?)\s*-->")
TEST_FUNCTION = re.compile(r"^(async\s+)?def\s+test_", re.MULTILINE)
TIMEOUT = 300


@dataclass
class Block:
    heading: str
    index: int  # 1-based, among the Python blocks under that heading
    line: int  # of the opening fence
    code: str
    requires: list[str] = field(default_factory=list)
    not_runnable: str | None = None

    @property
    def id(self) -> str:
        return f"{self.heading} #{self.index}"

    @property
    def is_pytest_file(self) -> bool:
        return TEST_FUNCTION.search(self.code) is not None


def parse(text: str) -> tuple[list[Block], list[str]]:
    """The Python blocks of a Markdown text, and the problems found (a marker before no Python block)."""
    blocks: list[Block] = []
    problems: list[str] = []
    heading = "(top)"
    per_heading: dict[str, int] = {}
    lines = text.splitlines()
    fence: str | None = None  # the opening fence's backticks while inside a block
    info = ""
    start = 0
    body: list[str] = []
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if fence is None:
            opening = re.match(r"(`{3,})\s*([^`\s]*)", stripped)
            if opening:
                fence, info, start, body = opening[1], opening[2].lower(), number, []
            elif stripped.startswith("#"):
                heading = stripped.lstrip("#").strip()
            continue
        if stripped.startswith(fence) and stripped.strip("`") == "":
            marker = marker_before(lines, start)
            if info in PYTHON_FENCES:
                per_heading[heading] = per_heading.get(heading, 0) + 1
                block = Block(heading, per_heading[heading], start, "\n".join(body) + "\n")
                if marker and marker[0] == "requires":
                    block.requires = [name.strip() for name in marker[1].split(",") if name.strip()]
                elif marker:
                    block.not_runnable = marker[1] or "no reason given"
                blocks.append(block)
            elif marker:
                problems.append(f"README.md:{start}: <!-- {marker[0]}: ... --> before a ```{info} block, not ```python")
            fence = None
        else:
            body.append(line)
    if fence is not None:
        problems.append(f"README.md:{start}: the ``` fence opened here is never closed")
    return blocks, problems


def marker_before(lines: list[str], fence_line: int) -> tuple[str, str] | None:
    """The marker on the line right before the fence at `fence_line` (1-based), if any."""
    if fence_line < 2:
        return None
    found = MARKER.fullmatch(lines[fence_line - 2].strip())
    return (found[1], found[2]) if found else None


def readme_blocks() -> list[Block | None]:
    """The README's Python blocks; one None (a failure below, not an empty set that pytest would skip) if missing."""
    return list(parse(README.read_text(encoding="utf-8"))[0]) if README.is_file() else [None]


def test_readme_is_found_and_well_formed() -> None:
    # Fails, never skips, when README.md is missing: the blocks below would silently be none.
    assert README.is_file(), f"{README} is missing (test-wheel must copy it next to the copied tests/)"
    blocks, problems = parse(README.read_text(encoding="utf-8"))
    assert problems == []
    assert len(blocks) >= 5, f"only {len(blocks)} ```python blocks found in {README}"
    assert len({block.id for block in blocks}) == len(blocks)


@pytest.mark.parametrize("block", readme_blocks(), ids=lambda block: block.id if block else "README.md missing")
def test_readme_block_runs(block: Block | None, tmp_path: Path) -> None:
    assert block is not None, f"{README} is missing"
    if block.not_runnable:
        pytest.skip(f"marked not runnable: {block.not_runnable}")
    missing = [name for name in block.requires if importlib.util.find_spec(name) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)}")
    name = "test_readme_block.py" if block.is_pytest_file else "readme_block.py"
    (tmp_path / name).write_text(block.code, encoding="utf-8")
    if block.is_pytest_file:
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", name]
    else:
        command = [sys.executable, name]
    with LocalPlatform() as platform:
        env = {k: v for k, v in os.environ.items() if not k.startswith("INFERENCEKEY_")}
        env.update(platform.env)
        # The blocks print the engines' replies, which are not ASCII: UTF-8 into the pipe, as a console would take
        # them (Windows' pipes would otherwise encode with the ANSI code page and fail).
        env["PYTHONIOENCODING"] = "utf-8"
        done = subprocess.run(
            command, cwd=tmp_path, env=env, capture_output=True, encoding="utf-8", errors="replace", timeout=TIMEOUT
        )
    assert done.returncode == 0, (
        f"README.md:{block.line} ({block.id}) exited {done.returncode}\n"
        f"--- stdout ---\n{done.stdout}\n--- stderr ---\n{done.stderr}"
    )
