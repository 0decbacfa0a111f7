//! Test helpers shared by the integration tests: a platform per test, HTTP calls with JSON bodies
//! over real sockets, and a small spec-following SSE parser to compare framings.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use std::time::Duration;

use inferencekey_local::{Config, LocalPlatform};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// A running platform with its client and credentials.
pub struct Harness {
    pub lp: LocalPlatform,
    pub client: reqwest::Client,
    pub url: String,
    pub project: String,
    pub sdk: String,
    pub key: String,
    pub admin: String,
}

/// A response read in full.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub bytes: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.bytes)))
    }

    pub fn text(&self) -> String {
        String::from_utf8(self.bytes.clone()).unwrap()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    }

    /// The `{"error": {"code", "message"}}` of a platform error.
    pub fn error(&self) -> (String, String) {
        let body = self.json();
        (
            body["error"]["code"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            body["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        )
    }
}

impl Harness {
    pub fn start() -> Self {
        Self::with(Config::default())
    }

    pub fn with(config: Config) -> Self {
        let lp = LocalPlatform::start(config).unwrap();
        let info = lp.info().clone();
        Self {
            lp,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap(),
            url: info.url,
            project: info.project,
            sdk: info.sdk_token,
            key: info.api_key,
            admin: info.admin_token,
        }
    }

    pub fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> reqwest::RequestBuilder {
        let mut request = self.client.request(method, format!("{}{path}", self.url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(serde_json::to_vec(body).unwrap());
        }
        request
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Reply {
        read(
            self.request(method, path, token, body)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    pub async fn admin(&self, method: Method, path: &str, body: Option<&Value>) -> Reply {
        self.call(method, path, Some(&self.admin), body).await
    }

    pub async fn set_defaults(&self, settings: Value) {
        let reply = self
            .admin(Method::PUT, "/_local/defaults", Some(&settings))
            .await;
        assert_eq!(reply.status, 204, "{}", reply.text());
    }

    pub async fn set_settings(&self, slug: &str, settings: Value) {
        let path = format!(
            "/_local/projects/{}/workloads/{slug}/settings",
            self.project
        );
        let reply = self.admin(Method::PUT, &path, Some(&settings)).await;
        assert_eq!(reply.status, 204, "{}", reply.text());
    }

    pub async fn add_fault(&self, rule: Value) -> String {
        self.admin_create("/_local/faults", &rule, "id").await
    }

    /// POSTs `body` to an admin collection, expects 201 and returns the string `field` of the reply.
    async fn admin_create(&self, path: &str, body: &Value, field: &str) -> String {
        let reply = self.admin(Method::POST, path, Some(body)).await;
        assert_eq!(reply.status, 201, "{}", reply.text());
        reply.json()[field].as_str().unwrap().to_string()
    }

    pub async fn journal(&self) -> Vec<Value> {
        let reply = self.admin(Method::GET, "/_local/journal", None).await;
        assert_eq!(reply.status, 200);
        reply.json().as_array().unwrap().clone()
    }

    pub async fn add_token(&self, spec: Value) -> String {
        self.admin_create("/_local/tokens", &spec, "token").await
    }

    pub fn workloads_path(&self) -> String {
        format!("/api/projects/{}/workloads", self.project)
    }

    pub fn data_path(&self, slug: &str, route: &str) -> String {
        format!("/endpoint/{}/{slug}/v1/{route}", self.project)
    }

    /// Creates a workload; returns the wire object.
    pub async fn create(&self, body: Value) -> Value {
        let reply = self
            .call(
                Method::POST,
                &self.workloads_path(),
                Some(&self.sdk),
                Some(&body),
            )
            .await;
        assert_eq!(reply.status, 201, "{}", reply.text());
        reply.json()
    }

    /// Creates a workload that is ready at once.
    pub async fn create_ready(&self, slug: &str, backend: &str, task_type: &str) -> Value {
        self.set_defaults(json!({"readiness": "immediate"})).await;
        let workload = self
            .create(
                json!({"name": slug, "slug": slug, "model_name": "test/model",
                           "backend": backend, "task_type": task_type}),
            )
            .await;
        self.set_defaults(json!({"readiness": "fast"})).await;
        workload
    }

    /// POSTs a chat body with the default key.
    pub async fn chat(&self, slug: &str, body: Value) -> Reply {
        read(self.chat_request(slug, &body).send().await.unwrap()).await
    }

    /// The request of [`Harness::chat`], for tests that add headers or read the body as it streams.
    pub fn chat_request(&self, slug: &str, body: &Value) -> reqwest::RequestBuilder {
        self.request(
            Method::POST,
            &self.data_path(slug, "chat/completions"),
            Some(&self.key),
            Some(body),
        )
    }

    /// Polls the journal until `check` holds for it; gives up after 30 s or more (a hang guard, not
    /// an expectation).
    pub async fn journal_until(&self, check: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        for _ in 0..1500 {
            let entries = self.journal().await;
            if check(&entries) {
                return entries;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("journal never matched: {:#?}", self.journal().await);
    }
}

pub async fn read(response: reqwest::Response) -> Reply {
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.unwrap().to_vec();
    Reply {
        status,
        headers,
        bytes,
    }
}

/// A chat body for `prompt`.
pub fn chat_body(prompt: &str, stream: bool) -> Value {
    json!({"model": "m", "messages": [{"role": "user", "content": prompt}], "stream": stream})
}

/// One dispatched SSE event.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub event: Option<String>,
    pub data: String,
}

/// Parses an SSE body per the specification: LF/CRLF/CR, BOM, comments, multi-line data.
pub fn parse_sse(bytes: &[u8]) -> Vec<Message> {
    let text = std::str::from_utf8(bytes).unwrap();
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let normalized = text.replace("\r\n", "\n").replace('\r', "\n");
    let mut out = Vec::new();
    let mut event = None;
    let mut data: Option<String> = None;
    for line in normalized.split('\n') {
        if line.is_empty() {
            if let Some(mut payload) = data.take() {
                if payload.ends_with('\n') {
                    payload.pop();
                }
                out.push(Message {
                    event: event.take(),
                    data: payload,
                });
            }
            event = None;
            continue;
        }
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "data" => {
                let buffer = data.get_or_insert_with(String::new);
                buffer.push_str(value);
                buffer.push('\n');
            }
            "event" => event = Some(value.to_string()),
            _ => {}
        }
    }
    out
}

/// The JSON payloads of an SSE body (`[DONE]` as the string "[DONE]").
pub fn sse_json(bytes: &[u8]) -> Vec<Value> {
    parse_sse(bytes)
        .into_iter()
        .map(|m| {
            if m.data == "[DONE]" {
                json!("[DONE]")
            } else {
                serde_json::from_str(&m.data)
                    .unwrap_or_else(|e| panic!("bad JSON {e}: {:?}", m.data))
            }
        })
        .collect()
}

/// The text of streamed chat chunks.
pub fn stream_text(chunks: &[Value]) -> String {
    chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect()
}

/// A fresh directory under the system temp dir for one test.
pub fn temp_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "inferencekey-local-{tag}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}
