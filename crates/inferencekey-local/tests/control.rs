//! Control plane over real HTTP: every auth error, create/list/patch/delete with validation and
//! slug de-duplication, and the readiness event stream under every profile.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{parse_sse, read, Harness};
use futures_util::StreamExt;
use reqwest::Method;
use serde_json::{json, Value};

fn body(slug: &str) -> Value {
    json!({"name": "Support Bot", "slug": slug, "model_name": "meta-llama/Llama-3.1-8B-Instruct",
           "backend": "vllm"})
}

fn is_rfc3339_utc(text: &str) -> bool {
    let b = text.as_bytes();
    text.len() == 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'Z'
        && text
            .chars()
            .enumerate()
            .all(|(i, c)| [4, 7, 10, 13, 16, 19].contains(&i) || c.is_ascii_digit())
}

#[tokio::test]
async fn auth_errors_have_the_exact_codes_and_messages() {
    let h = Harness::start();
    let path = h.workloads_path();
    for token in [None, Some("ik_sdk_00000000_nope"), Some("garbage")] {
        let reply = h.call(Method::GET, &path, token, None).await;
        assert_eq!(reply.status, 401);
        assert_eq!(
            reply.json(),
            json!({"error": {"code": "unauthorized", "message": "invalid or expired credentials"}})
        );
    }
    let live = h.call(Method::GET, &path, Some(&h.key), None).await;
    assert_eq!(live.status, 403);
    let id8 = &h.key["ik_live_".len().."ik_live_".len() + 8];
    assert_eq!(
        live.error(),
        (
            "wrong_credential_type".to_string(),
            format!("ik_live_{id8}… is a data key; the management plane requires an ik_sdk_ token")
        )
    );
    let other = h
        .call(
            Method::GET,
            "/api/projects/acme/workloads",
            Some(&h.sdk),
            None,
        )
        .await;
    assert_eq!(other.status, 403);
    assert_eq!(
        other.error(),
        (
            "project_scope_mismatch".to_string(),
            "token is not scoped to project \"acme\"".to_string()
        )
    );
    h.create_ready("bot", "vllm", "text2text").await;
    let data = h
        .call(
            Method::POST,
            &h.data_path("bot", "chat/completions"),
            Some(&h.sdk),
            Some(&common::chat_body("hi", false)),
        )
        .await;
    assert_eq!(data.status, 403);
    let (code, message) = data.error();
    assert_eq!(code, "wrong_credential_type");
    assert!(
        message.contains("the data plane requires an ik_live_ key"),
        "{message}"
    );
    for reply in [&live, &other, &data] {
        let text = reply.text();
        assert!(!text.contains(&h.key) && !text.contains(&h.sdk), "{text}");
    }
}

