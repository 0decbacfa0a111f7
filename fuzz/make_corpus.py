"""Regenerate the seed corpus in fuzz/corpus/ (committed; `make fuzz` only reads it).

Seeds are small and realistic: the captured llama.cpp transcripts in ../shared/captures (when present), the streams,
lists and error bodies of the local platform for each engine dialect (vLLM, llama.cpp, Ollama, SGLang) and each of
its stream faults that changes the bytes (framing, in-band errors, truncation, malformed JSON), hand-written edge
cases, and example manifests. Run with the development build installed:

    .venv/bin/python fuzz/make_corpus.py [--captures ../shared/captures]
"""

from __future__ import annotations

import argparse
import json
import shutil
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from inferencekey import LocalPlatform
from inferencekey.testing import LocalAdmin

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
DIALECTS = ["vllm", "llamacpp", "ollama", "sglang"]
STATUSES = [400, 401, 403, 404, 405, 409, 413, 422, 429, 500, 501, 502, 503, 504, 418, 599]


class Seeds:
    def __init__(self) -> None:
        self.files: dict[str, dict[str, bytes]] = {}

    def add(self, target: str, name: str, data: bytes) -> None:
        bucket = self.files.setdefault(target, {})
        if data not in bucket.values():
            bucket[name] = data

    def error(self, name: str, status: int, body: bytes) -> None:
        self.add("error_body", name, bytes([STATUSES.index(status)]) + body)

    def write(self) -> None:
        for target, files in sorted(self.files.items()):
            folder = CORPUS / target
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            for name, data in files.items():
                (folder / name).write_bytes(data)
            print(f"{target}: {len(files)} seeds, {sum(map(len, files.values()))} bytes")


def http(method: str, url: str, token: str, body: Any = None) -> tuple[int, bytes]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def stream_events(stream: bytes) -> list[bytes]:
    """The `data:` payloads of a stream framed with LF (the seeds of the chunk decoder)."""
    return [line[5:].strip() for line in stream.split(b"\n") if line.startswith(b"data:")]


def from_platform(seeds: Seeds) -> None:
    with LocalPlatform(seed=7) as lp:
        admin = LocalAdmin(lp)
        chat = lambda slug: f"{lp.url}/endpoint/{lp.project}/{slug}/v1/chat/completions"  # noqa: E731
        ask = {"messages": [{"role": "user", "content": "Hola, ¿qué tal? 🦀"}], "stream": True, "max_tokens": 6}
        for backend in DIALECTS:
            admin.create_workload(backend, backend=backend)
            _, plain = http("POST", chat(backend), lp.api_key, ask)
            seeds.add("sse", f"{backend}.sse", plain)
            usage = {**ask, "stream_options": {"include_usage": True}}
            _, with_usage = http("POST", chat(backend), lp.api_key, usage)
            seeds.add("sse", f"{backend}-usage.sse", with_usage)
            for i, event in enumerate(stream_events(with_usage)):
                if event != b"[DONE]":
                    seeds.add("chat_chunk", f"{backend}-{i}.json", event)
            for shape in ["nested", "flat", "event"]:
                inband = {"type": "inband_error", "after_events": 2, "shape": shape}
                admin.fault("chat_stream", inband, workload=backend)
                _, failed = http("POST", chat(backend), lp.api_key, ask)
                seeds.add("sse", f"{backend}-inband-{shape}.sse", failed)
                for event in stream_events(failed):
                    if b"error" in event:
                        seeds.add("chat_chunk", f"{backend}-inband-{shape}.json", event)
                        seeds.error(f"{backend}-inband-{shape}-500.json", 500, event)
            # A body error in the engine's own shape (400), and the same without messages.
            for name, body in [("notjson", b"{no"), ("nomessages", b'{"model": "x"}')]:
                request = urllib.request.Request(chat(backend), data=body, method="POST")
                request.add_header("Authorization", f"Bearer {lp.api_key}")
                try:
                    urllib.request.urlopen(request, timeout=30)
                except urllib.error.HTTPError as err:
                    seeds.error(f"{backend}-{name}-{err.code}.json", err.code, err.read())
        faults: list[tuple[str, dict[str, Any]]] = [
            ("crlf", {"type": "framing", "line_ending": "crlf"}),
            ("cr", {"type": "framing", "line_ending": "cr", "bom": True}),
            ("multiline-comments", {"type": "framing", "multiline": True, "comments": True}),
            ("huge-frame", {"type": "framing", "huge_frame_bytes": 2000}),
            ("truncate", {"type": "truncate", "after_events": 3}),
            ("malformed", {"type": "malformed_json", "after_events": 1}),
        ]
        for name, fault in faults:
            admin.fault("chat_stream", fault, workload="llamacpp")
            _, body = http("POST", chat("llamacpp"), lp.api_key, ask)
            seeds.add("sse", f"llamacpp-{name}.sse", body)
        # Readiness streams are SSE too: the snapshot, the phases with steps, the terminal event.
        admin.create_workload("ready-fast")
        admin.readiness("ready-fast", "fast")
        readiness = f"{lp.url}/api/projects/{lp.project}/workloads/ready-fast/readiness-events"
        _, phases = http("GET", readiness, lp.sdk_token)
        seeds.add("sse", "readiness.sse", phases)
        for i, event in enumerate(stream_events(phases)):
            seeds.add("workload_list", f"readiness-{i}.json", event)
        # Lists (C1) and single workloads, and the control plane's errors.
        workloads = f"{lp.url}/api/projects/{lp.project}/workloads"
        _, listed = http("GET", workloads, lp.sdk_token)
        seeds.add("workload_list", "list-platform.json", listed)
        items = json.loads(listed)
        items = items["workloads"] if isinstance(items, dict) else items
        seeds.add("workload_list", "workload.json", json.dumps(items[0]).encode())
        seeds.add("workload_list", "list-bare.json", json.dumps(items[:2]).encode())
        seeds.add("workload_list", "list-wrapped.json", json.dumps({"workloads": items[:1]}).encode())
        status, body = http("GET", workloads, "ik_sdk_00000000_nope")
        seeds.error(f"platform-unauthorized-{status}.json", status, body)
        status, body = http("GET", workloads, lp.api_key)
        seeds.error(f"platform-wrong-credential-{status}.json", status, body)
        status, body = http("GET", f"{lp.url}/api/projects/other/workloads", lp.sdk_token)
        seeds.error(f"platform-scope-{status}.json", status, body)
        status, body = http("POST", workloads, lp.sdk_token, {"name": ""})
        seeds.error(f"platform-validation-{status}.json", status, body)
        status, body = http("GET", f"{lp.url}/api/nowhere", lp.sdk_token)
        seeds.error(f"platform-not-found-{status}.json", status, body)
        admin.settings("vllm", readiness="stuck")
        status, body = http("POST", chat("vllm"), lp.api_key, ask)
        seeds.error(f"platform-not-ready-{status}.json", status, body)


