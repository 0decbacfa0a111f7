//! Fault rules over real HTTP (every type, counts, seeded probabilities, workload filters), the
//! journal (redaction, outcomes, disconnects) and the rest of the admin API.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::{chat_body, parse_sse, read, sse_json, Harness, Reply};
use futures_util::StreamExt;
use inferencekey_local::Config;
use reqwest::Method;
use serde_json::{json, Value};

/// A streamed chat with a fixed `X-Request-Id`, so vLLM ids are stable between requests.
async fn stream_chat(h: &Harness, slug: &str, max_tokens: u64) -> Reply {
    read(open_stream_chat(h, slug, max_tokens).await).await
}

/// The response of [`stream_chat`], its body not read yet.
async fn open_stream_chat(h: &Harness, slug: &str, max_tokens: u64) -> reqwest::Response {
    let mut body = chat_body("fault injection", true);
    body["max_tokens"] = json!(max_tokens);
    h.chat_request(slug, &body)
        .header("x-request-id", "fixed")
        .send()
        .await
        .unwrap()
}

/// Events without the `created` stamp (a clock tick apart between requests).
fn normalized(bytes: &[u8]) -> Vec<Value> {
    sse_json(bytes)
        .into_iter()
        .map(|mut e| {
            if let Some(fields) = e.as_object_mut() {
                fields.remove("created");
                fields.remove("x_padding");
            }
            e
        })
        .collect()
}

fn has_finish(events: &[Value]) -> bool {
    events
        .iter()
        .any(|e| e == "[DONE]" || e["choices"][0]["finish_reason"].is_string())
}

#[tokio::test]
async fn status_faults_shape_the_whole_response() {
    let h = Harness::start();
    let list = h.workloads_path();
    let id = h
        .add_fault(
            json!({"route": "list", "fault": {"type": "status", "status": 503,
            "body": "try later", "retry_after": 2, "headers": {"x-request-id": "req_1"}}}),
        )
        .await;
    assert_eq!(id, "f1");
    let hit = h.call(Method::GET, &list, Some(&h.sdk), None).await;
    assert_eq!(hit.status, 503);
    assert_eq!(hit.text(), "try later");
    assert!(hit
        .header("content-type")
        .unwrap()
        .starts_with("text/plain"));
    assert_eq!(hit.header("retry-after").as_deref(), Some("2"));
    assert_eq!(hit.header("x-request-id").as_deref(), Some("req_1"));
    // count defaults to 1.
    assert_eq!(
        h.call(Method::GET, &list, Some(&h.sdk), None).await.status,
        200
    );

    h.add_fault(
        json!({"route": "*", "fault": {"type": "status", "status": 429,
        "body": {"detail": "slow down"}}}),
    )
    .await;
    let json_body = h.call(Method::GET, &list, Some(&h.sdk), None).await;
    assert_eq!(
        (json_body.status.as_u16(), json_body.json()),
        (429, json!({"detail": "slow down"}))
    );
    h.add_fault(json!({"route": "list", "fault": {"type": "status", "status": 500}}))
        .await;
    let default = h.call(Method::GET, &list, Some(&h.sdk), None).await;
    assert_eq!(default.error().0, "injected_fault");
    h.add_fault(json!({"route": "list", "fault": {"type": "status", "status": 502, "body": null}}))
        .await;
    let empty = h.call(Method::GET, &list, Some(&h.sdk), None).await;
    assert_eq!(empty.status, 502);
    assert!(empty.bytes.is_empty());

    let rules = h.admin(Method::GET, "/_local/faults", None).await.json();
    let fired: Vec<u64> = rules
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["fired"].as_u64().unwrap())
        .collect();
    assert_eq!(fired, [1, 1, 1, 1]);
    assert_eq!(rules[0]["fault"]["body"], "try later");
    assert_eq!(rules[0]["route"], "list");
    assert_eq!(rules[1]["route"], "*");
    assert_eq!(
        h.admin(Method::DELETE, "/_local/faults", None).await.status,
        204
    );
    assert_eq!(
        h.admin(Method::GET, "/_local/faults", None).await.json(),
        json!([])
    );
    let bad = h
        .admin(
            Method::POST,
            "/_local/faults",
            Some(&json!({"route": "list",
        "fault": {"type": "truncate"}})),
        )
        .await;
    assert_eq!(bad.status, 400);
}

