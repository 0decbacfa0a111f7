# The one stub of the native module (python/inferencekey/_core.pyi) matches the built binary: every name, class,
# method, parameter and default, as mypy's stubtest sees them at runtime.
from __future__ import annotations

import subprocess
import sys

import pytest


def test_core_stub_matches_the_native_module() -> None:
    pytest.importorskip("mypy.stubtest")
    result = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "inferencekey._core"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
