# Real-engine mode end to end: LocalPlatform(llama_server=...) runs a real llama-server with the packaged SmolLM2
# model (`make engine` builds the engine and fetches the model), the SDK ensures a workload, sees real readiness phases,
# gets text, streams with usage, async, embeddings of 576 dimensions, embed_many; a bad model file and a killed engine
# give `error`; attach mode proxies to a llama-server this test starts itself; no process is left behind. The tests
# assert structure, never the model's words. INFERENCEKEY_SKIP_ENGINE=1 skips them, saying so; otherwise a missing
# engine fails them.
from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from inferencekey import AsyncDataClient, Backend, DataClient, ManagementClient, TaskType, WorkloadSpec
from inferencekey._engines import PACKAGED_MODEL, packaged_model_file
from inferencekey.exceptions import ApiError
from inferencekey.local import LocalPlatform
from inferencekey.testing import LocalAdmin
from inferencekey.types import ReadinessEvent

ROOT = Path(__file__).resolve().parent.parent
MODEL_DIM = 576

if os.environ.get("INFERENCEKEY_SKIP_ENGINE") == "1":
    pytest.skip("INFERENCEKEY_SKIP_ENGINE=1: real-engine tests skipped as asked", allow_module_level=True)


def _engine_path() -> Path:
    explicit = os.environ.get("INFERENCEKEY_TEST_LLAMA_SERVER") or os.environ.get("INFERENCEKEY_LLAMA_SERVER")
    if explicit:
        return Path(explicit)
    script = ROOT / "scripts" / "build_engine.sh"
    assert script.is_file(), (
        "no llama-server: set INFERENCEKEY_TEST_LLAMA_SERVER (make test does) or skip with INFERENCEKEY_SKIP_ENGINE=1"
    )
    out = subprocess.run([str(script), "--print-path"], capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())


@pytest.fixture(scope="module")
def engine() -> Path:
    path = _engine_path()
    assert path.is_file(), f"no llama-server at {path}: run `make engine` (or INFERENCEKEY_SKIP_ENGINE=1 to skip)"
    assert packaged_model_file() is not None, f"{PACKAGED_MODEL} not found: run `make engine`"
    return path


