"""Checks of the built distributions, shared by the Makefile and .github/workflows/wheels.yml.

    audit DIST          every Linux wheel in DIST is manylinux2014 (or musllinux_1_2) or better, per auditwheel, and
                        links only the C runtime; prints each wheel's tag, libraries and size
    test-wheel DIST     installs the wheel of DIST that fits this interpreter into a fresh virtualenv, then runs the
                        test suite against the installed package with no Rust toolchain on PATH
    test-sdist DIST     builds and installs the sdist of DIST in a fresh virtualenv, then runs the quickstart it
                        ships (examples/quickstart.py) with ``inferencekey local exec`` and the CLI and text tests

Standard library only (audit also needs auditwheel), so it runs unchanged on Linux, macOS, Windows and Alpine.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TEST_REQUIREMENTS = ROOT / "requirements-test.txt"

# What a Rust extension may link on Linux: the C runtime, its unwinder and the dynamic loader. auditwheel's policies
# allow more (libstdc++, X11, GL...); anything beyond this list is a dependency nobody meant to add.
C_RUNTIME = {
    "ld-linux-x86-64.so.2",
    "ld-linux-aarch64.so.1",
    "libc.so.6",
    "libm.so.6",
    "libpthread.so.0",
    "libdl.so.2",
    "librt.so.1",
    "libgcc_s.so.1",
    "libc.musl-x86_64.so.1",
    "libc.musl-aarch64.so.1",
}
# The oldest platforms we promise: manylinux2014 (glibc 2.17) and musllinux_1_2.
MAX_GLIBC_MINOR = 17
MAX_MUSL_MINOR = 2
# The tests the sdist check runs after the quickstart: the console script and the data plane.
SDIST_TESTS = ("tests/test_cli.py", "tests/test_text.py")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    audit_parser = commands.add_parser("audit", help="check the Linux wheels' tags and linked libraries")
    audit_parser.add_argument("dist", type=Path)
    for name in ("test-wheel", "test-sdist"):
        test_parser = commands.add_parser(name)
        test_parser.add_argument("dist", type=Path)
        test_parser.add_argument("--venv", type=Path, required=True, help="virtualenv to (re)create")
        test_parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = parser.parse_args(argv)
    if args.command == "audit":
        return audit(args.dist)
    if args.command == "test-wheel":
        return test_wheel(args.dist, args.venv, args.pytest_args)
    return test_sdist(args.dist, args.venv, args.pytest_args)


# --- audit ---------------------------------------------------------------------------------------------------------


def audit(dist: Path) -> int:
    wheels = sorted(w for w in dist.glob("*.whl") if "linux" in w.name)
    if not wheels:
        return fail(f"no Linux wheel in {dist}")
    failures = 0
    for wheel in wheels:
        failures += audit_wheel(wheel)
    return 1 if failures else 0


def audit_wheel(wheel: Path) -> int:
    """0 when `wheel` passes, else 1 (the reasons printed)."""
    shown = run([sys.executable, "-m", "auditwheel", "show", "--json", str(wheel)], capture=True, check=False)
    try:
        report = json.loads(shown.stdout)
    except ValueError:
        report = {"error": f"exit {shown.returncode}: {shown.stdout}{shown.stderr}".strip()}
    tag = report.get("overall_tag", "none")
    external = sorted(report.get("external_libs") or {})
    system = sorted(report.get("versioned_symbols") or {})
    problems = []
    if "error" in report:
        problems.append(f"auditwheel: {report['error']}")
    if not platform_tag_ok(tag):
        problems.append(f"auditwheel's platform tag is {tag}, not manylinux_2_{MAX_GLIBC_MINOR} or better")
    if "-abi3-" not in wheel.name:
        problems.append("the wheel is not tagged abi3")
    if tag not in wheel.name:
        problems.append(f"the wheel's name does not carry auditwheel's tag {tag}")
    if external:
        problems.append(f"links libraries that are not part of the platform: {', '.join(external)}")
    beyond = [name for name in system if name not in C_RUNTIME]
    if beyond:
        problems.append(f"links system libraries beyond the C runtime: {', '.join(beyond)}")
    if not ships_license(wheel):
        problems.append("does not carry LICENSE (in its .dist-info/licenses/) as the repository has it")
    if tag.startswith("manylinux") and "libgcc_s.so.1" not in system:
        # A private unwinder (zig's libunwind) next to the process's libgcc_s: an unwind that libgcc_s starts through
        # the extension's frames (glibc's pthread_exit) crashes in it.
        problems.append("does not take its unwinder from libgcc_s.so.1 (a private copy is linked in)")
    size = wheel.stat().st_size
    print(f"{wheel.name}: {size / 2**20:.2f} MiB ({size} bytes)")
    print(f"  platform tag (auditwheel): {tag}")
    print(f"  system libraries linked: {', '.join(system) or 'none'}")
    print(f"  libraries to bundle: {', '.join(external) or 'none'}")
    for problem in problems:
        print(f"check_dist: {wheel.name}: {problem}", file=sys.stderr)
    return 1 if problems else 0


def platform_tag_ok(tag: str) -> bool:
    manylinux = re.fullmatch(r"manylinux_2_(\d+)_\w+", tag)
    musllinux = re.fullmatch(r"musllinux_1_(\d+)_\w+", tag)
    if manylinux:
        return int(manylinux[1]) <= MAX_GLIBC_MINOR
    if musllinux:
        return int(musllinux[1]) <= MAX_MUSL_MINOR
    return False


# --- test-wheel ----------------------------------------------------------------------------------------------------


def test_wheel(dist: Path, venv: Path, pytest_args: Sequence[str]) -> int:
    python = fresh_venv(venv)
    env = without_rust(venv)
    # --no-index and --only-binary: the wheel of dist/ that fits this interpreter, or an error; never the sdist.
    pip(python, "install", "--no-index", "--only-binary", ":all:", "--find-links", str(dist.resolve()), "inferencekey")
    pip(python, "install", "-r", str(TEST_REQUIREMENTS))
    with tempfile.TemporaryDirectory(prefix="inferencekey-wheel-") as tmp:
        # The tests run from a copy, so neither python/ nor the checkout is on sys.path: only the installed package
        # can be imported. The folder stays whole because the tests import their helpers from conftest; the
        # examples come along because the cluster test runs the pipeline example, README.md and docs/ because
        # tests/test_readme.py runs their Python blocks and tests/test_docs.py reads the reference pages (all found
        # next to tests/, as in the checkout).
        shutil.copytree(ROOT / "tests", Path(tmp) / "tests")
        shutil.copytree(ROOT / "examples", Path(tmp) / "examples")
        shutil.copy(ROOT / "README.md", Path(tmp) / "README.md")
        shutil.copytree(ROOT / "docs", Path(tmp) / "docs")
        assert_installed(python, venv, env, Path(tmp))
        return pytest(python, env, Path(tmp), ["tests", *pytest_args])


def without_rust(venv: Path) -> dict[str, str]:
    """The environment of the tests: the virtualenv first on PATH, and no directory holding cargo or rustc."""
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP"}}
    kept = [d for d in env.get("PATH", "").split(os.pathsep) if d and not holds_rust(d)]
    env["PATH"] = os.pathsep.join([str(scripts_dir(venv)), *kept])
    env["VIRTUAL_ENV"] = str(venv)
    for tool in ("cargo", "rustc"):
        if shutil.which(tool, path=env["PATH"]):
            raise SystemExit(f"check_dist: {tool} is still on the tests' PATH")
    if os.name == "posix" and run(["sh", "-c", "command -v cargo"], env=env, check=False).returncode == 0:
        raise SystemExit("check_dist: `command -v cargo` finds cargo on the tests' PATH")
    print("check_dist: no cargo or rustc on the tests' PATH")
    return env


def holds_rust(directory: str) -> bool:
    return any(shutil.which(tool, path=directory) for tool in ("cargo", "rustc"))


def assert_installed(python: Path, venv: Path, env: dict[str, str], cwd: Path) -> str:
    """The package, its native module and the console script all come from the virtualenv; returns the script."""
    code = "import inferencekey, inferencekey._core as c; print(inferencekey.__file__); print(c.__file__)"
    shown = run([str(python), "-c", code], env=env, cwd=cwd, capture=True)
    script = shutil.which("inferencekey", path=env["PATH"])
    for path in [*shown.stdout.split(), script or "<no inferencekey on PATH>"]:
        if not Path(path).resolve().is_relative_to(venv.resolve()):
            raise SystemExit(f"check_dist: {path} is not inside {venv}: the tests would not test the installed wheel")
        print(f"check_dist: installed: {path}")
    run([str(script), "--version"], env=env, cwd=cwd)
    return str(script)


# --- test-sdist ----------------------------------------------------------------------------------------------------


def test_sdist(dist: Path, venv: Path, pytest_args: Sequence[str]) -> int:
    sdists = sorted(dist.glob("inferencekey-*.tar.gz"))
    if len(sdists) != 1:
        return fail(f"expected one sdist in {dist}, found {[s.name for s in sdists]}")
    if not ships_license(sdists[0]):
        return fail(f"{sdists[0].name} does not carry LICENSE at its root as the repository has it")
    python = fresh_venv(venv)
    started = time.monotonic()
    # Built from source by pip, with the build backend from PyPI, as a user without a matching wheel would.
    pip(python, "install", str(sdists[0].resolve()))
    print(f"check_dist: built and installed {sdists[0].name} in {time.monotonic() - started:.0f} s")
    pip(python, "install", "-r", str(TEST_REQUIREMENTS))
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP"}}
    env["PATH"] = os.pathsep.join([str(scripts_dir(venv)), env.get("PATH", "")])
    with tempfile.TemporaryDirectory(prefix="inferencekey-sdist-") as tmp:
        shutil.copytree(ROOT / "tests", Path(tmp) / "tests")
        # The quickstart as the sdist ships it (the README points its users to examples/), not the checkout's copy.
        (Path(tmp) / "quickstart.py").write_bytes(sdist_member(sdists[0], "examples/quickstart.py"))
        script = assert_installed(python, venv, env, Path(tmp))
        run([script, "local", "exec", "--", str(python), "quickstart.py"], env=env, cwd=Path(tmp))
        return pytest(python, env, Path(tmp), [*SDIST_TESTS, *pytest_args])


# --- helpers -------------------------------------------------------------------------------------------------------


def sdist_member(sdist: Path, path: str) -> bytes:
    """The bytes of `path` (relative to the project root) inside the sdist; an error if it is not there."""
    with tarfile.open(sdist) as tar:
        for member in tar.getmembers():
            if member.isfile() and member.name.partition("/")[2] == path:
                data = tar.extractfile(member)
                assert data is not None
                return data.read()
    raise SystemExit(f"check_dist: {sdist.name} does not contain {path}")


def ships_license(dist: Path) -> bool:
    """Whether the wheel or sdist `dist` carries the repository's LICENSE, byte for byte (Apache-2.0 requires it)."""
    expected = (ROOT / "LICENSE").read_bytes()
    if dist.suffix == ".whl":
        with zipfile.ZipFile(dist) as wheel:
            names = [n for n in wheel.namelist() if n.endswith(".dist-info/licenses/LICENSE")]
            return len(names) == 1 and wheel.read(names[0]) == expected
    with tarfile.open(dist) as sdist:
        member = next((m for m in sdist.getmembers() if m.name.count("/") == 1 and m.name.endswith("/LICENSE")), None)
        extracted = sdist.extractfile(member) if member is not None else None
        return extracted is not None and extracted.read() == expected


