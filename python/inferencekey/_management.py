"""``ManagementClient`` and its asyncio twin ``AsyncManagementClient``: the control-plane clients (``ik_sdk_`` token)
that provision and reconcile workloads, side by side over one shared base.

Every request, check and decision is made by the native core; this module only shapes arguments and results,
and shows drift (warning, log) and readiness progress the Python way.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

from inferencekey._aio import run
from inferencekey._client import ClientBase
from inferencekey._closing import AsyncClosing, Closing
from inferencekey._core import Ensured
from inferencekey._core import ManagementClient as NativeManagementClient
from inferencekey._network import CertFiles
from inferencekey._progress import ProgressView
from inferencekey.enums import OnDrift
from inferencekey.exceptions import DriftWarning
from inferencekey.types import EndpointRef, Plan, ReadinessEvent, WorkloadSpec

__all__ = ["AsyncManagementClient", "ManagementClient"]

logger = logging.getLogger("inferencekey")

_M = TypeVar("_M", bound="_ManagementBase")


class _ManagementBase(ClientBase):
    """Construction and configuration shared by ``ManagementClient`` and ``AsyncManagementClient``."""

    _native: NativeManagementClient

    def __init__(
        self,
        *,
        base_url: str,
        sdk_token: str,
        project: str | None = None,
        timeout: float = 600.0,
        connect_timeout: float = 10.0,
        max_retries: int = 2,
        default_headers: Mapping[str, str] | None = None,
        verify: bool | str | os.PathLike[str] = True,
        cert: CertFiles | None = None,
        proxy: str | None = None,
    ) -> None:
        self._native = NativeManagementClient(
            base_url=base_url,
            sdk_token=sdk_token,
            project=project,
            from_env=False,
            connect_timeout=connect_timeout,
            timeout=timeout,
            max_retries=max_retries,
            default_headers=None if default_headers is None else dict(default_headers),
            verify=verify,
            cert=cert,
            proxy=proxy,
        )

    @classmethod
    def from_env(
        cls: type[_M],
        *,
        base_url: str | None = None,
        project: str | None = None,
        sdk_token: str | None = None,
        timeout: float = 600.0,
        connect_timeout: float = 10.0,
        max_retries: int = 2,
        default_headers: Mapping[str, str] | None = None,
        verify: bool | str | os.PathLike[str] = True,
        cert: CertFiles | None = None,
        proxy: str | None = None,
    ) -> _M:
        """Build a client from configuration, each value resolved as explicit > environment > default.

        Reads ``INFERENCEKEY_BASE_URL`` (default ``https://api.inferencekey.com``), ``INFERENCEKEY_PROJECT`` and
        ``INFERENCEKEY_SDK_TOKEN``. Blank environment values count as unset.
        """
        client = cls.__new__(cls)
        client._native = NativeManagementClient(
            base_url=base_url,
            sdk_token=sdk_token,
            project=project,
            from_env=True,
            connect_timeout=connect_timeout,
            timeout=timeout,
            max_retries=max_retries,
            default_headers=None if default_headers is None else dict(default_headers),
            verify=verify,
            cert=cert,
            proxy=proxy,
        )
        return client


class ManagementClient(_ManagementBase, Closing):
    """Control-plane client, scoped to one project by its ``ik_sdk_`` token; it has no inference methods.

    It provisions workloads idempotently (``ensure``), shows what would change (``plan``), waits until a workload
    serves (``wait_until_ready``) and deletes it (``delete``). One client keeps one connection pool: reuse it, and
    ``close()`` it (or use it as a context manager) when done.

    Args:
        base_url: The platform's base URL, e.g. ``https://api.inferencekey.com``.
        sdk_token: The ``ik_sdk_`` control token. A blank token raises ``ConfigurationError``; an ``ik_live_`` data
            key raises ``PermissionDenied``.
        project: The default project slug for calls that do not name one.
        timeout: The longest silence, in seconds, allowed while reading a response.
        connect_timeout: The longest wait, in seconds, for a connection to the platform.
        max_retries: How many times a transient failure is retried (see the retry policy).
        default_headers: Headers sent with every request (for a gateway or a tenant); ``Authorization`` is
            refused, since the client sends its own credential.
        verify: Which certificates to trust: ``True`` (the operating system's store, ``SSL_CERT_FILE`` and
            ``SSL_CERT_DIR``, and the bundled roots), the path of a PEM bundle (only those), or ``False`` (no
            verification; logged once as a warning, never the default).
        cert: A client certificate for mutual TLS: the path of a PEM file holding the certificate and its key, or a
            ``(cert, key)`` pair of paths.
        proxy: A proxy for every request (``http://``, ``https://``, ``socks5://``), replacing ``HTTPS_PROXY``,
            ``HTTP_PROXY`` and ``ALL_PROXY``; ``NO_PROXY`` still applies. ``None``: the environment's.
    """

    def ensure(
        self,
        spec: WorkloadSpec,
        *,
        on_drift: OnDrift | str = OnDrift.RECONCILE,
        project: str | None = None,
    ) -> EndpointRef:
        """Idempotently provision or reconcile ``spec`` and return the ref of its endpoint.

        Idempotency is keyed off the canonical ``spec.slug``. The project resolves as ``project=`` > ``spec.project``
        > the client's project > ``INFERENCEKEY_PROJECT``; with none, ``ConfigurationError`` is raised. When the live
        workload differs from the spec, ``on_drift`` decides: ``reconcile`` patches the drifted fields, ``fail``
        raises ``DriftError`` (with ``.plan``), ``dry_run`` changes nothing and logs the plan (logger
        ``inferencekey``, INFO), ``warn`` changes nothing and emits a ``DriftWarning`` (and a log warning),
        ``ignore`` changes nothing. Under ``dry_run`` an absent workload is not created either.

        Raises:
            ValidationError: ``on_drift`` is not one of the accepted values, or the spec is invalid.
            DriftError: ``on_drift="fail"`` and the workload drifted.
        """
        return _ensured(self._native.ensure(spec, on_drift, project).wait())

    def plan(self, spec: WorkloadSpec, *, project: str | None = None) -> Plan:
        """Compute what ``ensure(spec)`` would do (create, update which fields, or nothing), without changing anything.

        ``str(plan)`` is a readable diff; ``plan.action`` is ``create``, ``update`` or ``noop``.
        """
        return self._native.plan(spec, project).wait()

    def wait_until_ready(
        self,
        workload_slug: str,
        *,
        project: str | None = None,
        timeout: float = 600.0,
        on_progress: Callable[[ReadinessEvent], None] | None = None,
        silent: bool = False,
    ) -> None:
        """Wait until ``workload_slug`` is serving, reporting progress as the platform brings it up.

        Progress goes to ``on_progress`` when given (one ``ReadinessEvent`` per update); otherwise a live view is
        written to stderr (a phase bar on a terminal, plain lines in CI or when redirected), unless ``silent``.
        Dropped event streams are reconnected. Ctrl+C interrupts the wait.

        Raises:
            ApiError: The platform reported the ``error`` phase (the message is the platform's).
            WaitTimeoutError: ``timeout`` seconds passed first (also a builtin ``TimeoutError``).
        """
        watch = self._native.watch_readiness(workload_slug, project, timeout)
        progress = Progress(on_progress, silent)
        try:
            for event in watch:
                if progress.report(event):
                    break
        finally:
            progress.close()

    def delete(self, workload_slug: str, *, project: str | None = None) -> bool:
        """Delete the workload; ``True`` if it existed and was removed, ``False`` if it was already gone.

        Idempotent, so it is safe to call on shutdown (e.g. in a ``finally``) without checking first. The project
        falls back like ``ensure``.

        Raises:
            PermissionDenied: The token is for another project or lacks the delete capability.
        """
        return self._native.delete(workload_slug, project).wait()

    def list_workloads(self, *, project: str | None = None) -> list[dict[str, Any]]:
        """The project's workloads, as the platform's JSON objects."""
        return self._native.list(project).wait()

    def close(self) -> None:
        """Close the client's pooled connections (a later call opens new ones)."""
        self._native.close()

    # The deploy commands' seam (``inferencekey apply`` and ``status``): what they need beyond the public methods,
    # kept on the client so that no caller reaches into the native object.

    def _ensure_outcome(self, spec: WorkloadSpec, *, on_drift: str, project: str | None = None) -> Ensured:
        """``ensure``, returning the core's whole outcome (the plan acted on, whether it changed anything, the drift
        note) instead of showing the drift as a warning."""
        return self._native.ensure(spec, on_drift, project).wait()

    def _readiness(self, workload_slug: str, *, project: str | None = None, timeout: float) -> Iterator[ReadinessEvent]:
        """The workload's readiness events, the first a snapshot of its current phase. The arguments (and that a
        project resolves) are checked here; no connection opens until the first event is asked for."""
        return self._native.watch_readiness(workload_slug, project, timeout)


def _ensured(outcome: Ensured) -> EndpointRef:
    """The ref of an ensure outcome, after showing what the core decided to show: the dry-run note, or the drift
    warning (as a ``DriftWarning`` and a log record).

    Called directly by the public ``ensure`` methods, so the warning points at their caller.
    """
    if outcome.info is not None:
        logger.info("%s", outcome.info)
    if outcome.warning is not None:
        logger.warning("%s", outcome.warning)
        warnings.warn(DriftWarning(outcome.warning, plan=outcome.plan), stacklevel=3)
    return outcome.endpoint_ref


class Progress:
    """Where ``wait_until_ready`` reports readiness events: ``on_progress``, else the live view unless ``silent``."""

    def __init__(self, on_progress: Callable[[ReadinessEvent], None] | None, silent: bool) -> None:
        self._view = ProgressView() if on_progress is None and not silent else None
        self._report = on_progress if on_progress is not None else self._view

    def report(self, event: ReadinessEvent) -> bool:
        """Report one event; True when it is the ``ready`` event (the wait is over)."""
        if self._report is not None:
            self._report(event)
        return event.phase == "ready"

    def close(self) -> None:
        """Finish the live view, if one is shown."""
        if self._view is not None:
            self._view.close()


class AsyncManagementClient(_ManagementBase, AsyncClosing):
    """The asyncio twin of ``ManagementClient``: the same methods and arguments, each awaited.

    Control-plane client, scoped to one project by its ``ik_sdk_`` token. One client keeps one connection pool:
    reuse it, and ``await close()`` it (or use ``async with``) when done.

    Args:
        base_url: The platform's base URL, e.g. ``https://api.inferencekey.com``.
        sdk_token: The ``ik_sdk_`` control token. A blank token raises ``ConfigurationError``; an ``ik_live_`` data
            key raises ``PermissionDenied``.
        project: The default project slug for calls that do not name one.
        timeout: The longest silence, in seconds, allowed while reading a response.
        connect_timeout: The longest wait, in seconds, for a connection to the platform.
        max_retries: How many times a transient failure is retried (see the retry policy).
        default_headers: Headers sent with every request (for a gateway or a tenant); ``Authorization`` is
            refused, since the client sends its own credential.
        verify: Which certificates to trust: ``True`` (the operating system's store, ``SSL_CERT_FILE`` and
            ``SSL_CERT_DIR``, and the bundled roots), the path of a PEM bundle (only those), or ``False`` (no
            verification; logged once as a warning, never the default).
        cert: A client certificate for mutual TLS: the path of a PEM file holding the certificate and its key, or a
            ``(cert, key)`` pair of paths.
        proxy: A proxy for every request (``http://``, ``https://``, ``socks5://``), replacing ``HTTPS_PROXY``,
            ``HTTP_PROXY`` and ``ALL_PROXY``; ``NO_PROXY`` still applies. ``None``: the environment's.
    """

    async def ensure(
        self,
        spec: WorkloadSpec,
        *,
        on_drift: OnDrift | str = OnDrift.RECONCILE,
        project: str | None = None,
    ) -> EndpointRef:
        """Idempotently provision or reconcile ``spec`` and return the ref of its endpoint.

        Behaves as ``ManagementClient.ensure``: ``on_drift`` decides what a drifted workload gets (``reconcile``,
        ``fail`` raising ``DriftError``, ``dry_run`` logging the plan, ``warn`` emitting a ``DriftWarning``,
        ``ignore``).

        Raises:
            ValidationError: ``on_drift`` is not one of the accepted values, or the spec is invalid.
            DriftError: ``on_drift="fail"`` and the workload drifted.
        """
        return _ensured(await run(self._native.ensure(spec, on_drift, project)))

    async def plan(self, spec: WorkloadSpec, *, project: str | None = None) -> Plan:
        """Compute what ``ensure(spec)`` would do (create, update which fields, or nothing), changing nothing."""
        return await run(self._native.plan(spec, project))

    async def wait_until_ready(
        self,
        workload_slug: str,
        *,
        project: str | None = None,
        timeout: float = 600.0,
        on_progress: Callable[[ReadinessEvent], None] | None = None,
        silent: bool = False,
    ) -> None:
        """Wait until ``workload_slug`` is serving, reporting progress as ``ManagementClient.wait_until_ready`` does.

        Progress goes to ``on_progress`` when given; otherwise a live view is written to stderr, unless ``silent``.

        Raises:
            ApiError: The platform reported the ``error`` phase (the message is the platform's).
            WaitTimeoutError: ``timeout`` seconds passed first (also a builtin ``TimeoutError``).
        """
        watch = self._native.watch_readiness(workload_slug, project, timeout)
        progress = Progress(on_progress, silent)
        try:
            while (event := await run(watch.next())) is not None:
                if progress.report(event):
                    break
        finally:
            progress.close()

    async def delete(self, workload_slug: str, *, project: str | None = None) -> bool:
        """Delete the workload; ``True`` if it existed and was removed, ``False`` if it was already gone.

        Raises:
            PermissionDenied: The token is for another project or lacks the delete capability.
        """
        return await run(self._native.delete(workload_slug, project))

    async def list_workloads(self, *, project: str | None = None) -> list[dict[str, Any]]:
        """The project's workloads, as the platform's JSON objects."""
        return await run(self._native.list(project))

    async def close(self) -> None:
        """Close the client's pooled connections (a later call opens new ones)."""
        self._native.close()