#[tokio::test]
async fn scopes_are_enforced_per_route() {
    let h = Harness::start();
    let created = h.create(body("bot")).await;
    let id = created["id"].as_str().unwrap();
    let token = |scopes: Value| h.add_token(json!({"kind": "sdk", "scopes": scopes}));
    let none = token(json!([])).await;
    let read_only = token(json!(["workload:read"])).await;
    let writer = token(json!(["workload:write"])).await;
    let check = |reply: common::Reply, scope: &str| {
        assert_eq!(reply.status, 403, "{}", reply.text());
        let (code, message) = reply.error();
        assert_eq!(code, "scope_insufficient");
        assert!(message.contains(scope), "{message}");
    };
    let path = h.workloads_path();
    check(
        h.call(Method::GET, &path, Some(&none), None).await,
        "workload:read",
    );
    let stream = format!("{path}/bot/readiness-events");
    check(
        h.call(Method::GET, &stream, Some(&none), None).await,
        "workload:read",
    );
    check(
        h.call(Method::POST, &path, Some(&read_only), Some(&body("x")))
            .await,
        "workload:write",
    );
    let patch_path = format!("/api/workloads/{id}");
    check(
        h.call(
            Method::PATCH,
            &patch_path,
            Some(&read_only),
            Some(&json!({"name": "n"})),
        )
        .await,
        "workload:write",
    );
    check(
        h.call(Method::DELETE, &patch_path, Some(&writer), None)
            .await,
        "workload:delete",
    );
    let mut assigned = body("y");
    assigned["worker_id"] = json!("worker-1");
    check(
        h.call(Method::POST, &path, Some(&writer), Some(&assigned))
            .await,
        "assignment:write",
    );
    check(
        h.call(
            Method::PATCH,
            &patch_path,
            Some(&writer),
            Some(&json!({"gpu_resource_id": "g"})),
        )
        .await,
        "assignment:write",
    );
    // Null assignments need no extra scope; reads work with the read scope.
    assigned["worker_id"] = Value::Null;
    let ok = h
        .call(Method::POST, &path, Some(&writer), Some(&assigned))
        .await;
    assert_eq!(ok.status, 201);
    assert_eq!(
        h.call(Method::GET, &path, Some(&read_only), None)
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn other_projects_workloads_are_out_of_reach() {
    let h = Harness::start();
    let reply = h
        .admin(
            Method::POST,
            "/_local/projects",
            Some(&json!({"slug": "Other Team"})),
        )
        .await;
    assert_eq!(reply.status, 201);
    assert_eq!(reply.json()["slug"], "other-team");
    assert!(reply.json()["id"].as_str().unwrap().starts_with("proj_"));
    let other_sdk = h
        .add_token(json!({"kind": "sdk", "project": "other-team"}))
        .await;
    let theirs = h
        .call(
            Method::POST,
            "/api/projects/other-team/workloads",
            Some(&other_sdk),
            Some(&body("theirs")),
        )
        .await
        .json();
    assert_eq!(theirs["project_slug"], "other-team");
    let path = format!("/api/workloads/{}", theirs["id"].as_str().unwrap());
    for method in [Method::PATCH, Method::DELETE] {
        let reply = h
            .call(
                method,
                &path,
                Some(&h.sdk),
                Some(&json!({"name": "mine now"})),
            )
            .await;
        assert_eq!(reply.status, 403);
        assert_eq!(
            reply.error(),
            (
                "project_scope_mismatch".to_string(),
                "token is not scoped to project \"other-team\"".to_string()
            )
        );
    }
    let mine = h
        .call(Method::GET, &h.workloads_path(), Some(&h.sdk), None)
        .await
        .json();
    assert_eq!(mine, json!({"workloads": []}));
}

#[tokio::test]
async fn request_ids_are_unique_on_every_response() {
    let h = Harness::start();
    let mut seen = HashSet::new();
    let paths = [
        h.workloads_path(),
        "/nowhere".to_string(),
        "/_local/info".to_string(),
    ];
    for path in &paths {
        for token in [None, Some(h.sdk.as_str()), Some(h.admin.as_str())] {
            let reply = h.call(Method::GET, path, token, None).await;
            let id = reply.header("x-request-id").unwrap();
            let hex = id.strip_prefix("req_").unwrap();
            assert!(
                !hex.is_empty() && hex.chars().all(|c| c.is_ascii_hexdigit()),
                "{id}"
            );
            assert!(seen.insert(id));
        }
    }
}

#[tokio::test]
async fn create_list_patch_delete() {
    let h = Harness::start();
    let mut full = body("  Support_Bot  ");
    full["description"] = json!("answers tickets");
    full["config"] = json!({"command": "vllm serve m", "max_model_len": 8192});
    full["execution_policy"] = json!("autoscaling");
    full["execution_policy_config"] = json!({"min": 1});
    full["task_type"] = json!("omni");
    let created = h.create(full).await;
    let keys: Vec<&str> = created
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "id",
            "project_id",
            "project_slug",
            "name",
            "slug",
            "workload_slug",
            "description",
            "task_type",
            "backend",
            "model_name",
            "config",
            "execution_policy",
            "execution_policy_config",
            "worker_id",
            "gpu_resource_id",
            "created_at",
            "updated_at"
        ]
    );
    let id = created["id"].as_str().unwrap();
    let suffix = id.strip_prefix("wl_").unwrap();
    assert_eq!(suffix.len(), 26);
    assert!(suffix
        .chars()
        .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase()));
    assert!(created["project_id"].as_str().unwrap().starts_with("proj_"));
    assert_eq!(created["slug"], "support-bot");
    assert_eq!(created["workload_slug"], "support-bot");
    assert_eq!(created["project_slug"], "local");
    assert_eq!(created["task_type"], "omni");
    assert_eq!(created["config"]["max_model_len"], 8192);
    assert_eq!(created["execution_policy_config"], json!({"min": 1}));
    assert!(is_rfc3339_utc(created["created_at"].as_str().unwrap()));
    assert_eq!(created["created_at"], created["updated_at"]);

    // De-duplication: -1, -2.
    let second = h.create(body("support-bot")).await;
    let third = h.create(body("Support Bot")).await;
    assert_eq!(second["slug"], "support-bot-1");
    assert_eq!(third["slug"], "support-bot-2");
    let minimal = h.create(body("minimal")).await;
    assert_eq!(minimal["task_type"], "text2text");
    assert_eq!(minimal["config"], json!({}));
    assert_eq!(minimal["description"], Value::Null);

    let list = h
        .call(Method::GET, &h.workloads_path(), Some(&h.sdk), None)
        .await;
    assert_eq!(list.status, 200);
    let slugs: Vec<Value> = list.json()["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["slug"].clone())
        .collect();
    assert_eq!(
        slugs,
        ["support-bot", "support-bot-1", "support-bot-2", "minimal"]
    );
    assert_eq!(list.json()["workloads"][0], created);

    // Patch changes only the fields sent; config is replaced as sent.
    let path = format!("/api/workloads/{id}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let patched = h
        .call(
            Method::PATCH,
            &path,
            Some(&h.sdk),
            Some(
                &json!({"description": null, "config": {"command": "vllm serve m2"},
                         "task_type": "text2text", "slug": "support-bot", "bogus": 1}),
            ),
        )
        .await;
    assert_eq!(patched.status, 200, "{}", patched.text());
    let patched = patched.json();
    assert_eq!(patched["description"], Value::Null);
    assert_eq!(patched["config"], json!({"command": "vllm serve m2"}));
    assert_eq!(patched["task_type"], "text2text");
    assert_eq!(patched["name"], created["name"]);
    assert_eq!(patched["model_name"], created["model_name"]);
    assert_eq!(patched["execution_policy"], "autoscaling");
    assert_eq!(patched["created_at"], created["created_at"]);
    assert_ne!(patched["updated_at"], created["updated_at"]);
    let noop = h
        .call(Method::PATCH, &path, Some(&h.sdk), Some(&json!({})))
        .await
        .json();
    assert_eq!(noop, patched);
    let slug_change = h
        .call(
            Method::PATCH,
            &path,
            Some(&h.sdk),
            Some(&json!({"slug": "renamed"})),
        )
        .await;
    assert_eq!(slug_change.status, 400);
    assert_eq!(slug_change.error().0, "validation_error");
    let bad = h
        .call(
            Method::PATCH,
            &path,
            Some(&h.sdk),
            Some(&json!({"execution_policy": "never"})),
        )
        .await;
    assert_eq!(bad.status, 400);

    // Delete: 204 with an empty body, then 404.
    let deleted = h.call(Method::DELETE, &path, Some(&h.sdk), None).await;
    assert_eq!(deleted.status, 204);
    assert!(deleted.bytes.is_empty());
    for method in [Method::DELETE, Method::PATCH] {
        let gone = h.call(method, &path, Some(&h.sdk), Some(&json!({}))).await;
        assert_eq!(gone.status, 404);
        assert_eq!(gone.error().0, "not_found");
    }
    // The freed slug is reused.
    assert_eq!(h.create(body("support-bot")).await["slug"], "support-bot");
}

#[tokio::test]
async fn create_validation() {
    let h = Harness::start();
    let cases = [
        (
            json!({"slug": "s", "model_name": "m", "backend": "vllm"}),
            "name is required",
        ),
        (
            json!({"name": " ", "slug": "s", "model_name": "m", "backend": "vllm"}),
            "name must not be empty",
        ),
        (
            json!({"name": "n", "model_name": "m", "backend": "vllm"}),
            "slug is required",
        ),
        (
            json!({"name": "n", "slug": "s", "backend": "vllm"}),
            "model_name is required",
        ),
        (
            json!({"name": "n", "slug": "s", "model_name": "m"}),
            "backend is required",
        ),
        (
            json!({"name": 5, "slug": "s", "model_name": "m", "backend": "vllm"}),
            "name must be a string",
        ),
        (
            json!({"name": "n", "slug": "s", "model_name": "m", "backend": "vllm",
                "task_type": "text2sql"}),
            "unknown task_type",
        ),
        (
            json!({"name": "n", "slug": "s", "model_name": "m", "backend": "vllm",
                "execution_policy": "sometimes"}),
            "unknown execution_policy",
        ),
        (
            json!({"name": "n", "slug": "***", "model_name": "m", "backend": "vllm"}),
            "no letter or digit",
        ),
        (json!(["not", "an", "object"]), "must be a JSON object"),
    ];
    for (bad, expected) in cases {
        let reply = h
            .call(Method::POST, &h.workloads_path(), Some(&h.sdk), Some(&bad))
            .await;
        assert_eq!(reply.status, 400, "{bad}");
        let (code, message) = reply.error();
        assert_eq!(code, "validation_error");
        assert!(message.contains(expected), "{message} vs {expected}");
    }
    // Every platform task type and a custom backend are accepted.
    for task in [
        "text2text",
        "embedding",
        "text2image",
        "text2video",
        "text2audio",
        "image2image",
        "image2video",
        "audio2text",
        "omni",
        "reranker",
        "classification",
        "reward",
        "forecast",
    ] {
        let mut ok = body(task);
        ok["task_type"] = json!(task);
        ok["backend"] = json!("my-custom-engine");
        assert_eq!(h.create(ok).await["task_type"], task);
    }
}

/// Reads readiness events until the stream closes or `limit` passes.
async fn readiness(h: &Harness, slug: &str, limit: Duration) -> (Vec<Value>, bool) {
    let path = format!("{}/{slug}/readiness-events", h.workloads_path());
    let response = h
        .request(Method::GET, &path, Some(&h.sdk), None)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut stream = response.bytes_stream();
    let mut bytes = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    let closed = loop {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk.unwrap()),
            Ok(None) => break true,
            Err(_) => break false,
        }
    };
    let events = parse_sse(&bytes)
        .into_iter()
        .map(|m| serde_json::from_str(&m.data).unwrap())
        .collect();
    (events, closed)
}

