# Every ```python block of README.md and of the documentation pages (docs/**/*.md), run as written: each one as a file
# in a child process, with the environment a user gets from `inferencekey local exec` (a fresh local platform per
# block, its four INFERENCEKEY_ variables and no others); a block of pytest tests runs under pytest, with the plugin as
# installed. A newcomer copies these first. A block's id names its file: `docs/getting-started.md: Quickstart #1`.
#
# Markers, an HTML comment on the line right before the fence:
#   <!-- requires: numpy, distributed -->   skipped unless each of these modules is importable
#   <!-- not-runnable: why -->              skipped, with that reason (prefer a runnable block, or a ```text fence)
#   <!-- engine: why -->                    runs against a platform with the real engine (`make engine`), as the
#                                           real-engine tests do: skipped only with INFERENCEKEY_SKIP_ENGINE=1
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

# The checkout's README and docs/, or the copies next to the copied tests/ when the installed wheel is tested
# (.github/scripts/check_dist.py test-wheel copies them).
ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
# The page whose blocks a newcomer runs first: its absence means docs/ was not found, not that it has no blocks.
GETTING_STARTED = DOCS / "getting-started.md"
PYTHON_FENCES = {"python", "py", "python3"}
MARKER = re.compile(r"<!--\s*(requires|not-runnable|engine):\s*(.*?)\s*-->")
TEST_FUNCTION = re.compile(r"^(async\s+)?def\s+test_", re.MULTILINE)
TIMEOUT = 300


@dataclass
class Block:
    source: str  # the file, relative to the root: README.md, docs/async.md
    heading: str
    index: int  # 1-based, among the Python blocks under that heading
    line: int  # of the opening fence
    code: str
    requires: list[str] = field(default_factory=list)
    not_runnable: str | None = None
    engine: bool = False

    @property
    def id(self) -> str:
        return f"{self.source}: {self.heading} #{self.index}"

    @property
    def is_pytest_file(self) -> bool:
        return TEST_FUNCTION.search(self.code) is not None


def parse(text: str, source: str = "README.md") -> tuple[list[Block], list[str]]:
    """The Python blocks of the Markdown text of `source`, and the problems found (a marker before no Python block,
    a fence never closed)."""
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
                block = Block(source, heading, per_heading[heading], start, "\n".join(body) + "\n")
                if marker and marker[0] == "requires":
                    block.requires = [name.strip() for name in marker[1].split(",") if name.strip()]
                elif marker and marker[0] == "engine":
                    block.engine = True
                elif marker:
                    block.not_runnable = marker[1] or "no reason given"
                blocks.append(block)
            elif marker:
                problems.append(f"{source}:{start}: <!-- {marker[0]}: ... --> before a ```{info} block, not ```python")
            fence = None
        else:
            body.append(line)
    if fence is not None:
        problems.append(f"{source}:{start}: the ``` fence opened here is never closed")
    return blocks, problems


def marker_before(lines: list[str], fence_line: int) -> tuple[str, str] | None:
    """The marker on the line right before the fence at `fence_line` (1-based), if any."""
    if fence_line < 2:
        return None
    found = MARKER.fullmatch(lines[fence_line - 2].strip())
    return (found[1], found[2]) if found else None


def sources() -> list[Path]:
    """README.md and every Markdown page under docs/ (those that exist), in a stable order."""
    pages = sorted(DOCS.rglob("*.md")) if DOCS.is_dir() else []
    return [path for path in [README, *pages] if path.is_file()]


def relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


@dataclass
class Missing:
    """A source that should be there and is not: a failing case, not an empty set that pytest would skip."""

    path: Path

    @property
    def id(self) -> str:
        return f"{relative(self.path)} missing"


def all_blocks() -> list[Block | Missing]:
    """The Python blocks of every source, with a Missing in place of README.md or docs/ when either is absent."""
    found: list[Block | Missing] = [Missing(path) for path in (README, GETTING_STARTED) if not path.is_file()]
    for path in sources():
        found += parse(path.read_text(encoding="utf-8"), relative(path))[0]
    return found


def test_sources_are_found_and_well_formed() -> None:
    # Fails, never skips, when README.md or docs/ is missing: the blocks below would silently be fewer.
    for path in (README, GETTING_STARTED):
        assert path.is_file(), f"{path} is missing (test-wheel must copy README.md and docs/ next to the copied tests/)"
    blocks: list[Block] = []
    for path in sources():
        found, problems = parse(path.read_text(encoding="utf-8"), relative(path))
        assert problems == []
        blocks += found
    readme = [block for block in blocks if block.source == "README.md"]
    assert len(readme) >= 5, f"only {len(readme)} ```python blocks found in {README}"
    started = [block for block in blocks if block.source == relative(GETTING_STARTED)]
    assert started, f"no ```python block in {GETTING_STARTED}"
    assert len({block.id for block in blocks}) == len(blocks)


@pytest.mark.parametrize("block", all_blocks(), ids=lambda block: block.id)
def test_block_runs(block: Block | Missing, tmp_path: Path) -> None:
    assert not isinstance(block, Missing), f"{block.path} is missing"
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
    llama_server = None
    if block.engine:
        if os.environ.get("INFERENCEKEY_SKIP_ENGINE") == "1":
            pytest.skip("INFERENCEKEY_SKIP_ENGINE=1: blocks that need the real engine skipped as asked")
        llama_server = os.environ.get("INFERENCEKEY_TEST_LLAMA_SERVER") or os.environ.get("INFERENCEKEY_LLAMA_SERVER")
        assert llama_server and os.path.isfile(llama_server), (
            "no llama-server: run `make engine` and set INFERENCEKEY_TEST_LLAMA_SERVER (make test does), or skip with "
            "INFERENCEKEY_SKIP_ENGINE=1"
        )
    with LocalPlatform(llama_server=llama_server) as platform:
        env = {k: v for k, v in os.environ.items() if not k.startswith("INFERENCEKEY_")}
        env.update(platform.env)
        # The blocks print the engines' replies, which are not ASCII: UTF-8 into the pipe, as a console would take
        # them (Windows' pipes would otherwise encode with the ANSI code page and fail).
        env["PYTHONIOENCODING"] = "utf-8"
        # LiteLLM fetches a model price list from the internet at import unless told to use its bundled copy; the
        # test machines have no internet, and the example needs no prices.
        env.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        done = subprocess.run(
            command, cwd=tmp_path, env=env, capture_output=True, encoding="utf-8", errors="replace", timeout=TIMEOUT
        )
    assert done.returncode == 0, (
        f"{block.source}:{block.line} ({block.id}) exited {done.returncode}\n"
        f"--- stdout ---\n{done.stdout}\n--- stderr ---\n{done.stderr}"
    )
