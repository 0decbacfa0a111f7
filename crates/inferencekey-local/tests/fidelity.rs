//! The simulated `llamacpp` dialect against transcripts of a real llama-server (tests/captures/,
//! see its README): every frame is diffed field by field (key order, types, values), ignoring only
//! the values that are random by nature (ids, times, generated text, token counts and timings).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::PathBuf;

use common::{sse_json, Harness, Reply};
use reqwest::Method;
use serde_json::{json, Value};

fn capture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/captures/llamacpp")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A `<status> <content type>\n<body>` capture.
fn status_capture(name: &str) -> (u16, String, String) {
    let text = capture(name);
    let (head, body) = text.split_once('\n').unwrap();
    let (status, content_type) = head.split_once(' ').unwrap();
    (
        status.parse().unwrap(),
        content_type.to_string(),
        body.to_string(),
    )
}

/// Paths (dot-joined keys, `*` for any array index) whose values are random by nature: only their
/// JSON type is compared.
const RANDOM: [&str; 10] = [
    "id",
    "created",
    "choices.*.delta.content",
    "choices.*.message.content",
    "usage.completion_tokens",
    "usage.prompt_tokens",
    "usage.total_tokens",
    "usage.prompt_tokens_details.cached_tokens",
    "timings.*",
    "error.n_prompt_tokens",
];

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn random(path: &str) -> bool {
    RANDOM.iter().any(|pattern| {
        let (pattern, path) = (pattern.split('.'), path.split('.'));
        let (pattern, path): (Vec<_>, Vec<_>) = (pattern.collect(), path.collect());
        pattern.len() <= path.len()
            && pattern.iter().zip(&path).all(|(p, s)| *p == "*" || p == s)
            && (pattern.len() == path.len() || pattern.last() == Some(&"*"))
    })
}

