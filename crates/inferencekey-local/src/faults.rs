//! Fault rules set through the admin API: parsing and validation, matching a request's route and
//! workload with counts and seeded probabilities, and the faults that act before a handler runs.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{json, Value};

use crate::reply::{empty, json_response};
use crate::rng::SplitMix64;
use crate::slug::canonical_slug;
use crate::sync::lock;

/// A route of the platform that a fault rule can target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Route {
    /// C1.
    List,
    /// C2.
    Create,
    /// C3.
    Patch,
    /// C4.
    Delete,
    /// C5 (SSE).
    Readiness,
    /// Non-stream chat completion.
    Chat,
    /// Streamed chat completion (SSE).
    ChatStream,
    /// Embeddings.
    Embeddings,
    /// Rerank.
    Rerank,
}

impl Route {
    fn is_sse(self) -> bool {
        matches!(self, Route::Readiness | Route::ChatStream)
    }
}

/// Where a stall happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StallAt {
    /// Before the response head.
    Headers,
    /// After the head, before the first event.
    FirstChunk,
    /// After the first event.
    MidStream,
}

/// The shape of an in-band error frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorShape {
    /// `{"error": {...}}` in the engine's style.
    Nested,
    /// `{"object": "error", "message": ...}`.
    Flat,
    /// An `event: error` SSE event.
    Event,
}

/// SSE line ending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LineEnding {
    /// `\n`.
    #[default]
    Lf,
    /// `\r\n`.
    Crlf,
    /// `\r`.
    Cr,
}

impl LineEnding {
    /// The bytes of the line ending.
    pub fn as_bytes(self) -> &'static [u8] {
        match self {
            LineEnding::Lf => b"\n",
            LineEnding::Crlf => b"\r\n",
            LineEnding::Cr => b"\r",
        }
    }
}

/// How SSE events are framed (all legal SSE, all meaning the same events).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Framing {
    /// Line ending.
    #[serde(default)]
    pub line_ending: LineEnding,
    /// One leading UTF-8 byte-order mark.
    #[serde(default)]
    pub bom: bool,
    /// Each JSON split over several `data:` lines.
    #[serde(default)]
    pub multiline: bool,
    /// `: keep-alive` comment lines interleaved.
    #[serde(default)]
    pub comments: bool,
    /// One multi-byte character written across two writes.
    #[serde(default)]
    pub split_utf8: bool,
    /// One chunk's JSON padded with an unknown field of this many bytes.
    #[serde(default)]
    pub huge_frame_bytes: Option<usize>,
}

/// What a fault does.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Fault {
    /// Answer with this status, body and headers instead of running the route.
    Status {
        /// HTTP status.
        status: u16,
        /// JSON body, or a string sent as text/plain; `null` = no body; absent = an error object.
        #[serde(default, deserialize_with = "present")]
        body: Option<Value>,
        /// `Retry-After` seconds.
        #[serde(default)]
        retry_after: Option<u64>,
        /// Extra (or replacing) response headers.
        #[serde(default)]
        headers: BTreeMap<String, String>,
    },
    /// Close the connection with no response.
    Reset {},
    /// Stop sending for `ms`.
    Stall {
        /// Where.
        #[serde(default = "stall_at_headers")]
        at: StallAt,
        /// How long.
        ms: u64,
    },
    /// Write the stream body a few bytes at a time.
    Drip {
        /// Bytes per write (at least 1).
        #[serde(default = "three")]
        bytes_per_write: usize,
        /// Pause between writes.
        #[serde(default = "one_ms")]
        interval_ms: u64,
    },
    /// End the stream cleanly after that many events, before any finish or `[DONE]`; with `after_finish`,
    /// after every event but `[DONE]` (a stream that is complete without its last frame).
    Truncate {
        /// Events sent before the end.
        #[serde(default = "two")]
        after_events: usize,
        /// Send the finish (and the usage chunk), leave out only `[DONE]`.
        #[serde(default)]
        after_finish: bool,
    },
    /// Send the engine's error frame after that many events.
    InbandError {
        /// Events sent before the error.
        #[serde(default = "two")]
        after_events: usize,
        /// Frame shape; the engine's own when absent.
        #[serde(default)]
        shape: Option<ErrorShape>,
        /// Error message.
        #[serde(default = "boom")]
        message: String,
    },
    /// Frame the same events differently.
    Framing(Framing),
    /// One `data:` line that is not JSON, after that many events.
    MalformedJson {
        /// Events sent before the bad line.
        #[serde(default = "one")]
        after_events: usize,
    },
    /// After that many events, `data: ` and then a line that never ends: `x` bytes, no newline,
    /// as fast as the client reads, until it goes away (or 2 GiB).
    EndlessLine {
        /// Events sent before the endless line.
        #[serde(default)]
        after_events: usize,
    },
    /// Answer a stream request with a plain JSON completion.
    NonSse {},
    /// A twin workload with the same slug appears just before the create.
    RaceCreate {},
}

fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}
fn stall_at_headers() -> StallAt {
    StallAt::Headers
}
fn one() -> usize {
    1
}
fn two() -> usize {
    2
}
fn three() -> usize {
    3
}
fn one_ms() -> u64 {
    1
}
fn boom() -> String {
    "injected engine failure".to_string()
}
fn default_count() -> Option<u64> {
    Some(1)
}
fn certain() -> f64 {
    1.0
}

impl Fault {
    /// Whether this fault can act on `route`.
    fn applies_to(&self, route: Route) -> bool {
        match self {
            Fault::Status { .. }
            | Fault::Reset {}
            | Fault::Stall {
                at: StallAt::Headers,
                ..
            } => true,
            Fault::RaceCreate {} => route == Route::Create,
            Fault::NonSse {} => route == Route::ChatStream,
            Fault::Stall { .. }
            | Fault::Drip { .. }
            | Fault::Truncate { .. }
            | Fault::InbandError { .. }
            | Fault::Framing(_)
            | Fault::MalformedJson { .. }
            | Fault::EndlessLine { .. } => route.is_sse(),
        }
    }

    fn validate(&self) -> Result<(), String> {
        match self {
            Fault::Status {
                status, headers, ..
            } => {
                StatusCode::from_u16(*status)
                    .map_err(|_| format!("status {status} is not an HTTP status"))?;
                for (name, value) in headers {
                    HeaderName::try_from(name.as_str())
                        .map_err(|_| format!("invalid header name \"{name}\""))?;
                    HeaderValue::try_from(value.as_str())
                        .map_err(|_| format!("invalid value for header \"{name}\""))?;
                }
                Ok(())
            }
            Fault::Drip {
                bytes_per_write: 0, ..
            } => Err("bytes_per_write must be at least 1".to_string()),
            _ => Ok(()),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    route: String,
    #[serde(default)]
    workload: Option<String>,
    #[serde(default = "default_count")]
    count: Option<u64>,
    #[serde(default = "certain")]
    probability: f64,
    fault: Value,
}

/// A stored fault rule.
#[derive(Debug, Clone)]
struct Rule {
    id: String,
    route: Option<Route>,
    workload: Option<String>,
    count: Option<u64>,
    probability: f64,
    fault: Fault,
    spec: Value,
    fired: u64,
}

/// A fault chosen for one request.
#[derive(Debug, Clone)]
pub struct Fired {
    /// The rule id (`f1`, ...), recorded in the journal.
    pub id: String,
    /// What to do.
    pub fault: Fault,
}

/// The fault rules, in the order they were added, with the seeded generator of their draws.
#[derive(Debug)]
pub struct FaultSet {
    rules: Vec<Rule>,
    next_id: u64,
    seed: u64,
    rng: SplitMix64,
}

impl FaultSet {
    /// No rules; probabilities drawn from `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            rules: Vec::new(),
            next_id: 1,
            seed,
            rng: SplitMix64::new(seed),
        }
    }

    /// Drops every rule and restarts the draws and the ids.
    pub fn clear(&mut self) {
        *self = Self::new(self.seed);
    }

