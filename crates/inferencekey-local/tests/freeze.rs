//! A frozen server sends every readiness stage it slept through: the platform binary is stopped
//! (SIGSTOP) right after the snapshot, across several transitions, then resumed. Unix only: it
//! needs job-control signals.
#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::StreamExt as _;
use serde_json::{json, Value};

/// The platform binary, stopped and reaped when the test ends, whatever happens.
struct Platform {
    child: Child,
    info: Value,
}

impl Platform {
    fn start() -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_inferencekey-local"))
            .args(["--port", "0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let info = serde_json::from_str(&line).unwrap();
        Self { child, info }
    }

    fn field(&self, name: &str) -> &str {
        self.info[name].as_str().unwrap()
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([name, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {name} failed");
    }
}

impl Drop for Platform {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `realistic` timeline: (phase/step, ms the stage begins at).
const REALISTIC: [(&str, u64); 6] = [
    ("scheduling", 0),
    ("provisioning", 600),
    ("bootstrapping/image_pull", 1200),
    ("bootstrapping/model_download", 2200),
    ("bootstrapping/model_load", 3600),
    ("ready", 5000),
];

fn label(event: &Value) -> String {
    let phase = event["phase"].as_str().unwrap();
    match event.get("step").and_then(Value::as_str) {
        Some(step) => format!("{phase}/{step}"),
        None => phase.to_string(),
    }
}

#[tokio::test]
async fn a_frozen_server_sends_every_stage_it_slept_through() {
    let platform = Platform::start();
    let url = platform.field("url").to_string();
    let project = platform.field("project").to_string();
    let client = reqwest::Client::new();
    let admin = platform.field("admin_token").to_string();
    let sdk = platform.field("sdk_token").to_string();

    let defaults = client
        .put(format!("{url}/_local/defaults"))
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .body(json!({"readiness": "realistic"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(defaults.status(), 204);
    let workloads = format!("{url}/api/projects/{project}/workloads");
    let created = client
        .post(&workloads)
        .bearer_auth(&sdk)
        .header("content-type", "application/json")
        .body(
            json!({"name": "bot", "slug": "bot", "model_name": "m", "backend": "vllm"}).to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);

    let response = client
        .get(format!("{workloads}/bot/readiness-events"))
        .bearer_auth(&sdk)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let mut bytes = Vec::new();
    // Read up to the end of the snapshot event.
    while !bytes.windows(2).any(|w| w == b"\n\n") {
        bytes.extend_from_slice(&body.next().await.unwrap().unwrap());
    }
    let snapshot = common::sse_json(&bytes);
    assert_eq!(snapshot.len(), 1, "{snapshot:?}");
    let first = REALISTIC
        .iter()
        .position(|(name, _)| *name == label(&snapshot[0]))
        .unwrap();
    // The freeze must span several transitions for the test to mean anything.
    assert!(first <= 1, "the snapshot came too late: {snapshot:?}");

    platform.signal("-STOP");
    tokio::time::sleep(Duration::from_secs(3)).await;
    platform.signal("-CONT");

    let rest = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(chunk) = body.next().await {
            bytes.extend_from_slice(&chunk.unwrap());
        }
    })
    .await;
    assert!(rest.is_ok(), "the stream did not end after ready");
    let events = common::sse_json(&bytes);
    let got: Vec<(String, u64)> = events[1..]
        .iter()
        .map(|e| (label(e), e["elapsed_ms"].as_u64().unwrap()))
        .collect();
    let expected: Vec<(String, u64)> = REALISTIC[first + 1..]
        .iter()
        .map(|(name, at)| ((*name).to_string(), *at))
        .collect();
    // Every stage after the snapshot, in order, stamped with the moment it began.
    assert_eq!(got, expected);
}
