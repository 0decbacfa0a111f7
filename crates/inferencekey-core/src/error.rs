//! The one error type of the SDK: its kinds, its structured HTTP attributes, and the mapping of platform
//! error responses (every body shape of platform-wire section 8) to kinds and messages, tokens redacted.

use std::fmt;

use serde_json::{Map, Value};

use crate::plan::Plan;
use crate::token::redact;

/// What went wrong, as the Python layer maps it to exception classes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Local misconfiguration found before any request (no token, no project, secret in a spec, ...).
    Configuration,
    /// Local validation, or a 400/422 from the server.
    Validation,
    /// `ensure(on_drift=FAIL)` found drift; `Error::plan` holds the plan.
    Drift,
    /// 401.
    Auth,
    /// 403, or a credential of the wrong kind found locally; `Error::code` says which.
    PermissionDenied,
    /// 404: the workload (or another resource named) does not exist.
    NotFound,
    /// 429: too many requests; `Error::retry_after` says how long the platform asked to wait, when it did.
    RateLimited,
    /// Any other HTTP error, an in-band stream error, or a malformed response.
    Api,
    /// The connection could not be made or broke.
    Connection,
    /// A transport timeout (connect, or no data for the idle read timeout).
    Timeout,
    /// The deadline of a readiness wait passed.
    WaitTimeout,
}

/// An error response body: parsed JSON, or the text the server sent.
#[derive(Clone, Debug, PartialEq)]
pub enum ErrorBody {
    /// The body parsed as JSON.
    Json(Value),
    /// A body that is not JSON.
    Text(String),
}

/// An SDK error. `Display` is the full message; `Debug` redacts tokens. Local errors carry no HTTP data.
#[derive(Clone, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    /// What went wrong.
    pub kind: ErrorKind,
    /// The full message, e.g. `validation error: name must not be empty`; never holds a full token.
    pub message: String,
    /// The HTTP status, when a response was received.
    pub status: Option<u16>,
    /// The platform's error code (`wrong_credential_type`, `scope_insufficient`, ...), when known.
    pub code: Option<String>,
    /// The `x-request-id` response header, when present.
    pub request_id: Option<String>,
    /// The response body, when there was one.
    pub body: Option<ErrorBody>,
    /// The plan that drifted (for `ErrorKind::Drift`).
    pub plan: Option<Box<Plan>>,
    /// The response's `Retry-After`, in seconds, when it had one (a 429 or 503).
    pub retry_after: Option<f64>,
}

/// Longest server text quoted in a message (HTML error pages can be huge; the body keeps it all).
const MAX_QUOTED_CHARS: usize = 1000;

impl Error {
    /// An error of `kind` with `message` (redacted) and no HTTP data.
    pub(crate) fn new(kind: ErrorKind, message: impl AsRef<str>) -> Self {
        Self {
            kind,
            message: redact(message.as_ref()),
            status: None,
            code: None,
            request_id: None,
            body: None,
            plan: None,
            retry_after: None,
        }
    }

    /// A local configuration error with exactly `message`.
    pub fn configuration(message: impl AsRef<str>) -> Self {
        Self::new(ErrorKind::Configuration, message)
    }

    /// A local validation error: `validation error: <detail>`.
    pub fn validation(detail: impl fmt::Display) -> Self {
        Self::new(ErrorKind::Validation, format!("validation error: {detail}"))
    }

    /// A local permission error: `permission denied [<code>]: <detail>`.
    pub(crate) fn permission_denied(code: &str, detail: impl fmt::Display) -> Self {
        let mut err = Self::new(
            ErrorKind::PermissionDenied,
            format!("permission denied [{code}]: {detail}"),
        );
        err.code = Some(code.to_owned());
        err
    }

    /// An API error with no HTTP status (malformed response, in-band stream error, ...).
    pub(crate) fn api(message: impl AsRef<str>) -> Self {
        Self::new(ErrorKind::Api, message)
    }

    /// This error tagged with the `x-request-id` of the response it came from (an existing one is kept), for
    /// failures found after a 2xx answer: a malformed body, an in-band error, a stream cut short.
    pub(crate) fn with_request_id(mut self, request_id: Option<&str>) -> Self {
        if self.request_id.is_none() {
            self.request_id = request_id.map(redact);
        }
        self
    }

    /// This error carrying `body` (what the server sent), redacted as every text leaving the SDK is.
    pub(crate) fn with_body(mut self, body: ErrorBody) -> Self {
        self.body = Some(redact_body(body));
        self
    }

    /// This error carrying the server's error `code`, redacted.
    pub(crate) fn with_code(mut self, code: Option<String>) -> Self {
        self.code = code.map(|c| redact(&c));
        self
    }

