//! Data plane over real HTTP: chat (non-stream, and SSE in each engine dialect), embeddings (float
//! and base64), rerank, the key/scope/readiness checks, latencies and bench mode.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{chat_body, read, sse_json, stream_text, Harness};
use futures_util::StreamExt;
use reqwest::Method;
use serde_json::{json, Value};

#[tokio::test]
async fn chat_completion_is_deterministic_and_counted() {
    let h = Harness::start();
    h.create_ready("bot", "vllm", "text2text").await;
    let reply = h.chat("bot", chat_body("tell me about GPUs", false)).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type").unwrap(), "application/json");
    let body = reply.json();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "m");
    assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
    let choice = &body["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["finish_reason"], "stop");
    let text = choice["message"]["content"].as_str().unwrap();
    assert!(!text.is_ascii(), "replies exercise UTF-8: {text}");
    let words = text.split(' ').count() as u64;
    let usage = &body["usage"];
    assert!((12..=40).contains(&usage["completion_tokens"].as_u64().unwrap()));
    assert_eq!(usage["completion_tokens"].as_u64().unwrap(), words);
    assert_eq!(usage["prompt_tokens"], 4 + 4);
    assert_eq!(
        usage["total_tokens"].as_u64().unwrap(),
        usage["prompt_tokens"].as_u64().unwrap() + words
    );
    // Same prompt, same text; another prompt, another text.
    let again = h
        .chat("bot", chat_body("tell me about GPUs", false))
        .await
        .json();
    assert_eq!(again["choices"][0]["message"]["content"], text);
    let other = h
        .chat("bot", chat_body("something else", false))
        .await
        .json();
    assert_ne!(other["choices"][0]["message"]["content"], text);
    // max_tokens cuts with "length"; no model echoes the slug.
    let cut = h
        .chat(
            "bot",
            json!({"messages": [{"role": "user", "content": "tell me about GPUs"}],
                            "max_tokens": 3, "temperature": 0.2}),
        )
        .await
        .json();
    assert_eq!(cut["choices"][0]["finish_reason"], "length");
    assert_eq!(cut["usage"]["completion_tokens"], 3);
    assert_eq!(cut["model"], "bot");
    let first_three: Vec<&str> = text.split_inclusive(' ').take(3).collect();
    assert_eq!(
        cut["choices"][0]["message"]["content"].as_str().unwrap(),
        first_three.concat().trim_end()
    );
}

async fn stream(h: &Harness, slug: &str, body: Value) -> (Vec<Value>, Vec<u8>) {
    let reply = h.chat(slug, body).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("content-type").unwrap(), "text/event-stream");
    (sse_json(&reply.bytes), reply.bytes)
}

fn with_usage(prompt: &str) -> Value {
    let mut body = chat_body(prompt, true);
    body["stream_options"] = json!({"include_usage": true});
    body
}