#[tokio::test]
async fn reset_closes_the_connection_without_a_response() {
    let h = Harness::start();
    h.add_fault(json!({"route": "create", "fault": {"type": "reset"}}))
        .await;
    let body = json!({"name": "n", "slug": "s", "model_name": "m", "backend": "vllm"});
    let sent = h
        .request(Method::POST, &h.workloads_path(), Some(&h.sdk), Some(&body))
        .send()
        .await;
    assert!(sent.is_err(), "a reset must not produce a response");
    let entries = h.journal().await;
    let last = entries.last().unwrap();
    assert_eq!(
        (last["outcome"].as_str(), last["status"].clone()),
        (Some("reset"), Value::Null)
    );
    assert_eq!(last["fault"], "f1");
    // Nothing was created, and the next request is served normally.
    let list = h
        .call(Method::GET, &h.workloads_path(), Some(&h.sdk), None)
        .await;
    assert_eq!(list.json(), json!({"workloads": []}));
}

/// A stall no test outlives: only the client going away ends it.
const ENDLESS_MS: u64 = 600_000;

#[tokio::test]
async fn stalls_at_headers_first_chunk_and_mid_stream() {
    let h = Harness::start();
    h.create_ready("bot", "vllm", "text2text").await;
    h.add_fault(json!({"route": "list", "fault": {"type": "stall", "at": "headers", "ms": 300}}))
        .await;
    let begun = Instant::now();
    assert_eq!(
        h.call(Method::GET, &h.workloads_path(), Some(&h.sdk), None)
            .await
            .status,
        200
    );
    // A lower bound: the head waited for the stall.
    assert!(begun.elapsed() >= Duration::from_millis(300));

    for at in ["first_chunk", "mid_stream"] {
        // Where the stall sits, shown with one that never ends: the head still comes (else the
        // client's 20 s timeout fails `send`), and so does exactly one event when it is mid-stream.
        h.add_fault(
            json!({"route": "chat_stream", "fault": {"type": "stall", "at": at, "ms": ENDLESS_MS}}),
        )
        .await;
        let response = h
            .chat_request("bot", &chat_body("x", true))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{at}: headers come first");
        if at == "mid_stream" {
            let mut stream = response.bytes_stream();
            let mut bytes = Vec::new();
            while parse_sse(&bytes).is_empty() {
                bytes.extend_from_slice(&stream.next().await.unwrap().unwrap());
            }
            assert_eq!(
                parse_sse(&bytes).len(),
                1,
                "{at}: one event, then the stall"
            );
        } else {
            drop(response);
        }
        // The stalled stream ends when its client goes away.
        h.journal_until(|entries| {
            entries
                .last()
                .is_some_and(|e| e["outcome"] == "client_disconnected")
        })
        .await;

        // A stall that ends: the stream completes, and no sooner than the stall allows.
        h.add_fault(
            json!({"route": "chat_stream", "fault": {"type": "stall", "at": at, "ms": 400}}),
        )
        .await;
        let begun = Instant::now();
        let reply = read(
            h.chat_request("bot", &chat_body("x", true))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert!(begun.elapsed() >= Duration::from_millis(400), "{at}");
        assert!(
            has_finish(&sse_json(&reply.bytes)),
            "{at}: the stream still completes"
        );
    }
}

#[tokio::test]
async fn drip_writes_a_few_bytes_at_a_time() {
    let h = Harness::start();
    h.create_ready("bot", "vllm", "text2text").await;
    let normal = stream_chat(&h, "bot", 2).await;
    h.add_fault(
        json!({"route": "chat_stream", "fault": {"type": "drip", "bytes_per_write": 7,
        "interval_ms": 2}}),
    )
    .await;
    // How reads group the pieces depends on when the client gets to run; the pieces themselves
    // (at most 7 bytes each) are checked where they are made, in `sse.rs`. Over the wire: the same
    // events, spread over at least one interval per piece.
    let begun = Instant::now();
    let dripped = stream_chat(&h, "bot", 2).await;
    assert_eq!(normalized(&dripped.bytes), normalized(&normal.bytes));
    let pieces = u32::try_from(dripped.bytes.len().div_ceil(7)).unwrap();
    assert!(begun.elapsed() >= Duration::from_millis(2) * (pieces - 1));
    let entries = h.journal().await;
    assert_eq!(entries.last().unwrap()["fault"], "f1");
}

#[tokio::test]
async fn truncate_ends_before_any_finish() {
    let h = Harness::start();
    h.create_ready("bot", "ollama", "text2text").await;
    h.add_fault(json!({"route": "chat_stream", "fault": {"type": "truncate", "after_events": 3}}))
        .await;
    let cut = stream_chat(&h, "bot", 10).await;
    assert_eq!(cut.status, 200);
    let events = sse_json(&cut.bytes);
    assert_eq!(events.len(), 3);
    assert!(!has_finish(&events));
    // More events asked than there are content chunks: still cut before the finish.
    h.add_fault(json!({"route": "chat_stream", "fault": {"type": "truncate", "after_events": 99}}))
        .await;
    let events = sse_json(&stream_chat(&h, "bot", 2).await.bytes);
    assert_eq!(events.len(), 2);
    assert!(!has_finish(&events));

    // On readiness: ends before the terminal event.
    h.create(json!({"name": "w", "slug": "w", "model_name": "m", "backend": "vllm"}))
        .await;
    h.add_fault(json!({"route": "readiness", "workload": "w",
        "fault": {"type": "truncate", "after_events": 2}}))
        .await;
    let path = format!("{}/w/readiness-events", h.workloads_path());
    let reply = h.call(Method::GET, &path, Some(&h.sdk), None).await;
    let events = sse_json(&reply.bytes);
    assert_eq!(events.len(), 2);
    assert!(events.iter().all(|e| e["phase"] != "ready"));
}

#[tokio::test]
async fn truncate_after_finish_leaves_out_only_done() {
    let h = Harness::start();
    for backend in ["vllm", "llamacpp", "ollama", "sglang"] {
        h.create_ready(backend, backend, "text2text").await;
        let whole = sse_json(&stream_chat(&h, backend, 5).await.bytes);
        assert_eq!(whole.last(), Some(&json!("[DONE]")));
        h.add_fault(json!({"route": "chat_stream", "workload": backend,
            "fault": {"type": "truncate", "after_finish": true}}))
            .await;
        let cut = sse_json(&stream_chat(&h, backend, 5).await.bytes);
        assert_eq!(cut.len(), whole.len() - 1, "{backend}");
        assert!(has_finish(&cut), "{backend}");
        assert!(!cut.contains(&json!("[DONE]")), "{backend}");
    }
}

#[tokio::test]
async fn inband_errors_in_each_shape() {
    let h = Harness::start();
    h.create_ready("vllm", "vllm", "text2text").await;
    h.create_ready("llama", "llamacpp", "text2text").await;
    let fault = |workload: &str, shape: Value| {
        json!({"route": "chat_stream", "workload": workload, "fault": {"type": "inband_error",
            "after_events": 2, "shape": shape, "message": "boom"}})
    };
    h.add_fault(fault("vllm", Value::Null)).await;
    let events = sse_json(&stream_chat(&h, "vllm", 10).await.bytes);
    assert_eq!(events.len(), 4);
    assert_eq!(
        events[2],
        json!({"error": {"message": "boom", "type": "InternalServerError", "param": null, "code": 500}})
    );
    assert_eq!(events[3], "[DONE]");

    h.add_fault(fault("llama", json!("nested"))).await;
    let events = sse_json(&stream_chat(&h, "llama", 10).await.bytes);
    assert_eq!(events.len(), 3, "llama.cpp sends no [DONE] after an error");
    assert_eq!(events[2]["error"]["type"], "server_error");

    h.add_fault(fault("vllm", json!("flat"))).await;
    let events = sse_json(&stream_chat(&h, "vllm", 10).await.bytes);
    assert_eq!(events[2]["object"], "error");
    assert_eq!(events[2]["message"], "boom");

    h.add_fault(fault("llama", json!("event"))).await;
    let messages = parse_sse(&stream_chat(&h, "llama", 10).await.bytes);
    assert_eq!(messages.len(), 3);
    assert_eq!(messages[2].event.as_deref(), Some("error"));
    assert!(messages[2].data.contains("boom"));

    // Readiness: an error frame and the end, no terminal phase.
    h.create(json!({"name": "w", "slug": "w", "model_name": "m", "backend": "vllm"}))
        .await;
    h.add_fault(
        json!({"route": "readiness", "fault": {"type": "inband_error", "after_events": 1,
        "message": "control plane hiccup"}}),
    )
    .await;
    let reply = h
        .call(
            Method::GET,
            &format!("{}/w/readiness-events", h.workloads_path()),
            Some(&h.sdk),
            None,
        )
        .await;
    let events = sse_json(&reply.bytes);
    assert_eq!(events.len(), 2);
    assert_eq!(events[1]["error"]["message"], "control plane hiccup");
}

#[tokio::test]
async fn framing_variants_carry_the_same_events() {
    let h = Harness::start();
    h.create_ready("bot", "vllm", "text2text").await;
    let normal = stream_chat(&h, "bot", 30).await;
    let expected = normalized(&normal.bytes);
    let framings = [
        json!({"line_ending": "crlf"}),
        json!({"line_ending": "cr"}),
        json!({"bom": true}),
        json!({"multiline": true}),
        json!({"comments": true}),
        json!({"split_utf8": true}),
        json!({"huge_frame_bytes": 1_048_576}),
        json!({"line_ending": "crlf", "bom": true, "multiline": true, "comments": true,
               "split_utf8": true}),
    ];
    for framing in framings {
        let mut fault = framing.clone();
        fault["type"] = json!("framing");
        h.add_fault(json!({"route": "chat_stream", "fault": fault}))
            .await;
        let response = open_stream_chat(&h, "bot", 30).await;
        let mut stream = response.bytes_stream();
        let (mut bytes, mut split_inside_char) = (Vec::new(), false);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.unwrap();
            split_inside_char |= std::str::from_utf8(&chunk).is_err();
            bytes.extend_from_slice(&chunk);
        }
        assert_eq!(normalized(&bytes), expected, "{framing}");
        let raw = String::from_utf8(bytes.clone()).unwrap();
        if framing["line_ending"] == "crlf" {
            assert!(raw.contains("\r\n\r\n") && !raw.replace("\r\n", "").contains('\n'));
        }
        if framing["line_ending"] == "cr" {
            assert!(raw.contains("\r\r") && !raw.contains('\n'));
        }
        if framing["bom"] == true {
            assert!(bytes.starts_with(&[0xEF, 0xBB, 0xBF]));
        }
        if framing["multiline"] == true {
            assert!(raw.matches("data: ").count() > 3 * expected.len());
        }
        if framing["comments"] == true {
            assert!(raw.contains(": keep-alive"));
        }
        if framing["split_utf8"] == true {
            assert!(split_inside_char, "a read ended inside a UTF-8 character");
        }
        if framing.get("huge_frame_bytes").is_some() {
            let first = &sse_json(&bytes)[0];
            assert_eq!(first["x_padding"].as_str().unwrap().len(), 1_048_576);
        }
    }
}