    /// This error with `hint` appended to its message (redacted, as every message is), its other fields kept.
    pub(crate) fn with_hint(mut self, hint: &str) -> Self {
        self.message = redact(&format!("{}{hint}", self.message));
        self
    }

    /// An error a server reported in a 2xx body or a stream event (`what` says who: `workload "bot"`, `the
    /// readiness stream`), with the code and message of whichever error shape `body` has, and `body` kept redacted.
    pub(crate) fn reported(what: &str, body: Value) -> Self {
        let (code, message) = extract_code_message(&body);
        let message = message
            .filter(|m| !m.is_empty())
            .or_else(|| code.clone())
            .unwrap_or_else(|| "unknown error".to_owned());
        Self::api(format!("{what} reported an error: {message}"))
            .with_code(code)
            .with_body(ErrorBody::Json(body))
    }

    /// The error of a stream (from `what`) whose event grew past the SSE decoder's size cap.
    pub(crate) fn event_too_large(what: &str) -> Self {
        Self::api(format!(
            "malformed response: an event of the stream from {what} exceeded the {} MiB limit of one SSE event",
            crate::sse::MAX_EVENT_BYTES >> 20
        ))
    }

    /// The drift error of `ensure(on_drift=FAIL)`: the drifted fields, then the rendered plan.
    pub(crate) fn drift(plan: Plan) -> Self {
        let message = format!(
            "workload drifted from spec: {}\n{}",
            plan.drifted_fields().join(", "),
            plan.render()
        );
        let mut err = Self::new(ErrorKind::Drift, message);
        err.plan = Some(Box::new(plan));
        err
    }

    /// The error for a non-2xx response: kind and message per platform-wire section 8.
    pub(crate) fn from_response(status: u16, request_id: Option<String>, body: &[u8]) -> Self {
        let body = parse_body(body);
        let (code, server_message) = match &body {
            Some(ErrorBody::Json(value)) => extract_code_message(value),
            Some(ErrorBody::Text(text)) => (None, Some(text.trim().to_owned())),
            None => (None, None),
        };
        let server_message = server_message
            .filter(|m| !m.is_empty())
            .or_else(|| code.clone())
            .unwrap_or_else(|| reason_phrase(status).to_owned());
        let server_message = truncate(&server_message);
        let (kind, message) = match status {
            400 | 422 => (
                ErrorKind::Validation,
                format!("validation error: {server_message}"),
            ),
            401 => (
                ErrorKind::Auth,
                format!("authentication failed: {server_message}"),
            ),
            403 => {
                let message = match &code {
                    Some(code) => format!("permission denied [{code}]: {server_message}"),
                    None => format!("permission denied: {server_message}"),
                };
                (ErrorKind::PermissionDenied, message)
            }
            _ => {
                let message = match &code {
                    Some(code) if *code != server_message => {
                        format!("HTTP {status} [{code}]: {server_message}")
                    }
                    _ => format!("HTTP {status}: {server_message}"),
                };
                let kind = match status {
                    404 => ErrorKind::NotFound,
                    429 => ErrorKind::RateLimited,
                    _ => ErrorKind::Api,
                };
                (kind, message)
            }
        };
        let mut err = Self::new(kind, message).with_code(code);
        err.status = Some(status);
        err.request_id = request_id.map(|id| redact(&id));
        err.body = body.map(redact_body);
        err
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Fields are redacted at construction; redacting again guards values set by hand.
        let body = self.body.as_ref().map(|body| match body {
            ErrorBody::Json(value) => redact(&value.to_string()),
            ErrorBody::Text(text) => redact(text),
        });
        f.debug_struct("Error")
            .field("kind", &self.kind)
            .field("message", &redact(&self.message))
            .field("status", &self.status)
            .field("code", &self.code)
            .field("request_id", &self.request_id)
            .field("body", &body)
            .field("plan", &self.plan.as_ref().map(|plan| plan.render()))
            .field("retry_after", &self.retry_after)
            .finish()
    }
}

/// A convenience alias for results of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// The body as JSON when it parses, else as text; `None` when empty.
fn parse_body(body: &[u8]) -> Option<ErrorBody> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(value) => Some(ErrorBody::Json(value)),
        Err(_) => Some(ErrorBody::Text(String::from_utf8_lossy(body).into_owned())),
    }
}

/// Redact every string inside a body (a server may echo a credential back).
fn redact_body(body: ErrorBody) -> ErrorBody {
    match body {
        ErrorBody::Json(value) => ErrorBody::Json(inferencekey_secrets::redact_json(value)),
        ErrorBody::Text(text) => ErrorBody::Text(redact(&text)),
    }
}