#[tokio::test]
async fn vllm_dialect() {
    let h = Harness::start();
    h.create_ready("bot", "vllm", "text2text").await;
    let full = h.chat("bot", chat_body("hello", false)).await.json();
    let (chunks, _) = stream(&h, "bot", with_usage("hello")).await;
    assert_eq!(chunks.last().unwrap(), "[DONE]");
    let role = &chunks[0]["choices"][0];
    assert_eq!(role["delta"], json!({"role": "assistant", "content": ""}));
    assert!(chunks[0]
        .as_object()
        .unwrap()
        .contains_key("prompt_token_ids"));
    let usage = &chunks[chunks.len() - 2];
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"], full["usage"]);
    let last_content = &chunks[chunks.len() - 3]["choices"][0];
    assert_eq!(last_content["finish_reason"], "stop");
    assert!(!last_content["delta"]["content"]
        .as_str()
        .unwrap()
        .is_empty());
    assert!(chunks[1]["choices"][0]
        .as_object()
        .unwrap()
        .contains_key("token_ids"));
    assert_eq!(
        stream_text(&chunks),
        full["choices"][0]["message"]["content"]
    );
    let finishes = chunks
        .iter()
        .filter(|c| c["choices"][0]["finish_reason"].is_string())
        .count();
    assert_eq!(finishes, 1);
    // Without include_usage: no usage chunk.
    let (plain, _) = stream(&h, "bot", chat_body("hello", true)).await;
    assert_eq!(plain.len(), chunks.len() - 1);
    assert!(plain.iter().all(|c| c.get("usage").is_none()));
    // The id honours an incoming X-Request-Id.
    let reply = read(
        h.chat_request("bot", &chat_body("hello", true))
            .header("x-request-id", "abc123")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(sse_json(&reply.bytes)[0]["id"], "chatcmpl-abc123");
}

#[tokio::test]
async fn llamacpp_dialect() {
    let h = Harness::start();
    h.create_ready("bot", "llamacpp", "text2text").await;
    let full = h.chat("bot", chat_body("hello", false)).await.json();
    let (chunks, _) = stream(&h, "bot", chat_body("hello", true)).await;
    let keys: Vec<&str> = chunks[0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys[0], "choices");
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": null})
    );
    assert!(chunks[0]["system_fingerprint"].is_string());
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["delta"], json!({}));
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        finish["timings"]["predicted_n"],
        full["usage"]["completion_tokens"]
    );
    assert!(chunks[1..chunks.len() - 2]
        .iter()
        .all(|c| c["choices"][0]["finish_reason"].is_null()));
    assert_eq!(
        stream_text(&chunks),
        full["choices"][0]["message"]["content"]
    );
    let (with, _) = stream(&h, "bot", with_usage("hello")).await;
    assert_eq!(with[with.len() - 2]["choices"], json!([]));
    assert!(with[with.len() - 2]["usage"]["total_tokens"].is_u64());
}

#[tokio::test]
async fn ollama_dialect() {
    let h = Harness::start();
    h.create_ready("bot", "ollama", "text2text").await;
    let full = h.chat("bot", chat_body("hello", false)).await.json();
    let text = full["choices"][0]["message"]["content"].as_str().unwrap();
    let (chunks, _) = stream(&h, "bot", with_usage("hello")).await;
    let first = &chunks[0]["choices"][0]["delta"];
    assert_eq!(first["role"], "assistant");
    assert!(text.starts_with(first["content"].as_str().unwrap()));
    assert!(!first["content"].as_str().unwrap().is_empty());
    assert_eq!(chunks[0]["system_fingerprint"], "fp_ollama");
    let finish = &chunks[chunks.len() - 3];
    assert_eq!(finish["choices"][0]["delta"], json!({}));
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[chunks.len() - 2]["choices"], json!([]));
    assert_eq!(stream_text(&chunks), text);
}

#[tokio::test]
async fn sglang_dialect_and_forced_usage() {
    let h = Harness::start();
    h.create_ready("bot", "sglang", "text2text").await;
    let full = h.chat("bot", chat_body("hello", false)).await.json();
    let (chunks, _) = stream(&h, "bot", chat_body("hello", true)).await;
    assert_eq!(chunks[0]["usage"], Value::Null);
    assert!(chunks[0].as_object().unwrap().contains_key("usage"));
    assert_eq!(
        chunks[0]["choices"][0]["delta"]["reasoning_content"],
        Value::Null
    );
    assert_eq!(chunks[0]["model"], "m");
    let finish = &chunks[chunks.len() - 2]["choices"][0];
    assert_eq!(finish["delta"], json!({"content": null}));
    assert_eq!(
        (
            finish["finish_reason"].as_str(),
            finish["matched_stop"].as_u64()
        ),
        (Some("stop"), Some(2))
    );
    assert_eq!(
        stream_text(&chunks),
        full["choices"][0]["message"]["content"]
    );
    // include_usage forced on by settings, then forced off.
    h.set_settings("bot", json!({"include_usage": true})).await;
    let (forced, _) = stream(&h, "bot", chat_body("hello", true)).await;
    assert_eq!(forced[forced.len() - 2]["choices"], json!([]));
    h.set_settings("bot", json!({"include_usage": false})).await;
    let (off, _) = stream(&h, "bot", with_usage("hello")).await;
    assert_eq!(off.len(), chunks.len());
}

