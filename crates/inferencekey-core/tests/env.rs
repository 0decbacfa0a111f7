//! Environment resolution (explicit > environment > default) of both clients, and the project fallback at
//! call time. One test function, because the environment is shared by the whole test process.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use inferencekey_core::{
    DataClient, ErrorKind, ManagementClient, OnDrift, TransportOptions, WorkloadSpec,
    DEFAULT_BASE_URL,
};
use inferencekey_local::{Config, LocalPlatform};

const VARS: [&str; 4] = [
    "INFERENCEKEY_BASE_URL",
    "INFERENCEKEY_PROJECT",
    "INFERENCEKEY_SDK_TOKEN",
    "INFERENCEKEY_API_KEY",
];

fn spec() -> WorkloadSpec {
    WorkloadSpec {
        name: "env".into(),
        slug: "env".into(),
        model: "m".into(),
        backend: "vllm".into(),
        ..WorkloadSpec::default()
    }
}

#[tokio::test]
async fn environment_resolution() {
    for var in VARS {
        std::env::remove_var(var);
    }
    let options = TransportOptions::default;

    // Nothing configured: the token is the first thing missing.
    let err = ManagementClient::from_env(None, None, None, options()).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Configuration);
    assert_eq!(
        err.message,
        "configuration error: no sdk_token: pass sdk_token= or set INFERENCEKEY_SDK_TOKEN"
    );
    let err = DataClient::from_env(None, None, None, options()).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Configuration);

    let local = LocalPlatform::start(Config::default()).unwrap();
    let info = local.info();

    // Blank environment values count as unset; the base URL defaults.
    std::env::set_var("INFERENCEKEY_SDK_TOKEN", format!("  {}  ", info.sdk_token));
    std::env::set_var("INFERENCEKEY_BASE_URL", "   ");
    let mgmt = ManagementClient::from_env(None, None, None, options()).unwrap();
    assert_eq!(mgmt.base_url(), DEFAULT_BASE_URL);
    assert_eq!(mgmt.project(), None);

    // The environment fills what is not passed; explicit values win; trailing slashes go.
    std::env::set_var("INFERENCEKEY_BASE_URL", format!("{}/", info.url));
    let mgmt = ManagementClient::from_env(None, None, Some(" "), options()).unwrap();
    assert_eq!(mgmt.base_url(), info.url);
    let explicit =
        ManagementClient::from_env(Some("http://127.0.0.1:1"), None, Some("mine"), options())
            .unwrap();
    assert_eq!(explicit.base_url(), "http://127.0.0.1:1");
    assert_eq!(explicit.project(), Some("mine"));

    // A data key in the token variable is refused in the constructor.
    std::env::set_var("INFERENCEKEY_SDK_TOKEN", &info.api_key);
    let err = ManagementClient::from_env(None, None, None, options()).unwrap_err();
    assert_eq!(err.kind, ErrorKind::PermissionDenied);
    assert_eq!(err.code.as_deref(), Some("wrong_credential_type"));
    std::env::set_var("INFERENCEKEY_SDK_TOKEN", &info.sdk_token);

    // No project anywhere: the documented message, and nothing sent.
    let err = mgmt
        .ensure(&spec(), OnDrift::Reconcile, None)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Configuration);
    assert_eq!(
        err.message,
        "No project configured. Set INFERENCEKEY_PROJECT, pass project=, or set spec.project."
    );
    assert_eq!(
        mgmt.delete("env", None).await.unwrap_err().message,
        err.message
    );
    assert!(mgmt
        .watch_readiness("env", None, std::time::Duration::from_secs(1))
        .is_err());

    // INFERENCEKEY_PROJECT is read at call time, after the client was made.
    std::env::set_var("INFERENCEKEY_PROJECT", &info.project);
    let outcome = mgmt
        .ensure(&spec(), OnDrift::Reconcile, None)
        .await
        .unwrap();
    assert_eq!(outcome.project_slug, info.project);
    assert!(outcome.applied);

    // The data client: project and key from the environment.
    std::env::set_var("INFERENCEKEY_API_KEY", &info.api_key);
    let data = DataClient::from_env(None, None, None, options()).unwrap();
    assert_eq!(data.project(), info.project);
    let endpoint = data.endpoint("env", None).unwrap();
    assert_eq!(
        endpoint.base_url(),
        format!("{}/endpoint/{}/env/v1", info.url, info.project)
    );
    std::env::remove_var("INFERENCEKEY_API_KEY");
    let data = DataClient::from_env(None, None, None, options()).unwrap();
    let err = data.endpoint("Support Bot", None).unwrap_err();
    assert_eq!(
        err.message,
        "No ik_live_ key for workload \"support-bot\". Pass api_key= or set INFERENCEKEY_API_KEY."
    );

    for var in VARS {
        std::env::remove_var(var);
    }
}
