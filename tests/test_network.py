# The network a client goes through: proxy= and the proxy environment variables (checked through a proxy's own log),
# a dead proxy named in the error, NO_PROXY, the offline tools (LocalPlatform's env, the pytest plugin, local exec)
# never sending loopback traffic to a proxy, and the checks of verify=, cert= and proxy=.
from __future__ import annotations

import contextlib
import logging
import pickle
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import PROJECT, Admin, child_env, unused_port

from inferencekey import (
    ApiConnectionError,
    Backend,
    ConfigurationError,
    DataClient,
    ManagementClient,
    TaskType,
    WorkloadSpec,
)
from inferencekey.local import LocalPlatform

CLI = [sys.executable, "-m", "inferencekey"]


class RelayProxy:
    """A forward proxy on 127.0.0.1: plain requests (absolute-form) are relayed to their host, CONNECT opens a tunnel;
    the first request of every connection is logged as (method, target)."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        self.log: list[tuple[str, str]] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            data = client.recv(65536)
            if not data:
                client.close()
                return
            head += data
        method, target, _ = head.split(b"\r\n", 1)[0].decode().split(" ", 2)
        self.log.append((method, target))
        authority = target if method == "CONNECT" else target.split("://", 1)[1].split("/", 1)[0]
        host, port = authority.rsplit(":", 1)
        upstream = socket.create_connection((host, int(port)))
        if method == "CONNECT":
            client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            head = head.split(b"\r\n\r\n", 1)[1]
        if head:
            upstream.sendall(head)
        threading.Thread(target=self._pipe, args=(upstream, client), daemon=True).start()
        self._pipe(client, upstream)

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            # Either direction ending ends both (the other pipe's read returns), and each side closes what it holds.
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def proxy() -> Iterator[RelayProxy]:
    relay = RelayProxy()
    yield relay
    relay.close()


@pytest.fixture
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No proxy variable from the session (the plugin sets NO_PROXY for the platform): each test sets its own."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


def full_flow(mgmt: ManagementClient, data: DataClient) -> None:
    """Ensure, wait, text, stream and embed: every kind of request a user makes."""
    mgmt.ensure(WorkloadSpec(name="bot", slug="bot", model="m", backend=Backend.VLLM))
    mgmt.ensure(WorkloadSpec(name="emb", slug="emb", model="e", backend=Backend.VLLM, task_type=TaskType.EMBEDDING))
    mgmt.wait_until_ready("bot", silent=True)
    bot = data.endpoint("bot")
    assert bot.generate_text(prompt="Hola", max_tokens=5).text
    with bot.generate_text_stream(prompt="Hola", max_tokens=5) as stream:
        assert "".join(chunk.text for chunk in stream)
    assert len(data.endpoint("emb").embed(input=["a", "b"]).embeddings) == 2


def clients(platform: LocalPlatform, **network: object) -> tuple[ManagementClient, DataClient]:
    mgmt = ManagementClient(base_url=platform.url, sdk_token=platform.sdk_token, project=PROJECT, **network)  # type: ignore[arg-type]
    data = DataClient(base_url=platform.url, project=PROJECT, api_key=platform.api_key, **network)  # type: ignore[arg-type]
    return mgmt, data


def test_proxy_argument_carries_every_request(
    platform: LocalPlatform, admin: Admin, proxy: RelayProxy, no_proxy_env: None
) -> None:
    mgmt, data = clients(platform, proxy=proxy.url)
    with mgmt, data:
        full_flow(mgmt, data)
    host = platform.url.split("://")[1]
    assert proxy.log, "no request went through the proxy"
    assert all(target.startswith(f"http://{host}/") for _, target in proxy.log), proxy.log
    paths = {target.split(host, 1)[1].split("?")[0] for _, target in proxy.log}
    assert any(path.endswith("/workloads") for path in paths), paths


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "http_proxy", "ALL_PROXY"])
def test_proxy_environment_variables_are_honoured(
    platform: LocalPlatform,
    admin: Admin,
    proxy: RelayProxy,
    no_proxy_env: None,
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
) -> None:
    monkeypatch.setenv(variable, proxy.url)
    mgmt, data = clients(platform)
    with mgmt, data:
        full_flow(mgmt, data)
    assert proxy.log


def test_no_proxy_alone_decides_and_loopback_is_not_special(
    platform: LocalPlatform, admin: Admin, proxy: RelayProxy, no_proxy_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As curl and httpx: 127.0.0.1 goes through the proxy unless NO_PROXY names it.
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    with ManagementClient(base_url=platform.url, sdk_token=platform.sdk_token, project=PROJECT) as mgmt:
        mgmt.list_workloads()
    assert len(proxy.log) == 1
    monkeypatch.setenv("NO_PROXY", ".corp.example, 127.0.0.1")
    with ManagementClient(base_url=platform.url, sdk_token=platform.sdk_token, project=PROJECT) as mgmt:
        mgmt.list_workloads()
    # proxy= replaces the environment's proxy, and NO_PROXY still applies to it.
    with ManagementClient(
        base_url=platform.url, sdk_token=platform.sdk_token, project=PROJECT, proxy=proxy.url
    ) as mgmt:
        mgmt.list_workloads()
    assert len(proxy.log) == 1


def test_a_dead_proxy_is_named_in_the_error(platform: LocalPlatform, admin: Admin, no_proxy_env: None) -> None:
    dead = f"http://127.0.0.1:{unused_port()}"
    mgmt, data = clients(platform, proxy=dead, max_retries=0)
    with pytest.raises(ApiConnectionError, match=rf"through the proxy 127\.0\.0\.1:{dead.rsplit(':', 1)[1]}"):
        mgmt.list_workloads()
    with pytest.raises(ApiConnectionError, match="through the proxy"):
        data.endpoint("bot").generate_text(prompt="x")


def test_a_proxy_with_credentials_is_never_shown(platform: LocalPlatform, no_proxy_env: None) -> None:
    dead = f"http://user:s3cret-pass@127.0.0.1:{unused_port()}"
    mgmt, _ = clients(platform, proxy=dead, max_retries=0)
    with pytest.raises(ApiConnectionError) as failed:
        mgmt.list_workloads()
    assert "s3cret" not in str(failed.value)
    assert "s3cret" not in repr(mgmt)


DEAD_PROXY_TEST = """
def test_the_fixtures_reach_the_platform(
    inferencekey_local, inferencekey_management, inferencekey_data, inferencekey_env
):
    from inferencekey import DataClient, ManagementClient

    inferencekey_local.create_workload("bot")
    assert inferencekey_management.list_workloads()
    assert inferencekey_data.endpoint("bot").generate_text(prompt="x").text
    assert DataClient.from_env().endpoint("bot").generate_text(prompt="x").text
    assert ManagementClient.from_env().list_workloads()
