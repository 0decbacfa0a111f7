//! Hardening over real sockets: the Host check against DNS rebinding, the `--allow-remote`
//! warning, the state-directory lock.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;

use common::{read, temp_dir, Harness};
use inferencekey_local::{Config, LocalError, LocalPlatform};
use reqwest::Method;
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// The platform's socket address.
fn addr(h: &Harness) -> SocketAddr {
    h.url.strip_prefix("http://").unwrap().parse().unwrap()
}

/// Sends `head` (request line and headers, without the blank line) on a new connection that
/// closes after the answer; returns the status and the body as JSON (`Null` when not JSON).
async fn raw(addr: SocketAddr, head: &str) -> (u16, Value, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("{head}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let text = String::from_utf8_lossy(&answer).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text:?}"));
    let body = text.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    // A body sent with chunked encoding: keep the JSON between the first `{` and the last `}`.
    let json = match (body.find('{'), body.rfind('}')) {
        (Some(start), Some(end)) => serde_json::from_str(&body[start..=end]).unwrap_or(Value::Null),
        _ => Value::Null,
    };
    (status, json, text)
}

fn assert_host_forbidden(status: u16, body: &Value, raw: &str) {
    assert_eq!(status, 403, "{raw}");
    assert_eq!(body["error"]["code"], "host_forbidden", "{raw}");
}

/// A web page on a name that its attacker points at 127.0.0.1 (DNS rebinding) sends that name as
/// the Host: it must read nothing, not even the admin API's token list, on any route.
#[tokio::test]
async fn foreign_host_names_are_refused_before_anything_else() {
    let h = Harness::start();
    let addr = addr(&h);
    let port = addr.port();
    h.create_ready("bot", "vllm", "text2text").await;
    let info = format!(
        "GET /_local/info HTTP/1.1\r\nAuthorization: Bearer {}",
        h.admin
    );
    for host in [
        "evil.example".to_string(),
        format!("evil.example:{port}"),
        format!("127.0.0.1:{}", port.wrapping_add(1)),
        "127.0.0.1".to_string(),
        "localhost".to_string(),
        format!("0.0.0.0:{port}"),
        format!("localhost.evil.example:{port}"),
    ] {
        let (status, body, text) = raw(addr, &format!("{info}\r\nHost: {host}")).await;
        assert_host_forbidden(status, &body, &text);
        assert!(!text.contains(&h.admin) && !text.contains(&h.sdk), "{text}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("http://127.0.0.1:{port}")),
            "{message}"
        );
    }
    // Before authentication (no 401 that would tell a token is needed), on every plane.
    let chat = h.data_path("bot", "chat/completions");
    for head in [
        format!("GET {} HTTP/1.1", h.workloads_path()),
        format!("POST {chat} HTTP/1.1\r\nContent-Length: 0"),
        "GET /_local/journal HTTP/1.1".to_string(),
        "GET /nowhere HTTP/1.1".to_string(),
    ] {
        let (status, body, text) = raw(addr, &format!("{head}\r\nHost: evil.example:{port}")).await;
        assert_host_forbidden(status, &body, &text);
    }
    // The absolute form names the host in the request line: it counts, whatever Host says.
    let absolute = format!(
        "GET http://evil.example:{port}/_local/info HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
         Authorization: Bearer {}",
        h.admin
    );
    let (status, body, text) = raw(addr, &absolute).await;
    assert_host_forbidden(status, &body, &text);
    // Two Host headers: both must be ours.
    let twice = format!("{info}\r\nHost: 127.0.0.1:{port}\r\nHost: evil.example");
    let (status, body, text) = raw(addr, &twice).await;
    assert_host_forbidden(status, &body, &text);
    // The refused data-plane request is journaled like any other.
    let entries = h.journal().await;
    assert!(entries
        .iter()
        .any(|e| e["path"] == chat.as_str() && e["status"] == 403));
}