fn phases(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            let phase = e["phase"].as_str().unwrap();
            match e.get("step").and_then(Value::as_str) {
                Some(step) => format!("{phase}/{step}"),
                None => phase.to_string(),
            }
        })
        .collect()
}

const FAST: [&str; 6] = [
    "scheduling",
    "provisioning",
    "bootstrapping/image_pull",
    "bootstrapping/model_download",
    "bootstrapping/model_load",
    "ready",
];

/// When each stage of the `fast` profile begins, in ms.
const FAST_AT: [u64; 6] = [0, 40, 80, 150, 220, 300];

/// `got` is the tail of `expected` (a late connect starts from the snapshot), at least `min` long.
fn assert_tail(got: &[String], expected: &[&str], min: usize) {
    assert!(got.len() >= min, "{got:?}");
    assert_eq!(got, &expected[expected.len() - got.len()..]);
}

#[tokio::test]
async fn readiness_fast_goes_through_every_phase_then_closes() {
    let h = Harness::start();
    h.create(body("bot")).await;
    let (events, closed) = readiness(&h, "bot", Duration::from_secs(30)).await;
    assert!(closed);
    // However late the snapshot, every stage after it follows, stamped with its start time.
    let got = phases(&events);
    assert_tail(&got, &FAST, 1);
    let elapsed: Vec<u64> = events
        .iter()
        .map(|e| e["elapsed_ms"].as_u64().unwrap())
        .collect();
    assert_eq!(&elapsed[1..], &FAST_AT[FAST.len() - got.len() + 1..]);
    assert!(elapsed.windows(2).all(|w| w[0] < w[1]), "{elapsed:?}");
    assert!(events.iter().all(|e| e["message"].is_string()));
    // A late subscriber gets the snapshot only: ready, then the end.
    let (late, closed) = readiness(&h, "bot", Duration::from_secs(30)).await;
    assert!(closed);
    assert_eq!(phases(&late), ["ready"]);
    // Unknown workload: 404.
    let missing = h
        .call(
            Method::GET,
            &format!("{}/nope/readiness-events", h.workloads_path()),
            Some(&h.sdk),
            None,
        )
        .await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.error().0, "not_found");
}

