//! The OpenAI chat API over real HTTP in every dialect: stop, seed, sampling ranges, logprobs,
//! tools and tool_choice (unary and streamed, arguments reassembled and checked against their
//! schema), response_format, stream_options.include_usage, and embeddings' dimensions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{chat_body, sse_json, Harness};
use reqwest::Method;
use serde_json::{json, Value};

const BACKENDS: [&str; 4] = ["vllm", "llamacpp", "ollama", "sglang"];

/// One ready chat workload per backend, slugged by the backend's name.
async fn harness() -> Harness {
    let h = Harness::start();
    for backend in BACKENDS {
        h.create_ready(backend, backend, "text2text").await;
    }
    h
}

fn body(prompt: &str, stream: bool, extra: Value) -> Value {
    let mut body = chat_body(prompt, stream);
    for (key, value) in extra.as_object().unwrap() {
        body[key] = value.clone();
    }
    body
}

async fn unary(h: &Harness, slug: &str, body: Value) -> Value {
    let reply = h.chat(slug, body).await;
    assert_eq!(reply.status, 200, "{slug}: {}", reply.text());
    reply.json()
}

async fn streamed(h: &Harness, slug: &str, body: Value) -> Vec<Value> {
    let reply = h.chat(slug, body).await;
    assert_eq!(reply.status, 200, "{slug}: {}", reply.text());
    let chunks = sse_json(&reply.bytes);
    assert_eq!(chunks.last().unwrap(), "[DONE]", "{slug}");
    chunks[..chunks.len() - 1].to_vec()
}

/// A streamed reply put back together as a client would.
#[derive(Debug, Default)]
struct Assembled {
    content: String,
    content_chunks: usize,
    /// (id, name, arguments) by index.
    calls: Vec<(String, String, String)>,
    finish: Option<String>,
    usage: Option<Value>,
    logprobs: Vec<Value>,
}

fn assemble(chunks: &[Value]) -> Assembled {
    let mut out = Assembled::default();
    for chunk in chunks {
        if chunk["choices"] == json!([]) {
            out.usage = Some(chunk["usage"].clone());
            continue;
        }
        let choice = &chunk["choices"][0];
        if let Some(text) = choice["delta"]["content"].as_str() {
            if !text.is_empty() {
                out.content.push_str(text);
                out.content_chunks += 1;
            }
        }
        for call in choice["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let index = call["index"].as_u64().unwrap() as usize;
            if out.calls.len() <= index {
                out.calls.resize(index + 1, Default::default());
            }
            let entry = &mut out.calls[index];
            if let Some(id) = call["id"].as_str() {
                entry.0 = id.to_string();
            }
            if let Some(name) = call["function"]["name"].as_str() {
                entry.1 = name.to_string();
            }
            if let Some(arguments) = call["function"]["arguments"].as_str() {
                entry.2.push_str(arguments);
            }
        }
        if let Some(finish) = choice["finish_reason"].as_str() {
            assert!(out.finish.is_none(), "two finishes");
            out.finish = Some(finish.to_string());
        }
        if let Some(entries) = choice["logprobs"]["content"].as_array() {
            out.logprobs.extend(entries.iter().cloned());
        }
    }
    out
}

/// A small JSON-schema checker for what the tests use: type, enum, const, properties/required,
/// items/minItems/maxItems, minimum/maximum/exclusiveMinimum, minLength/maxLength.
fn check(schema: &Value, value: &Value) -> Result<(), String> {
    if let Some(options) = schema.get("enum").and_then(Value::as_array) {
        if !options.contains(value) {
            return Err(format!("{value} not in enum {options:?}"));
        }
    }
    let kind = schema.get("type").and_then(Value::as_str).unwrap_or("");
    let ok = match kind {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        _ => true,
    };
    if !ok {
        return Err(format!("{value} is not of type {kind}"));
    }
    if let Some(number) = value.as_f64() {
        let bound = |key: &str| schema.get(key).and_then(Value::as_f64);
        if bound("minimum").is_some_and(|m| number < m)
            || bound("maximum").is_some_and(|m| number > m)
            || bound("exclusiveMinimum").is_some_and(|m| number <= m)
        {
            return Err(format!("{number} out of range in {schema}"));
        }
    }
    if let Some(text) = value.as_str() {
        let len = text.chars().count() as u64;
        let bound = |key: &str| schema.get(key).and_then(Value::as_u64);
        if bound("minLength").is_some_and(|m| len < m)
            || bound("maxLength").is_some_and(|m| len > m)
        {
            return Err(format!("{text:?} has the wrong length for {schema}"));
        }
    }
    if let Some(object) = value.as_object() {
        for name in schema["required"].as_array().into_iter().flatten() {
            if !object.contains_key(name.as_str().unwrap()) {
                return Err(format!("missing required {name}"));
            }
        }
        for (name, property) in schema["properties"].as_object().into_iter().flatten() {
            if let Some(inner) = object.get(name) {
                check(property, inner)?;
            }
        }
    }
    if let Some(items) = value.as_array() {
        let bound = |key: &str| schema.get(key).and_then(Value::as_u64);
        let len = items.len() as u64;
        if bound("minItems").is_some_and(|m| len < m) || bound("maxItems").is_some_and(|m| len > m)
        {
            return Err(format!("{len} items for {schema}"));
        }
        if let Some(item_schema) = schema.get("items") {
            for item in items {
                check(item_schema, item)?;
            }
        }
    }
    Ok(())
}

