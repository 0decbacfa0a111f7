//! One server-sent event before framing (`SseEvent`: data, name, whether it ends the stream,
//! delay): what the dialects and the readiness engine produce and the stream writer frames.

use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;

/// One SSE event before framing.
#[derive(Debug, Clone)]
pub struct SseEvent {
    /// The `event:` field, if any.
    pub name: Option<&'static str>,
    /// The `data:` payload (JSON text or `[DONE]`).
    pub data: Bytes,
    /// Carries a finish (`finish_reason`, a terminal phase, usage, `[DONE]`): truncation and
    /// in-band errors cut before it.
    pub terminal: bool,
    /// Wait before sending it (time to first token, inter-token latency), counted on the stream's
    /// schedule: from when the previous event was due, not from when it was sent.
    pub delay: Duration,
}

impl SseEvent {
    /// An event with raw `data`.
    pub fn data(data: Bytes, terminal: bool) -> Self {
        Self {
            name: None,
            data,
            terminal,
            delay: Duration::ZERO,
        }
    }

    /// An event carrying `value` as JSON.
    pub fn json(value: &Value, terminal: bool) -> Self {
        Self::data(
            Bytes::from(serde_json::to_vec(value).unwrap_or_default()),
            terminal,
        )
    }

    /// `data: [DONE]`.
    pub fn done() -> Self {
        Self::data(Bytes::from_static(b"[DONE]"), true)
    }

    /// The event with an `event:` name.
    pub fn named(self, name: &'static str) -> Self {
        Self {
            name: Some(name),
            ..self
        }
    }

    /// The event sent after waiting `delay`.
    pub fn after(self, delay: Duration) -> Self {
        Self { delay, ..self }
    }

    /// The event with its JSON object padded by an unknown field of `bytes` bytes (the
    /// `huge_frame_bytes` framing fault).
    pub fn padded(self, bytes: usize) -> Self {
        let Ok(Value::Object(mut fields)) = serde_json::from_slice::<Value>(&self.data) else {
            return self;
        };
        fields.insert("x_padding".to_string(), Value::from("p".repeat(bytes)));
        Self {
            data: Bytes::from(serde_json::to_vec(&fields).unwrap_or_default()),
            ..self
        }
    }
}