#[tokio::test]
async fn malformed_json_and_non_sse() {
    let h = Harness::start();
    h.create_ready("bot", "sglang", "text2text").await;
    let normal = parse_sse(&stream_chat(&h, "bot", 5).await.bytes);
    h.add_fault(
        json!({"route": "chat_stream", "fault": {"type": "malformed_json", "after_events": 1}}),
    )
    .await;
    let messages = parse_sse(&stream_chat(&h, "bot", 5).await.bytes);
    assert_eq!(messages.len(), normal.len() + 1);
    assert!(serde_json::from_str::<Value>(&messages[1].data).is_err());
    assert!(messages.iter().enumerate().all(|(i, m)| i == 1
        || m.data == "[DONE]"
        || serde_json::from_str::<Value>(&m.data).is_ok()));

    h.add_fault(json!({"route": "chat_stream", "fault": {"type": "non_sse"}}))
        .await;
    let plain = stream_chat(&h, "bot", 5).await;
    assert_eq!(plain.status, 200);
    assert_eq!(plain.header("content-type").unwrap(), "application/json");
    let body = plain.json();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["choices"][0]["finish_reason"], "length");
}

#[tokio::test]
async fn race_create_makes_a_twin_first() {
    let h = Harness::start();
    h.add_fault(json!({"route": "create", "fault": {"type": "race_create"}}))
        .await;
    let created = h
        .create(json!({"name": "Twin", "slug": "twin", "model_name": "m", "backend": "vllm"}))
        .await;
    assert_eq!(created["slug"], "twin-1");
    let list = h
        .call(Method::GET, &h.workloads_path(), Some(&h.sdk), None)
        .await
        .json();
    let slugs: Vec<&Value> = list["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| &w["slug"])
        .collect();
    assert_eq!(slugs, [&json!("twin"), &json!("twin-1")]);
    let entry = h
        .journal()
        .await
        .into_iter()
        .find(|e| e["method"] == "POST")
        .unwrap();
    assert_eq!(entry["fault"], "f1");
}

#[tokio::test]
async fn probability_is_seeded_and_workload_filters_apply() {
    let pattern = |seed| async move {
        let h = Harness::with(Config {
            seed: Some(seed),
            ..Config::default()
        });
        h.add_fault(json!({"route": "list", "count": null, "probability": 0.5,
            "fault": {"type": "status", "status": 503}}))
            .await;
        let mut statuses = Vec::new();
        for _ in 0..24 {
            statuses.push(
                h.call(Method::GET, &h.workloads_path(), Some(&h.sdk), None)
                    .await
                    .status,
            );
        }
        let fired = h.admin(Method::GET, "/_local/faults", None).await.json()[0]["fired"]
            .as_u64()
            .unwrap();
        assert_eq!(
            fired as usize,
            statuses.iter().filter(|s| s.as_u16() == 503).count()
        );
        assert!((3..=21).contains(&fired), "{fired}");
        statuses
    };
    assert_eq!(pattern(3).await, pattern(3).await);

    let h = Harness::start();
    h.create_ready("a", "vllm", "text2text").await;
    h.create_ready("b", "vllm", "text2text").await;
    h.add_fault(json!({"route": "chat", "workload": "a", "count": 2,
        "fault": {"type": "status", "status": 500}}))
        .await;
    assert_eq!(h.chat("b", chat_body("x", false)).await.status, 200);
    assert_eq!(h.chat("b", chat_body("x", true)).await.status, 200);
    assert_eq!(
        h.chat("a", chat_body("x", true)).await.status,
        200,
        "chat_stream is another route"
    );
    assert_eq!(h.chat("a", chat_body("x", false)).await.status, 500);
    assert_eq!(h.chat("a", chat_body("x", false)).await.status, 500);
    assert_eq!(h.chat("a", chat_body("x", false)).await.status, 200);
    // Faults apply to the readiness route too.
    h.add_fault(
        json!({"route": "readiness", "fault": {"type": "status", "status": 503,
        "retry_after": 1}}),
    )
    .await;
    let path = format!("{}/a/readiness-events", h.workloads_path());
    let reply = h.call(Method::GET, &path, Some(&h.sdk), None).await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.header("retry-after").as_deref(), Some("1"));
}