fn weather_schema() -> Value {
    json!({"type": "object", "properties": {
        "city": {"type": "string", "minLength": 1},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 5},
        "confidence": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
        "detail": {"type": "object", "properties": {
            "hourly": {"type": "boolean"},
            "fields": {"type": "array", "items": {"type": "string", "enum": ["wind", "rain"]},
                       "minItems": 1, "maxItems": 2},
        }, "required": ["hourly"]},
        "level": {"enum": [1, "high", null]},
    }, "required": ["city", "unit"]})
}

fn order_schema() -> Value {
    json!({"type": "object", "properties": {"order_id": {"type": "string"},
        "express": {"type": "boolean"}}, "required": ["order_id"]})
}

fn tools() -> Value {
    json!([
        {"type": "function", "function": {"name": "get_weather",
            "description": "Weather for a city", "parameters": weather_schema()}},
        {"type": "function", "function": {"name": "lookup_order", "parameters": order_schema()}},
    ])
}

fn schema_of(name: &str) -> Value {
    match name {
        "get_weather" => weather_schema(),
        "lookup_order" => order_schema(),
        other => panic!("unknown tool {other}"),
    }
}

fn sums(usage: &Value) -> u64 {
    let (prompt, completion) = (
        usage["prompt_tokens"].as_u64().unwrap(),
        usage["completion_tokens"].as_u64().unwrap(),
    );
    assert_eq!(usage["total_tokens"].as_u64().unwrap(), prompt + completion);
    completion
}

/// The 400 of `backend` in its engine's own shape.
fn assert_engine_error(backend: &str, reply: &common::Reply, what: &str) {
    assert_eq!(reply.status, 400, "{backend} {what}: {}", reply.text());
    let body = reply.json();
    match backend {
        "vllm" | "sglang" => {
            assert_eq!(body["object"], "error", "{backend} {what}");
            assert_eq!(body["code"], 400);
            assert_eq!(body["type"], "BadRequestError");
        }
        "llamacpp" => {
            assert_eq!(body["error"]["code"], 400);
            assert_eq!(body["error"]["type"], "invalid_request_error");
        }
        _ => {
            assert_eq!(body["error"]["type"], "invalid_request_error");
            assert_eq!(body["error"]["code"], Value::Null);
        }
    }
}