    /// Adds the rule in `body`; returns its id or why it was refused.
    pub fn add(&mut self, body: &Value) -> Result<String, String> {
        let spec: RuleSpec =
            serde_json::from_value(body.clone()).map_err(|e| format!("invalid fault rule: {e}"))?;
        let fault: Fault = serde_json::from_value(spec.fault.clone())
            .map_err(|e| format!("invalid fault: {e}"))?;
        fault.validate()?;
        let route = match spec.route.as_str() {
            "*" => None,
            name => Some(
                serde_json::from_value::<Route>(Value::from(name))
                    .map_err(|_| format!("unknown route \"{name}\""))?,
            ),
        };
        if let Some(route) = route {
            if !fault.applies_to(route) {
                return Err(format!(
                    "this fault type cannot act on route \"{}\"",
                    spec.route
                ));
            }
        }
        if !(0.0..=1.0).contains(&spec.probability) {
            return Err("probability must be between 0 and 1".to_string());
        }
        let id = format!("f{}", self.next_id);
        self.next_id += 1;
        self.rules.push(Rule {
            id: id.clone(),
            route,
            workload: spec.workload.as_deref().map(canonical_slug),
            count: spec.count,
            probability: spec.probability,
            fault,
            spec: spec.fault,
            fired: 0,
        });
        Ok(id)
    }

    /// The rules as the admin API lists them, with their `fired` counts.
    pub fn list(&self) -> Value {
        Value::Array(
            self.rules
                .iter()
                .map(|rule| {
                    json!({
                        "id": rule.id,
                        "route": rule.route.map_or(json!("*"), |r| json!(r)),
                        "workload": rule.workload,
                        "count": rule.count,
                        "probability": rule.probability,
                        "fault": rule.spec,
                        "fired": rule.fired,
                    })
                })
                .collect(),
        )
    }

    /// The first rule that fires for a request on `route` (for `workload`), counting it.
    pub fn pick(&mut self, route: Route, workload: Option<&str>) -> Option<Fired> {
        for rule in &mut self.rules {
            let eligible = rule.route.is_none_or(|r| r == route)
                && rule.fault.applies_to(route)
                && rule.workload.as_deref().is_none_or(|w| Some(w) == workload)
                && rule.count.is_none_or(|count| rule.fired < count);
            if !eligible {
                continue;
            }
            if rule.probability < 1.0 && self.rng.unit() >= rule.probability {
                continue;
            }
            rule.fired += 1;
            return Some(Fired {
                id: rule.id.clone(),
                fault: rule.fault.clone(),
            });
        }
        None
    }
}

/// Marks a response with the fault that shaped it, for the journal.
#[derive(Debug, Clone)]
pub struct FaultTag(pub String);

/// Marks a response that must not be sent: the connection is closed instead.
#[derive(Debug, Clone, Copy)]
pub struct ResetConnection;

/// Picks the fault for this request from the platform's `faults` and performs what acts before
/// the handler: a `status` or `reset` fault becomes the response (`Err`), a header stall waits.
/// Any other fault is handed back for the handler to apply.
pub async fn preflight(
    faults: &Mutex<FaultSet>,
    route: Route,
    workload: Option<&str>,
) -> Result<Option<Fired>, Response> {
    let Some(fired) = lock(faults).pick(route, workload) else {
        return Ok(None);
    };
    match &fired.fault {
        Fault::Status {
            status,
            body,
            retry_after,
            headers,
        } => Err(tag(
            status_response(*status, body.as_ref(), *retry_after, headers, &fired.id),
            Some(&fired),
        )),
        Fault::Reset {} => {
            let mut response = empty(StatusCode::INTERNAL_SERVER_ERROR);
            response.extensions_mut().insert(ResetConnection);
            Err(tag(response, Some(&fired)))
        }
        Fault::Stall {
            at: StallAt::Headers,
            ms,
        } => {
            tokio::time::sleep(Duration::from_millis(*ms)).await;
            Ok(Some(fired))
        }
        _ => Ok(Some(fired)),
    }
}

/// `response` tagged with the fault that fired, if any.
pub fn tag(mut response: Response, fired: Option<&Fired>) -> Response {
    if let Some(fired) = fired {
        response.extensions_mut().insert(FaultTag(fired.id.clone()));
    }
    response
}