#[tokio::test]
async fn journal_records_requests_redacted() {
    let h = Harness::start();
    let body = json!({"name": "n", "slug": "bot", "model_name": "m", "backend": "vllm",
                      "config": {"note": h.key.clone()}});
    let created = h
        .call(Method::POST, &h.workloads_path(), Some(&h.sdk), Some(&body))
        .await;
    h.call(
        Method::GET,
        &format!("{}?page=2", h.workloads_path()),
        Some(&h.sdk),
        None,
    )
    .await;
    h.admin(Method::GET, "/_local/info", None).await;
    let entries = h.journal().await;
    assert_eq!(entries.len(), 2, "admin requests are not journaled");
    let first = &entries[0];
    assert_eq!(first["seq"], 1);
    assert_eq!(first["method"], "POST");
    assert_eq!(first["path"], "/api/projects/local/workloads");
    assert_eq!(first["query"], Value::Null);
    let id8 = &h.sdk[7..15];
    assert_eq!(
        first["headers"]["authorization"],
        format!("Bearer ik_sdk_{id8}…")
    );
    assert_eq!(first["headers"]["content-type"], "application/json");
    assert!(first["headers"]
        .as_object()
        .unwrap()
        .keys()
        .all(|k| k == &k.to_lowercase()));
    assert_eq!(first["body"]["slug"], "bot");
    assert_eq!(
        first["body"]["config"]["note"],
        format!("ik_live_{}…", &h.key[8..16])
    );
    assert_eq!(first["status"], 201);
    assert_eq!(first["outcome"], "ok");
    assert_eq!(first["bytes_sent"], created.bytes.len());
    assert_eq!(first["client_disconnected"], false);
    assert_eq!(first["fault"], Value::Null);
    assert!(first["started_ms"].is_u64() && first["duration_ms"].is_u64());
    assert_eq!(entries[1]["query"], "page=2");
    assert_eq!(entries[1]["body"], Value::Null);
    let text = serde_json::to_string(&entries).unwrap();
    assert!(!text.contains(&h.sdk) && !text.contains(&h.key));

    assert_eq!(
        h.admin(Method::DELETE, "/_local/journal", None)
            .await
            .status,
        204
    );
    assert_eq!(h.journal().await, Vec::<Value>::new());
}

