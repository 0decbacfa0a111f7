//! Adversarial checks of fidelity and robustness: tokens never echoed or journaled, resource
//! limits instead of unbounded allocations, signals right after the ready line, the state file.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{chat_body, read, Harness};
use inferencekey_local::Config;
use reqwest::Method;
use serde_json::{json, Value};

/// Starts the binary, reads its ready line, and at once sends `signal`: it must exit 0.
#[cfg(unix)]
fn signal_right_after_ready(signal: &str) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_inferencekey-local"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert!(line.starts_with("{\"url\""), "{line}");
    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(Instant::now() < deadline, "no exit after {signal}");
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(exit.code(), Some(0), "{signal}: {exit:?}");
}

/// A signal sent the moment the ready line is read is handled (exit 0), never the default
/// action: the handlers are installed before the line is printed. Unix signals, sent with kill(1).
#[cfg(unix)]
#[test]
fn signals_right_after_the_ready_line_exit_cleanly() {
    for _ in 0..8 {
        signal_right_after_ready("-TERM");
        signal_right_after_ready("-INT");
    }
}

fn no_full_token(h: &Harness, text: &str) {
    for token in [&h.sdk, &h.key, &h.admin] {
        assert!(!text.contains(token.as_str()), "full token in {text}");
    }
}

/// A token put where it does not belong (path, query, incoming request id) is never echoed in a
/// response nor kept in the journal.
#[tokio::test]
async fn tokens_in_paths_and_queries_are_never_echoed_or_journaled() {
    let h = Harness::start();
    h.create_ready("bot", "vllm", "text2text").await;
    let probes = [
        (
            Method::GET,
            format!("/nowhere/{}", h.sdk),
            Some(h.sdk.clone()),
        ),
        (
            Method::GET,
            format!("{}?token={}", h.workloads_path(), h.sdk),
            Some(h.sdk.clone()),
        ),
        (
            Method::POST,
            h.data_path(&h.key, "chat/completions"),
            Some(h.key.clone()),
        ),
        (
            Method::PATCH,
            format!("/api/workloads/{}", h.sdk),
            Some(h.sdk.clone()),
        ),
        (
            Method::GET,
            format!("{}/{}/readiness-events", h.workloads_path(), h.key),
            Some(h.sdk.clone()),
        ),
    ];
    for (method, path, token) in probes {
        let reply = h
            .call(method, &path, token.as_deref(), Some(&json!({})))
            .await;
        no_full_token(&h, &reply.text());
    }
    // vLLM honours an incoming X-Request-Id in the completion id: not a token, though.
    let reply = read(
        h.chat_request("bot", &chat_body("hi", false))
            .header("x-request-id", h.sdk.clone())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, 200);
    no_full_token(&h, &reply.text());
    let journal = h.admin(Method::GET, "/_local/journal", None).await;
    no_full_token(&h, &journal.text());
    let entries = journal.json();
    assert!(entries
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["query"].as_str().is_some_and(|q| q.contains("ik_sdk_"))));
}

/// An embeddings request whose reply would not fit in memory is a 400 in the engine's shape, and
/// the server keeps serving.
#[tokio::test]
async fn embeddings_too_large_a_reply_is_refused() {
    let h = Harness::start();
    h.create_ready("emb", "vllm", "embedding").await;
    let inputs: Vec<Value> = (0..300_000).map(|_| json!("")).collect();
    let reply = read(
        h.request(
            Method::POST,
            &h.data_path("emb", "embeddings"),
            Some(&h.key),
            Some(&json!({"model": "emb", "input": inputs})),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(
        reply.status,
        400,
        "{}",
        &reply.text()[..200.min(reply.text().len())]
    );
    assert_eq!(reply.json()["object"], "error");
    assert!(reply.json()["message"].as_str().unwrap().contains("input"));
    let ok = h
        .call(
            Method::POST,
            &h.data_path("emb", "embeddings"),
            Some(&h.key),
            Some(&json!({"model": "emb", "input": ["a", "b"]})),
        )
        .await;
    assert_eq!(ok.status, 200);
}

/// In bench mode a non-stream reply of an absurd `max_tokens` is refused instead of built.
#[tokio::test]
async fn bench_non_stream_reply_is_bounded() {
    let h = Harness::start();
    h.create_ready("bot", "llamacpp", "text2text").await;
    h.set_settings("bot", json!({"bench": true})).await;
    let mut body = chat_body("hi", false);
    body["max_tokens"] = json!(1_000_000_000_000u64);
    let reply = h.chat("bot", body).await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json()["error"]["code"], 400);
    let mut body = chat_body("hi", false);
    body["max_tokens"] = json!(1000);
    let reply = h.chat("bot", body).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["usage"]["completion_tokens"], 1000);
}

/// The state file holds full tokens: it is private to the user, and no temp file is left.
#[cfg(unix)]
#[tokio::test]
async fn state_file_is_private_and_complete() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = std::env::temp_dir().join(format!("ik-local-audit-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let h = Harness::with(Config {
        state_dir: Some(dir.clone()),
        ..Config::default()
    });
    h.create_ready("bot", "vllm", "text2text").await;
    let mode = std::fs::metadata(dir.join("state.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "state.json mode {mode:o}");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["state.json", "state.lock"]);
    h.lp.stop();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Two creates of the same slug at once end with two distinct slugs (`bot`, `bot-1`).
#[tokio::test]
async fn concurrent_creates_deduplicate() {
    let h = Harness::start();
    let body = json!({"name": "Bot", "slug": "Bot", "model_name": "m", "backend": "vllm"});
    let (a, b) = tokio::join!(h.create(body.clone()), h.create(body.clone()));
    let mut slugs = [a["slug"].clone(), b["slug"].clone()];
    slugs.sort_by_key(|s| s.to_string());
    assert_eq!(slugs, [json!("bot"), json!("bot-1")]);
}

/// Percent-encoded path segments (the SDK encodes every segment) reach the same workload.
#[tokio::test]
async fn percent_encoded_segments() {
    let h = Harness::start();
    h.create_ready("support-bot", "vllm", "text2text").await;
    let path = format!(
        "/api/projects/{}/workloads/support%2Dbot/readiness-events",
        h.project
    );
    let reply = h.call(Method::GET, &path, Some(&h.sdk), None).await;
    assert_eq!(reply.status, 200);
    assert!(reply.text().contains("\"ready\""));
    let chat = h
        .call(
            Method::POST,
            &format!("/endpoint/{}/support%2Dbot/v1/chat/completions", h.project),
            Some(&h.key),
            Some(&chat_body("hi", false)),
        )
        .await;
    assert_eq!(chat.status, 200);
}
