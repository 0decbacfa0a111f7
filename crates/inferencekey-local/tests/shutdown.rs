//! Clean shutdown: `stop()` with streams open returns promptly, releases the port, ends the open
//! streams and leaves no platform thread behind. Alone in its binary so the thread count is exact.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::{chat_body, Harness};
use futures_util::StreamExt as _;
use reqwest::Method;
use serde_json::json;

/// Names of this process's threads that belong to a local platform.
fn platform_threads() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .map(|tasks| {
            tasks
                .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
                .map(|name| name.trim().to_string())
                .filter(|name| name.starts_with("inferencekey"))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn stop_with_open_streams_is_prompt_and_complete() {
    let h = Harness::start();
    assert!(!platform_threads().is_empty() || !cfg!(target_os = "linux"));
    h.create_ready("bot", "vllm", "text2text").await;
    h.set_settings("bot", json!({"ttft_ms": 600_000})).await;
    h.set_defaults(json!({"readiness": "stuck"})).await;
    h.create(json!({"name": "s", "slug": "stuck", "model_name": "m", "backend": "vllm"}))
        .await;
    // A chat stream waiting for its first token and a readiness stream on a stuck workload.
    let chat = h
        .chat_request("bot", &chat_body("hi", true))
        .send()
        .await
        .unwrap();
    assert_eq!(chat.status(), 200);
    let readiness = h
        .request(
            Method::GET,
            &format!("{}/stuck/readiness-events", h.workloads_path()),
            Some(&h.sdk),
            None,
        )
        .send()
        .await
        .unwrap();
    let mut events = readiness.bytes_stream();
    events.next().await.unwrap().unwrap();
    let mut chat = chat.bytes_stream();

    let addr = h.url.trim_start_matches("http://").to_string();
    let begun = Instant::now();
    h.lp.stop();
    let took = begun.elapsed();
    // Waiting for either stream would take ten minutes or forever: 30 s only catches that, not a
    // slow machine.
    assert!(took < Duration::from_secs(30), "stop took {took:?}");
    // The port is free again at once.
    std::net::TcpListener::bind(&addr).unwrap();
    // Both streams end (abruptly) instead of hanging.
    for stream in [
        &mut chat as &mut (dyn futures_util::Stream<Item = _> + Unpin),
        &mut events,
    ] {
        // A hang guard: a stream stop() left open would never end.
        let ended = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(Ok(_)) = stream.next().await {}
        })
        .await;
        assert!(ended.is_ok(), "a stream outlived stop()");
    }
    if cfg!(target_os = "linux") {
        assert_eq!(platform_threads(), Vec::<String>::new());
    }
}