#[tokio::test]
async fn other_backends_stream_as_vllm_and_max_tokens_cuts() {
    let h = Harness::start();
    h.create_ready("omni", "vllm-omni", "omni").await;
    h.create_ready("custom", "my-engine", "text2text").await;
    for slug in ["omni", "custom"] {
        let mut body = chat_body("hello", true);
        body["max_tokens"] = json!(2);
        let (chunks, _) = stream(&h, slug, body).await;
        assert_eq!(chunks.len(), 4, "{chunks:?}");
        assert!(chunks[0]
            .as_object()
            .unwrap()
            .contains_key("prompt_token_ids"));
        assert_eq!(chunks[2]["choices"][0]["finish_reason"], "length");
    }
    let mut zero = chat_body("hello", true);
    zero["max_tokens"] = json!(0);
    let (chunks, _) = stream(&h, "custom", zero).await;
    assert_eq!(chunks.len(), 3);
    assert_eq!(chunks[1]["choices"][0]["finish_reason"], "length");
}

fn vector(item: &Value) -> Vec<f32> {
    match &item["embedding"] {
        Value::Array(values) => values.iter().map(|v| v.as_f64().unwrap() as f32).collect(),
        Value::String(b64) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        other => panic!("not an embedding: {other}"),
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[tokio::test]
async fn embeddings_float_and_base64() {
    let h = Harness::start();
    h.create_ready("emb", "vllm", "embedding").await;
    let path = h.data_path("emb", "embeddings");
    let texts = json!([
        "the cat sat on the mat",
        "the cat sat on a mat",
        "quantum chromodynamics"
    ]);
    let floats = h
        .call(
            Method::POST,
            &path,
            Some(&h.key),
            Some(&json!({"model": "emb", "input": texts})),
        )
        .await;
    assert_eq!(floats.status, 200);
    let body = floats.json();
    assert_eq!(body["object"], "list");
    assert_eq!(body["model"], "emb");
    assert_eq!(body["usage"]["prompt_tokens"], 6 + 6 + 2);
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 3);
    let vectors: Vec<Vec<f32>> = data.iter().map(vector).collect();
    for (i, item) in data.iter().enumerate() {
        assert_eq!(
            (item["object"].as_str(), item["index"].as_u64()),
            (Some("embedding"), Some(i as u64))
        );
        assert_eq!(vectors[i].len(), 64);
        assert!((dot(&vectors[i], &vectors[i]) - 1.0).abs() < 1e-4);
    }
    assert!(dot(&vectors[0], &vectors[1]) > dot(&vectors[0], &vectors[2]));

    let b64 = h
        .call(
            Method::POST,
            &path,
            Some(&h.key),
            Some(&json!({"model": "emb", "input": texts, "encoding_format": "base64"})),
        )
        .await
        .json();
    let decoded: Vec<Vec<f32>> = b64["data"].as_array().unwrap().iter().map(vector).collect();
    assert!(b64["data"][0]["embedding"].is_string());
    assert_eq!(decoded, vectors);

    h.set_settings("emb", json!({"embedding_dim": 16})).await;
    let single = h
        .call(
            Method::POST,
            &path,
            Some(&h.key),
            Some(&json!({"input": "just one"})),
        )
        .await
        .json();
    assert_eq!(vector(&single["data"][0]).len(), 16);
    assert_eq!(single["model"], "emb");

    // SGLang ignores encoding_format and returns floats.
    h.create_ready("emb2", "sglang", "embedding").await;
    let sglang = h
        .call(
            Method::POST,
            &h.data_path("emb2", "embeddings"),
            Some(&h.key),
            Some(&json!({"input": ["x"], "encoding_format": "base64"})),
        )
        .await
        .json();
    assert!(sglang["data"][0]["embedding"].is_array());
}

#[tokio::test]
async fn rerank_orders_by_lexical_relevance() {
    let h = Harness::start();
    h.create_ready("rr", "vllm", "reranker").await;
    let path = h.data_path("rr", "rerank");
    let docs = json!(["pasta recipes for dinner", "fast GPU inference at scale", "GPU prices",
                      {"text": "unrelated"}]);
    let reply = h
        .call(
            Method::POST,
            &path,
            Some(&h.key),
            Some(&json!({"model": "rr", "query": "fast GPU inference", "documents": docs})),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["model"], "rr");
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 4);
    let order: Vec<u64> = results
        .iter()
        .map(|r| r["index"].as_u64().unwrap())
        .collect();
    assert_eq!(order[..2], [1, 2]);
    let scores: Vec<f64> = results
        .iter()
        .map(|r| r["relevance_score"].as_f64().unwrap())
        .collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    assert!(scores[0] > scores[1] && scores[1] > 0.0);
    let top = h
        .call(
            Method::POST,
            &path,
            Some(&h.key),
            Some(&json!({"query": "GPU", "documents": docs, "top_n": 1})),
        )
        .await
        .json();
    assert_eq!(top["results"].as_array().unwrap().len(), 1);
    let bad = h
        .call(
            Method::POST,
            &path,
            Some(&h.key),
            Some(&json!({"query": "q"})),
        )
        .await;
    assert_eq!(bad.status, 400);
}