/// A JSON scalar used as a code: strings as they are, numbers as digits (vLLM sends `"code": 500`).
fn code_text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A message from `message`, or `detail` (a string, or FastAPI's list of `{loc, msg}`).
fn message_text(map: &Map<String, Value>) -> Option<String> {
    if let Some(Value::String(s)) = map.get("message") {
        return Some(s.trim().to_owned());
    }
    match map.get("detail") {
        Some(Value::String(s)) => Some(s.trim().to_owned()),
        Some(Value::Array(items)) => {
            let parts: Vec<String> = items.iter().map(detail_item_text).collect();
            Some(parts.join("; "))
        }
        Some(other @ Value::Object(_)) => Some(other.to_string()),
        _ => None,
    }
}

/// One FastAPI validation item as `loc.path: msg`.
fn detail_item_text(item: &Value) -> String {
    let msg = item.get("msg").and_then(Value::as_str);
    let loc = item.get("loc").and_then(Value::as_array).map(|parts| {
        parts
            .iter()
            .map(|p| match p {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join(".")
    });
    match (loc, msg) {
        (Some(loc), Some(msg)) if !loc.is_empty() => format!("{loc}: {msg}"),
        (_, Some(msg)) => msg.to_owned(),
        _ => item.to_string(),
    }
}

/// True for a 2xx body that carries an error instead of a result: a non-null `error`, or `"object": "error"`.
pub(crate) fn is_inband_error(body: &Value) -> bool {
    body.get("error").is_some_and(|e| !e.is_null())
        || body.get("object").and_then(Value::as_str) == Some("error")
}

/// The error code and message of a JSON error body, whatever its shape:
/// `{"error": "<code>"}`, `{"error": {"code", "message"}}`, `{"message"}`, `{"detail"}`, `{"object": "error", ...}`.
pub(crate) fn extract_code_message(body: &Value) -> (Option<String>, Option<String>) {
    let Value::Object(map) = body else {
        return match body {
            Value::String(s) => (None, Some(s.trim().to_owned())),
            Value::Null => (None, None),
            other => (None, Some(other.to_string())),
        };
    };
    match map.get("error") {
        Some(Value::String(code)) => {
            let code = Some(code.trim().to_owned()).filter(|c| !c.is_empty());
            (code, message_text(map))
        }
        Some(Value::Object(inner)) => {
            let code = code_text(inner.get("code")).or_else(|| code_text(inner.get("type")));
            let message = message_text(inner).or_else(|| message_text(map));
            (code, message)
        }
        _ => {
            let code = code_text(map.get("code")).or_else(|| code_text(map.get("type")));
            let message = message_text(map);
            if code.is_none() && message.is_none() {
                (None, Some(body.to_string()))
            } else {
                (code, message)
            }
        }
    }
}

/// `text` cut to a readable length on a character boundary.
fn truncate(text: &str) -> String {
    match text.char_indices().nth(MAX_QUOTED_CHARS) {
        Some((cut, _)) => format!("{}\u{2026}", &text[..cut]),
        None => text.to_owned(),
    }
}

/// The standard reason phrase, used when the server gave no message.
fn reason_phrase(status: u16) -> &'static str {
    reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("error")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use serde_json::json;

    fn from_json(status: u16, body: Value) -> Error {
        Error::from_response(
            status,
            Some("req_1".to_owned()),
            body.to_string().as_bytes(),
        )
    }

    #[test]
    fn validation_statuses() {
        let err = from_json(400, json!({"detail": "unknown task_type \"foo\""}));
        assert_eq!(err.kind, ErrorKind::Validation);
        assert_eq!(err.message, "validation error: unknown task_type \"foo\"");
        assert_eq!(err.status, Some(400));
        assert_eq!(err.request_id.as_deref(), Some("req_1"));
        let err = from_json(
            422,
            json!({"detail": [{"loc": ["body", "name"], "msg": "field required"}]}),
        );
        assert_eq!(err.kind, ErrorKind::Validation);
        assert_eq!(err.message, "validation error: body.name: field required");
    }

    #[test]
    fn auth_with_code_only_body() {
        let err = from_json(
            401,
            json!({"error": "invalid_token", "message": "invalid or expired credentials"}),
        );
        assert_eq!(err.kind, ErrorKind::Auth);
        assert_eq!(
            err.message,
            "authentication failed: invalid or expired credentials"
        );
        assert_eq!(err.code.as_deref(), Some("invalid_token"));
        let err = from_json(401, json!({"error": "unauthorized"}));
        assert_eq!(err.message, "authentication failed: unauthorized");
    }

    #[test]
    fn permission_denied_nested_shape() {
        let err = from_json(
            403,
            json!({"error": {"code": "project_scope_mismatch", "message": "token is not scoped to project \"acme\""}}),
        );
        assert_eq!(err.kind, ErrorKind::PermissionDenied);
        assert_eq!(err.code.as_deref(), Some("project_scope_mismatch"));
        assert_eq!(
            err.message,
            "permission denied [project_scope_mismatch]: token is not scoped to project \"acme\""
        );
        assert_eq!(
            err.body,
            Some(ErrorBody::Json(
                json!({"error": {"code": "project_scope_mismatch", "message": "token is not scoped to project \"acme\""}})
            ))
        );
    }

    #[test]
    fn permission_denied_without_code() {
        let err = from_json(403, json!({"message": "forbidden here"}));
        assert_eq!(err.message, "permission denied: forbidden here");
        assert_eq!(err.code, None);
    }

    #[test]
    fn integer_code_and_flat_object_error() {
        let err = from_json(
            500,
            json!({"error": {"message": "engine crashed", "type": "InternalServerError", "code": 500}}),
        );
        assert_eq!(err.kind, ErrorKind::Api);
        assert_eq!(err.code.as_deref(), Some("500"));
        assert_eq!(err.message, "HTTP 500 [500]: engine crashed");
        let err = from_json(
            404,
            json!({"object": "error", "message": "model not found", "type": "NotFoundError", "code": 404}),
        );
        assert_eq!(err.code.as_deref(), Some("404"));
        assert!(err.message.contains("model not found"));
        assert!(err.message.starts_with("HTTP 404"));
    }

    #[test]
    fn null_code_falls_back_to_type() {
        let err = from_json(
            400,
            json!({"error": {"message": "bad", "type": "invalid_request_error", "param": null, "code": null}}),
        );
        assert_eq!(err.code.as_deref(), Some("invalid_request_error"));
        assert_eq!(err.message, "validation error: bad");
    }

    #[test]
    fn plain_text_and_empty_bodies() {
        let err = Error::from_response(502, None, b"Bad gateway from upstream\n");
        assert_eq!(err.kind, ErrorKind::Api);
        assert_eq!(err.message, "HTTP 502: Bad gateway from upstream");
        assert_eq!(
            err.body,
            Some(ErrorBody::Text("Bad gateway from upstream\n".to_owned()))
        );
        let err = Error::from_response(404, None, b"");
        assert_eq!(err.message, "HTTP 404: Not Found");
        assert_eq!(err.body, None);
        assert_eq!(err.request_id, None);
    }

    #[test]
    fn unknown_json_shape_is_quoted() {
        let err = from_json(409, json!({"conflict": true}));
        assert_eq!(err.message, "HTTP 409: {\"conflict\":true}");
        let err = from_json(429, json!({"error": "rate_limited"}));
        assert_eq!(err.message, "HTTP 429: rate_limited");
        assert_eq!(err.code.as_deref(), Some("rate_limited"));
    }

    #[test]
    fn long_text_is_truncated_in_message_only() {
        let text = "x".repeat(5000);
        let err = Error::from_response(500, None, text.as_bytes());
        assert!(err.message.chars().count() < 1100);
        assert!(err.message.ends_with('\u{2026}'));
        assert_eq!(err.body, Some(ErrorBody::Text(text)));
    }

    #[test]
    fn tokens_never_survive_in_message_body_or_debug() {
        let token = "ik_sdk_a1b2c3d4_0123456789abcdef0123456789abcdef";
        let err = from_json(
            401,
            json!({"error": {"code": "invalid", "message": format!("bad token {token}")}}),
        );
        assert_eq!(
            err.message,
            "authentication failed: bad token ik_sdk_a1b2c3d4\u{2026}"
        );
        let debug = format!("{err:?}");
        assert!(!debug.contains("0123456789abcdef"), "{debug}");
        assert!(!format!("{:?}", err.body).contains("0123456789abcdef"));
        let local = Error::configuration(format!("nope {token}"));
        assert_eq!(local.to_string(), "nope ik_sdk_a1b2c3d4\u{2026}");
    }

    #[test]
    fn local_constructors() {
        let err = Error::validation("name must not be empty");
        assert_eq!(err.to_string(), "validation error: name must not be empty");
        assert_eq!(err.status, None);
        let err = Error::permission_denied("wrong_credential_type", "x");
        assert_eq!(err.code.as_deref(), Some("wrong_credential_type"));
        assert_eq!(err.message, "permission denied [wrong_credential_type]: x");
    }

    #[test]
    fn request_id_of_a_2xx_answer_is_kept_once() {
        let err = Error::api("malformed response").with_request_id(Some("req_a"));
        assert_eq!(err.request_id.as_deref(), Some("req_a"));
        assert_eq!(err.status, None);
        let again = err.with_request_id(Some("req_b"));
        assert_eq!(again.request_id.as_deref(), Some("req_a"));
        assert_eq!(Error::api("x").with_request_id(None).request_id, None);
    }
}
