//! The journal of what went over the wire: one entry per non-admin request (redacted headers and
//! body, status, outcome, bytes sent, disconnects, fault), and the response body that tracks it.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::http::HeaderMap;
use bytes::Bytes;
use hyper::body::{Body as _, Frame, SizeHint};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::sync::lock;
use crate::token::redact_text;

/// Entries kept; the oldest are dropped beyond this, so a long bench cannot exhaust memory.
pub const MAX_ENTRIES: usize = 10_000;
/// Request bodies larger than this are recorded as a note, not kept.
pub const MAX_KEPT_BODY: usize = 1024 * 1024;

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Still being answered (a stream in flight, or a stall).
    InProgress,
    /// The whole response was handed to the connection.
    Ok,
    /// The client went away before the stream finished.
    ClientDisconnected,
    /// The connection was closed with no response (a `reset` fault).
    Reset,
    /// The server failed (a handler panic, caught and answered with 500).
    Error,
}

/// One journaled request.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// Arrival order, from 1.
    pub seq: u64,
    /// HTTP method.
    pub method: String,
    /// Path as sent (percent-encoded).
    pub path: String,
    /// Query string, if any.
    pub query: Option<String>,
    /// Lower-case header names; tokens redacted.
    pub headers: Map<String, Value>,
    /// JSON body, text body, or `null` when empty; tokens redacted.
    pub body: Value,
    /// Response status; `null` until answered, and for a reset.
    pub status: Option<u16>,
    /// How it ended.
    pub outcome: Outcome,
    /// Response body bytes handed to the connection.
    pub bytes_sent: u64,
    /// The client went away before the response finished.
    pub client_disconnected: bool,
    /// The fault rule that shaped the response.
    pub fault: Option<String>,
    /// Arrival, in ms since the server started.
    pub started_ms: u64,
    /// Time until the response finished; `null` while in progress.
    pub duration_ms: Option<u64>,
}

/// The journal itself.
#[derive(Debug, Default)]
pub struct Journal {
    entries: VecDeque<Entry>,
    next_seq: u64,
}

/// The journal shared by the server and the bodies it tracks.
pub type SharedJournal = Arc<Mutex<Journal>>;

impl Journal {
    /// Records an arriving request; returns its `seq`.
    pub fn begin(
        &mut self,
        method: &str,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
        body: &[u8],
        started_ms: u64,
    ) -> u64 {
        self.next_seq += 1;
        let seq = self.next_seq;
        if self.entries.len() >= MAX_ENTRIES {
            self.entries.pop_front();
        }
        self.entries.push_back(Entry {
            seq,
            method: method.to_string(),
            path: redact_text(path),
            query: query.map(redact_text),
            headers: redacted_headers(headers),
            body: recorded_body(body),
            status: None,
            outcome: Outcome::InProgress,
            bytes_sent: 0,
            client_disconnected: false,
            fault: None,
            started_ms,
            duration_ms: None,
        });
        seq
    }

    /// Records the response head.
    pub fn respond(&mut self, seq: u64, status: Option<u16>, fault: Option<String>) {
        if let Some(entry) = self.entry_mut(seq) {
            entry.status = status;
            entry.fault = fault;
        }
    }

    /// Records how the request ended.
    pub fn finish(&mut self, seq: u64, outcome: Outcome, bytes_sent: u64, duration_ms: u64) {
        if let Some(entry) = self.entry_mut(seq) {
            entry.outcome = outcome;
            entry.bytes_sent = bytes_sent;
            entry.client_disconnected = outcome == Outcome::ClientDisconnected;
            entry.duration_ms = Some(duration_ms);
        }
    }

    /// Every entry, oldest first.
    pub fn entries(&self) -> Vec<Entry> {
        self.entries.iter().cloned().collect()
    }

    /// Forgets every entry (sequence numbers keep growing).
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    fn entry_mut(&mut self, seq: u64) -> Option<&mut Entry> {
        // Entries are in seq order, so the position follows from the first one's seq.
        let first = self.entries.front()?.seq;
        let index = usize::try_from(seq.checked_sub(first)?).ok()?;
        self.entries.get_mut(index).filter(|entry| entry.seq == seq)
    }
}

fn redacted_headers(headers: &HeaderMap) -> Map<String, Value> {
    let mut out = Map::new();
    for name in headers.keys() {
        let value = headers
            .get_all(name)
            .iter()
            .map(|v| redact_text(&String::from_utf8_lossy(v.as_bytes())))
            .collect::<Vec<_>>()
            .join(", ");
        out.insert(name.as_str().to_string(), Value::from(value));
    }
    out
}

fn recorded_body(body: &[u8]) -> Value {
    if body.is_empty() {
        return Value::Null;
    }
    if body.len() > MAX_KEPT_BODY {
        return Value::from(format!("<{} bytes, not kept>", body.len()));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(json) => redact_json(json),
        Err(_) => Value::from(redact_text(&String::from_utf8_lossy(body))),
    }
}