#[tokio::test]
async fn journal_tracks_streams_and_disconnects() {
    let h = Harness::start();
    h.create_ready("bot", "vllm", "text2text").await;
    h.admin(Method::DELETE, "/_local/journal", None).await;
    let complete = stream_chat(&h, "bot", 4).await;
    let entries = h.journal().await;
    assert_eq!(entries[0]["outcome"], "ok");
    assert_eq!(entries[0]["bytes_sent"], complete.bytes.len());

    h.set_settings("bot", json!({"itl_ms": 100})).await;
    let mut body = chat_body("slow", true);
    body["max_tokens"] = json!(30);
    let response = h.chat_request("bot", &body).send().await.unwrap();
    let mut stream = response.bytes_stream();
    stream.next().await.unwrap().unwrap();
    drop(stream);
    let entries = h
        .journal_until(|e| e.len() == 2 && e[1]["outcome"] == "client_disconnected")
        .await;
    let gone = &entries[1];
    assert_eq!(gone["client_disconnected"], true);
    assert_eq!(gone["status"], 200);
    assert!(gone["bytes_sent"].as_u64().unwrap() > 0);
    assert!(gone["bytes_sent"].as_u64().unwrap() < 2000);
}

async fn settings(h: &Harness, slug: &str) -> Reply {
    let path = format!("/_local/projects/local/workloads/{slug}/settings");
    h.admin(Method::GET, &path, None).await
}