#[tokio::test]
async fn loopback_names_with_the_platform_port_are_served() {
    let h = Harness::start();
    let addr = addr(&h);
    let port = addr.port();
    let info = format!(
        "GET /_local/info HTTP/1.1\r\nAuthorization: Bearer {}",
        h.admin
    );
    for host in [
        format!("127.0.0.1:{port}"),
        format!("127.3.2.1:{port}"),
        format!("localhost:{port}"),
        format!("LOCALHOST:{port}"),
        format!("[::1]:{port}"),
    ] {
        let (status, body, text) = raw(addr, &format!("{info}\r\nHost: {host}")).await;
        assert_eq!(status, 200, "{host}: {text}");
        assert_eq!(body["admin_token"], h.admin.as_str());
    }
    // HTTP/1.0 with no Host at all cannot come from a browser: served.
    let (status, body, text) = raw(
        addr,
        &format!(
            "GET /_local/info HTTP/1.0\r\nAuthorization: Bearer {}",
            h.admin
        ),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(body["url"], h.url.as_str());
}

/// What a rebinding browser does, with a real client: the name resolves to the platform's address,
/// and the request carries it as `Host` (HTTP/1.1) or `:authority` (HTTP/2).
#[tokio::test]
async fn a_rebound_name_is_refused_over_http1_and_http2_and_localhost_is_served() {
    let h = Harness::start();
    let addr = addr(&h);
    let port = addr.port();
    for http2 in [false, true] {
        let builder = reqwest::Client::builder()
            .resolve("evil.example", addr)
            .resolve("localhost", addr);
        let client = if http2 {
            builder.http2_prior_knowledge()
        } else {
            builder.http1_only()
        }
        .build()
        .unwrap();
        for (host, expected) in [
            ("evil.example", 403),
            ("localhost", 200),
            ("127.0.0.1", 200),
        ] {
            let response = client
                .get(format!("http://{host}:{port}/_local/info"))
                .bearer_auth(&h.admin)
                .send()
                .await
                .unwrap();
            let version = response.version();
            let reply = read(response).await;
            assert_eq!(reply.status, expected, "{host} over {version:?}");
            assert_eq!(version == reqwest::Version::HTTP_2, http2);
            if expected == 403 {
                assert_eq!(reply.error().0, "host_forbidden");
                assert!(!reply.text().contains(&h.admin));
            }
        }
    }
}

/// `--allow-remote` turns the check off: whoever reaches the port may use any name.
#[tokio::test]
async fn allow_remote_accepts_any_host() {
    let h = Harness::with(Config {
        allow_remote: true,
        ..Config::default()
    });
    let addr = addr(&h);
    let (status, _, text) = raw(
        addr,
        &format!(
            "GET {} HTTP/1.1\r\nHost: platform.example\r\nAuthorization: Bearer {}",
            h.workloads_path(),
            h.sdk
        ),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let reply = h
        .call(Method::GET, &h.workloads_path(), Some(&h.sdk), None)
        .await;
    assert_eq!(reply.status, 200);
}

/// Starts the binary with `args`, waits for its ready line, kills it and returns its stderr.
fn binary_stderr(args: &[&str]) -> String {
    use std::io::{BufRead as _, BufReader, Read as _};
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_inferencekey-local"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    assert!(ready.starts_with("{\"url\":"), "{ready:?}");
    child.kill().unwrap();
    child.wait().unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    stderr
}

/// `--allow-remote` says loudly on stderr what it exposes; a loopback-only platform says nothing.
#[test]
fn allow_remote_warns_on_stderr() {
    let warned = binary_stderr(&["--port", "0", "--allow-remote"]);
    for needed in [
        "WARNING: --allow-remote: listening on 127.0.0.1:",
        "Host check off",
        "admin API under /_local/",
        "GET /_local/info hands out every token",
        "control plane",
        "data plane",
    ] {
        assert!(warned.contains(needed), "{needed:?} missing from {warned}");
    }
    assert!(!warned.contains("--seed"));
    let seeded = binary_stderr(&["--port", "0", "--allow-remote", "--seed", "3"]);
    assert!(
        seeded.contains("--seed makes the tokens predictable"),
        "{seeded}"
    );
    let quiet = binary_stderr(&["--port", "0"]);
    assert_eq!(quiet, "");
}

/// Two platforms on one state directory would overwrite each other's writes: the second one
/// (in process or the binary) fails to start, naming the directory, until the first one stops.
#[tokio::test]
async fn a_state_dir_serves_one_platform_at_a_time() {
    let dir = temp_dir("lock");
    let config = Config {
        state_dir: Some(dir.clone()),
        ..Config::default()
    };
    let first = Harness::with(config.clone());
    first.create_ready("kept", "vllm", "text2text").await;
    let before = std::fs::read(dir.join("state.json")).unwrap();

    let second = LocalPlatform::start(config.clone());
    let Err(error) = second else {
        panic!("a second platform started on a locked state directory");
    };
    let message = error.to_string();
    assert!(
        matches!(&error, LocalError::StateDirInUse { dir: d, .. } if *d == dir),
        "{error:?}"
    );
    assert!(message.contains(&dir.display().to_string()), "{message}");
    assert!(
        message.contains("in use by another running local platform"),
        "{message}"
    );
    if cfg!(unix) {
        assert!(
            message.contains(&format!("(pid {})", std::process::id())),
            "{message}"
        );
    }
    assert!(!message.contains('\n'));
    // The refused platform wrote nothing; the first one still serves and owns the file.
    assert_eq!(std::fs::read(dir.join("state.json")).unwrap(), before);
    let list = first
        .call(Method::GET, &first.workloads_path(), Some(&first.sdk), None)
        .await;
    assert_eq!(list.json()["workloads"][0]["slug"], "kept");

    // The binary: exit code 1 and one line on stderr that names the directory.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_inferencekey-local"))
        .args(["--port", "0", "--state-dir"])
        .arg(&dir)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("inferencekey-local: state directory ")
            && stderr.contains(&dir.display().to_string())
            && stderr.contains("in use"),
        "{stderr}"
    );

    // Released on stop: the next platform starts and finds the first one's state.
    first.lp.stop();
    let next = Harness::with(config);
    let list = next
        .call(Method::GET, &next.workloads_path(), Some(&next.sdk), None)
        .await;
    assert_eq!(list.json()["workloads"][0]["slug"], "kept");
    next.lp.stop();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Every token check compares whole tokens (in constant time: see `auth::same_secret`): a guess
/// that gets all but one character right, the id right, or the token with something added, is
/// as wrong as any other.
#[tokio::test]
async fn near_miss_tokens_are_refused_on_every_plane() {
    let h = Harness::start();
    h.create_ready("bot", "vllm", "text2text").await;
    let chat = h.data_path("bot", "chat/completions");
    let body = common::chat_body("hi", false);
    let near_misses = |token: &str| {
        let (head, last) = token.split_at(token.len() - 1);
        let flipped = if last == "0" { "1" } else { "0" };
        let (public, _) = token.rsplit_once('_').unwrap();
        vec![
            format!("{head}{flipped}"),
            head.to_string(),
            format!("{token}0"),
            format!("{public}_{}", "0".repeat(64)),
            public.to_string(),
            token.to_uppercase(),
        ]
    };
    for guess in near_misses(&h.admin) {
        let reply = h
            .call(Method::GET, "/_local/info", Some(&guess), None)
            .await;
        assert_eq!(reply.status, 401, "{guess}");
    }
    for guess in near_misses(&h.sdk) {
        let reply = h
            .call(Method::GET, &h.workloads_path(), Some(&guess), None)
            .await;
        assert_eq!(reply.status, 401, "{guess}");
    }
    for guess in near_misses(&h.key) {
        let reply = h.call(Method::POST, &chat, Some(&guess), Some(&body)).await;
        assert_eq!(reply.status, 401, "{guess}");
    }
    // The real ones still work, minted ones too.
    let minted = h.add_token(serde_json::json!({"kind": "live"})).await;
    for key in [&h.key, &minted] {
        let reply = h.call(Method::POST, &chat, Some(key), Some(&body)).await;
        assert_eq!(reply.status, 200);
    }
    let reply = h
        .call(Method::GET, &h.workloads_path(), Some(&h.sdk), None)
        .await;
    assert_eq!(reply.status, 200);
}
