//! HTTPS over real sockets on 127.0.0.1: HTTP/1.1 and HTTP/2 (by ALPN) with the generated CA,
//! clients that must refuse (no CA, expired leaf, wrong host), mutual TLS, given certificate
//! files, where the CA is written, and the binary's ready line with `--tls`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{read, temp_dir};
use inferencekey_local::pki::{self, LeafKind};
use inferencekey_local::{Config, LocalError, LocalPlatform, Tls};
use reqwest::{Certificate, Client, ClientBuilder, Identity, StatusCode, Version};
use serde_json::Value;

/// A client that trusts only what it is given (no built-in roots).
fn builder() -> ClientBuilder {
    Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .timeout(Duration::from_secs(20))
}

/// A client that trusts only the CA in the PEM file at `ca_path`.
fn trusting(ca_path: &Path) -> ClientBuilder {
    let pem = std::fs::read(ca_path).unwrap();
    builder().add_root_certificate(Certificate::from_pem(&pem).unwrap())
}

fn start(tls: Tls) -> LocalPlatform {
    LocalPlatform::start(Config {
        tls,
        ..Config::default()
    })
    .unwrap()
}

fn ca_path(lp: &LocalPlatform) -> PathBuf {
    PathBuf::from(
        lp.info()
            .ca_path
            .clone()
            .expect("a generated CA has a path"),
    )
}

/// `GET /_local/info` with the admin token: (status, HTTP version).
async fn info(client: &Client, url: &str, lp: &LocalPlatform) -> reqwest::Result<(u16, Version)> {
    let response = client
        .get(format!("{url}/_local/info"))
        .bearer_auth(&lp.info().admin_token)
        .send()
        .await?;
    let version = response.version();
    Ok((response.status().as_u16(), version))
}

/// The whole chain of causes of an error, for matching what the TLS layer said.
fn causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = format!("{error:?}");
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!(" / {cause:?}"));
        source = cause.source();
    }
    text
}

#[tokio::test]
async fn http1_and_http2_by_alpn_with_the_generated_ca() {
    let lp = start(Tls::generate());
    let url = lp.info().url.clone();
    let port = lp.local_addr().port();
    assert_eq!(url, format!("https://127.0.0.1:{port}"));
    let ca = ca_path(&lp);
    assert_eq!(ca.file_name().unwrap(), "ca.pem");
    let pem = std::fs::read_to_string(&ca).unwrap();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));

    // ALPN offers h2 first: a client that speaks both gets HTTP/2 (no prior knowledge needed).
    let both = trusting(&ca).build().unwrap();
    assert_eq!(
        info(&both, &url, &lp).await.unwrap(),
        (200, Version::HTTP_2)
    );
    let h1 = trusting(&ca).http1_only().build().unwrap();
    assert_eq!(info(&h1, &url, &lp).await.unwrap(), (200, Version::HTTP_11));
    // The leaf names `localhost` too (the listener is IPv4, so `[::1]` is not tried here).
    let by_name = format!("https://localhost:{port}");
    assert_eq!(info(&both, &by_name, &lp).await.unwrap().0, 200);
    // `/_local/info` repeats the ready line, `ca_path` included.
    let body = both
        .get(format!("{url}/_local/info"))
        .bearer_auth(&lp.info().admin_token)
        .send()
        .await
        .unwrap();
    let body = read(body).await.json();
    assert_eq!(body["url"], url.as_str());
    assert_eq!(body["ca_path"], ca.to_str().unwrap());

    // The Host check still holds over TLS, on HTTP/1.1 and on HTTP/2 (`:authority`).
    let refused = h1
        .get(format!("{url}/_local/info"))
        .header("host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let body = read(refused).await.json();
    assert_eq!(body["error"]["code"], "host_forbidden");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("https://127.0.0.1:{port}")),
        "{message}"
    );
    let wrong_port = both
        .get(format!("{url}/_local/info"))
        .header("host", "127.0.0.1:1")
        .version(Version::HTTP_2)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_port.version(), Version::HTTP_2);
    assert_eq!(wrong_port.status(), StatusCode::FORBIDDEN);

    // Plain HTTP on the TLS port gets no answer.
    let plain = builder().build().unwrap();
    assert!(info(&plain, &format!("http://127.0.0.1:{port}"), &lp)
        .await
        .is_err());

    // The temporary directory of the CA lives as long as the platform.
    let dir = ca.parent().unwrap().to_path_buf();
    lp.stop();
    assert!(!dir.exists(), "{} was left behind", dir.display());
}