/// `value` with every secret inside its strings redacted, and values of secret-named keys hidden.
fn redact_json(value: Value) -> Value {
    inferencekey_secrets::redact_json(value)
}

/// A streamed response body that records in the journal how it ended: finished, failed, or
/// dropped early (the client disconnected).
pub struct TrackedBody {
    inner: Body,
    tracker: Option<Tracker>,
}

struct Tracker {
    journal: SharedJournal,
    seq: u64,
    started: Instant,
    bytes: u64,
}

impl TrackedBody {
    /// `inner`, untracked.
    pub fn plain(inner: Body) -> Self {
        Self {
            inner,
            tracker: None,
        }
    }

    /// `inner`, finishing entry `seq` of `journal` when it ends or is dropped.
    pub fn tracked(inner: Body, journal: SharedJournal, seq: u64, started: Instant) -> Self {
        Self {
            inner,
            tracker: Some(Tracker {
                journal,
                seq,
                started,
                bytes: 0,
            }),
        }
    }

    fn finish(&mut self, outcome: Outcome) {
        if let Some(tracker) = self.tracker.take() {
            let elapsed = u64::try_from(tracker.started.elapsed().as_millis()).unwrap_or(u64::MAX);
            lock(&tracker.journal).finish(tracker.seq, outcome, tracker.bytes, elapsed);
        }
    }
}

impl hyper::body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(tracker)) = (frame.data_ref(), self.tracker.as_mut()) {
                    tracker.bytes += data.len() as u64;
                }
            }
            Poll::Ready(Some(Err(_))) => self.finish(Outcome::Error),
            // Finished before hyper writes the end of the body, so a client that has read the
            // whole stream always finds the entry complete.
            Poll::Ready(None) => self.finish(Outcome::Ok),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for TrackedBody {
    fn drop(&mut self) {
        let outcome = if self.inner.is_end_stream() {
            Outcome::Ok
        } else {
            Outcome::ClientDisconnected
        };
        self.finish(outcome);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use axum::http::header;

    #[test]
    fn entries_are_redacted_and_updated() {
        let mut journal = Journal::default();
        let mut headers = HeaderMap::new();
        let token = format!("ik_sdk_0a1b2c3d_{}", "e".repeat(64));
        headers.insert(
            header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
        let body = format!("{{\"note\": \"{token}\"}}");
        let seq = journal.begin("POST", "/api/x", None, &headers, body.as_bytes(), 5);
        journal.respond(seq, Some(201), Some("f1".to_string()));
        journal.finish(seq, Outcome::Ok, 10, 2);
        let entry = &journal.entries()[0];
        assert_eq!(entry.headers["authorization"], "Bearer ik_sdk_0a1b2c3d…");
        assert_eq!(entry.body["note"], "ik_sdk_0a1b2c3d…");
        assert_eq!((entry.status, entry.bytes_sent), (Some(201), 10));
        assert_eq!(entry.fault.as_deref(), Some("f1"));
        assert!(!serde_json::to_string(entry).unwrap().contains(&token));
    }

    #[test]
    fn every_secret_format_is_redacted_not_only_tokens() {
        let mut journal = Journal::default();
        let headers = HeaderMap::new();
        let hf = format!("hf_{}", "AbCdEfGhIj".repeat(4));
        let body = serde_json::json!({
            "config": {"env": {"HF_TOKEN": hf, "PASSWORD": "hunter2hunter2", "HF_HUB_OFFLINE": "1"}},
            "model": "https://user:pa55word99@models.example/m",
        })
        .to_string();
        journal.begin("POST", "/api/x", None, &headers, body.as_bytes(), 5);
        let entry = &journal.entries()[0];
        assert_eq!(entry.body["config"]["env"]["HF_TOKEN"], "hf_\u{2026}");
        assert_eq!(entry.body["config"]["env"]["PASSWORD"], "\u{2026}");
        assert_eq!(entry.body["config"]["env"]["HF_HUB_OFFLINE"], "1");
        assert_eq!(
            entry.body["model"],
            "https://user:\u{2026}@models.example/m"
        );
    }

    #[test]
    fn bodies_and_capacity() {
        let mut journal = Journal::default();
        let headers = HeaderMap::new();
        journal.begin("GET", "/", None, &headers, b"", 0);
        journal.begin("POST", "/", None, &headers, b"not json", 0);
        journal.begin(
            "POST",
            "/",
            None,
            &headers,
            &vec![b'x'; MAX_KEPT_BODY + 1],
            0,
        );
        let entries = journal.entries();
        assert_eq!(entries[0].body, Value::Null);
        assert_eq!(entries[1].body, "not json");
        assert!(entries[2].body.as_str().unwrap().contains("not kept"));
        for _ in 0..MAX_ENTRIES {
            journal.begin("GET", "/", None, &headers, b"", 0);
        }
        let entries = journal.entries();
        assert_eq!(entries.len(), MAX_ENTRIES);
        let last = entries.last().unwrap().seq;
        journal.finish(last, Outcome::Ok, 1, 1);
        assert_eq!(journal.entries().last().unwrap().outcome, Outcome::Ok);
    }
}