"""


def dead_proxy_env(**extra: str) -> dict[str, str]:
    dead = f"http://127.0.0.1:{unused_port()}"
    env = child_env(**extra)
    env.update(HTTP_PROXY=dead, HTTPS_PROXY=dead, http_proxy=dead, https_proxy=dead, NO_PROXY=".corp.example")
    env.pop("no_proxy", None)
    return env


def test_the_plugin_ignores_a_dead_proxy_for_the_platform(tmp_path: Path) -> None:
    (tmp_path / "test_app.py").write_text(DEAD_PROXY_TEST, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_app.py"],
        cwd=tmp_path,
        env=dead_proxy_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_local_platform_env_and_local_exec_ignore_a_dead_proxy(tmp_path: Path) -> None:
    script = tmp_path / "app.py"
    script.write_text(
        "import os\n"
        "from inferencekey import ManagementClient\n"
        "assert '.corp.example' in os.environ['NO_PROXY'] and '127.0.0.1' in os.environ['NO_PROXY']\n"
        "print(len(ManagementClient.from_env().list_workloads()))\n",
        encoding="utf-8",
    )
    done = subprocess.run(
        [*CLI, "local", "exec", "--", sys.executable, str(script)],
        env=dead_proxy_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (done.returncode, done.stdout.strip()) == (0, "0"), done.stderr
    # In-process: clients built from LocalPlatform.env bypass the proxy too.
    code = (
        "import os\n"
        "from inferencekey import ManagementClient\n"
        "from inferencekey.local import LocalPlatform\n"
        "with LocalPlatform() as lp:\n"
        "    os.environ.update(lp.env)\n"
        "    print(len(ManagementClient.from_env().list_workloads()))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=dead_proxy_env(), capture_output=True, text=True, timeout=120
    )
    assert (done.returncode, done.stdout.strip()) == (0, "0"), done.stderr


def test_network_arguments_are_checked_before_any_request(
    platform: LocalPlatform, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    base = {"base_url": platform.url, "sdk_token": platform.sdk_token, "project": PROJECT}
    with pytest.raises(ConfigurationError, match="verify: cannot read"):
        ManagementClient(**base, verify=tmp_path / "missing.pem")
    (tmp_path / "empty.pem").write_text("not a certificate\n")
    with pytest.raises(ConfigurationError, match="holds no PEM certificate"):
        ManagementClient(**base, verify=str(tmp_path / "empty.pem"))
    with pytest.raises(ConfigurationError, match="cert: cannot read"):
        ManagementClient(**base, cert=(tmp_path / "c.pem", tmp_path / "k.pem"))
    with pytest.raises(ConfigurationError, match="proxy must start with"):
        ManagementClient(**base, proxy="ftp://p")
    with pytest.raises(TypeError, match="verify must be a bool or a path, not int"):
        ManagementClient(**base, verify=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="cert must be a path or a"):
        ManagementClient(**base, cert=("a", "b", "c"))  # type: ignore[arg-type]
    # verify=False works on plain HTTP and says once that it verifies nothing (a warning of the logger).
    with caplog.at_level(logging.WARNING, logger="inferencekey"):
        ManagementClient(**base, verify=False).close()
        ManagementClient(**base, verify=False).close()
    warnings = [r for r in caplog.records if "verify=False" in r.getMessage()]
    assert len(warnings) <= 1  # once per process: an earlier test may have had it


def test_network_settings_survive_pickling(platform: LocalPlatform, tmp_path: Path, proxy: RelayProxy) -> None:
    mgmt = ManagementClient(
        base_url=platform.url, sdk_token=platform.sdk_token, project=PROJECT, verify=False, proxy=proxy.url
    )
    config = pickle.loads(pickle.dumps(mgmt))._native.config()
    assert (config["verify"], config["cert"], config["proxy"]) == (False, None, proxy.url)
    assert pickle.loads(pickle.dumps(mgmt.with_options(max_retries=1)))._native.config()["proxy"] == proxy.url


# --- TLS, against the local platform's HTTPS (certificates made at start, never committed) ------------------------


@pytest.fixture(scope="module")
def tls_platform() -> Iterator[LocalPlatform]:
    with LocalPlatform(tls=True) as lp:
        yield lp


def tls_clients(lp: LocalPlatform, **network: object) -> tuple[ManagementClient, DataClient]:
    mgmt = ManagementClient(base_url=lp.url, sdk_token=lp.sdk_token, project=lp.project, **network)  # type: ignore[arg-type]
    data = DataClient(base_url=lp.url, project=lp.project, api_key=lp.api_key, **network)  # type: ignore[arg-type]
    return mgmt, data


def test_tls_platform_serves_https_with_its_ca(tls_platform: LocalPlatform) -> None:
    assert tls_platform.url.startswith("https://127.0.0.1:")
    assert tls_platform.ca_path is not None and Path(tls_platform.ca_path).read_text().startswith("-----BEGIN")
    assert tls_platform.env["SSL_CERT_FILE"] == tls_platform.ca_path
    assert LocalPlatform().ca_path is None


def test_full_flow_trusting_the_ca_with_verify(tls_platform: LocalPlatform, no_proxy_env: None) -> None:
    mgmt, data = tls_clients(tls_platform, verify=tls_platform.ca_path)
    with mgmt, data:
        full_flow(mgmt, data)


FLOW_SCRIPT = """
from inferencekey import Backend, DataClient, ManagementClient, TaskType, WorkloadSpec
mgmt, data = ManagementClient.from_env(), DataClient.from_env()
mgmt.ensure(WorkloadSpec(name="bot", slug="bot", model="m", backend=Backend.VLLM))
mgmt.ensure(WorkloadSpec(name="emb", slug="emb", model="e", backend=Backend.VLLM, task_type=TaskType.EMBEDDING))
mgmt.wait_until_ready("bot", silent=True)
bot = data.endpoint("bot")
assert bot.generate_text(prompt="Hola", max_tokens=5).text
with bot.generate_text_stream(prompt="Hola", max_tokens=5) as stream:
    assert "".join(chunk.text for chunk in stream)