#[tokio::test]
async fn stop_cuts_before_the_first_stop_string() {
    let h = harness().await;
    for backend in BACKENDS {
        let full = unary(&h, backend, chat_body("tell me a story", false)).await;
        let text = full["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_string();
        let words: Vec<&str> = text.split(' ').collect();
        let stop = words[4].to_string();
        let at = text.find(&stop).unwrap();
        let expected = &text[..at];
        let extra = json!({"stop": ["never-there", stop]});
        let cut = unary(&h, backend, body("tell me a story", false, extra.clone())).await;
        let choice = &cut["choices"][0];
        assert_eq!(choice["message"]["content"], expected, "{backend}");
        assert_eq!(choice["finish_reason"], "stop", "{backend}");
        let completion = sums(&cut["usage"]);
        assert!(completion < sums(&full["usage"]), "{backend}");

        let mut stream_body = body("tell me a story", true, extra);
        stream_body["stream_options"] = json!({"include_usage": true});
        let chunks = streamed(&h, backend, stream_body).await;
        let got = assemble(&chunks);
        assert_eq!(got.content, expected, "{backend}");
        assert_eq!(got.finish.as_deref(), Some("stop"), "{backend}");
        assert_eq!(got.content_chunks as u64, completion, "{backend}");
        assert_eq!(sums(got.usage.as_ref().unwrap()), completion, "{backend}");
        // Where the engines report which stop string matched.
        let finish = chunks
            .iter()
            .find(|c| c["choices"][0]["finish_reason"].is_string())
            .unwrap();
        match backend {
            "vllm" => assert_eq!(finish["choices"][0]["stop_reason"], stop.as_str()),
            "sglang" => assert_eq!(finish["choices"][0]["matched_stop"], stop.as_str()),
            _ => {}
        }
        // A single string works too; a non-string is refused.
        let single = unary(
            &h,
            backend,
            body("tell me a story", false, json!({"stop": stop})),
        )
        .await;
        assert_eq!(single["choices"][0]["message"]["content"], expected);
        let bad = h
            .chat(backend, body("x", false, json!({"stop": [1]})))
            .await;
        assert_engine_error(backend, &bad, "stop");
    }
}

#[tokio::test]
async fn seed_makes_text_reproducible() {
    let h = harness().await;
    for backend in BACKENDS {
        let text = |reply: &Value| reply["choices"][0]["message"]["content"].clone();
        let plain = unary(&h, backend, chat_body("hello", false)).await;
        let seven = unary(&h, backend, body("hello", false, json!({"seed": 7}))).await;
        let again = unary(&h, backend, body("hello", false, json!({"seed": 7}))).await;
        let eight = unary(&h, backend, body("hello", false, json!({"seed": 8}))).await;
        let negative = unary(&h, backend, body("hello", false, json!({"seed": -8}))).await;
        assert_eq!(text(&seven), text(&again), "{backend}");
        assert_ne!(text(&seven), text(&eight), "{backend}");
        assert_ne!(text(&seven), text(&plain), "{backend}");
        assert_ne!(text(&eight), text(&negative), "{backend}");
        let chunks = streamed(&h, backend, body("hello", true, json!({"seed": 7}))).await;
        assert_eq!(json!(assemble(&chunks).content), text(&seven), "{backend}");
        let bad = h
            .chat(backend, body("hello", false, json!({"seed": "x"})))
            .await;
        assert_engine_error(backend, &bad, "seed");
    }
}

#[tokio::test]
async fn sampling_ranges_are_validated() {
    let h = harness().await;
    let bad = [
        json!({"temperature": 2.5}),
        json!({"temperature": -0.1}),
        json!({"temperature": "hot"}),
        json!({"top_p": 0}),
        json!({"top_p": 1.5}),
        json!({"presence_penalty": -2.5}),
        json!({"frequency_penalty": 3}),
        json!({"max_tokens": -1}),
        json!({"top_logprobs": 21, "logprobs": true}),
        json!({"top_logprobs": 3}),
    ];
    for backend in BACKENDS {
        for extra in &bad {
            let reply = h.chat(backend, body("hi", false, extra.clone())).await;
            assert_engine_error(backend, &reply, &extra.to_string());
        }
        let ok = json!({"temperature": 2, "top_p": 1, "presence_penalty": -2,
            "frequency_penalty": 2, "max_completion_tokens": 2});
        let reply = unary(&h, backend, body("hi", false, ok)).await;
        assert_eq!(reply["usage"]["completion_tokens"], 2);
        assert_eq!(reply["choices"][0]["finish_reason"], "length");
    }
}

fn check_call(backend: &str, name: &str, arguments: &str) {
    let parsed: Value = serde_json::from_str(arguments)
        .unwrap_or_else(|e| panic!("{backend}: arguments not JSON ({e}): {arguments}"));
    check(&schema_of(name), &parsed)
        .unwrap_or_else(|e| panic!("{backend}: {name} arguments {arguments}: {e}"));
}

fn id_shape(backend: &str, id: &str) {
    let ok = match backend {
        "vllm" => id.starts_with("chatcmpl-tool-"),
        "sglang" | "ollama" => id.starts_with("call_"),
        _ => id.len() == 32,
    };
    assert!(ok, "{backend}: tool call id {id}");
}

/// Unary and streamed replies to `extra` (tools and a tool_choice) on `prompt`: the calls made,
/// checked against the schema, the same in both, with consistent usage.
async fn tool_round(h: &Harness, backend: &str, prompt: &str, extra: Value) -> Vec<String> {
    let mut extra = extra;
    extra["tools"] = tools();
    let reply = unary(h, backend, body(prompt, false, extra.clone())).await;
    let choice = &reply["choices"][0];
    let completion = sums(&reply["usage"]);
    assert!(completion > 0);
    let calls = choice["message"]["tool_calls"].as_array().cloned();
    let Some(calls) = calls else {
        assert_eq!(choice["finish_reason"], "stop", "{backend}");
        assert!(choice["message"]["content"].is_string());
        let mut stream_body = body(prompt, true, extra);
        stream_body["stream_options"] = json!({"include_usage": true});
        let got = assemble(&streamed(h, backend, stream_body).await);
        assert!(got.calls.is_empty());
        assert_eq!(json!(got.content), choice["message"]["content"]);
        return Vec::new();
    };
    assert_eq!(choice["finish_reason"], "tool_calls", "{backend}");
    assert_eq!(choice["message"]["content"], Value::Null, "{backend}");
    for call in &calls {
        assert_eq!(call["type"], "function");
        id_shape(backend, call["id"].as_str().unwrap());
        check_call(
            backend,
            call["function"]["name"].as_str().unwrap(),
            call["function"]["arguments"].as_str().unwrap(),
        );
    }

    let mut stream_body = body(prompt, true, extra);
    stream_body["stream_options"] = json!({"include_usage": true});
    let chunks = streamed(h, backend, stream_body).await;
    let got = assemble(&chunks);
    assert_eq!(got.finish.as_deref(), Some("tool_calls"), "{backend}");
    assert_eq!(got.calls.len(), calls.len(), "{backend}");
    for ((id, name, arguments), unary_call) in got.calls.iter().zip(&calls) {
        id_shape(backend, id);
        assert_eq!(name, unary_call["function"]["name"].as_str().unwrap());
        check_call(backend, name, arguments);
        // Arguments depend on the prompt (and seed), not on the request.
        assert_eq!(
            arguments,
            unary_call["function"]["arguments"].as_str().unwrap()
        );
    }
    assert_eq!(sums(got.usage.as_ref().unwrap()), completion, "{backend}");
    check_tool_chunk_shapes(backend, &chunks);
    calls
        .iter()
        .map(|c| c["function"]["name"].as_str().unwrap().to_string())
        .collect()
}

/// The per-engine split of streamed tool calls (README "Streamed tool calls").
fn check_tool_chunk_shapes(backend: &str, chunks: &[Value]) {
    let deltas: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].as_array())
        .flatten()
        .collect();
    assert!(!deltas.is_empty());
    let first = deltas[0];
    match backend {
        "vllm" => {
            assert_eq!(
                first.as_object().unwrap().keys().collect::<Vec<_>>(),
                ["id", "type", "index", "function"]
            );
            assert!(first["function"].get("arguments").is_none());
            let fragment = deltas[1];
            assert_eq!(
                fragment.as_object().unwrap().keys().collect::<Vec<_>>(),
                ["index", "function"]
            );
        }
        "llamacpp" => {
            assert_eq!(first["function"]["arguments"], "");
            assert!(first["id"].is_string() && first["type"] == "function");
            assert!(deltas[1].get("id").is_none());
        }
        "sglang" => {
            assert_eq!(first["function"]["arguments"], "");
            assert!(first["id"].as_str().unwrap().starts_with("call_"));
            let fragment = deltas[1];
            assert_eq!(fragment["id"], Value::Null);
            assert!(fragment.as_object().unwrap().contains_key("id"));
            assert_eq!(fragment["type"], "function");
            assert_eq!(fragment["function"]["name"], Value::Null);
            assert!(fragment["function"]["arguments"].is_string());
            // SGLang's deltas spell out their nulls.
            let delta = &chunks[1]["choices"][0]["delta"];
            assert_eq!(delta["content"], Value::Null);
            assert!(delta.as_object().unwrap().contains_key("reasoning_content"));
        }
        _ => {
            // Ollama: each call whole in one chunk, the first with the role.
            for delta in &deltas {
                let arguments = delta["function"]["arguments"].as_str().unwrap();
                serde_json::from_str::<Value>(arguments).unwrap();
                assert!(delta["function"]["name"].is_string());
            }
            assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
            assert!(chunks[0]["choices"][0]["delta"]["tool_calls"].is_array());
        }
    }
}