def fresh_venv(venv: Path) -> Path:
    """Recreate `venv` from this interpreter; return its python."""
    shutil.rmtree(venv, ignore_errors=True)
    run([sys.executable, "-m", "venv", str(venv)])
    python = scripts_dir(venv) / ("python.exe" if os.name == "nt" else "python")
    pip(python, "install", "--upgrade", "pip")
    return python


def scripts_dir(venv: Path) -> Path:
    return venv.resolve() / ("Scripts" if os.name == "nt" else "bin")


def pip(python: Path, *args: str) -> None:
    run([str(python), "-m", "pip", "--disable-pip-version-check", "-q", *args])


def pytest(python: Path, env: dict[str, str], cwd: Path, args: Sequence[str]) -> int:
    # No cache provider: nothing is written next to the copied tests, and no rootdir outside them is looked for.
    command = [str(python), "-m", "pytest", "-p", "no:cacheprovider", "-q", "-ra", *args]
    started = time.monotonic()
    code = run(command, env=env, cwd=cwd, check=False).returncode
    print(f"check_dist: pytest exited {code} after {time.monotonic() - started:.0f} s")
    return code


def run(
    command: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    capture: bool = False,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    print("+", " ".join(command), flush=True)
    return subprocess.run(command, env=env, cwd=cwd, check=check, text=True, capture_output=capture)


def fail(message: str) -> int:
    print(f"check_dist: {message}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