#[tokio::test]
async fn a_client_without_the_ca_is_refused() {
    let lp = start(Tls::generate());
    let url = lp.info().url.clone();
    let error = info(&builder().build().unwrap(), &url, &lp)
        .await
        .unwrap_err();
    let text = causes(&error);
    assert!(text.contains("UnknownIssuer"), "{text}");
    // Another platform's CA does not help either: every start makes a new one.
    let other = start(Tls::generate());
    let wrong_ca = trusting(&ca_path(&other)).build().unwrap();
    assert!(info(&wrong_ca, &url, &lp).await.is_err());
}

#[tokio::test]
async fn expired_and_wrong_host_leaves_are_refused() {
    for (leaf, expected) in [
        (LeafKind::Expired, "Expired"),
        (LeafKind::WrongHost, "NotValidForName"),
    ] {
        let lp = start(Tls::Generate { leaf });
        let url = lp.info().url.clone();
        let verifying = trusting(&ca_path(&lp)).build().unwrap();
        let error = info(&verifying, &url, &lp).await.unwrap_err();
        let text = causes(&error);
        assert!(text.contains(expected), "{leaf:?}: {text}");
        // The server itself is fine: a client that skips verification gets through.
        let careless = builder().danger_accept_invalid_certs(true).build().unwrap();
        assert_eq!(info(&careless, &url, &lp).await.unwrap().0, 200);
    }
}

