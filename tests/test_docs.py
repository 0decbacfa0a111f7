# The API reference (docs/reference/*.md) has an entry for every public name: each export of `inferencekey`, of its
# public submodules (`local`, `testing`, `exceptions`, `enums`, `types`) and each fixture of the pytest plugin appears
# in a mkdocstrings directive (`::: inferencekey.X`, or a module's directive listing X among its `members:`), and every
# directive names something that exists. So a new export without its entry fails here, and a renamed one too.
#
# It reads the Markdown sources, not the built site: mkdocs is not a test dependency (`make docs` builds the site with
# --strict, which catches broken links and docstring problems).
from __future__ import annotations

import importlib
import re
from pathlib import Path
from types import ModuleType

import pytest

import inferencekey

# The checkout's docs/, or the copy next to the copied tests/ when the installed wheel is tested
# (.github/scripts/check_dist.py test-wheel copies it).
REFERENCE = Path(__file__).resolve().parents[1] / "docs" / "reference"
DIRECTIVE = re.compile(r"^:::\s+(\S+)\s*$")
# Public submodules whose `__all__` is part of the API. `inferencekey.pytest_plugin` has no `__all__`: its fixtures.
SUBMODULES = ("local", "testing", "exceptions", "enums", "types", "chat")
PLUGIN = "inferencekey.pytest_plugin"


def directives(text: str) -> list[tuple[str, list[str]]]:
    """Each `::: identifier` of a Markdown page, with the names its indented `options:` list under `members:`."""
    found: list[tuple[str, list[str]]] = []
    in_members = False
    for line in text.splitlines():
        opening = DIRECTIVE.match(line)
        if opening:
            found.append((opening[1], []))
            in_members = False
        elif found and line.startswith((" ", "\t")) and line.strip():
            stripped = line.strip()
            if stripped.startswith("members:"):
                in_members = True
            elif in_members and stripped.startswith("- "):
                found[-1][1].append(stripped[2:].strip())
            elif not stripped.startswith("- "):
                in_members = False
        elif line.strip():
            in_members = False
    return found


def documented() -> set[str]:
    """The full identifiers the reference pages render: every directive's target and the members it lists."""
    names: set[str] = set()
    for page in sorted(REFERENCE.glob("*.md")):
        for target, members in directives(page.read_text(encoding="utf-8")):
            names.add(target)
            names.update(f"{target}.{member}" for member in members)
    return names


def resolve(identifier: str) -> object:
    """The object a dotted identifier names: the longest importable module prefix, then attributes."""
    parts = identifier.split(".")
    for split in range(len(parts), 0, -1):
        try:
            value: object = importlib.import_module(".".join(parts[:split]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[split:]:
            value = getattr(value, attribute)
        return value
    raise ModuleNotFoundError(identifier)


def fixtures(module: ModuleType) -> list[str]:
    """The pytest fixtures a plugin module defines (pytest 8.4+ wraps them; earlier versions mark the function)."""
    return sorted(
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and (type(value).__name__ == "FixtureFunctionDefinition" or hasattr(value, "_pytestfixturefunction"))
    )


def public_names() -> list[tuple[str, str]]:
    """(module, name) for every public name: `inferencekey.__all__`, the submodules' `__all__`, the fixtures."""
    names = [("inferencekey", name) for name in inferencekey.__all__]
    for submodule in SUBMODULES:
        module = importlib.import_module(f"inferencekey.{submodule}")
        names += [(module.__name__, name) for name in module.__all__]
    names += [(PLUGIN, name) for name in fixtures(importlib.import_module(PLUGIN))]
    return names


def covered(module: str, name: str, entries: set[str]) -> bool:
    """Whether `module.name` has an entry: under that identifier, or under another identifier of the same name that
    is the same object (the exceptions, enums and types are documented where users import them: `inferencekey.X`)."""
    if f"{module}.{name}" in entries:
        return True
    value = getattr(importlib.import_module(module), name)
    return any(entry.rsplit(".", 1)[-1] == name and resolve(entry) is value for entry in entries)


def test_reference_is_found() -> None:
    # Fails, never skips, when docs/ is missing (test-wheel must copy it next to the copied tests/).
    assert REFERENCE.is_dir(), f"{REFERENCE} is missing"
    assert len(documented()) > len(inferencekey.__all__), f"too few ::: directives in {REFERENCE}"


def test_the_plugin_defines_fixtures() -> None:
    # Guards the fixture detection below: if a pytest release changed how fixtures look, none would be required.
    assert "inferencekey_local" in fixtures(importlib.import_module(PLUGIN))


@pytest.mark.parametrize(("module", "name"), public_names(), ids=lambda value: value)
def test_public_name_is_in_the_reference(module: str, name: str) -> None:
    entries = documented() if REFERENCE.is_dir() else set()
    assert covered(module, name, entries), (
        f"{module}.{name} is public but no page of {REFERENCE} renders it: add `::: {module}.{name}` (or list it under "
        f"the `members:` of its module's directive)"
    )


def test_every_directive_names_something() -> None:
    assert REFERENCE.is_dir(), f"{REFERENCE} is missing"
    missing = []
    for entry in sorted(documented()):
        try:
            resolve(entry)
        except (AttributeError, ModuleNotFoundError):
            missing.append(entry)
    assert missing == [], f"directives of {REFERENCE} name nothing that exists: {missing}"


def test_directives_parse() -> None:
    text = """# Page

::: inferencekey.testing
    options:
      members:
        - LocalAdmin
        - ROUTES
      heading_level: 2

::: inferencekey.Plan

    - not a member
"""
    assert directives(text) == [("inferencekey.testing", ["LocalAdmin", "ROUTES"]), ("inferencekey.Plan", [])]