assert len(data.endpoint("emb").embed(input=["a", "b"]).embeddings) == 2
print("ok")
"""


@pytest.mark.parametrize("trust", ["SSL_CERT_FILE", "SSL_CERT_DIR"])
def test_full_flow_trusting_the_ca_through_the_environment(
    tls_platform: LocalPlatform, tmp_path: Path, trust: str
) -> None:
    # As behind a TLS-inspecting proxy: the environment variable is all a user sets.
    env = child_env(tls_platform)
    env.pop("SSL_CERT_FILE", None)
    if trust == "SSL_CERT_FILE":
        env["SSL_CERT_FILE"] = str(tls_platform.ca_path)
    else:
        (tmp_path / "certs").mkdir()
        (tmp_path / "certs" / "local-ca.pem").write_bytes(Path(str(tls_platform.ca_path)).read_bytes())
        env["SSL_CERT_DIR"] = str(tmp_path / "certs")
    done = subprocess.run([sys.executable, "-c", FLOW_SCRIPT], env=env, capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout.strip()) == (0, "ok"), done.stderr


@pytest.mark.parametrize(
    ("tls", "words"),
    [(True, "is not trusted"), ("expired", "has expired"), ("wrong-host", "not valid for that name")],
)
def test_untrusted_certificates_are_refused_in_plain_words(
    tls: object, words: str, no_proxy_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    with LocalPlatform(tls=tls) as lp:  # type: ignore[arg-type]
        verify = True if tls is True else lp.ca_path
        mgmt, _ = tls_clients(lp, verify=verify, max_retries=3)
        started = time.monotonic()
        with pytest.raises(ApiConnectionError, match=words) as refused:
            mgmt.list_workloads()
        assert time.monotonic() - started < 2.0  # never retried (three retries would back off for seconds)
        assert "SSL_CERT_FILE" in str(refused.value) and "verify=" in str(refused.value)


def test_mutual_tls(tmp_path: Path, no_proxy_env: None) -> None:
    from inferencekey import _core

    client_ca, cert, key = _core._local_client_certificate(tmp_path)
    with LocalPlatform(tls=True, tls_client_ca=client_ca) as lp:
        mgmt, data = tls_clients(lp, verify=lp.ca_path, cert=(cert, key))
        with mgmt, data:
            full_flow(mgmt, data)
        (tmp_path / "both.pem").write_text(Path(cert).read_text() + Path(key).read_text())
        assert tls_clients(lp, verify=lp.ca_path, cert=tmp_path / "both.pem")[0].list_workloads()
        bare, _ = tls_clients(lp, verify=lp.ca_path, max_retries=0)
        # The server's refusal names the fix: in its alert when it arrives, else as a hint on the closed connection.
        with pytest.raises(ApiConnectionError, match="cert="):
            bare.list_workloads()


def test_local_exec_tls_child_trusts_the_platform() -> None:
    done = subprocess.run(
        [*CLI, "local", "exec", "--tls", "--", sys.executable, "-c", FLOW_SCRIPT],
        env=dead_proxy_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (done.returncode, done.stdout.strip()) == (0, "ok"), done.stderr


@pytest.mark.parametrize("variable", ["HTTPS_PROXY", "https_proxy", "ALL_PROXY", None])
def test_https_goes_through_a_connect_tunnel(
    tls_platform: LocalPlatform,
    proxy: RelayProxy,
    no_proxy_env: None,
    monkeypatch: pytest.MonkeyPatch,
    variable: str | None,
) -> None:
    network: dict[str, object] = {"verify": tls_platform.ca_path}
    if variable is None:
        network["proxy"] = proxy.url
    else:
        monkeypatch.setenv(variable, proxy.url)
    mgmt, data = tls_clients(tls_platform, **network)
    with mgmt, data:
        full_flow(mgmt, data)
    host = tls_platform.url.split("://")[1]
    assert proxy.log and all(entry == ("CONNECT", host) for entry in proxy.log), proxy.log


def test_verify_off_is_logged_once_per_process(platform: LocalPlatform) -> None:
    code = (
        "from inferencekey import ManagementClient\n"
        "from inferencekey.local import LocalPlatform\n"
        "with LocalPlatform() as lp:\n"
        "    for _ in range(3):\n"
        "        ManagementClient(base_url=lp.url, sdk_token=lp.sdk_token, verify=False).list_workloads(\n"
        "            project=lp.project)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=child_env(INFERENCEKEY_LOG="warning"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("verify=False: TLS certificates are not verified") == 1, done.stderr