#[tokio::test]
async fn mutual_tls_requires_a_client_certificate_from_the_client_ca() {
    let dir = temp_dir("mtls");
    std::fs::create_dir_all(&dir).unwrap();
    let client = pki::generate_client("sdk-tests", pki::DEFAULT_VALIDITY).unwrap();
    let client_ca = dir.join("client-ca.pem");
    std::fs::write(&client_ca, &client.ca_pem).unwrap();
    let lp = LocalPlatform::start(Config {
        tls: Tls::generate(),
        tls_client_ca: Some(client_ca),
        ..Config::default()
    })
    .unwrap();
    let url = lp.info().url.clone();
    let ca = ca_path(&lp);

    let identity = Identity::from_pem(client.identity_pem().as_bytes()).unwrap();
    for http1 in [false, true] {
        let mut with_cert = trusting(&ca).identity(identity.clone());
        if http1 {
            with_cert = with_cert.http1_only();
        }
        assert_eq!(
            info(&with_cert.build().unwrap(), &url, &lp)
                .await
                .unwrap()
                .0,
            200
        );
    }
    let without = trusting(&ca).build().unwrap();
    assert!(info(&without, &url, &lp).await.is_err());
    // A client certificate from another CA is refused too.
    let stranger = pki::generate_client("stranger", pki::DEFAULT_VALIDITY).unwrap();
    let with_stranger = trusting(&ca)
        .identity(Identity::from_pem(stranger.identity_pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    assert!(info(&with_stranger, &url, &lp).await.is_err());
    // One CA can issue several client certificates.
    let authority = pki::Authority::new("team CA", pki::DEFAULT_VALIDITY).unwrap();
    let a = authority.issue_client("a", pki::DEFAULT_VALIDITY).unwrap();
    let b = authority.issue_client("b", pki::DEFAULT_VALIDITY).unwrap();
    assert_eq!(a.ca_pem, b.ca_pem);
    assert_ne!(a.cert_pem, b.cert_pem);
    lp.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn given_certificate_files_and_the_state_dir() {
    let dir = temp_dir("tls-files");
    std::fs::create_dir_all(&dir).unwrap();
    let certs = pki::generate(&pki::LOOPBACK_HOSTS, pki::DEFAULT_VALIDITY).unwrap();
    let (cert, key, ca) = (
        dir.join("cert.pem"),
        dir.join("key.pem"),
        dir.join("ca.pem"),
    );
    std::fs::write(&cert, &certs.chain_pem).unwrap();
    std::fs::write(&key, &certs.key_pem).unwrap();
    std::fs::write(&ca, &certs.ca_pem).unwrap();
    let lp = start(Tls::Files {
        cert: cert.clone(),
        key: key.clone(),
    });
    assert!(lp.info().url.starts_with("https://127.0.0.1:"));
    // Given files: nothing generated, nothing to name.
    assert_eq!(lp.info().ca_path, None);
    let client = trusting(&ca).build().unwrap();
    let url = lp.info().url.clone();
    assert_eq!(info(&client, &url, &lp).await.unwrap().0, 200);
    lp.stop();

    // With a state directory the generated CA is written there, and kept after stop.
    let state = dir.join("state");
    let lp = LocalPlatform::start(Config {
        tls: Tls::generate(),
        state_dir: Some(state.clone()),
        ..Config::default()
    })
    .unwrap();
    assert_eq!(ca_path(&lp), state.join("ca.pem"));
    let client = trusting(&state.join("ca.pem")).build().unwrap();
    let url = lp.info().url.clone();
    assert_eq!(info(&client, &url, &lp).await.unwrap().0, 200);
    lp.stop();
    assert!(state.join("ca.pem").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_tls_configuration_is_a_start_error() {
    let dir = temp_dir("tls-bad");
    std::fs::create_dir_all(&dir).unwrap();
    let missing = dir.join("missing.pem");
    let not_pem = dir.join("not.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    let attempts = [
        Config {
            tls_client_ca: Some(not_pem.clone()),
            ..Config::default()
        },
        Config {
            tls: Tls::Files {
                cert: missing.clone(),
                key: missing.clone(),
            },
            ..Config::default()
        },
        Config {
            tls: Tls::Files {
                cert: not_pem.clone(),
                key: not_pem.clone(),
            },
            ..Config::default()
        },
        Config {
            tls: Tls::generate(),
            tls_client_ca: Some(not_pem.clone()),
            ..Config::default()
        },
    ];
    for config in attempts {
        match LocalPlatform::start(config) {
            Err(LocalError::Tls(message)) => assert!(!message.is_empty()),
            other => panic!("expected a TLS error, got {other:?}"),
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The binary's five lines, read within 10 s.
fn ready_lines(args: &[&str]) -> (std::process::Child, Vec<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_inferencekey-local"))
        .args(args)
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
    let lines = (0..5)
        .map(|_| rx.recv_timeout(Duration::from_secs(10)).unwrap())
        .collect();
    (child, lines)
}

fn keys(line: &str) -> Vec<String> {
    let ready: serde_json::Map<String, Value> = serde_json::from_str(line).unwrap();
    ready.keys().cloned().collect()
}

/// Stops the binary with SIGTERM, as a user's Ctrl+C would, and waits for it.
#[cfg(unix)]
fn terminate(mut child: std::process::Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(child.wait().unwrap().success());
}

// SIGTERM is sent with kill(1): Unix only.
#[cfg(unix)]
#[tokio::test]
async fn the_binary_ready_line_with_and_without_tls() {
    let (child, lines) = ready_lines(&["--tls", "--seed", "3"]);
    let ready: Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(
        keys(&lines[0]),
        [
            "url",
            "project",
            "sdk_token",
            "api_key",
            "admin_token",
            "ca_path"
        ]
    );
    let url = ready["url"].as_str().unwrap();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    assert_eq!(lines[1], format!("export INFERENCEKEY_BASE_URL={url}"));
    let ca = PathBuf::from(ready["ca_path"].as_str().unwrap());
    let client = trusting(&ca).build().unwrap();
    let response = client
        .get(format!("{url}/_local/info"))
        .bearer_auth(ready["admin_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), Version::HTTP_2);
    assert_eq!(read(response).await.json(), ready);
    terminate(child);
    assert!(!ca.exists(), "{} outlived the binary", ca.display());

    // Plain mode: the same five keys as always, no `ca_path`, an http URL.
    let (child, lines) = ready_lines(&["--seed", "3"]);
    assert_eq!(
        keys(&lines[0]),
        ["url", "project", "sdk_token", "api_key", "admin_token"]
    );
    assert!(lines[0].starts_with("{\"url\":\"http://127.0.0.1:"));
    terminate(child);
}