fn status_response(
    status: u16,
    body: Option<&Value>,
    retry_after: Option<u64>,
    headers: &BTreeMap<String, String>,
    id: &str,
) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = match body {
        None => json_response(
            status,
            &json!({"error": {"code": "injected_fault", "message": format!("injected fault {id}")}}),
        ),
        Some(Value::Null) => empty(status),
        Some(Value::String(text)) => {
            let mut response = Response::new(axum::body::Body::from(text.clone()));
            *response.status_mut() = status;
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            response
        }
        Some(json) => json_response(status, json),
    };
    let extra = response.headers_mut();
    if let Some(seconds) = retry_after {
        extra.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::try_from(name.as_str()),
            HeaderValue::try_from(value.as_str()),
        ) {
            extra.insert(name, value);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn parses_every_fault_type() {
        let mut set = FaultSet::new(0);
        for fault in [
            json!({"type": "status", "status": 503, "body": "busy", "retry_after": 1,
                   "headers": {"x-request-id": "req_1"}}),
            json!({"type": "reset"}),
            json!({"type": "stall", "at": "mid_stream", "ms": 10}),
            json!({"type": "drip", "bytes_per_write": 3, "interval_ms": 1}),
            json!({"type": "truncate", "after_events": 2}),
            json!({"type": "inband_error", "after_events": 2, "shape": "flat", "message": "boom"}),
            json!({"type": "framing", "line_ending": "crlf", "bom": true, "multiline": true,
                   "comments": true, "split_utf8": true, "huge_frame_bytes": 1024}),
            json!({"type": "malformed_json", "after_events": 1}),
            json!({"type": "endless_line", "after_events": 3}),
            json!({"type": "endless_line"}),
            json!({"type": "non_sse"}),
        ] {
            set.add(&json!({"route": "chat_stream", "fault": fault}))
                .unwrap();
        }
        set.add(&json!({"route": "create", "fault": {"type": "race_create"}}))
            .unwrap();
        assert_eq!(set.list().as_array().unwrap().len(), 12);
        set.add(&json!({"route": "readiness", "fault": {"type": "endless_line"}}))
            .unwrap();
    }

    #[test]
    fn refuses_bad_rules() {
        let mut set = FaultSet::new(0);
        for bad in [
            json!({"route": "nowhere", "fault": {"type": "reset"}}),
            json!({"route": "list", "fault": {"type": "truncate"}}),
            json!({"route": "chat", "fault": {"type": "non_sse"}}),
            json!({"route": "chat", "fault": {"type": "endless_line"}}),
            json!({"route": "list", "fault": {"type": "endless_line"}}),
            json!({"route": "*", "fault": {"type": "endless_line", "after_events": -1}}),
            json!({"route": "*", "fault": {"type": "endless_line", "bytes": 5}}),
            json!({"route": "*", "fault": {"type": "explode"}}),
            json!({"route": "*", "fault": {"type": "status", "status": 1000}}),
            json!({"route": "*", "fault": {"type": "reset", "extra": 1}}),
            json!({"route": "*", "probability": 2.0, "fault": {"type": "reset"}}),
            json!({"route": "*", "fault": {"type": "drip", "bytes_per_write": 0}}),
        ] {
            assert!(set.add(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn counts_workloads_and_applicability() {
        let mut set = FaultSet::new(0);
        set.add(&json!({"route": "*", "workload": "Bot A", "count": 2,
                        "fault": {"type": "truncate"}}))
            .unwrap();
        assert!(set.pick(Route::List, Some("bot-a")).is_none());
        assert!(set.pick(Route::ChatStream, Some("bot-b")).is_none());
        assert!(set.pick(Route::ChatStream, Some("bot-a")).is_some());
        assert!(set.pick(Route::Readiness, Some("bot-a")).is_some());
        assert!(set.pick(Route::ChatStream, Some("bot-a")).is_none());
        set.add(&json!({"route": "list", "count": null, "fault": {"type": "reset"}}))
            .unwrap();
        for _ in 0..5 {
            assert_eq!(set.pick(Route::List, None).unwrap().id, "f2");
        }
    }

    #[test]
    fn probability_is_seeded() {
        let draws = |seed| {
            let mut set = FaultSet::new(seed);
            set.add(&json!({"route": "list", "count": null, "probability": 0.5,
                            "fault": {"type": "reset"}}))
                .unwrap();
            (0..64)
                .map(|_| set.pick(Route::List, None).is_some())
                .collect::<Vec<_>>()
        };
        let first = draws(9);
        assert_eq!(first, draws(9));
        let fired = first.iter().filter(|f| **f).count();
        assert!((10..54).contains(&fired), "{fired}");
    }
}