#[tokio::test]
async fn data_plane_errors() {
    let h = Harness::start();
    h.create_ready("bot", "vllm", "text2text").await;
    h.create_ready("emb", "ollama", "embedding").await;
    h.create_ready("rr", "vllm", "reranker").await;
    h.create(json!({"name": "slow", "slug": "slow", "model_name": "m", "backend": "vllm"}))
        .await;
    h.set_settings("slow", json!({"readiness": "stuck"})).await;

    let missing = h.chat("nope", chat_body("hi", false)).await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.error().0, "not_found");

    let not_ready = h.chat("slow", chat_body("hi", true)).await;
    assert_eq!(not_ready.status, 503);
    assert_eq!(not_ready.header("retry-after").as_deref(), Some("1"));
    assert_eq!(not_ready.error().0, "workload_not_ready");
    let message = not_ready.error().1;
    assert!(message.contains("is not ready (phase: "), "{message}");

    // Engine-style 400s: vLLM answers flat, Ollama nested.
    let no_messages = h.chat("bot", json!({"model": "bot", "stream": true})).await;
    assert_eq!(no_messages.status, 400);
    assert_eq!(no_messages.json()["object"], "error");
    assert_eq!(no_messages.json()["message"], "messages is required");
    let not_json = read(
        h.request(
            Method::POST,
            &h.data_path("bot", "chat/completions"),
            Some(&h.key),
            None,
        )
        .body("{oops")
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(not_json.status, 400);
    assert!(not_json.json()["message"]
        .as_str()
        .unwrap()
        .contains("not valid JSON"));
    for bad in [
        json!({"messages": "hi"}),
        json!({"messages": []}),
        json!({"messages": [{"role": "user", "content": "x"}], "stream": "yes"}),
        json!({"messages": [{"role": "user", "content": "x"}], "max_tokens": -1}),
    ] {
        assert_eq!(h.chat("bot", bad.clone()).await.status, 400, "{bad}");
    }
    let emb_path = h.data_path("emb", "embeddings");
    let no_input = h
        .call(Method::POST, &emb_path, Some(&h.key), Some(&json!({})))
        .await;
    assert_eq!(no_input.status, 400);
    assert_eq!(no_input.json()["error"]["message"], "input is required");
    let bad_format = h
        .call(
            Method::POST,
            &emb_path,
            Some(&h.key),
            Some(&json!({"input": "x", "encoding_format": "hex"})),
        )
        .await;
    assert_eq!(bad_format.status, 400);

    // Wrong task types: clear platform 400s.
    let chat_on_embedding = h.chat("emb", chat_body("hi", false)).await;
    assert_eq!(chat_on_embedding.status, 400);
    let (code, message) = chat_on_embedding.error();
    assert_eq!(code, "validation_error");
    assert!(
        message.contains("embedding") && message.contains("text2text"),
        "{message}"
    );
    let embed_on_chat = h
        .call(
            Method::POST,
            &h.data_path("bot", "embeddings"),
            Some(&h.key),
            Some(&json!({"input": "x"})),
        )
        .await;
    assert_eq!(embed_on_chat.status, 400);
    assert_eq!(embed_on_chat.error().0, "validation_error");
    let rerank_on_chat = h
        .call(
            Method::POST,
            &h.data_path("bot", "rerank"),
            Some(&h.key),
            Some(&json!({"query": "q", "documents": ["d"]})),
        )
        .await;
    assert_eq!(rerank_on_chat.status, 400);

    // Keys: one scoped to another workload, one of another project.
    let scoped = h
        .add_token(json!({"kind": "live", "workload": "emb"}))
        .await;
    let wrong_workload = h
        .call(
            Method::POST,
            &h.data_path("bot", "chat/completions"),
            Some(&scoped),
            Some(&chat_body("hi", false)),
        )
        .await;
    assert_eq!(wrong_workload.status, 403);
    assert_eq!(wrong_workload.error().0, "scope_insufficient");
    let right = h
        .call(
            Method::POST,
            &emb_path,
            Some(&scoped),
            Some(&json!({"input": "x"})),
        )
        .await;
    assert_eq!(right.status, 200);
    h.admin(
        Method::POST,
        "/_local/projects",
        Some(&json!({"slug": "acme"})),
    )
    .await;
    let acme_key = h
        .add_token(json!({"kind": "live", "project": "acme"}))
        .await;
    let other_project = h
        .call(
            Method::POST,
            &h.data_path("bot", "chat/completions"),
            Some(&acme_key),
            Some(&chat_body("hi", false)),
        )
        .await;
    assert_eq!(other_project.status, 403);
    assert_eq!(other_project.error().0, "project_scope_mismatch");
    let anonymous = h
        .call(
            Method::POST,
            &h.data_path("bot", "chat/completions"),
            None,
            Some(&chat_body("hi", false)),
        )
        .await;
    assert_eq!(anonymous.status, 401);
}

