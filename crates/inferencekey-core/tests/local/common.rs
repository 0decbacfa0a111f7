//! The test harness: a local platform per test, SDK clients pointed at it, and admin API helpers
//! (engine settings, fault rules, the journal).

use std::time::Duration;

use inferencekey_core::{DataClient, Endpoint, ManagementClient, TransportOptions, WorkloadSpec};
use inferencekey_local::{Config, LocalPlatform};
use serde_json::Value;

/// One running local platform and an HTTP client for its admin API.
pub struct Local {
    platform: LocalPlatform,
    admin: reqwest::Client,
}

/// A stall no test outlives: only the client giving up (a deadline, a timeout) ends a request it holds.
pub const ENDLESS_MS: u64 = 600_000;

/// Transport options for tests: short timeouts so failures show quickly.
pub fn options() -> TransportOptions {
    TransportOptions {
        connect_timeout: Duration::from_secs(5),
        read_timeout: Duration::from_secs(20),
        ..TransportOptions::default()
    }
}

/// A minimal valid spec.
pub fn spec(slug: &str) -> WorkloadSpec {
    WorkloadSpec {
        name: slug.to_owned(),
        slug: slug.to_owned(),
        model: "meta-llama/Llama-3.1-8B-Instruct".to_owned(),
        backend: "vllm".to_owned(),
        ..WorkloadSpec::default()
    }
}

impl Local {
    /// Start a platform on 127.0.0.1, port 0.
    pub fn start() -> Self {
        let platform = LocalPlatform::start(Config::default()).expect("local platform starts");
        Self {
            platform,
            admin: reqwest::Client::new(),
        }
    }

    pub fn url(&self) -> &str {
        &self.platform.info().url
    }

    pub fn project(&self) -> &str {
        &self.platform.info().project
    }

    pub fn sdk_token(&self) -> &str {
        &self.platform.info().sdk_token
    }

    pub fn api_key(&self) -> &str {
        &self.platform.info().api_key
    }

    /// A management client with the default token and project.
    pub fn mgmt(&self) -> ManagementClient {
        self.mgmt_with(options())
    }

    pub fn mgmt_with(&self, options: TransportOptions) -> ManagementClient {
        self.mgmt_client(self.sdk_token(), options)
    }

    /// A management client with another token.
    pub fn mgmt_token(&self, token: &str) -> ManagementClient {
        self.mgmt_client(token, options())
    }

    fn mgmt_client(&self, token: &str, options: TransportOptions) -> ManagementClient {
        ManagementClient::new(Some(self.url()), Some(token), Some(self.project()), options).unwrap()
    }

    /// A management client, once it has created the workload `spec(slug)`.
    pub async fn created(&self, slug: &str) -> ManagementClient {
        let mgmt = self.mgmt();
        mgmt.ensure(&spec(slug), inferencekey_core::OnDrift::Reconcile, None)
            .await
            .unwrap();
        mgmt
    }

    pub fn data(&self) -> DataClient {
        self.data_with(options())
    }

    pub fn data_with(&self, options: TransportOptions) -> DataClient {
        DataClient::new(
            Some(self.url()),
            Some(self.project()),
            Some(self.api_key()),
            options,
        )
        .unwrap()
    }

    /// Create a ready-at-once text workload with `backend` and return its endpoint.
    pub async fn workload(&self, slug: &str, backend: &str) -> Endpoint {
        self.typed_workload(slug, backend, "text2text").await
    }

    /// Create a ready-at-once workload with `backend` and `task_type` and return its endpoint.
    pub async fn typed_workload(&self, slug: &str, backend: &str, task_type: &str) -> Endpoint {
        // Data-plane tests want a serving workload, not the 503 of one still bootstrapping.
        self.defaults(serde_json::json!({"readiness": "immediate"}))
            .await;
        let mut spec = spec(slug);
        spec.backend = backend.to_owned();
        spec.task_type = Some(task_type.to_owned());
        self.mgmt()
            .ensure(&spec, inferencekey_core::OnDrift::Reconcile, None)
            .await
            .unwrap();
        self.data().endpoint(slug, None).unwrap()
    }

