"""The pytest plugin of inferencekey (registered under the ``pytest11`` entry point, so it loads by itself): test an
application against a local platform, offline, with no setup.

Fixtures (named after their pytest-httpserver and moto counterparts, prefixed to stay out of the way):

- ``inferencekey_platform`` (session): one ``LocalPlatform`` for the whole session, started on first use.
- ``inferencekey_local``: a ``LocalAdmin`` on that platform, reset before the test (no workloads, faults, extra
  tokens or journal entries; new workloads are ready at once).
- ``inferencekey_env``: the four ``INFERENCEKEY_`` variables set to the platform for the test (``from_env()`` works).
- ``inferencekey_management`` / ``inferencekey_data``: a ``ManagementClient`` / ``DataClient`` on the platform, closed
  after the test.

Nothing starts unless a test asks for one of them.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from inferencekey._data import DataClient
from inferencekey._management import ManagementClient
from inferencekey._network import proxy_free_env
from inferencekey.local import LocalPlatform
from inferencekey.testing import LocalAdmin


@pytest.fixture(scope="session")
def inferencekey_platform() -> Iterator[LocalPlatform]:
    """One local platform for the test session, on 127.0.0.1 and a free port; stopped when the session ends.

    For the session, ``NO_PROXY`` (and ``no_proxy``) also name the platform's address, keeping their entries: the
    clients of the tests and of the application under test reach it directly even with ``HTTP_PROXY`` set.
    """
    with LocalPlatform() as platform, pytest.MonkeyPatch.context() as patch:
        for name, value in proxy_free_env(platform.url).items():
            patch.setenv(name, value)
        yield platform


@pytest.fixture
def inferencekey_local(inferencekey_platform: LocalPlatform) -> LocalAdmin:
    """The platform's admin API, with the platform reset before the test and new workloads ready at once."""
    admin = LocalAdmin(inferencekey_platform)
    admin.reset()
    admin.defaults(readiness="immediate")
    return admin


@pytest.fixture
def inferencekey_env(inferencekey_platform: LocalPlatform, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """``INFERENCEKEY_BASE_URL``, ``_PROJECT``, ``_SDK_TOKEN`` and ``_API_KEY`` set to the platform for this test."""
    for name, value in inferencekey_platform.env.items():
        monkeypatch.setenv(name, value)
    return inferencekey_platform.env


@pytest.fixture
def inferencekey_management(
    inferencekey_platform: LocalPlatform, inferencekey_local: LocalAdmin
) -> Iterator[ManagementClient]:
    """A ``ManagementClient`` on the platform's default project (the platform reset first)."""
    with ManagementClient(
        base_url=inferencekey_platform.url,
        sdk_token=inferencekey_platform.sdk_token,
        project=inferencekey_platform.project,
    ) as client:
        yield client


@pytest.fixture
def inferencekey_data(inferencekey_platform: LocalPlatform, inferencekey_local: LocalAdmin) -> Iterator[DataClient]:
    """A ``DataClient`` on the platform's default project with its default ``ik_live_`` key (the platform reset
    first)."""
    with DataClient(
        base_url=inferencekey_platform.url,
        project=inferencekey_platform.project,
        api_key=inferencekey_platform.api_key,
    ) as client:
        yield client