#[tokio::test]
async fn ttft_and_itl_pace_the_stream() {
    let h = Harness::start();
    h.create_ready("bot", "vllm", "text2text").await;
    let mut body = chat_body("hello", true);
    body["max_tokens"] = json!(4);
    // Headers wait for no token: with a first token ten minutes away, the head still comes (else
    // the client's 20 s timeout fails `send`).
    h.set_settings("bot", json!({"ttft_ms": 600_000})).await;
    let response = h.chat_request("bot", &body).send().await.unwrap();
    assert_eq!(response.status(), 200);
    drop(response);

    h.set_settings("bot", json!({"ttft_ms": 300, "itl_ms": 40}))
        .await;
    let begun = Instant::now();
    let response = h.chat_request("bot", &body).send().await.unwrap();
    let mut stream = response.bytes_stream();
    let mut seen = Vec::new();
    let mut first_content = None;
    while let Some(chunk) = stream.next().await {
        seen.extend_from_slice(&chunk.unwrap());
        if first_content.is_none() && sse_json(&seen).len() >= 2 {
            first_content = Some(begun.elapsed());
        }
    }
    // Lower bounds only: token k is due at ttft + k * itl, never sooner.
    let first_content = first_content.unwrap();
    assert!(
        first_content >= Duration::from_millis(300),
        "{first_content:?}"
    );
    assert!(begun.elapsed() >= Duration::from_millis(300 + 3 * 40));
    assert_eq!(sse_json(&seen).len(), 1 + 4 + 1);
}

#[tokio::test]
async fn bench_mode_streams_max_tokens_chunks_fast() {
    let h = Harness::start();
    h.create_ready("bench", "llamacpp", "text2text").await;
    // Bench mode ignores latencies: at these, 5000 tokens would take weeks, so the stream
    // finishing at all (within the client's 20 s timeout) shows it.
    h.set_settings(
        "bench",
        json!({"bench": true, "ttft_ms": 600_000, "itl_ms": 600_000}),
    )
    .await;
    let mut body = with_usage("x");
    body["max_tokens"] = json!(5000);
    let (chunks, _) = stream(&h, "bench", body).await;
    // role + 5000 content + finish + usage + [DONE]
    assert_eq!(chunks.len(), 5004);
    assert_eq!(chunks[5001]["choices"][0]["finish_reason"], "length");
    assert_eq!(chunks[5002]["usage"]["completion_tokens"], 5000);
    let text = stream_text(&chunks);
    assert!(text.starts_with("¡Hola"));
    let (default, _) = stream(&h, "bench", chat_body("x", true)).await;
    assert_eq!(default.len(), 1 + 16 + 1 + 1);
    let unary = h.chat("bench", chat_body("x", false)).await.json();
    assert_eq!(unary["usage"]["completion_tokens"], 16);
    assert_eq!(
        unary["choices"][0]["message"]["content"],
        stream_text(&default)
    );
}