async fn put(h: &Harness, slug: &str, body: Value) -> u16 {
    let path = format!("/_local/projects/local/workloads/{slug}/settings");
    h.admin(Method::PUT, &path, Some(&body))
        .await
        .status
        .as_u16()
}

#[tokio::test]
async fn admin_api() {
    let h = Harness::start();
    for token in [None, Some(h.sdk.as_str()), Some("ik_admin_00000000_x")] {
        let reply = h.call(Method::GET, "/_local/info", token, None).await;
        assert_eq!(reply.status, 401);
        assert_eq!(reply.error().0, "unauthorized");
    }
    let info = h.admin(Method::GET, "/_local/info", None).await.json();
    assert_eq!(info, serde_json::to_value(h.lp.info()).unwrap());

    for (bad, status) in [
        (json!({"kind": "root"}), 400),
        (
            json!({"kind": "sdk", "scopes": ["workload:everything"]}),
            400,
        ),
        (json!({"kind": "sdk", "project": "missing"}), 404),
        (json!({"kind": "live", "workload": 5}), 400),
    ] {
        assert_eq!(
            h.admin(Method::POST, "/_local/tokens", Some(&bad))
                .await
                .status,
            status,
            "{bad}"
        );
    }
    let live = h
        .add_token(json!({"kind": "live", "workload": "Support Bot"}))
        .await;
    assert!(live.starts_with("ik_live_") && live.len() == 8 + 8 + 1 + 64);
    assert_eq!(
        h.admin(
            Method::POST,
            "/_local/projects",
            Some(&json!({"slug": "!!"}))
        )
        .await
        .status,
        400
    );

    // Defaults apply to workloads created afterwards; per-workload settings are readable.
    h.create(json!({"name": "before", "slug": "before", "model_name": "m", "backend": "vllm"}))
        .await;
    h.set_defaults(json!({"embedding_dim": 8, "itl_ms": 5}))
        .await;
    h.create(json!({"name": "after", "slug": "after", "model_name": "m", "backend": "vllm"}))
        .await;
    assert_eq!(
        settings(&h, "before").await.json(),
        json!({"readiness": "fast", "error_message": "CUDA out of memory", "ttft_ms": 0,
               "itl_ms": 0, "embedding_dim": 64, "bench": false, "include_usage": null})
    );
    assert_eq!(settings(&h, "after").await.json()["embedding_dim"], 8);
    assert_eq!(settings(&h, "nope").await.status, 404);
    assert_eq!(put(&h, "nope", json!({"bench": true})).await, 404);
    assert_eq!(
        put(&h, "after", json!({"readiness": "sometimes"})).await,
        400
    );
    assert_eq!(put(&h, "after", json!({"colour": "red"})).await, 400);
    assert_eq!(
        h.admin(
            Method::PUT,
            "/_local/defaults",
            Some(&json!({"ttft_ms": "x"}))
        )
        .await
        .status,
        400
    );

    // Reset: back to a fresh platform; the ready-line tokens stay valid.
    h.admin(
        Method::POST,
        "/_local/projects",
        Some(&json!({"slug": "other"})),
    )
    .await;
    let extra = h.add_token(json!({"kind": "sdk"})).await;
    h.add_fault(json!({"route": "list", "fault": {"type": "status", "status": 500}}))
        .await;
    assert_eq!(
        h.admin(Method::POST, "/_local/reset", None).await.status,
        204
    );
    assert_eq!(
        h.admin(Method::GET, "/_local/faults", None).await.json(),
        json!([])
    );
    assert_eq!(h.journal().await, Vec::<Value>::new());
    let list = h
        .call(Method::GET, &h.workloads_path(), Some(&h.sdk), None)
        .await;
    assert_eq!(
        (list.status.as_u16(), list.json()),
        (200, json!({"workloads": []}))
    );
    assert_eq!(
        h.call(Method::GET, &h.workloads_path(), Some(&extra), None)
            .await
            .status,
        401
    );
    assert_eq!(
        h.admin(
            Method::POST,
            "/_local/projects",
            Some(&json!({"slug": "other"}))
        )
        .await
        .status,
        201
    );
    h.create(json!({"name": "x", "slug": "x", "model_name": "m", "backend": "vllm"}))
        .await;
    assert_eq!(
        settings(&h, "x").await.json()["embedding_dim"],
        64,
        "defaults were reset"
    );
    let fault_id = h
        .add_fault(json!({"route": "list", "fault": {"type": "status", "status": 500}}))
        .await;
    assert_eq!(fault_id, "f1");
}

