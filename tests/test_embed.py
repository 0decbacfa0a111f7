# embed() and rerank(): the request bodies, base64 and float answers, ordering by index, vector shape and
# normalisation, the embedding dimension, and the lexical rerank result types.
from __future__ import annotations

import base64
import struct
from typing import Any

import pytest
from conftest import PROJECT, Admin, Deploy, is_unit_vector

from inferencekey import EmbedResult, RerankItem, RerankResult, ValidationError

EMBED_PATH = f"/endpoint/{PROJECT}/embedder/v1/embeddings"


def decode_raw(item: Any) -> list[float]:
    """An embedding as the server sent it: a JSON array, or base64 of little-endian float32."""
    if isinstance(item, list):
        return [float(x) for x in item]
    packed = base64.b64decode(item)
    return list(struct.unpack(f"<{len(packed) // 4}f", packed))


def test_bare_string_is_a_one_element_batch_asked_as_base64(deploy: Deploy, admin: Admin) -> None:
    result = deploy(slug="embedder", task_type="embedding").embed(input="hello world")
    body = admin.only("POST", EMBED_PATH)
    assert body == {"model": "embedder", "input": ["hello world"], "encoding_format": "base64"}
    assert isinstance(result, EmbedResult)
    assert len(result.embeddings) == 1
    vector = result.embeddings[0]
    assert len(vector) == 64
    assert all(isinstance(x, float) for x in vector)
    assert is_unit_vector(vector)
    assert result.model == result.raw["model"]
    sent = result.raw["data"][0]["embedding"]
    assert isinstance(sent, str), "the platform answers base64 when asked"
    assert decode_raw(sent) == vector


def test_list_keeps_the_input_order(deploy: Deploy, admin: Admin) -> None:
    endpoint = deploy(slug="embedder", task_type="embedding")
    inputs = ["alpha beta", "gamma", "alpha beta", "café 日本"]
    result = endpoint.embed(input=inputs)
    assert admin.only("POST", EMBED_PATH)["input"] == inputs
    vectors = result.embeddings
    assert len(vectors) == 4
    assert vectors[0] == vectors[2]
    assert vectors[0] != vectors[1]
    for index, text in enumerate(inputs):
        assert endpoint.embed(input=text).embeddings == [vectors[index]]
        assert is_unit_vector(vectors[index])


def test_embedding_dimension_follows_the_engine(deploy: Deploy) -> None:
    result = deploy(slug="embedder", task_type="embedding", embedding_dim=16).embed(input=["a", "b"])
    assert [len(vector) for vector in result.embeddings] == [16, 16]


def test_float_answers_are_accepted_and_ordered_by_index(deploy: Deploy, admin: Admin) -> None:
    endpoint = deploy(slug="embedder", task_type="embedding")
    answer = {
        "object": "list",
        "data": [
            {"object": "embedding", "index": 1, "embedding": [0.0, 1.0, 0.5]},
            {"object": "embedding", "index": 0, "embedding": [1.0, 0.0, -0.5]},
        ],
        "model": "embedder",
        "usage": {"prompt_tokens": 2, "total_tokens": 2},
    }
    admin.fault("embeddings", {"type": "status", "status": 200, "body": answer})
    result = endpoint.embed(input=["first", "second"])
    assert result.embeddings == [[1.0, 0.0, -0.5], [0.0, 1.0, 0.5]]
    assert result.model == "embedder"


def test_base64_answers_are_decoded_as_little_endian_float32(deploy: Deploy, admin: Admin) -> None:
    endpoint = deploy(slug="embedder", task_type="embedding")
    values = [[0.5, -0.25, 2.0], [1.5, 0.0, -8.0]]
    encoded = [base64.b64encode(struct.pack("<3f", *row)).decode() for row in values]
    answer = {
        "object": "list",
        "data": [
            {"object": "embedding", "index": 1, "embedding": encoded[1]},
            {"object": "embedding", "index": 0, "embedding": encoded[0]},
        ],
        "model": "embedder",
    }
    admin.fault("embeddings", {"type": "status", "status": 200, "body": answer})
    assert endpoint.embed(input=["x", "y"]).embeddings == values


def test_embed_on_a_chat_workload_is_a_validation_error(deploy: Deploy) -> None:
    with pytest.raises(ValidationError) as info:
        deploy().embed(input="hello")
    assert info.value.status_code == 400


def test_rerank_orders_documents_by_relevance(deploy: Deploy, admin: Admin) -> None:
    endpoint = deploy(slug="ranker", task_type="reranker")
    documents = ["dogs bark at night", "cat food is tasty", "cars need fuel"]
    result = endpoint.rerank(query="cat food", documents=documents, top_n=2)
    entries = admin.journal()
    assert [(e["method"], e["path"]) for e in entries] == [("POST", f"/endpoint/{PROJECT}/ranker/v1/rerank")]
    assert entries[0]["body"] == {"model": "ranker", "query": "cat food", "documents": documents, "top_n": 2}
    assert isinstance(result, RerankResult)
    assert len(result.results) == 2
    assert all(isinstance(item, RerankItem) for item in result.results)
    assert result.results[0].index == 1
    scores = [item.relevance_score for item in result.results]
    assert scores == sorted(scores, reverse=True)
    assert result.model == result.raw["model"]


def test_rerank_without_top_n_omits_it(deploy: Deploy, admin: Admin) -> None:
    endpoint = deploy(slug="ranker", task_type="reranker")
    result = endpoint.rerank(query="fuel", documents=["cars need fuel", "cat food"])
    assert "top_n" not in admin.journal()[0]["body"]
    assert sorted(item.index for item in result.results) == [0, 1]
    assert result.results[0].index == 0
