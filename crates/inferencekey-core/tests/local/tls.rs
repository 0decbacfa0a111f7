//! TLS against the local platform's HTTPS: trust through verify=, and what an untrusted, expired or wrong-host
//! certificate and a missing client certificate give (plain words, never retried).

use std::path::PathBuf;

use inferencekey_core::net::{ClientCert, Verify};
use inferencekey_core::{ErrorKind, ManagementClient, TransportOptions};
use inferencekey_local::pki::LeafKind;
use inferencekey_local::{Config, LocalPlatform, Tls};

fn platform(tls: Tls, client_ca: Option<PathBuf>) -> LocalPlatform {
    LocalPlatform::start(Config {
        tls,
        tls_client_ca: client_ca,
        ..Config::default()
    })
    .expect("local platform starts")
}

fn mgmt(lp: &LocalPlatform, verify: Verify, cert: Option<ClientCert>) -> ManagementClient {
    let info = lp.info();
    let options = TransportOptions {
        max_retries: 3,
        ..TransportOptions::default()
    }
    .with_network(verify, cert, None)
    .unwrap();
    ManagementClient::new(
        Some(&info.url),
        Some(&info.sdk_token),
        Some(&info.project),
        options,
    )
    .unwrap()
}

fn ca(lp: &LocalPlatform) -> Verify {
    Verify::Bundle(PathBuf::from(lp.info().ca_path.clone().unwrap()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_through_verify_and_refused_without() {
    let lp = platform(Tls::generate(), None);
    assert!(lp.info().url.starts_with("https://"));
    assert!(mgmt(&lp, ca(&lp), None)
        .list(None)
        .await
        .unwrap()
        .is_empty());
    let err = mgmt(&lp, Verify::Default, None)
        .list(None)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Connection);
    assert!(err.message.contains("is not trusted"), "{}", err.message);
    assert!(
        err.message.contains("SSL_CERT_FILE") && err.message.contains("verify="),
        "{}",
        err.message
    );
    assert!(mgmt(&lp, Verify::Off, None).list(None).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_and_wrong_host_certificates_are_named() {
    for (leaf, words) in [
        (LeafKind::Expired, "has expired"),
        (LeafKind::WrongHost, "not valid for that name"),
    ] {
        let lp = platform(Tls::Generate { leaf }, None);
        let err = mgmt(&lp, ca(&lp), None).list(None).await.unwrap_err();
        assert!(err.message.contains(words), "{leaf:?}: {}", err.message);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_for_mutual_tls() {
    let dir = std::env::temp_dir().join(format!("ik-mtls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let certs =
        inferencekey_local::pki::generate_client("t", inferencekey_local::pki::DEFAULT_VALIDITY)
            .unwrap();
    for (name, pem) in [
        ("ca.pem", &certs.ca_pem),
        ("c.pem", &certs.cert_pem),
        ("c.key", &certs.key_pem),
    ] {
        std::fs::write(dir.join(name), pem).unwrap();
    }
    let lp = platform(Tls::generate(), Some(dir.join("ca.pem")));
    let cert = ClientCert {
        cert: dir.join("c.pem"),
        key: Some(dir.join("c.key")),
    };
    assert!(mgmt(&lp, ca(&lp), Some(cert)).list(None).await.is_ok());
    // Refused without one. Under TLS 1.3 the server's refusal comes after the client's side of the handshake: when
    // its alert reaches the client, the message names the fix; otherwise the connection just closes.
    let err = mgmt(&lp, ca(&lp), None).list(None).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Connection, "{}", err.message);
    let named = err.message.contains("client certificate") && err.message.contains("cert=");
    let closed = err
        .message
        .contains("if the server requires a client certificate, pass it with cert=");
    assert!(named || closed, "{}", err.message);
    std::fs::remove_dir_all(&dir).unwrap();
}