def engine_pids(engine: Path) -> list[int]:
    """Live (not zombie) processes running ``engine``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            arg0 = (entry / "cmdline").read_bytes().split(b"\0")[0]
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if arg0 == os.fsencode(str(engine)) and state != "Z":
            pids.append(int(entry.name))
    return pids


@pytest.fixture
def platform(engine: Path) -> Iterator[LocalPlatform]:
    assert engine_pids(engine) == [], "an engine was running before the test"
    with LocalPlatform(llama_server=engine) as lp:
        yield lp
    assert engine_pids(engine) == [], "an engine outlived its platform"


def clients(lp: LocalPlatform) -> tuple[ManagementClient, LocalAdmin]:
    mgmt = ManagementClient(base_url=lp.url, sdk_token=lp.sdk_token, project=lp.project)
    return mgmt, LocalAdmin(lp)


def spec(slug: str, model: str = PACKAGED_MODEL, task: TaskType = TaskType.TEXT2TEXT) -> WorkloadSpec:
    return WorkloadSpec(name=slug, slug=slug, model=model, backend=Backend.LLAMACPP, task_type=task)


def test_full_flow_with_a_real_model(platform: LocalPlatform, engine: Path) -> None:
    mgmt, _ = clients(platform)
    started = time.monotonic()
    mgmt.ensure(spec("smol"))
    events: list[ReadinessEvent] = []
    mgmt.wait_until_ready("smol", timeout=120, on_progress=events.append)
    ready_s = time.monotonic() - started
    phases = [e.phase for e in events]
    assert phases[-1] == "ready", phases
    assert "bootstrapping" in phases, phases
    assert any(e.step == "model_load" and e.message for e in events), events
    assert len(engine_pids(engine)) == 1
    print(f"real engine ready in {ready_s:.2f} s, phases {phases}")

    data = DataClient(base_url=platform.url, api_key=platform.api_key, project=platform.project)
    ep = data.endpoint("smol")
    result = ep.generate_text(prompt="Say hello.", max_tokens=12)
    assert result.text.strip(), result
    assert result.raw["model"] == "smol"
    assert result.raw["system_fingerprint"] == "b0-unknown"
    assert 0 < result.raw["usage"]["completion_tokens"] <= 12

    stream = ep.generate_text_stream(prompt="Count to five.", max_tokens=8, stream_options={"include_usage": True})
    chunks = [chunk.text for chunk in stream]
    final = stream.final_result()
    assert "".join(chunks) == final.text and final.text
    assert final.usage is not None and 0 < final.usage.completion_tokens <= 8

    async def async_text() -> str:
        async with AsyncDataClient(base_url=platform.url, api_key=platform.api_key, project=platform.project) as a:
            reply = await a.endpoint("smol").generate_text(prompt="Name a colour.", max_tokens=6)
            return reply.text

    assert asyncio.run(async_text()).strip()

    # One engine at a time by default: the second waits in scheduling until the first is deleted.
    assert mgmt.delete("smol")
    mgmt.ensure(spec("smol-embed", task=TaskType.EMBEDDING))
    mgmt.wait_until_ready("smol-embed", timeout=120, silent=True)
    embedder = data.endpoint("smol-embed")
    one = embedder.embed(input="the sky is blue")
    assert len(one.embeddings[0]) == MODEL_DIM
    many = embedder.embed_many([f"text number {i}" for i in range(7)], batch_size=3, output="list", silent=True)
    assert len(many) == 7 and all(len(v) == MODEL_DIM for v in many)

    assert mgmt.delete("smol-embed")
    assert engine_pids(engine) == [], "an engine survived delete"


def test_bad_model_file_gives_the_engines_error(platform: LocalPlatform, tmp_path: Path) -> None:
    mgmt, _ = clients(platform)
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"this is not a gguf model")
    mgmt.ensure(spec("broken", model=str(bad)))
    with pytest.raises(ApiError) as caught:
        mgmt.wait_until_ready("broken", timeout=60, silent=True)
    message = str(caught.value)
    assert "exited with code 1" in message, message


def test_a_killed_engine_turns_the_workload_to_error(platform: LocalPlatform, engine: Path) -> None:
    mgmt, _ = clients(platform)
    mgmt.ensure(spec("victim"))
    mgmt.wait_until_ready("victim", timeout=120, silent=True)
    (pid,) = engine_pids(engine)
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while True:
        try:
            # Ready until the platform sees the engine gone, then the error.
            mgmt.wait_until_ready("victim", timeout=5, silent=True)
        except ApiError as err:
            assert "after it was ready" in str(err), str(err)
            break
        assert time.monotonic() < deadline, "still ready 30 s after its engine was killed"
        time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_attach_mode_proxies_to_an_engine_we_run(engine: Path) -> None:
    model = packaged_model_file()
    assert model is not None
    port = free_port()
    own = subprocess.Popen(
        [str(engine), "-m", str(model), "--host", "127.0.0.1", "--port", str(port), "--alias", "mine"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with LocalPlatform(attach={"attached": f"http://127.0.0.1:{port}"}) as lp:
            mgmt, admin = clients(lp)
            # The engine's model name is the workload's model: the request's is rewritten to it.
            mgmt.ensure(WorkloadSpec(name="attached", slug="attached", model="mine", backend=Backend.LLAMACPP))
            mgmt.wait_until_ready("attached", timeout=120, silent=True)
            ep = DataClient(base_url=lp.url, api_key=lp.api_key, project=lp.project).endpoint("attached")
            reply = ep.generate_text(prompt="Say hi.", max_tokens=5)
            assert reply.text and reply.raw["model"] == "mine"
            assert mgmt.delete("attached")
            # Delete only detaches: the engine still serves.
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as health:
                assert health.status == 200
            assert own.poll() is None
            assert admin is not None
    finally:
        own.terminate()
        own.wait(timeout=10)
    assert engine_pids(engine) == []