def from_captures(seeds: Seeds, captures: Path) -> None:
    llama = captures / "llamacpp"
    if not llama.is_dir():
        print(f"no captures at {captures}; skipped")
        return
    for name in ["stream.sse", "stream-usage.sse"]:
        data = (llama / "run1" / name).read_bytes()
        seeds.add("sse", f"capture-llamacpp-{name}", data)
        for i, event in enumerate(stream_events(data)[:3]):
            seeds.add("chat_chunk", f"capture-llamacpp-{name}-{i}.json", event)
    seeds.add("sse", "capture-llamacpp-stream-stopfinish.sse", (llama / "stream-stopfinish.sse").read_bytes())
    # Error transcripts: a status line ("400 application/json; ...") then the body.
    for path in [*sorted(llama.glob("run1/err-*.txt")), llama / "run-embed" / "embeddings.txt"]:
        head, _, body = path.read_bytes().partition(b"\n")
        status = int(head.split()[0])
        if status in STATUSES:
            seeds.error(f"capture-llamacpp-{path.stem}-{status}.json", status, body.strip())
    embed = (llama / "run1" / "embeddings.txt").read_bytes().partition(b"\n")[2].strip()
    seeds.error("capture-llamacpp-embeddings-off-501.json", 501, embed)


def by_hand(seeds: Seeds) -> None:
    sse = {
        "fields.sse": b'event: message\nid: 42\nretry: 1500\ndata: {"a":\n data: 1}\n\n: comment\nid\ndata: x\n\n',
        "bom-crlf.sse": b"\xef\xbb\xbfdata: a\r\n\r\ndata: b\r\rdata: c\n\r\n",
        "retry-saturates.sse": b"retry: 99999999999999999999999\ndata: r\n\nretry: 1x\ndata: s\n\n",
        "id-nul.sse": b'id: a\x00b\ndata: n\n\nevent: error\ndata: {"message": "boom"}\n\n',
        "unterminated.sse": b'data: {"choices":[{"delta":{"content":"a"}}]}\n\ndata: {"trunc',
        "done-then-more.sse": b'data: [DONE]\n\ndata: {"choices":[{"delta":{"content":"late"}}]}\n\n',
        "split-utf8.sse": 'data: {"choices":[{"delta":{"content":"¡Hola, señor! 🦀 日本"}}]}\n\n'.encode(),
        "old-llamacpp-error-field.sse": b'error: {"message": "oom"}\n\ndata: [DONE]\n\n',
    }
    for name, data in sse.items():
        seeds.add("sse", name, data)
    chunks = [
        rb'{"choices":[{"delta":{"content":[{"type":"text","text":"x"},{"text":5},"s",{"text":"y"}]}}]}',
        rb'{"choices":[{"delta":{"content":"a","content":null},"finish_reason":"stop","finish_reason":1}]}',
        rb'{"ch\u006fices":[{"d\u0065lta":{"c\u006fntent":"esc"},"finish_reason":"l\u0065ngth"}]}',
        rb'{"error":null,"object":"chat.completion.chunk","choices":[]}',
        rb'{"object":"\u0065rror"}',
        rb'{"a":1e400}',
        rb'{"a":"\ud800"}',
        b'{"a":"\xff"}',
        b"[" * 130 + b"]" * 130,
    ]
    for i, data in enumerate(chunks):
        seeds.add("chat_chunk", f"edge-{i}.json", data)
    lists = {
        "null.json": b"null",
        "wrapped-null.json": b'{"workloads": null}',
        "odd-items.json": rb'[{"id": 42, "slug": "x", "config": "s"}, {"id": "w2"}, 5, {"id": "", "slug": "y"}]',
        "wrapped-workload.json": rb'{"workload": {"id": "wl_1", "workload_slug": "bot"}}',
        "readiness-step.json": rb'{"phase": " bootstrapping ", "message": "m", "elapsed_ms": 80, "step": "image_pull"}',
    }
    for name, data in lists.items():
        seeds.add("workload_list", name, data)
    errors: list[tuple[str, int, bytes]] = [
        ("code-only-429.json", 429, b'{"error": "rate_limited"}'),
        ("code-message-401.json", 401, b'{"error": "invalid_token", "message": "invalid or expired credentials"}'),
        ("message-403.json", 403, b'{"message": "forbidden here"}'),
        ("detail-400.json", 400, b'{"detail": "unknown task_type \\"foo\\""}'),
        ("fastapi-422.json", 422, b'{"detail": [{"loc": ["body", "name", 0], "msg": "field required"}, {"x": 1}]}'),
        ("detail-object-409.json", 409, b'{"detail": {"conflict": true}}'),
        ("token-echo-401.json", 401, b'{"error": {"code": "x", "message": "bad ik_sdk_a1b2c3d4_0123456789abcdef"}}'),
        ("text-502.txt", 502, b"Bad gateway from upstream\n"),
        ("html-503.html", 503, b"<html><body><h1>503 Service Unavailable</h1></body></html>"),
        ("empty-404.txt", 404, b""),
        ("json-string-500.json", 500, b'"engine crashed"'),
        ("json-number-418.json", 418, b"5"),
    ]
    for name, status, body in errors:
        seeds.error(name, status, body)
    manifests = {
        "two-workloads.toml": b"""# Two workloads of one service.
[[workload]]
name = "Support Bot"
slug = "support-bot"
model = "meta-llama/Llama-3.1-8B-Instruct"
backend = "vllm"
command = "vllm serve meta-llama/Llama-3.1-8B-Instruct"
vllm_version = "0.6.3"

[workload.config]
max_model_len = 8192
gpu_memory_utilization = 0.9
enforce_eager = true
stop = ["</s>", "<|eot_id|>"]
released = 2026-06-15
env = { HF_HOME = "/models" }

[[workload]]
name = "Embedder"
slug = "embedder"
model = "BAAI/bge-small-en-v1.5"
backend = "ollama"
project = "search"
description = "query embeddings"
task_type = "embedding"
execution_policy = "autoscaling"
execution_policy_config = { min = 0, max = 0x10 }
worker_id = "w1"
gpu_resource_id = "g1"
""",
        "inline-bom.toml": '\ufeffworkload = [{ name = "A", slug = "a", model = "m", backend = "vllm" }]\n'.encode(),
        "errors.toml": b'[[workload]]\nname = "Bot"\nslug = "Bot"\nmodel = "m"\nbackend = "vllm"\n'
        b'[workload.config]\nn = 0xffffffffffffffff\nf = nan\n\n[[workload]]\nname = "Bot"\nslug = "bot"\nmodle = 1\n',
        "token.toml": b'[[workload]]\nname = "Bot"\nslug = "bot"\nmodel = "m"\nbackend = "vllm"\n'
        b'worker_id = "ik\\u005Flive_a1b2c3d4_0123456789abcdef"\n',
        "syntax.toml": b"[[workload]]\nname = \"Bot\nslug = 'x'\n[workload.config]\na.b.c = [1, [2, {x = 3}]]\n",
    }
    for name, data in manifests.items():
        seeds.add("manifest", name, data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--captures", type=Path, default=HERE.parent.parent / "shared" / "captures")
    args = parser.parse_args()
    seeds = Seeds()
    by_hand(seeds)
    from_captures(seeds, args.captures)
    from_platform(seeds)
    # The stream target reads the same bytes as the SSE decoder.
    for name, data in seeds.files["sse"].items():
        seeds.add("chat_stream", name, data)
    seeds.write()


if __name__ == "__main__":
    main()