/// Reads `response` until more than `bytes` came; drops it (the client goes away).
async fn read_then_leave(response: reqwest::Response, bytes: usize) -> Vec<u8> {
    let mut stream = response.bytes_stream();
    let mut read = Vec::new();
    while read.len() <= bytes {
        let chunk = stream
            .next()
            .await
            .expect("the endless line ended")
            .unwrap();
        read.extend_from_slice(&chunk);
    }
    read
}

/// The journal entry of the last request on `path`, once it is final.
async fn final_entry(h: &Harness, path: &str) -> Value {
    let entries = h
        .journal_until(|entries| {
            entries
                .iter()
                .rev()
                .find(|e| e["path"] == path)
                .is_some_and(|e| e["outcome"] != "in_progress")
        })
        .await;
    entries
        .into_iter()
        .rev()
        .find(|e| e["path"] == path)
        .unwrap()
}

/// `endless_line`: after the head and `after_events` events, `data: ` and a line that never ends,
/// as fast as the client reads; when the client gives up, the server lets go at once.
#[tokio::test]
async fn endless_line_runs_until_the_client_goes_away() {
    const MIB: usize = 1024 * 1024;
    let h = Harness::start();
    h.create_ready("bot", "vllm", "text2text").await;
    let id = h
        .add_fault(json!({"route": "chat_stream",
            "fault": {"type": "endless_line", "after_events": 2}}))
        .await;
    let response = open_stream_chat(&h, "bot", 8).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let read = read_then_leave(response, 4 * MIB).await;
    // Two whole events (the role chunk, the first token), then the line.
    let text = String::from_utf8(read).unwrap();
    let mut parts = text.splitn(3, "\n\n");
    for _ in 0..2 {
        let event = parts.next().unwrap();
        let json = event.strip_prefix("data: ").unwrap();
        assert!(serde_json::from_str::<Value>(json).is_ok(), "{event}");
    }
    let line = parts.next().unwrap().strip_prefix("data: ").unwrap();
    assert!(line.len() > 4 * MIB - 1000);
    assert!(line.bytes().all(|b| b == b'x'), "only x, never a newline");

    // The entry ends as soon as the client is gone, having sent little more than was read (the
    // socket buffers' worth), and then stays put: nothing is written any more.
    let path = h.data_path("bot", "chat/completions");
    let entry = final_entry(&h, &path).await;
    assert_eq!(entry["outcome"], "client_disconnected");
    assert_eq!(entry["fault"], id.as_str());
    let sent = entry["bytes_sent"].as_u64().unwrap();
    assert!((4 * MIB as u64..68 * MIB as u64).contains(&sent), "{sent}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(final_entry(&h, &path).await["bytes_sent"], sent);

    // Readiness, `after_events` defaulting to 0: the line starts right after the head, even on
    // a workload that would never send another event.
    h.create(json!({"name": "w", "slug": "w", "model_name": "m", "backend": "vllm"}))
        .await;
    h.set_settings("w", json!({"readiness": "stuck"})).await;
    h.add_fault(json!({"route": "readiness", "fault": {"type": "endless_line"}}))
        .await;
    let path = format!("{}/w/readiness-events", h.workloads_path());
    let response = h
        .request(Method::GET, &path, Some(&h.sdk), None)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let read = read_then_leave(response, 2 * MIB).await;
    assert!(read.starts_with(b"data: xxxx"));
    assert!(read[6..].iter().all(|b| *b == b'x'));
    let entry = final_entry(&h, &path).await;
    assert_eq!(entry["outcome"], "client_disconnected");

    // Each rule fired once; the next streams are whole.
    let reply = stream_chat(&h, "bot", 3).await;
    assert!(has_finish(&sse_json(&reply.bytes)));
}