/// An open readiness stream, read event by event.
struct EventReader {
    stream: futures_util::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    bytes: Vec<u8>,
    closed: bool,
}

impl EventReader {
    async fn open(h: &Harness, slug: &str) -> Self {
        let path = format!("{}/{slug}/readiness-events", h.workloads_path());
        let response = h
            .request(Method::GET, &path, Some(&h.sdk), None)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        Self {
            stream: response.bytes_stream().boxed(),
            bytes: Vec::new(),
            closed: false,
        }
    }

    fn events(&self) -> Vec<Value> {
        parse_sse(&self.bytes)
            .into_iter()
            .map(|m| serde_json::from_str(&m.data).unwrap())
            .collect()
    }

    /// Reads until `enough` holds for the events so far or the stream closes (the client's 20 s
    /// timeout is the hang guard).
    async fn until(&mut self, enough: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        while !self.closed && !enough(&self.events()) {
            match self.stream.next().await {
                Some(chunk) => self.bytes.extend_from_slice(&chunk.unwrap()),
                None => self.closed = true,
            }
        }
        self.events()
    }
}

/// Whether an event of `phase` has come.
fn reached(phase: &'static str) -> impl Fn(&[Value]) -> bool {
    move |events| events.iter().any(|e| e["phase"] == phase)
}

