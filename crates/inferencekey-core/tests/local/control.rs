//! The control plane against the local platform: ensure (create, noop, patch, every OnDrift), plan, the
//! create race, delete, list, project resolution, error mapping and the retry policy.

use inferencekey_core::{ErrorKind, OnDrift, PlanAction, WorkloadSpec};
use serde_json::{json, Value};

use crate::common::{object, options, request_lines, spec, Local};

/// A spec that runs `command`, with `max_model_len: 8192` in its config.
fn served(slug: &str, command: &str) -> WorkloadSpec {
    let mut s = spec(slug);
    s.command = Some(command.into());
    s.config = Some(object(json!({"max_model_len": 8192})));
    s
}

#[tokio::test]
async fn ensure_creates_once_then_is_a_noop() {
    let local = Local::start();
    let mgmt = local.mgmt();
    let s = served("Support Bot", "vllm serve m --max-model-len 8192");

    let first = mgmt.ensure(&s, OnDrift::Reconcile, None).await.unwrap();
    assert_eq!(first.plan.action, PlanAction::Create);
    assert!(first.applied);
    assert_eq!(first.project_slug, local.project());
    assert_eq!(first.workload_slug, "support-bot");
    assert!(first.plan.workload_id.is_some());

    let second = mgmt.ensure(&s, OnDrift::Reconcile, None).await.unwrap();
    assert_eq!(
        second.plan.action,
        PlanAction::Noop,
        "{}",
        second.plan.render()
    );
    assert!(!second.applied);

    let journal = local.journal().await;
    let lines = request_lines(&journal);
    let list = format!("GET /api/projects/{}/workloads", local.project());
    let create = format!("POST /api/projects/{}/workloads", local.project());
    assert_eq!(lines, [list.clone(), create, list]);
    assert_eq!(
        journal[1]["body"],
        json!({"name": "Support Bot", "slug": "support-bot", "task_type": "text2text", "backend": "vllm",
               "model_name": "meta-llama/Llama-3.1-8B-Instruct",
               "config": {"max_model_len": 8192, "command": "vllm serve m --max-model-len 8192"}})
    );
    let headers = &journal[1]["headers"];
    assert_eq!(headers["content-type"], "application/json");
    assert!(headers["user-agent"]
        .as_str()
        .unwrap()
        .starts_with("inferencekey-rust/"));
    assert!(headers["authorization"]
        .as_str()
        .unwrap()
        .starts_with("Bearer ik_sdk_"));
}

#[tokio::test]
async fn drift_is_patched_with_spec_names_and_then_in_sync() {
    let local = Local::start();
    let mgmt = local.mgmt();
    let mut s = served("support-bot", "vllm serve m");
    mgmt.ensure(&s, OnDrift::Reconcile, None).await.unwrap();

    s.command = Some("vllm serve m --max-model-len 16384".into());
    s.config = Some(object(json!({"max_model_len": 16384})));
    s.description = Some("bigger context".into());
    local.clear_journal().await;
    let outcome = mgmt.ensure(&s, OnDrift::Reconcile, None).await.unwrap();
    assert_eq!(outcome.plan.action, PlanAction::Update);
    assert!(outcome.applied);
    assert_eq!(
        outcome.plan.drifted_fields(),
        ["description", "command", "config.max_model_len"]
    );
    let rendered = outcome.plan.render();
    assert!(
        rendered.contains("~ command: \"vllm serve m\" -> \"vllm serve m --max-model-len 16384\""),
        "{rendered}"
    );
    assert!(
        rendered.contains("~ config.max_model_len: 8192 -> 16384"),
        "{rendered}"
    );

    let journal = local.journal().await;
    let patch = journal.iter().find(|e| e["method"] == "PATCH").unwrap();
    let id = outcome.plan.workload_id.clone().unwrap();
    assert_eq!(patch["path"], format!("/api/workloads/{id}"));
    assert_eq!(
        patch["body"],
        json!({"description": "bigger context",
               "config": {"max_model_len": 16384, "command": "vllm serve m --max-model-len 16384"}})
    );

    let again = mgmt.ensure(&s, OnDrift::Reconcile, None).await.unwrap();
    assert_eq!(
        again.plan.action,
        PlanAction::Noop,
        "{}",
        again.plan.render()
    );
}

