//! The readiness watch against the local platform: the phase sequence, SDK-measured elapsed time,
//! reconnects, the error phase, the deadline, and permanent errors.

use std::time::{Duration, Instant};

use inferencekey_core::{ErrorKind, ManagementClient, ReadinessEvent, ReadinessWatch};
use serde_json::json;

use crate::common::{options, Local, ENDLESS_MS};

/// Bounds a wait that must end by itself (a deadline, an error): only a hang runs into it, never a
/// slow machine.
const HANG_GUARD: Duration = Duration::from_secs(30);

/// `future`, or a panic naming `what` if it hangs.
async fn guarded<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(HANG_GUARD, future)
        .await
        .unwrap_or_else(|_| panic!("{what} hung"))
}

/// Watches `slug` for at most `within`: every event until the end or the first error, and the watch
/// itself (for tests that read on after the end).
async fn watch_to_end(
    mgmt: &ManagementClient,
    slug: &str,
    within: Duration,
) -> (
    Vec<ReadinessEvent>,
    Option<inferencekey_core::Error>,
    ReadinessWatch,
) {
    let mut watch = mgmt.watch_readiness(slug, None, within).unwrap();
    let mut events = Vec::new();
    loop {
        match watch.next().await {
            Ok(Some(event)) => events.push(event),
            Ok(None) => return (events, None, watch),
            Err(err) => return (events, Some(err), watch),
        }
    }
}

#[tokio::test]
async fn phases_until_ready_with_monotonic_elapsed() {
    let local = Local::start();
    let mgmt = local.created("warmup").await;
    // A known start, however late any task runs: the watch follows a stuck workload to its last
    // stage, then the workload goes through the fast profile from its first.
    local
        .settings("warmup", json!({"readiness": "stuck"}))
        .await;
    let mut watch = mgmt
        .watch_readiness("Warmup", None, Duration::from_secs(20))
        .unwrap();
    let mut stuck = Vec::new();
    while stuck.last().map(|e: &ReadinessEvent| e.phase.as_str()) != Some("provisioning") {
        stuck.push(watch.next().await.unwrap().unwrap());
    }
    local.settings("warmup", json!({"readiness": "fast"})).await;
    let mut events = stuck.clone();
    while let Some(event) = watch.next().await.unwrap() {
        events.push(event);
    }
    let phases: Vec<String> = events[stuck.len()..]
        .iter()
        .map(|e| match &e.step {
            Some(step) => format!("{}/{step}", e.phase),
            None => e.phase.clone(),
        })
        .collect();
    assert_eq!(
        phases,
        [
            "scheduling",
            "provisioning",
            "bootstrapping/image_pull",
            "bootstrapping/model_download",
            "bootstrapping/model_load",
            "ready"
        ]
    );
    assert!(
        events
            .windows(2)
            .all(|w| w[0].elapsed_ms <= w[1].elapsed_ms),
        "{events:?}"
    );
    assert!(watch.next().await.unwrap().is_none());
    let path = format!(
        "/api/projects/{}/workloads/warmup/readiness-events",
        local.project()
    );
    let entry = local
        .journal()
        .await
        .into_iter()
        .find(|e| e["path"] == path)
        .unwrap();
    assert_eq!(entry["headers"]["accept"], "text/event-stream");
}

#[tokio::test]
async fn error_phase_is_yielded_then_raised() {
    let local = Local::start();
    let mgmt = local.created("broken").await;
    local
        .settings(
            "broken",
            json!({"readiness": "error", "error_message": "CUDA out of memory"}),
        )
        .await;
    let (events, err, _) = watch_to_end(&mgmt, "broken", Duration::from_secs(20)).await;
    assert_eq!(events.last().unwrap().phase, "error");
    assert_eq!(events.last().unwrap().message, "CUDA out of memory");
    let err = err.unwrap();
    assert_eq!(err.kind, ErrorKind::Api);
    assert_eq!(
        err.message,
        "workload \"broken\" failed: CUDA out of memory"
    );
}

#[tokio::test]
async fn deadline_is_a_wait_timeout_naming_the_last_phase() {
    let local = Local::start();
    let mgmt = local.created("stuck").await;
    local.settings("stuck", json!({"readiness": "stuck"})).await;
    let started = Instant::now();
    let (events, err, _) = guarded(
        "a wait on a stuck workload",
        watch_to_end(&mgmt, "stuck", Duration::from_millis(800)),
    )
    .await;
    let err = err.unwrap();
    assert_eq!(err.kind, ErrorKind::WaitTimeout);
    // Which phases came before the deadline depends on the machine; the message names the last.
    assert!(
        events
            .iter()
            .all(|e| e.phase == "scheduling" || e.phase == "provisioning"),
        "{events:?}"
    );
    let last = match events.last() {
        Some(event) => format!("last phase: {}", event.phase),
        None => "no phase reported".to_owned(),
    };
    assert_eq!(
        err.message,
        format!("workload \"stuck\" not ready after 0.8 s ({last})")
    );
    // A lower bound: the wait lasted its whole timeout.
    assert!(started.elapsed() >= Duration::from_millis(790));
}