/// Reads `slug`'s readiness under `settings` from its very first stage, whatever the timing: the
/// stream opens on the `stuck` profile and is read up to its last stage (provisioning); then the
/// workload switches to `settings`, and the stream goes on with the whole new timeline. Returns
/// the events of that timeline once `enough` holds for them or the stream closes.
async fn readiness_from_the_start(
    h: &Harness,
    slug: &str,
    settings: Value,
    enough: impl Fn(&[Value]) -> bool,
) -> (EventReader, Vec<Value>) {
    h.set_settings(slug, json!({"readiness": "stuck"})).await;
    let mut reader = EventReader::open(h, slug).await;
    let stuck = reader.until(reached("provisioning")).await.len();
    h.set_settings(slug, settings).await;
    let events = reader
        .until(|events| enough(&events[stuck.min(events.len())..]))
        .await;
    (reader, events[stuck..].to_vec())
}

#[tokio::test]
async fn readiness_profiles() {
    let h = Harness::start();
    h.create(body("imm")).await;
    h.create(body("stuck")).await;
    h.create(body("err")).await;
    h.create(body("flap")).await;
    h.create(body("real")).await;
    // Each profile's clock restarts just before its stream is read.
    h.set_settings("imm", json!({"readiness": "immediate"}))
        .await;
    // Ready at once: the stream closes after its snapshot (30 s only guards against it staying open).
    let (imm, closed) = readiness(&h, "imm", Duration::from_secs(30)).await;
    assert!(closed);
    assert_eq!(phases(&imm), ["ready"]);

    // Stuck: provisioning, then the stream stays open with nothing more. A window can only miss a
    // late event on a slow machine, never invent one.
    h.set_settings("stuck", json!({"readiness": "stuck"})).await;
    let mut stuck = EventReader::open(&h, "stuck").await;
    let events = stuck.until(reached("provisioning")).await;
    assert_eq!(phases(&events).last().unwrap(), "provisioning");
    assert!(events.len() <= 2);
    let quiet = tokio::time::timeout(Duration::from_millis(600), stuck.stream.next()).await;
    assert!(
        quiet.is_err(),
        "a stuck workload's stream stays open and silent"
    );

    let (reader, err) = readiness_from_the_start(
        &h,
        "err",
        json!({"readiness": "error", "error_message": "CUDA out of memory"}),
        |_| false,
    )
    .await;
    assert!(reader.closed);
    assert_eq!(phases(&err), [&FAST[..FAST.len() - 1], &["error"]].concat());
    assert_eq!(err.last().unwrap()["message"], "CUDA out of memory");

    let (reader, flap) =
        readiness_from_the_start(&h, "flap", json!({"readiness": "flapping"}), |_| false).await;
    assert!(reader.closed);
    assert_eq!(phases(&flap), FAST);
    // It keeps dropping back to bootstrapping: the data plane sees both states. Each poll samples
    // one instant; 30 s only guards against a flap that never happens.
    let mut statuses = HashSet::new();
    let started = Instant::now();
    while statuses.len() < 2 && started.elapsed() < Duration::from_secs(30) {
        let reply = h.chat("flap", common::chat_body("hi", false)).await;
        statuses.insert(reply.status.as_u16());
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    assert_eq!(statuses, HashSet::from([200, 503]));

    let (_, real) = readiness_from_the_start(
        &h,
        "real",
        json!({"readiness": "realistic"}),
        reached("bootstrapping"),
    )
    .await;
    assert_eq!(
        phases(&real),
        ["scheduling", "provisioning", "bootstrapping/image_pull"]
    );
    // Each stage is stamped with its start on the realistic timeline: seconds, not milliseconds.
    let elapsed: Vec<u64> = real
        .iter()
        .map(|e| e["elapsed_ms"].as_u64().unwrap())
        .collect();
    assert_eq!(elapsed[0], 0);
    assert!(elapsed[1] >= 500 && elapsed[1] < elapsed[2], "{elapsed:?}");
}

#[tokio::test]
async fn changing_what_runs_goes_back_through_bootstrapping() {
    let h = Harness::start();
    let created = h.create_ready("bot", "vllm", "text2text").await;
    assert_eq!(
        h.chat("bot", common::chat_body("hi", false)).await.status,
        200
    );
    let path = format!("/api/workloads/{}", created["id"].as_str().unwrap());
    // A name change does not touch readiness.
    h.call(
        Method::PATCH,
        &path,
        Some(&h.sdk),
        Some(&json!({"name": "Renamed"})),
    )
    .await;
    assert_eq!(
        h.chat("bot", common::chat_body("hi", false)).await.status,
        200
    );

    h.set_settings("bot", json!({"readiness": "fast"})).await;
    let (events, _) = readiness(&h, "bot", Duration::from_secs(30)).await;
    assert_tail(&phases(&events), &FAST, 4);

    let patched = h
        .call(
            Method::PATCH,
            &path,
            Some(&h.sdk),
            Some(&json!({"model_name": "other/model"})),
        )
        .await;
    assert_eq!(patched.status, 200);
    let not_ready = h.chat("bot", common::chat_body("hi", false)).await;
    assert_eq!(not_ready.status, 503);
    let (events, closed) = readiness(&h, "bot", Duration::from_secs(30)).await;
    assert!(closed);
    // Straight back to bootstrapping: no scheduling, no provisioning.
    assert_tail(&phases(&events), &FAST[2..], 1);
    // The steps that name the model name the new one.
    assert!(
        events
            .iter()
            .filter(|e| e["step"] == "model_download" || e["step"] == "model_load")
            .all(|e| e["message"].as_str().unwrap().contains("other/model")),
        "{events:?}"
    );
    assert_eq!(
        h.chat("bot", common::chat_body("hi", false)).await.status,
        200
    );
}

#[tokio::test]
async fn deleting_a_workload_ends_its_readiness_stream() {
    let h = Harness::start();
    let created = h.create(body("bot")).await;
    h.set_settings("bot", json!({"readiness": "stuck"})).await;
    let path = format!("{}/bot/readiness-events", h.workloads_path());
    let response = h
        .request(Method::GET, &path, Some(&h.sdk), None)
        .send()
        .await
        .unwrap();
    let delete = format!("/api/workloads/{}", created["id"].as_str().unwrap());
    assert_eq!(
        h.call(Method::DELETE, &delete, Some(&h.sdk), None)
            .await
            .status,
        204
    );
    // A hang guard: the stream of a deleted workload ends at once, or never.
    let reply = tokio::time::timeout(Duration::from_secs(30), read(response))
        .await
        .expect("the stream did not end");
    let events = parse_sse(&reply.bytes);
    assert!(!events.is_empty());
    assert!(events.iter().all(|e| !e.data.contains("\"ready\"")));
}