#[tokio::test]
async fn fail_warn_ignore_and_dry_run_change_nothing() {
    let local = Local::start();
    let mgmt = local.mgmt();
    let mut s = spec("support-bot");
    mgmt.ensure(&s, OnDrift::Reconcile, None).await.unwrap();
    s.model = "other/model".into();
    s.task_type = Some("embedding".into());
    local.clear_journal().await;

    let err = mgmt.ensure(&s, OnDrift::Fail, None).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Drift);
    assert!(
        err.message
            .starts_with("workload drifted from spec: model, task_type\n~ update support-bot"),
        "{}",
        err.message
    );
    let plan = err.plan.as_deref().unwrap();
    assert_eq!(plan.drifted_fields(), ["model", "task_type"]);
    assert_eq!(err.status, None);

    for on_drift in [OnDrift::Warn, OnDrift::Ignore, OnDrift::DryRun] {
        let outcome = mgmt.ensure(&s, on_drift, None).await.unwrap();
        assert_eq!(outcome.plan.action, PlanAction::Update, "{on_drift:?}");
        assert!(!outcome.applied);
        assert_eq!(
            outcome.plan.changes[0].live,
            Some(json!("meta-llama/Llama-3.1-8B-Instruct"))
        );
        // What the caller shows is decided by the core: the warning for Warn, the note for DryRun.
        let rendered = outcome.plan.render();
        let (warning, info) = match on_drift {
            OnDrift::Warn => (
                Some(format!(
                    "workload 'support-bot' drifted from spec: model, task_type (on_drift=warn: not changed)\n{rendered}"
                )),
                None,
            ),
            OnDrift::DryRun => (
                None,
                Some(format!(
                    "ensure dry run for {}/support-bot, nothing changed:\n{rendered}",
                    outcome.project_slug
                )),
            ),
            _ => (None, None),
        };
        assert_eq!(outcome.warning, warning, "{on_drift:?}");
        assert_eq!(outcome.info, info, "{on_drift:?}");
    }
    let methods: Vec<Value> = local
        .journal()
        .await
        .iter()
        .map(|e| e["method"].clone())
        .collect();
    assert!(methods.iter().all(|m| m == "GET"), "{methods:?}");

    // Reconcile applies the same plan, after which every mode sees a no-op.
    assert!(
        mgmt.ensure(&s, OnDrift::Reconcile, None)
            .await
            .unwrap()
            .applied
    );
    assert_eq!(
        mgmt.ensure(&s, OnDrift::Fail, None)
            .await
            .unwrap()
            .plan
            .action,
        PlanAction::Noop
    );
}

#[tokio::test]
async fn dry_run_never_creates_and_plan_matches() {
    let local = Local::start();
    let mgmt = local.mgmt();
    let s = spec("fresh");
    let outcome = mgmt.ensure(&s, OnDrift::DryRun, None).await.unwrap();
    assert_eq!(outcome.plan.action, PlanAction::Create);
    assert!(!outcome.applied);
    assert!(outcome
        .plan
        .render()
        .starts_with("+ create fresh in project"));
    assert_eq!(outcome.warning, None);
    assert_eq!(
        outcome.info,
        Some(format!(
            "ensure dry run for {}/fresh, nothing changed:\n{}",
            outcome.project_slug,
            outcome.plan.render()
        ))
    );
    assert!(mgmt.list(None).await.unwrap().is_empty());
    let plan = mgmt.plan(&s, None).await.unwrap();
    assert_eq!(plan, outcome.plan);
    assert!(local.journal().await.iter().all(|e| e["method"] == "GET"));
}