#[tokio::test]
async fn stream_ending_early_is_reconnected() {
    let local = Local::start();
    let mgmt = local.created("flaky").await;
    local
        .fault(json!({"route": "readiness", "fault": {"type": "truncate", "after_events": 1}}))
        .await;
    let (events, err, _) = watch_to_end(&mgmt, "flaky", Duration::from_secs(20)).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(events.last().unwrap().phase, "ready");
    let connects = local
        .count_requests(|r| r.ends_with("/readiness-events"))
        .await;
    assert_eq!(connects, 2);
    // SDK time goes on across the reconnect: `ready` came on the second connection, after the
    // 1 s backoff, and nothing goes backwards.
    assert!(events.last().unwrap().elapsed_ms >= 1000, "{events:?}");
    assert!(events
        .windows(2)
        .all(|w| w[0].elapsed_ms <= w[1].elapsed_ms));
    // The snapshot of the second connection repeats the event already seen: it is not yielded twice.
    let key = |e: &ReadinessEvent| (e.phase.clone(), e.message.clone(), e.step.clone());
    assert!(
        events.windows(2).all(|w| key(&w[0]) != key(&w[1])),
        "{events:?}"
    );
}

#[tokio::test]
async fn transient_status_is_retried_after_retry_after() {
    let local = Local::start();
    let mgmt = local.created("busy").await;
    local
        .fault(json!({"route": "readiness", "fault": {"type": "status", "status": 503, "retry_after": 0}}))
        .await;
    let (events, err, _) = watch_to_end(&mgmt, "busy", Duration::from_secs(20)).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(events.last().unwrap().phase, "ready");
}

#[tokio::test]
async fn permanent_errors_raise_at_once() {
    let local = Local::start();
    let mgmt = local.mgmt();
    let mut watch = mgmt
        .watch_readiness("never-made", None, Duration::from_secs(30))
        .unwrap();
    let err = watch.next().await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound);
    assert_eq!(err.status, Some(404));
    // At once: one request, no reconnect (a retried 404 would end as a WaitTimeout instead).
    let connects = local
        .count_requests(|r| r.ends_with("/never-made/readiness-events"))
        .await;
    assert_eq!(connects, 1);

    local.created("private").await;
    let bogus = "ik_sdk_deadbeef_0000000000000000000000000000000000000000000000000000000000000000";
    let mut watch = local
        .mgmt_token(bogus)
        .watch_readiness("private", None, Duration::from_secs(30))
        .unwrap();
    assert_eq!(watch.next().await.unwrap_err().kind, ErrorKind::Auth);
}

#[tokio::test]
async fn unreachable_host_waits_until_the_deadline() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mgmt = ManagementClient::new(
        Some(&format!("http://127.0.0.1:{port}")),
        Some("ik_sdk_a1b2c3d4_00"),
        Some("p"),
        options(),
    )
    .unwrap();
    let started = Instant::now();
    let mut watch = mgmt
        .watch_readiness("w", None, Duration::from_millis(1500))
        .unwrap();
    // Without the deadline, the reconnects (1, 2, 4, 5 ... s) would go on forever.
    let err = guarded("a wait on an unreachable host", watch.next())
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::WaitTimeout, "{err:?}");
    assert_eq!(
        err.message,
        "workload \"w\" not ready after 1.5 s (no phase reported)"
    );
    // A lower bound: it kept trying until the deadline.
    assert!(started.elapsed() >= Duration::from_millis(1490));
}

#[tokio::test]
async fn stalled_server_cannot_block_past_the_deadline() {
    let local = Local::start();
    let mgmt = local.created("silent").await;
    local
        .fault(
            json!({"route": "readiness", "fault": {"type": "stall", "at": "headers", "ms": ENDLESS_MS}}),
        )
        .await;
    let mut watch = mgmt
        .watch_readiness("silent", None, Duration::from_millis(700))
        .unwrap();
    // The head never comes: only the deadline can end the connect.
    let err = guarded("a connect to a silent server", watch.next())
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::WaitTimeout);
}

#[tokio::test]
async fn an_error_frame_on_the_readiness_stream_fails_the_watch_at_once_with_its_message() {
    let local = Local::start();
    let mgmt = local.created("frames").await;
    local
        .settings("frames", json!({"readiness": "stuck"}))
        .await;
    local
        .fault(
            json!({"route": "readiness", "fault": {"type": "inband_error", "after_events": 1,
            "message": "scheduler lost hf_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"}}),
        )
        .await;
    // The deadline is far: before the fix the watch reconnected until it.
    let (events, err, _) = guarded(
        "the watch",
        watch_to_end(&mgmt, "frames", Duration::from_secs(600)),
    )
    .await;
    let err = err.expect("an error");
    assert_eq!(err.kind, ErrorKind::Api);
    assert!(
        err.message
            .starts_with("the readiness stream reported an error: scheduler lost hf_\u{2026}"),
        "{}",
        err.message
    );
    let body = format!("{:?}", err.body);
    assert!(!body.contains("AbCdEf"), "{body}");
    assert!(err.request_id.is_some());
    assert_eq!(events.len(), 1);
}