#[tokio::test]
async fn tool_choice_required_named_auto_none() {
    let h = harness().await;
    for backend in BACKENDS {
        let required =
            tool_round(&h, backend, "what now?", json!({"tool_choice": "required"})).await;
        assert_eq!(required, ["get_weather"], "{backend}");
        let named =
            json!({"tool_choice": {"type": "function", "function": {"name": "lookup_order"}}});
        let named = tool_round(&h, backend, "what now?", named).await;
        assert_eq!(named, ["lookup_order"], "{backend}");
        // auto (the default with tools): the tools the last user message names.
        let both = tool_round(
            &h,
            backend,
            "Please LOOKUP_ORDER and get_weather",
            json!({}),
        )
        .await;
        assert_eq!(both, ["get_weather", "lookup_order"], "{backend}");
        let one = tool_round(
            &h,
            backend,
            "get_weather for me",
            json!({"tool_choice": "auto"}),
        )
        .await;
        assert_eq!(one, ["get_weather"], "{backend}");
        let serial = json!({"parallel_tool_calls": false});
        let serial = tool_round(&h, backend, "lookup_order, get_weather", serial).await;
        assert_eq!(serial, ["get_weather"], "{backend}");
        let plain = tool_round(&h, backend, "just chat", json!({})).await;
        assert!(plain.is_empty(), "{backend}");
        let none = tool_round(&h, backend, "get_weather", json!({"tool_choice": "none"})).await;
        assert!(none.is_empty(), "{backend}");
        // After a tool result, auto answers in text; required still calls.
        let call = json!({"id": "c1", "type": "function",
            "function": {"name": "get_weather", "arguments": "{}"}});
        let messages = json!([{"role": "user", "content": "get_weather please"},
            {"role": "assistant", "content": null, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"}]);
        for (choice, calls) in [("auto", 0), ("required", 1)] {
            let mut follow_up = body("", false, json!({"tools": tools(), "tool_choice": choice}));
            follow_up["messages"] = messages.clone();
            let reply = unary(&h, backend, follow_up).await;
            let made = reply["choices"][0]["message"]["tool_calls"]
                .as_array()
                .map_or(0, Vec::len);
            assert_eq!(made, calls, "{backend} {choice}");
        }
        // The same seed gives the same arguments; another seed other ones.
        let seeded = |seed: i64| {
            body(
                "x",
                false,
                json!({"tools": tools(), "tool_choice": "required", "seed": seed}),
            )
        };
        let args = |reply: Value| {
            reply["choices"][0]["message"]["tool_calls"][0].clone()["function"]["arguments"].clone()
        };
        let a = args(unary(&h, backend, seeded(1)).await);
        assert_eq!(a, args(unary(&h, backend, seeded(1)).await));
        assert_ne!(a, args(unary(&h, backend, seeded(2)).await));
    }
}

#[tokio::test]
async fn malformed_tools_are_refused_in_the_engine_shape() {
    let h = harness().await;
    let named = |name: &str| json!({"type": "function", "function": {"name": name}});
    let cases = [
        json!({"tools": {"type": "function"}}),
        json!({"tools": [{"type": "function", "function": {"description": "no name"}}]}),
        json!({"tools": [{"type": "function"}]}),
        json!({"tools": [{"type": "retrieval", "function": {"name": "f"}}]}),
        json!({"tools": [{"type": "function", "function": {"name": "f", "parameters": 3}}]}),
        json!({"tools": tools(), "tool_choice": named("nope")}),
        json!({"tools": tools(), "tool_choice": "sometimes"}),
        json!({"tool_choice": "required"}),
        json!({"response_format": {"type": "yaml"}}),
        json!({"response_format": {"type": "json_schema"}}),
    ];
    for backend in BACKENDS {
        for extra in &cases {
            for stream in [false, true] {
                let reply = h.chat(backend, body("hi", stream, extra.clone())).await;
                assert_engine_error(backend, &reply, &extra.to_string());
            }
        }
    }
}

#[tokio::test]
async fn response_format_gives_json() {
    let h = harness().await;
    let schema = weather_schema();
    let formats = [
        (json!({"type": "json_object"}), json!({"type": "object"})),
        (
            json!({"type": "json_schema", "json_schema": {"name": "weather", "schema": schema.clone(), "strict": true}}),
            schema,
        ),
    ];
    for backend in BACKENDS {
        for (format, schema) in &formats {
            let extra = json!({"response_format": format});
            let reply = unary(&h, backend, body("the weather", false, extra.clone())).await;
            let text = reply["choices"][0]["message"]["content"].as_str().unwrap();
            let value: Value = serde_json::from_str(text).unwrap();
            check(schema, &value).unwrap_or_else(|e| panic!("{backend}: {text}: {e}"));
            let completion = sums(&reply["usage"]);
            let chunks = streamed(&h, backend, body("the weather", true, extra)).await;
            let got = assemble(&chunks);
            assert_eq!(got.content, text, "{backend}");
            assert!(
                got.content_chunks > 1,
                "{backend}: the JSON comes in pieces"
            );
            assert_eq!(got.content_chunks as u64, completion, "{backend}");
        }
        let text = unary(
            &h,
            backend,
            body("hi", false, json!({"response_format": {"type": "text"}})),
        )
        .await;
        let plain = unary(&h, backend, chat_body("hi", false)).await;
        assert_eq!(text["choices"], plain["choices"]);
    }
}

fn check_logprob_entries(backend: &str, entries: &[Value], top: usize) {
    for entry in entries {
        let token = entry["token"].as_str().unwrap();
        let logprob = entry["logprob"].as_f64().unwrap();
        assert!(logprob <= 0.0, "{backend}");
        let bytes: Vec<u8> = entry["bytes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_u64().unwrap() as u8)
            .collect();
        assert_eq!(bytes, token.as_bytes(), "{backend}");
        let alternatives = entry["top_logprobs"].as_array().unwrap();
        assert_eq!(alternatives.len(), top, "{backend}");
        let values: Vec<f64> = alternatives
            .iter()
            .map(|a| a["logprob"].as_f64().unwrap())
            .collect();
        assert!(
            values.windows(2).all(|w| w[0] >= w[1]),
            "{backend}: {values:?}"
        );
        assert!(values.iter().all(|v| *v <= 0.0));
        if top > 0 {
            assert_eq!(alternatives[0]["token"], token);
            assert_eq!(alternatives[0]["logprob"], entry["logprob"]);
            assert!(alternatives.iter().all(|a| a["bytes"].is_array()));
        }
    }
}

#[tokio::test]
async fn logprobs_in_the_openai_shape() {
    let h = harness().await;
    for backend in BACKENDS {
        for top in [0usize, 3] {
            let extra = json!({"logprobs": true, "top_logprobs": top});
            let reply = unary(&h, backend, body("hello", false, extra.clone())).await;
            let choice = &reply["choices"][0];
            let entries = choice["logprobs"]["content"].as_array().unwrap();
            assert_eq!(entries.len() as u64, sums(&reply["usage"]), "{backend}");
            let joined: String = entries
                .iter()
                .map(|e| e["token"].as_str().unwrap())
                .collect();
            assert_eq!(json!(joined), choice["message"]["content"]);
            check_logprob_entries(backend, entries, top);

            let chunks = streamed(&h, backend, body("hello", true, extra)).await;
            for chunk in &chunks {
                let choice = &chunk["choices"][0];
                if let Some(text) = choice["delta"]["content"]
                    .as_str()
                    .filter(|t| !t.is_empty())
                {
                    let chunk_entries = choice["logprobs"]["content"].as_array().unwrap();
                    let tokens: String = chunk_entries
                        .iter()
                        .map(|e| e["token"].as_str().unwrap())
                        .collect();
                    assert_eq!(tokens, text, "{backend}");
                }
            }
            let got = assemble(&chunks);
            assert_eq!(&got.logprobs, entries, "{backend}");
        }
        // Tool calls carry logprobs for each generated piece.
        let extra = json!({"logprobs": true, "top_logprobs": 2, "tools": tools(),
            "tool_choice": "required"});
        let reply = unary(&h, backend, body("hello", false, extra.clone())).await;
        let entries = reply["choices"][0]["logprobs"]["content"]
            .as_array()
            .unwrap();
        assert_eq!(entries.len() as u64, sums(&reply["usage"]));
        check_logprob_entries(backend, entries, 2);
        let got = assemble(&streamed(&h, backend, body("hello", true, extra)).await);
        assert_eq!(&got.logprobs, entries, "{backend}");
        // Without logprobs the reply has none (vLLM and SGLang send null).
        let plain = unary(&h, backend, chat_body("hello", false)).await;
        assert!(plain["choices"][0].get("logprobs").is_none());
    }
}

#[tokio::test]
async fn include_usage_chunk_per_dialect() {
    let h = harness().await;
    for backend in BACKENDS {
        let full = unary(&h, backend, chat_body("usage please", false)).await;
        let completion = sums(&full["usage"]);
        let mut with = chat_body("usage please", true);
        with["stream_options"] = json!({"include_usage": true});
        let chunks = streamed(&h, backend, with).await;
        let usage_chunk = chunks.last().unwrap();
        assert_eq!(usage_chunk["choices"], json!([]), "{backend}");
        assert_eq!(usage_chunk["object"], "chat.completion.chunk");
        let usage = &usage_chunk["usage"];
        assert_eq!(sums(usage), completion, "{backend}");
        assert_eq!(usage["prompt_tokens"], full["usage"]["prompt_tokens"]);
        let finish = &chunks[chunks.len() - 2];
        match backend {
            "vllm" => assert_eq!(usage_chunk["system_fingerprint"], "vllm-local"),
            "llamacpp" => {
                // As llama-server: the timings move from the finish chunk to the usage chunk.
                assert_eq!(usage_chunk["timings"]["predicted_n"], completion);
                assert!(finish.get("timings").is_none());
                assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], 0);
                let keys: Vec<&String> = usage_chunk.as_object().unwrap().keys().collect();
                assert_eq!(
                    keys,
                    [
                        "choices",
                        "created",
                        "id",
                        "model",
                        "system_fingerprint",
                        "object",
                        "usage",
                        "timings"
                    ]
                );
            }
            "ollama" => assert_eq!(usage_chunk["system_fingerprint"], "fp_ollama"),
            _ => {
                assert_eq!(usage["prompt_tokens_details"], Value::Null);
                assert!(usage
                    .as_object()
                    .unwrap()
                    .contains_key("prompt_tokens_details"));
                assert_eq!(usage["reasoning_tokens"], 0);
            }
        }
        // Without it: no usage chunk, and llama.cpp keeps timings on the finish.
        let plain = streamed(&h, backend, chat_body("usage please", true)).await;
        assert!(plain.iter().all(|c| c["choices"] != json!([])), "{backend}");
        if backend == "llamacpp" {
            assert!(plain.last().unwrap()["timings"].is_object());
        }
    }
}

#[tokio::test]
async fn journal_keeps_the_request_body() {
    let h = harness().await;
    let sent = body(
        "get_weather",
        true,
        json!({"tools": tools(), "tool_choice": "auto", "stop": ["x"], "seed": 3,
            "logprobs": true, "top_logprobs": 2, "response_format": {"type": "text"},
            "stream_options": {"include_usage": true}}),
    );
    streamed(&h, "ollama", sent.clone()).await;
    let entries = h.journal().await;
    let entry = entries
        .iter()
        .rev()
        .find(|e| e["path"].as_str().unwrap().ends_with("/chat/completions"))
        .unwrap();
    assert_eq!(entry["body"], sent);
}

#[tokio::test]
async fn embeddings_dimensions() {
    let h = Harness::start();
    for backend in BACKENDS {
        let slug = format!("emb-{backend}");
        h.create_ready(&slug, backend, "embedding").await;
        let path = h.data_path(&slug, "embeddings");
        let ask = |extra: Value| {
            let mut body = json!({"input": ["the cat sat", "a dog ran"]});
            for (key, value) in extra.as_object().unwrap() {
                body[key] = value.clone();
            }
            body
        };
        let reply = h
            .call(
                Method::POST,
                &path,
                Some(&h.key),
                Some(&ask(json!({"dimensions": 16}))),
            )
            .await;
        assert_eq!(reply.status, 200, "{backend}: {}", reply.text());
        let body = reply.json();
        for item in body["data"].as_array().unwrap() {
            let vector: Vec<f64> = item["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect();
            assert_eq!(vector.len(), 16, "{backend}");
            let norm: f64 = vector.iter().map(|x| x * x).sum();
            assert!((norm - 1.0).abs() < 1e-4, "{backend}: {norm}");
        }
        assert_eq!(body["usage"]["prompt_tokens"], 6);
        for bad in [json!(0), json!(65), json!("16"), json!(-1)] {
            let reply = h
                .call(
                    Method::POST,
                    &path,
                    Some(&h.key),
                    Some(&ask(json!({"dimensions": bad}))),
                )
                .await;
            assert_engine_error(backend, &reply, "dimensions");
        }
    }
}