#[tokio::test]
async fn create_race_keeps_one_workload() {
    let local = Local::start();
    let mgmt = local.mgmt();
    local
        .fault(json!({"route": "create", "fault": {"type": "race_create"}}))
        .await;
    let mut s = spec("racer");
    s.description = Some("mine".into());
    let outcome = mgmt.ensure(&s, OnDrift::Reconcile, None).await.unwrap();
    assert_eq!(outcome.workload_slug, "racer");
    let requests = local.requests().await;
    let slugs: Vec<String> = mgmt
        .list(None)
        .await
        .unwrap()
        .into_iter()
        .map(|w| w.slug)
        .collect();
    assert_eq!(slugs, ["racer"]);
    let project = local.project();
    assert_eq!(
        requests[0],
        format!("GET /api/projects/{project}/workloads")
    );
    assert_eq!(
        requests[1],
        format!("POST /api/projects/{project}/workloads")
    );
    assert!(
        requests[2].starts_with("DELETE /api/workloads/"),
        "{requests:?}"
    );
    assert_eq!(
        requests[3],
        format!("GET /api/projects/{project}/workloads")
    );
    // The twin carries the same spec, so continuing with it needs no PATCH.
    assert_eq!(requests.len(), 4, "{requests:?}");
    assert!(!outcome.applied);
}

#[tokio::test]
async fn delete_is_idempotent() {
    let local = Local::start();
    let mgmt = local.created("gone-soon").await;
    assert!(mgmt.delete("Gone Soon", None).await.unwrap());
    assert!(!mgmt.delete("gone-soon", None).await.unwrap());
    assert!(mgmt.list(None).await.unwrap().is_empty());
    let err = mgmt.delete("!!", None).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Validation);
}

#[tokio::test]
async fn delete_racing_another_deleter_is_false() {
    let local = Local::start();
    let mgmt = local.created("contested").await;
    local
        .fault(json!({"route": "delete", "fault": {"type": "status", "status": 404}}))
        .await;
    assert!(!mgmt.delete("contested", None).await.unwrap());
}

#[tokio::test]
async fn project_resolution_explicit_then_spec_then_client() {
    let local = Local::start();
    let mgmt = local.mgmt();
    let mut s = spec("scoped");
    s.project = Some("elsewhere".into());
    // spec.project wins over the client's project, and the token is not scoped to it.
    let err = mgmt.ensure(&s, OnDrift::Reconcile, None).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::PermissionDenied);
    assert_eq!(err.code.as_deref(), Some("project_scope_mismatch"));
    assert_eq!(
        err.message,
        "permission denied [project_scope_mismatch]: token is not scoped to project \"elsewhere\""
    );
    assert_eq!(err.status, Some(403));
    assert!(err.request_id.is_some());
    // project= wins over spec.project.
    let outcome = mgmt
        .ensure(&s, OnDrift::Reconcile, Some(local.project()))
        .await
        .unwrap();
    assert_eq!(outcome.project_slug, local.project());
}

#[tokio::test]
async fn path_segments_are_percent_encoded() {
    let local = Local::start();
    let err = local.mgmt().list(Some("a/b c")).await.unwrap_err();
    // Reaching the project check (not a routing 404) shows the segment stayed one segment.
    assert_eq!(
        err.code.as_deref(),
        Some("project_scope_mismatch"),
        "{err:?}"
    );
    assert!(err.message.contains("a/b c"));
}