    /// One admin request; returns the status and the JSON body (`null` when empty).
    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self
            .admin
            .request(method, format!("{}{path}", self.url()))
            .bearer_auth(&self.platform.info().admin_token);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let bytes = response.bytes().await.unwrap();
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        (status, value)
    }

    /// Add a fault rule.
    pub async fn fault(&self, rule: Value) {
        let (status, body) = self
            .admin(reqwest::Method::POST, "/_local/faults", Some(rule))
            .await;
        assert_eq!(status, 201, "fault rule refused: {body}");
    }

    /// Engine settings of one workload of the default project.
    pub async fn settings(&self, slug: &str, settings: Value) {
        let path = format!(
            "/_local/projects/{}/workloads/{slug}/settings",
            self.project()
        );
        let (status, body) = self
            .admin(reqwest::Method::PUT, &path, Some(settings))
            .await;
        assert_eq!(status, 204, "settings refused: {body}");
    }

    /// Engine settings for workloads created from now on.
    pub async fn defaults(&self, settings: Value) {
        let (status, body) = self
            .admin(reqwest::Method::PUT, "/_local/defaults", Some(settings))
            .await;
        assert_eq!(status, 204, "defaults refused: {body}");
    }

    /// A new token from the admin API.
    pub async fn token(&self, request: Value) -> String {
        let (status, body) = self
            .admin(reqwest::Method::POST, "/_local/tokens", Some(request))
            .await;
        assert_eq!(status, 201, "token refused: {body}");
        body["token"].as_str().unwrap().to_owned()
    }

    /// The journal, oldest first.
    pub async fn journal(&self) -> Vec<Value> {
        let (status, body) = self
            .admin(reqwest::Method::GET, "/_local/journal", None)
            .await;
        assert_eq!(status, 200);
        body.as_array().unwrap().clone()
    }

    /// Journal entries as `METHOD path` lines.
    pub async fn requests(&self) -> Vec<String> {
        request_lines(&self.journal().await)
    }

    /// How many journaled requests' `METHOD path` lines satisfy `matches`.
    pub async fn count_requests(&self, matches: impl Fn(&str) -> bool) -> usize {
        self.requests()
            .await
            .iter()
            .filter(|line| matches(line))
            .count()
    }

    pub async fn clear_journal(&self) {
        let (status, _) = self
            .admin(reqwest::Method::DELETE, "/_local/journal", None)
            .await;
        assert_eq!(status, 204);
    }

    /// The journal entries for a path suffix, once every one of them has a final outcome; gives up
    /// after 30 s or more (a hang guard, not an expectation).
    pub async fn settled_entries(&self, path_suffix: &str) -> Vec<Value> {
        for _ in 0..600 {
            let entries: Vec<Value> = self
                .journal()
                .await
                .into_iter()
                .filter(|e| e["path"].as_str().unwrap().ends_with(path_suffix))
                .collect();
            if entries
                .iter()
                .all(|e| !e["outcome"].is_null() && e["outcome"] != "in_progress")
            {
                return entries;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("journal entries for {path_suffix} never settled");
    }
}

/// Journal entries as `METHOD path` lines (for tests that also read the entries themselves).
pub fn request_lines(entries: &[Value]) -> Vec<String> {
    entries
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e["method"].as_str().unwrap(),
                e["path"].as_str().unwrap()
            )
        })
        .collect()
}

/// The JSON object of a spec's config.
pub fn object(value: Value) -> serde_json::Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

/// A chat request with a prompt.
pub fn prompt(text: &str) -> inferencekey_core::ChatRequest {
    inferencekey_core::ChatRequest {
        prompt: Some(text.to_owned()),
        max_tokens: Some(12),
        ..Default::default()
    }
}