/// Every difference between the real frame and ours, as `path: what`.
fn diff(path: &str, real: &Value, ours: &Value, out: &mut Vec<String>) {
    let at = |key: &str| {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    };
    match (real, ours) {
        (Value::Object(a), Value::Object(b)) => {
            let (ka, kb): (Vec<_>, Vec<_>) = (a.keys().collect(), b.keys().collect());
            if ka != kb {
                out.push(format!("{path}: keys {ka:?} (real) vs {kb:?} (ours)"));
            }
            for (key, value) in a {
                if let Some(other) = b.get(key) {
                    diff(&at(key), value, other, out);
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            if a.len() != b.len() {
                out.push(format!("{path}: {} items (real) vs {}", a.len(), b.len()));
            }
            for (value, other) in a.iter().zip(b) {
                diff(&at("*"), value, other, out);
            }
        }
        _ if kind(real) != kind(ours) => {
            out.push(format!(
                "{path}: {real} (real) vs {ours} (ours): types differ"
            ));
        }
        _ if !random(path) && real != ours => {
            out.push(format!("{path}: {real} (real) vs {ours} (ours)"));
        }
        _ => {}
    }
}

fn assert_same(what: &str, real: &Value, ours: &Value) {
    let mut out = Vec::new();
    diff("", real, ours, &mut out);
    assert!(
        out.is_empty(),
        "{what} differs from the transcript:\n{}\nreal: {real}\nours: {ours}",
        out.join("\n")
    );
}

/// The role of a stream frame: the shapes that must line up one to one.
fn frame_kind(frame: &Value) -> &'static str {
    if frame == "[DONE]" {
        return "done";
    }
    let choices = frame["choices"].as_array().unwrap();
    match choices.first() {
        None => "usage",
        Some(choice) if choice["delta"].get("role").is_some() => "role",
        Some(choice) if !choice["finish_reason"].is_null() => "finish",
        Some(_) => "content",
    }
}

/// Diffs a streamed reply against a transcript: the same sequence of frame kinds (any number of
/// content frames), each frame against the real one of its kind.
fn assert_same_stream(what: &str, real: &[Value], ours: &[Value]) {
    let squeeze = |frames: &[Value]| {
        let mut kinds: Vec<&str> = frames.iter().map(frame_kind).collect();
        kinds.dedup();
        kinds
    };
    assert_eq!(squeeze(real), squeeze(ours), "{what}: frame sequence");
    for frame in ours {
        let kind = frame_kind(frame);
        let twin = real.iter().find(|r| frame_kind(r) == kind).unwrap();
        assert_same(&format!("{what}, {kind} frame"), twin, frame);
    }
}

async fn llamacpp_platform() -> Harness {
    let h = Harness::start();
    // The transcripts' engine ran with the alias `smol`: the platform's alias is the slug.
    h.create_ready("smol", "llamacpp", "text2text").await;
    h.create_ready("smol-embed", "llamacpp", "embedding").await;
    h
}

fn chat(stream: bool, usage: bool) -> Value {
    let mut body = json!({"model": "smol",
        "messages": [{"role": "user", "content": "Say hello in French."}],
        "max_tokens": 6, "stream": stream});
    if usage {
        body["stream_options"] = json!({"include_usage": true});
    }
    body
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

fn header_capture(name: &str) -> Value {
    let text = capture(name);
    // The stream captures start with a status line.
    json_of(text.trim_start_matches(|c: char| c.is_ascii_digit() || c == '\n'))
}

fn assert_engine_headers(what: &str, real: &Value, reply: &Reply) {
    for name in ["Access-Control-Allow-Origin", "Content-Type"] {
        assert_eq!(
            reply.header(name).as_deref(),
            real[name].as_str(),
            "{what}: header {name}"
        );
    }
}

#[tokio::test]
async fn unary_chat_matches_the_transcript() {
    let h = llamacpp_platform().await;
    let reply = h.chat("smol", chat(false, false)).await;
    assert_eq!(reply.status, 200);
    let real = json_of(&capture("run1/chat-nonstream.json"));
    assert_same("unary chat", &real, &reply.json());
    assert_engine_headers(
        "unary chat",
        &header_capture("run1/chat-nonstream.headers"),
        &reply,
    );
}

#[tokio::test]
async fn streams_match_the_transcripts() {
    let h = llamacpp_platform().await;
    for (name, usage) in [("stream", false), ("stream-usage", true)] {
        let reply = h.chat("smol", chat(true, usage)).await;
        assert_eq!(reply.status, 200);
        let real = sse_json(capture(&format!("run1/{name}.sse")).as_bytes());
        assert_same_stream(name, &real, &sse_json(&reply.bytes));
        let headers = header_capture(&format!("run1/{name}.headers"));
        assert_engine_headers(name, &headers, &reply);
    }
    // Ending on `stop` (no max_tokens): the same shapes, `finish_reason: "stop"`.
    let mut body = chat(true, false);
    body.as_object_mut().unwrap().remove("max_tokens");
    let reply = h.chat("smol", body).await;
    let real = sse_json(capture("stream-stopfinish.sse").as_bytes());
    assert_same_stream("stream ending on stop", &real, &sse_json(&reply.bytes));
}

/// Chat ignores the request's `model` and answers with the alias.
#[tokio::test]
async fn chat_answers_with_the_alias() {
    let h = llamacpp_platform().await;
    let mut body = chat(false, false);
    body["model"] = json!("whatever-the-client-says");
    body.as_object_mut().unwrap().remove("max_tokens");
    let reply = h.chat("smol", body).await;
    let real = json_of(&capture("echo-model.json"));
    assert_eq!(real["model"], "smol");
    assert_same("chat with another model", &real, &reply.json());
}

#[tokio::test]
async fn errors_match_the_transcripts() {
    let h = llamacpp_platform().await;
    let post = |body: &'static [u8]| {
        h.client
            .post(format!(
                "{}{}",
                h.url,
                h.data_path("smol", "chat/completions")
            ))
            .bearer_auth(&h.key)
            .header("content-type", "application/json")
            .body(body)
    };
    for (name, body) in [
        ("run1/err-nomessages.txt", &br#"{"model":"smol"}"#[..]),
        (
            "run1/err-badtype.txt",
            &br#"{"model":"smol","messages":"hello"}"#[..],
        ),
    ] {
        let reply = common::read(post(body).send().await.unwrap()).await;
        let (status, content_type, real) = status_capture(name);
        assert_eq!(reply.status.as_u16(), status, "{name}");
        assert_eq!(
            reply.header("content-type").unwrap(),
            content_type,
            "{name}"
        );
        assert_eq!(reply.json(), json_of(&real), "{name}");
    }
    // Not JSON: the JSON library's parse error; its wording past the position is the library's.
    let reply = common::read(post(b"{no").send().await.unwrap()).await;
    let (status, _, real) = status_capture("run1/err-notjson.txt");
    assert_eq!(reply.status.as_u16(), status);
    let (real, ours) = (json_of(&real), reply.json());
    let prefix = "[json.exception.parse_error.101] parse error at line 1, column ";
    assert!(real["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with(prefix));
    assert!(
        ours["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with(prefix),
        "{ours}"
    );
    let mut masked = ours.clone();
    masked["error"]["message"] = real["error"]["message"].clone();
    assert_same("parse error", &real, &masked);

    // A prompt over the context: 400 with the engine's counts.
    let long = "word ".repeat(3000);
    let reply = h
        .chat(
            "smol",
            json!({"model": "smol", "messages": [{"role": "user", "content": long}]}),
        )
        .await;
    let text = capture("ctx-overflow.txt");
    let real_line = text.lines().nth(1).unwrap();
    assert_eq!(reply.status, 400);
    let (real, ours) = (json_of(real_line), reply.json());
    let digits = |v: &Value| {
        v["error"]["message"]
            .as_str()
            .unwrap()
            .replace(|c: char| c.is_ascii_digit(), "")
    };
    assert_eq!(digits(&real), digits(&ours));
    let mut masked = ours.clone();
    masked["error"]["message"] = real["error"]["message"].clone();
    assert_same("context overflow", &real, &masked);
}

/// Endpoints the engine was not started for: llama-server's 501.
#[tokio::test]
async fn unsupported_endpoints_are_501s() {
    let h = llamacpp_platform().await;
    let reply = h
        .call(
            Method::POST,
            &h.data_path("smol", "embeddings"),
            Some(&h.key),
            Some(&json!({"model": "smol", "input": "hello"})),
        )
        .await;
    let (status, content_type, real) = status_capture("run1/embeddings.txt");
    assert_eq!(reply.status.as_u16(), status);
    assert_eq!(reply.header("content-type").unwrap(), content_type);
    assert_eq!(reply.json(), json_of(&real));
    let reply = h
        .call(
            Method::POST,
            &h.data_path("smol", "rerank"),
            Some(&h.key),
            Some(&json!({"query": "q", "documents": ["a"]})),
        )
        .await;
    assert_eq!(reply.status, 501);
    assert_eq!(reply.json()["error"]["type"], "not_supported_error");
}

/// Embeddings: the transcripts are cut at 3000 bytes, so their opening (everything before the
/// first vector's numbers) is compared, with numbers masked.
#[tokio::test]
async fn embeddings_match_the_transcripts() {
    let h = llamacpp_platform().await;
    let mask = |text: &str| {
        let head = &text[..text.find("\"embedding\":").unwrap()];
        let mut out = String::new();
        let mut digits = false;
        for c in head.chars() {
            if c.is_ascii_digit() {
                if !digits {
                    out.push('0');
                }
                digits = true;
            } else {
                out.push(c);
                digits = false;
            }
        }
        out
    };
    for (name, format) in [
        ("run-embed/embeddings.txt", "float"),
        ("run-embed/embeddings-b64.txt", "base64"),
    ] {
        let reply = h
            .call(
                Method::POST,
                &h.data_path("smol-embed", "embeddings"),
                Some(&h.key),
                Some(&json!({"model": "smol", "input": "hello world", "encoding_format": format})),
            )
            .await;
        let (status, content_type, real) = status_capture(name);
        assert_eq!(reply.status.as_u16(), status, "{name}");
        assert_eq!(reply.header("content-type").unwrap(), content_type);
        assert_eq!(mask(&real), mask(&reply.text()), "{name}");
        let item = &reply.json()["data"][0];
        let keys: Vec<&String> = item.as_object().unwrap().keys().collect();
        let expected: &[&str] = if format == "base64" {
            &["embedding", "index", "object", "encoding_format"]
        } else {
            &["embedding", "index", "object"]
        };
        assert_eq!(keys, expected, "{name}");
    }
}