#[tokio::test]
async fn auth_and_scope_errors() {
    let local = Local::start();
    let bogus = "ik_sdk_deadbeef_0000000000000000000000000000000000000000000000000000000000000000";
    let err = local.mgmt_token(bogus).list(None).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Auth);
    assert_eq!(
        err.message,
        "authentication failed: invalid or expired credentials"
    );
    assert_eq!(err.status, Some(401));
    assert!(!format!("{err:?}").contains("0000000000000000"));

    let read_only = local
        .token(json!({"kind": "sdk", "project": local.project(), "scopes": ["workload:read"]}))
        .await;
    let err = local
        .mgmt_token(&read_only)
        .ensure(&spec("nope"), OnDrift::Reconcile, None)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::PermissionDenied);
    assert_eq!(err.code.as_deref(), Some("scope_insufficient"));
    assert!(
        err.message
            .starts_with("permission denied [scope_insufficient]: "),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn server_validation_is_a_validation_error() {
    let local = Local::start();
    let mut s = spec("typed");
    s.task_type = Some("text2sql".into());
    let err = local
        .mgmt()
        .ensure(&s, OnDrift::Reconcile, None)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Validation);
    assert_eq!(err.status, Some(400));
    assert!(
        err.message.starts_with("validation error: "),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn local_checks_send_nothing() {
    let local = Local::start();
    let mgmt = local.mgmt();
    let mut s = spec("secretive");
    s.command = Some(format!("vllm serve m --api-key {}", local.api_key()));
    let err = mgmt.ensure(&s, OnDrift::Reconcile, None).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Configuration);
    assert_eq!(
        err.message,
        "configuration error: secrets must never go in specs (command holds an InferenceKey token)"
    );
    let err = mgmt.plan(&spec(" "), None).await.unwrap_err();
    assert_eq!(err.message, "validation error: name must not be empty");
    assert!(local.journal().await.is_empty());
}

#[tokio::test]
async fn idempotent_requests_retry_transient_statuses() {
    let local = Local::start();
    local
        .fault(json!({"route": "list", "count": 2, "fault": {"type": "status", "status": 503, "retry_after": 0}}))
        .await;
    assert!(local.mgmt().list(None).await.unwrap().is_empty());
    assert_eq!(local.journal().await.len(), 3);

    local.clear_journal().await;
    local
        .fault(
            json!({"route": "list", "count": 3, "fault": {"type": "status", "status": 502,
            "body": "upstream down", "headers": {"x-request-id": "req_42"}}}),
        )
        .await;
    let err = local.mgmt().list(None).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Api);
    assert_eq!(err.status, Some(502));
    assert_eq!(err.message, "HTTP 502: upstream down");
    assert_eq!(err.request_id.as_deref(), Some("req_42"));
    assert_eq!(
        local.journal().await.len(),
        3,
        "first attempt + max_retries"
    );
}

#[tokio::test]
async fn reset_connection_is_retried_for_get_not_for_post() {
    let local = Local::start();
    local
        .fault(json!({"route": "list", "fault": {"type": "reset"}}))
        .await;
    assert!(local.mgmt().list(None).await.is_ok());

    local
        .fault(json!({"route": "create", "fault": {"type": "reset"}}))
        .await;
    let err = local
        .mgmt()
        .ensure(&spec("once"), OnDrift::Reconcile, None)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Connection, "{err:?}");
    assert!(
        err.message
            .contains(local.url().trim_start_matches("http://")),
        "{}",
        err.message
    );
    let posts = local.count_requests(|r| r.starts_with("POST")).await;
    assert_eq!(posts, 1);
}

#[tokio::test]
async fn post_is_retried_on_503_with_retry_after_only() {
    let local = Local::start();
    let mgmt = local.mgmt();
    local.fault(json!({"route": "create", "fault": {"type": "status", "status": 503, "retry_after": 0}})).await;
    assert!(
        mgmt.ensure(&spec("patient"), OnDrift::Reconcile, None)
            .await
            .unwrap()
            .applied
    );
    local
        .fault(json!({"route": "create", "fault": {"type": "status", "status": 500}}))
        .await;
    let err = mgmt
        .ensure(&spec("impatient"), OnDrift::Reconcile, None)
        .await
        .unwrap_err();
    assert_eq!(err.status, Some(500));
    let posts = local.count_requests(|r| r.starts_with("POST")).await;
    assert_eq!(posts, 3, "two for the first ensure, one for the second");
}

#[tokio::test]
async fn max_retries_zero_makes_one_attempt() {
    let local = Local::start();
    local
        .fault(json!({"route": "list", "fault": {"type": "status", "status": 503}}))
        .await;
    let mgmt = local.mgmt_with(inferencekey_core::TransportOptions {
        max_retries: 0,
        ..options()
    });
    assert_eq!(mgmt.list(None).await.unwrap_err().status, Some(503));
    assert_eq!(local.journal().await.len(), 1);
}
