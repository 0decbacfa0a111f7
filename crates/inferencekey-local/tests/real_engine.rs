//! Spawn mode against a real llama-server (`make engine` builds it and fetches the model): real
//! readiness phases, the data plane proxied, a bad model file, an engine killed after `ready`, and
//! no process left behind. The engine comes from `INFERENCEKEY_TEST_LLAMA_SERVER` (set by
//! `make test`) or the cache `scripts/build_engine.sh` fills; without one these tests fail, unless
//! `INFERENCEKEY_SKIP_ENGINE=1` skips them explicitly (they say so on stderr).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{sse_json, Harness};
use inferencekey_local::{Config, EngineConfig};
use reqwest::Method;
use serde_json::{json, Value};

const MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// The tests count the engines running: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The engine and model, or `None` when the run explicitly skips real-engine tests.
fn engine() -> Option<(PathBuf, PathBuf)> {
    if std::env::var("INFERENCEKEY_SKIP_ENGINE").as_deref() == Ok("1") {
        eprintln!("SKIPPED (INFERENCEKEY_SKIP_ENGINE=1): real-engine test");
        return None;
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let binary = std::env::var_os("INFERENCEKEY_TEST_LLAMA_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let out = std::process::Command::new(root.join("scripts/build_engine.sh"))
                .arg("--print-path")
                .output()
                .unwrap();
            PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
        });
    assert!(
        binary.is_file(),
        "no llama-server at {}: run `make engine` (or set INFERENCEKEY_SKIP_ENGINE=1 to skip)",
        binary.display()
    );
    let cache = std::env::var_os("INFERENCEKEY_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/inferencekey")
        });
    let model = cache.join("models").join(MODEL_FILE);
    assert!(
        model.is_file(),
        "no model at {}: run `make engine`",
        model.display()
    );
    Some((binary, model))
}

fn platform(binary: PathBuf) -> Harness {
    Harness::with(Config {
        engines: EngineConfig {
            llama_server: Some(binary),
            ready_timeout_ms: 60_000,
            ..EngineConfig::default()
        },
        ..Config::default()
    })
}

/// Process ids of running engines started with `binary`.
fn engines_running(binary: &std::path::Path) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // A zombie (state Z) is gone already, only not yet reaped by its parent.
        let zombie = stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
        let arg0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
        if !zombie && arg0 == binary.as_os_str().as_encoded_bytes() {
            pids.push(pid);
        }
    }
    pids
}

async fn phases(h: &Harness, slug: &str) -> Vec<Value> {
    let path = format!("{}/{slug}/readiness-events", h.workloads_path());
    let reply = h.call(Method::GET, &path, Some(&h.sdk), None).await;
    sse_json(&reply.bytes)
}

async fn create(h: &Harness, slug: &str, model: &str, task: &str) -> Value {
    h.create(
        json!({"name": slug, "slug": slug, "model_name": model, "backend": "llamacpp",
        "task_type": task}),
    )
    .await
}

#[tokio::test]
async fn a_real_engine_serves_a_llamacpp_workload_and_stops_with_it() {
    let Some((binary, model)) = engine() else {
        return;
    };
    let _serial = SERIAL.lock().await;
    let h = platform(binary.clone());
    let started = Instant::now();
    let workload = create(&h, "smol", model.to_str().unwrap(), "text2text").await;
    // The stream opened at once sees the real phases, the engine's log lines as messages.
    let events = phases(&h, "smol").await;
    let ready_ms = started.elapsed().as_millis();
    let names: Vec<&str> = events
        .iter()
        .map(|e| e["phase"].as_str().unwrap())
        .collect();
    assert_eq!(names.last(), Some(&"ready"), "{events:?}");
    assert!(names.contains(&"bootstrapping"), "{events:?}");
    assert!(
        events
            .iter()
            .any(|e| e["step"] == "model_load" && e["message"].as_str().unwrap().contains("load")),
        "{events:?}"
    );
    eprintln!("engine ready {ready_ms} ms after create; phases {names:?}");

    let reply = h
        .chat(
            "smol",
            json!({"model": "anything", "messages": [{"role": "user", "content": "Say hi"}],
                "max_tokens": 8}),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["model"], "smol");
    assert_eq!(body["system_fingerprint"], "b0-unknown");
    assert!(!body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .is_empty());
    assert_eq!(body["timings"].as_object().unwrap().len(), 9);

    let reply = h
        .chat(
            "smol",
            json!({"messages": [{"role": "user", "content": "Count"}], "max_tokens": 4,
                "stream": true, "stream_options": {"include_usage": true}}),
        )
        .await;
    let frames = sse_json(&reply.bytes);
    assert_eq!(frames.last().unwrap(), "[DONE]");
    let usage = &frames[frames.len() - 2];
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 4);

    // The engine is reachable only through the platform: its key is not the client's.
    let journal = h.journal().await;
    assert!(journal.iter().all(|e| e["status"] != 401));
    assert_eq!(engines_running(&binary).len(), 1);

    let path = format!("/api/workloads/{}", workload["id"].as_str().unwrap());
    let reply = h.call(Method::DELETE, &path, Some(&h.sdk), None).await;
    assert_eq!(reply.status, 204);
    assert!(
        engines_running(&binary).is_empty(),
        "an engine survived delete"
    );
}

#[tokio::test]
async fn a_bad_model_file_and_a_killed_engine_give_error() {
    let Some((binary, model)) = engine() else {
        return;
    };
    let _serial = SERIAL.lock().await;
    let dir = common::temp_dir("bad-model");
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("broken.gguf");
    std::fs::write(&bad, b"not a gguf file at all").unwrap();
    let h = platform(binary.clone());
    create(&h, "broken", bad.to_str().unwrap(), "text2text").await;
    let events = phases(&h, "broken").await;
    let last = events.last().unwrap();
    assert_eq!(last["phase"], "error", "{events:?}");
    let message = last["message"].as_str().unwrap();
    assert!(message.contains("exited with code 1"), "{message}");
    assert!(
        message.contains("gguf") || message.contains("model"),
        "{message}"
    );

    create(&h, "missing", "/nonexistent/model.gguf", "text2text").await;
    let events = phases(&h, "missing").await;
    assert_eq!(events.last().unwrap()["phase"], "error");

    // An engine killed after `ready` turns its workload to `error`.
    create(&h, "victim", model.to_str().unwrap(), "text2text").await;
    let events = phases(&h, "victim").await;
    assert_eq!(events.last().unwrap()["phase"], "ready", "{events:?}");
    let pids = engines_running(&binary);
    assert_eq!(pids.len(), 1);
    std::process::Command::new("kill")
        .args(["-KILL", &pids[0].to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let events = phases(&h, "victim").await;
        let last = events.last().unwrap().clone();
        if last["phase"] == "error" {
            assert!(
                last["message"]
                    .as_str()
                    .unwrap()
                    .contains("after it was ready"),
                "{last}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "still {last}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let reply = h
        .chat(
            "victim",
            json!({"messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(reply.status, 503);
    drop(h);
    assert!(engines_running(&binary).is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}
