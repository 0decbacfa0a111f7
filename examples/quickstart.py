"""Quickstart: provision two workloads, wait until they serve, call them, preview a change, delete them.

Configuration comes from INFERENCEKEY_BASE_URL, INFERENCEKEY_PROJECT, INFERENCEKEY_SDK_TOKEN and INFERENCEKEY_API_KEY.
To run it offline against a local copy of the platform:

    inferencekey local exec -- python examples/quickstart.py
"""

from __future__ import annotations

from dataclasses import replace

from inferencekey import Backend, DataClient, EndpointRef, ManagementClient, TaskType, WorkloadSpec

CHAT_MODEL = "meta-llama/Llama-3.1-8B-Instruct"
EMBEDDING_MODEL = "BAAI/bge-small-en-v1.5"

chat = WorkloadSpec(
    name="Support Bot",
    slug="support-bot",
    model=CHAT_MODEL,
    backend=Backend.VLLM,
    command=f"vllm serve {CHAT_MODEL} --max-model-len 8192",
)
embedder = WorkloadSpec(
    name="Docs Embedder",
    slug="docs-embedder",
    model=EMBEDDING_MODEL,
    backend=Backend.VLLM,
    task_type=TaskType.EMBEDDING,
    command=f"vllm serve {EMBEDDING_MODEL}",
)


def main() -> None:
    with ManagementClient.from_env() as mgmt, DataClient.from_env() as data:
        refs: list[EndpointRef] = []
        try:
            for spec in (chat, embedder):
                ref = mgmt.ensure(spec)  # creates it, or finds it and reconciles any drift
                refs.append(ref)
                print(f"workload {ref.project_slug}/{ref.workload_slug}")
                mgmt.wait_until_ready(ref.workload_slug, timeout=600)

            bot = data.endpoint(chat.slug)  # bound to the INFERENCEKEY_API_KEY data key
            out = bot.generate_text(prompt="Hola", temperature=0.2, max_tokens=40)
            print(f"\n{out.model} ({out.finish_reason}): {out.text}")

            print("\nstreaming: ", end="")
            with bot.generate_text_stream(prompt="Tell me about GPUs", max_tokens=40) as stream:
                for chunk in stream:
                    print(chunk.text, end="", flush=True)
            print()

            emb = data.endpoint(embedder.slug).embed(input=["the first text", "the second text"])
            print(f"\n{len(emb.embeddings)} embeddings of dimension {len(emb.embeddings[0])}")

            # What would a longer context change? plan() shows the diff without touching anything.
            longer = replace(chat, command=f"vllm serve {CHAT_MODEL} --max-model-len 16384")
            print(f"\nplan for a longer context:\n{mgmt.plan(longer)}")
        finally:
            for ref in refs:
                existed = mgmt.delete(ref.workload_slug)  # idempotent: safe to always call
                print(f"{'deleted' if existed else 'already gone'}: {ref.workload_slug}")


if __name__ == "__main__":
    main()
