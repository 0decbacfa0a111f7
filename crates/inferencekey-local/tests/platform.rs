//! Start-up, the binary's ready line and signals, several instances, `--state-dir` restarts, and
//! robustness against bad input (malformed JSON, huge bodies, unknown routes, Origin headers).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{read, temp_dir, Harness};
use inferencekey_local::{Config, LocalError, LocalPlatform};
use reqwest::Method;
use serde_json::{json, Value};

fn assert_token_shape(token: &str, prefix: &str) {
    let rest = token.strip_prefix(prefix).unwrap();
    let (id, secret) = rest.split_once('_').unwrap();
    assert_eq!((id.len(), secret.len()), (8, 64), "{token}");
    assert!(id
        .chars()
        .chain(secret.chars())
        .all(|c| c.is_ascii_hexdigit()));
}

// SIGTERM is sent with kill(1): Unix only.
#[cfg(unix)]
#[tokio::test]
async fn binary_prints_the_ready_line_and_stops_on_sigterm() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_inferencekey-local"))
        .args(["--port", "0", "--seed", "5", "--project", "Acme Corp"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().take(5) {
            let _ = tx.send(line.unwrap());
        }
    });
    let lines: Vec<String> = (0..5)
        .map(|_| rx.recv_timeout(Duration::from_secs(10)).unwrap())
        .collect();
    let ready: Value = serde_json::from_str(&lines[0]).unwrap();
    let url = ready["url"].as_str().unwrap();
    assert!(url.starts_with("http://127.0.0.1:"));
    assert_eq!(ready["project"], "acme-corp");
    assert_token_shape(ready["sdk_token"].as_str().unwrap(), "ik_sdk_");
    assert_token_shape(ready["api_key"].as_str().unwrap(), "ik_live_");
    assert!(ready["admin_token"]
        .as_str()
        .unwrap()
        .starts_with("ik_admin_"));
    assert_eq!(lines[1], format!("export INFERENCEKEY_BASE_URL={url}"));
    assert_eq!(lines[2], "export INFERENCEKEY_PROJECT=acme-corp");
    assert_eq!(
        lines[3],
        format!(
            "export INFERENCEKEY_SDK_TOKEN={}",
            ready["sdk_token"].as_str().unwrap()
        )
    );
    assert_eq!(
        lines[4],
        format!(
            "export INFERENCEKEY_API_KEY={}",
            ready["api_key"].as_str().unwrap()
        )
    );

    // The same seed gives the same tokens in process, and the text is identical.
    let same = LocalPlatform::start(Config {
        seed: Some(5),
        project: "acme-corp".to_string(),
        ..Config::default()
    })
    .unwrap();
    assert_eq!(same.info().sdk_token, ready["sdk_token"]);
    assert_eq!(same.info().api_key, ready["api_key"]);
    let text = same.info().ready_text().replace(&same.info().url, url);
    assert_eq!(text, lines.join("\n") + "\n");
    same.stop();

    let info = reqwest::Client::new()
        .get(format!("{url}/_local/info"))
        .bearer_auth(ready["admin_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(read(info).await.json(), ready);

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "the binary did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "{exit:?}");
}

#[test]
fn binary_rejects_bad_arguments() {
    let output = Command::new(env!("CARGO_BIN_EXE_inferencekey-local"))
        .args(["--port", "banana"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("invalid port"));
    let remote = Command::new(env!("CARGO_BIN_EXE_inferencekey-local"))
        .args(["--host", "0.0.0.0"])
        .output()
        .unwrap();
    assert_eq!(remote.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&remote.stderr).contains("--allow-remote"));
}

#[test]
fn start_refuses_remote_hosts_and_blank_projects() {
    let remote = LocalPlatform::start(Config {
        host: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        ..Config::default()
    });
    assert!(matches!(remote, Err(LocalError::RemoteNotAllowed(_))));
    let blank = LocalPlatform::start(Config {
        project: " !! ".to_string(),
        ..Config::default()
    });
    assert!(matches!(blank, Err(LocalError::InvalidProject(_))));
}

#[tokio::test]
async fn starts_serving_and_instances_are_independent() {
    // `start` returns once the platform listens: the very first request is answered, no retry.
    // (How fast it starts is for benches/, not a test on a machine of unknown load.)
    let a = Harness::start();
    let info = a.admin(Method::GET, "/_local/info", None).await;
    assert_eq!(info.status, 200);
    let b = Harness::with(Config {
        seed: Some(1),
        ..Config::default()
    });
    assert_ne!(a.url, b.url);
    assert_ne!(a.sdk, b.sdk);
    a.create_ready("only-in-a", "vllm", "text2text").await;
    let list_b = b
        .call(Method::GET, &b.workloads_path(), Some(&b.sdk), None)
        .await;
    assert_eq!(list_b.json(), json!({"workloads": []}));
    // A token of one instance means nothing to the other.
    let cross = b
        .call(Method::GET, &b.workloads_path(), Some(&a.sdk), None)
        .await;
    assert_eq!(cross.status, 401);

    let url = a.url.clone();
    a.lp.stop();
    let after = reqwest::Client::new()
        .get(format!("{url}/_local/info"))
        .send()
        .await;
    assert!(after.is_err(), "the stopped instance still answers");
    let still = b.admin(Method::GET, "/_local/info", None).await;
    assert_eq!(still.status, 200);
}

#[test]
fn the_handle_can_be_shared_across_threads() {
    // The Python binding keeps it in a pyclass, which must be Send + Sync.
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<LocalPlatform>();
}

#[tokio::test]
async fn serves_http2_with_prior_knowledge() {
    let h = Harness::start();
    h.create_ready("bot", "vllm", "text2text").await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let response = h2
        .post(format!(
            "{}{}",
            h.url,
            h.data_path("bot", "chat/completions")
        ))
        .bearer_auth(&h.key)
        .body(common::chat_body("hi", true).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    let reply = read(response).await;
    assert_eq!(reply.status, 200);
    assert_eq!(common::sse_json(&reply.bytes).last().unwrap(), "[DONE]");
    let entries = h.journal().await;
    assert_eq!(entries.last().unwrap()["outcome"], "ok");
}

#[tokio::test]
async fn state_dir_keeps_workloads_and_tokens_across_restarts() {
    let dir = temp_dir("state");
    let config = Config {
        state_dir: Some(dir.clone()),
        seed: Some(11),
        ..Config::default()
    };
    let first = Harness::with(config.clone());
    let workload = first
        .create(
            json!({"name": "Keep Me", "slug": "keep-me", "model_name": "m",
                       "backend": "vllm", "config": {"max_model_len": 8192}}),
        )
        .await;
    let project = first
        .admin(
            Method::POST,
            "/_local/projects",
            Some(&json!({"slug": "other"})),
        )
        .await
        .json();
    let reader = first
        .add_token(json!({"kind": "sdk", "project": "other", "scopes": ["workload:read"]}))
        .await;
    first
        .set_settings("keep-me", json!({"embedding_dim": 8}))
        .await;
    let old_sdk = first.sdk.clone();
    first.lp.stop();
    assert!(dir.join("state.json").exists());
    assert!(!dir.join("state.json.tmp").exists());

    // Same seed: same ready-line tokens, the workload, the project and the extra token are back.
    let second = Harness::with(config.clone());
    assert_eq!(second.sdk, old_sdk);
    let list = second
        .call(
            Method::GET,
            &second.workloads_path(),
            Some(&second.sdk),
            None,
        )
        .await
        .json();
    assert_eq!(list["workloads"][0], workload);
    let other = second
        .call(
            Method::GET,
            "/api/projects/other/workloads",
            Some(&reader),
            None,
        )
        .await;
    assert_eq!(other.status, 200);
    let again = second
        .admin(
            Method::POST,
            "/_local/projects",
            Some(&json!({"slug": "other"})),
        )
        .await;
    assert_eq!(again.status, 409);
    let settings = second
        .admin(
            Method::GET,
            "/_local/projects/local/workloads/keep-me/settings",
            None,
        )
        .await
        .json();
    assert_eq!(settings["embedding_dim"], 8);
    // New ids do not collide with restored ones.
    let fresh = second
        .create(json!({"name": "n", "slug": "fresh", "model_name": "m", "backend": "vllm"}))
        .await;
    assert_ne!(fresh["id"], workload["id"]);
    assert_eq!(project["slug"], "other");
    second.lp.stop();

    // Another seed: new ready-line tokens, and the persisted old ones still work.
    let third = Harness::with(Config {
        seed: Some(12),
        ..config
    });
    assert_ne!(third.sdk, old_sdk);
    let with_old = third
        .call(Method::GET, &third.workloads_path(), Some(&old_sdk), None)
        .await;
    assert_eq!(with_old.json()["workloads"].as_array().unwrap().len(), 2);
    third.lp.stop();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Without `--seed` every install has its own tokens (the ready line's and the minted ones), from
/// the OS's random generator; the synthetic replies stay those of seed 0.
#[tokio::test]
async fn tokens_are_random_without_a_seed() {
    let a = Harness::start();
    let b = Harness::start();
    let zero = Harness::with(Config {
        seed: Some(0),
        ..Config::default()
    });
    for other in [&b, &zero] {
        assert_ne!(a.sdk, other.sdk);
        assert_ne!(a.key, other.key);
        assert_ne!(a.admin, other.admin);
    }
    assert_token_shape(&a.sdk, "ik_sdk_");
    assert_token_shape(&a.key, "ik_live_");
    assert_token_shape(&a.admin, "ik_admin_");
    let spec = json!({"kind": "live", "workload": "bot"});
    let (minted_a, minted_b) = (a.add_token(spec.clone()).await, b.add_token(spec).await);
    assert_ne!(minted_a, minted_b);
    assert_token_shape(&minted_a, "ik_live_");
    // A seeded platform still mints the same tokens as another with its seed.
    let zero_again = Harness::with(Config {
        seed: Some(0),
        ..Config::default()
    });
    assert_eq!(zero.sdk, zero_again.sdk);
    let spec = json!({"kind": "sdk"});
    assert_eq!(
        zero.add_token(spec.clone()).await,
        zero_again.add_token(spec).await
    );
    // Same prompt, same reply, with or without a seed of 0.
    let mut texts = Vec::new();
    for h in [&a, &b, &zero] {
        h.create_ready("bot", "vllm", "text2text").await;
        let reply = h.chat("bot", common::chat_body("hello there", false)).await;
        assert_eq!(reply.status, 200);
        texts.push(reply.json()["choices"][0]["message"]["content"].clone());
    }
    assert!(texts.iter().all(|t| *t == texts[0]), "{texts:?}");
}

/// Without `--seed`, a platform restarted on the same state directory keeps the ready-line
/// tokens it had (the admin token too); `--seed N` replaces them with N's, and the next run
/// without a seed keeps those.
#[tokio::test]
async fn state_dir_keeps_random_tokens_across_restarts() {
    let dir = temp_dir("random-tokens");
    let config = Config {
        state_dir: Some(dir.clone()),
        ..Config::default()
    };
    let first = Harness::with(config.clone());
    let minted = first.add_token(json!({"kind": "sdk"})).await;
    let tokens = (first.sdk.clone(), first.key.clone(), first.admin.clone());
    first.lp.stop();

    let second = Harness::with(config.clone());
    assert_eq!(
        (second.sdk.clone(), second.key.clone(), second.admin.clone()),
        tokens
    );
    let list = second
        .call(Method::GET, &second.workloads_path(), Some(&minted), None)
        .await;
    assert_eq!(list.status, 200);
    second.lp.stop();

    let seeded = Harness::with(Config {
        seed: Some(3),
        ..config.clone()
    });
    let derived = LocalPlatform::start(Config {
        seed: Some(3),
        ..Config::default()
    })
    .unwrap();
    assert_eq!(seeded.sdk, derived.info().sdk_token);
    assert_eq!(seeded.admin, derived.info().admin_token);
    derived.stop();
    // The earlier data credentials stay valid, as tokens minted under another seed do.
    let old = seeded
        .call(Method::GET, &seeded.workloads_path(), Some(&tokens.0), None)
        .await;
    assert_eq!(old.status, 200);
    let seeded_tokens = (seeded.sdk.clone(), seeded.admin.clone());
    seeded.lp.stop();

    let after = Harness::with(config);
    assert_eq!((after.sdk.clone(), after.admin.clone()), seeded_tokens);
    after.lp.stop();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn bad_state_file_is_a_clear_error() {
    let dir = std::env::temp_dir().join(format!("inferencekey-local-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("state.json"), b"{not json").unwrap();
    let started = LocalPlatform::start(Config {
        state_dir: Some(dir.clone()),
        ..Config::default()
    });
    assert!(matches!(started, Err(LocalError::State { .. })));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn bad_input_never_crashes_the_server() {
    let h = Harness::start();
    let path = h.workloads_path();
    let raw = |body: &'static [u8]| {
        h.request(Method::POST, &path, Some(&h.sdk), None)
            .header("content-type", "application/json")
            .body(body)
    };
    for body in [&b"{not json"[..], b"[1, 2]", b"\"text\"", b"", b"\xff\xfe"] {
        let reply = read(raw(body).send().await.unwrap()).await;
        assert_eq!(reply.status, 400, "{body:?}");
        assert_eq!(reply.error().0, "validation_error");
    }
    // Unknown fields are ignored.
    let ok = h
        .create(
            json!({"name": "n", "slug": "s", "model_name": "m", "backend": "vllm",
                       "surprise": {"deep": [1, 2, 3]}}),
        )
        .await;
    assert!(ok.get("surprise").is_none());

    let huge = vec![b' '; 5 * 1024 * 1024];
    let reply = read(
        h.request(Method::POST, &path, Some(&h.sdk), None)
            .body(huge)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, 413);
    assert_eq!(reply.error().0, "payload_too_large");
    // Without a Content-Length (chunked upload) the limit holds while reading.
    let chunks =
        futures_util::stream::iter((0..80).map(|_| Ok::<_, std::io::Error>(vec![b' '; 64 * 1024])));
    let chunked = read(
        h.request(Method::POST, &path, Some(&h.sdk), None)
            .body(reqwest::Body::wrap_stream(chunks))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(chunked.status, 413);

    let unknown = h.call(Method::GET, "/nowhere/at/all", None, None).await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.error().0, "not_found");
    let method = h.call(Method::PUT, &path, Some(&h.sdk), None).await;
    assert_eq!(method.status, 405);
    assert_eq!(method.error().0, "method_not_allowed");
    let bad_utf8 = h
        .call(
            Method::GET,
            "/api/projects/%FF/workloads",
            Some(&h.sdk),
            None,
        )
        .await;
    assert_eq!(bad_utf8.status, 400);
    assert_eq!(bad_utf8.error().0, "validation_error");

    // Still serving.
    let list = h.call(Method::GET, &path, Some(&h.sdk), None).await;
    assert_eq!(list.status, 200);
}

#[tokio::test]
async fn origin_header_is_refused_everywhere() {
    let h = Harness::start();
    h.create_ready("bot", "vllm", "text2text").await;
    let routes = [
        (Method::GET, h.workloads_path(), h.sdk.clone()),
        (
            Method::POST,
            h.data_path("bot", "chat/completions"),
            h.key.clone(),
        ),
        (Method::GET, "/_local/info".to_string(), h.admin.clone()),
        (Method::GET, "/nowhere".to_string(), h.admin.clone()),
    ];
    for (method, path, token) in routes {
        let reply = read(
            h.request(
                method,
                &path,
                Some(&token),
                Some(&common::chat_body("hi", false)),
            )
            .header("origin", "https://evil.example")
            .send()
            .await
            .unwrap(),
        )
        .await;
        assert_eq!(reply.status, 403, "{path}");
        assert_eq!(reply.error().0, "origin_forbidden");
        assert!(reply.header("access-control-allow-origin").is_none());
    }
}
