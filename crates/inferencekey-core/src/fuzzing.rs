//! Entry points for the fuzz targets in `fuzz/` (a cargo-fuzz project outside the workspace): thin wrappers over
//! the crate-private decoders of untrusted bytes. Not part of the SDK's API: hidden from the docs, no stability
//! promise, no caller but the fuzz targets and the tests below.

use serde_json::Value;

use crate::data::{content_text, decode_stream, inband_error};
use crate::error::Error;
use crate::event;
use crate::wire::{decode_readiness, decode_workload_list, Workload};
use crate::ChatChunk;

/// The workload slug the wrappers report errors for.
pub const SLUG: &str = "fuzz";

/// What a streamed chat body decodes to (see [`chat_stream`]).
#[derive(Debug)]
pub struct StreamOutcome {
    /// The chunks, in order.
    pub chunks: Vec<ChatChunk>,
    /// `[DONE]` was seen (later events are ignored).
    pub done: bool,
    /// A chunk carried a `finish_reason`.
    pub finished: bool,
    /// The failure that ended the stream (in-band error, malformed JSON), if any.
    pub error: Option<Error>,
}

/// A streamed chat body, arriving in `reads`, through the SSE decoder and the per-event decode of a `ChatStream`.
pub fn chat_stream(reads: &[&[u8]]) -> StreamOutcome {
    let (chunks, done, finished, error) = decode_stream(reads.iter().copied(), SLUG);
    StreamOutcome {
        chunks,
        done,
        finished,
        error,
    }
}

/// What the stream reads from one event's data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatEvent {
    /// The event is an in-band error.
    pub is_error: bool,
    /// `choices[0].delta.content` as text.
    pub text: String,
    /// `choices[0].finish_reason` when a string.
    pub finish_reason: Option<String>,
}

/// The typed single-pass decode of one event's data (what a `ChatStream` runs); the error as text.
pub fn chat_event(data: &[u8]) -> Result<ChatEvent, String> {
    event::decode(data)
        .map(|fields| ChatEvent {
            is_error: fields.is_error,
            text: fields.text,
            finish_reason: fields.finish_reason,
        })
        .map_err(|err| err.to_string())
}

/// The reference for [`chat_event`]: a `serde_json::Value` parse read with the non-stream helpers.
pub fn chat_event_by_value(data: &[u8]) -> Result<ChatEvent, String> {
    let raw: Value = serde_json::from_slice(data).map_err(|err| err.to_string())?;
    let choice = raw.get("choices").and_then(|c| c.get(0));
    Ok(ChatEvent {
        is_error: inband_error(&raw, SLUG).is_some(),
        text: content_text(
            choice
                .and_then(|c| c.get("delta"))
                .and_then(|d| d.get("content")),
        ),
        finish_reason: choice
            .and_then(|c| c.get("finish_reason"))
            .and_then(Value::as_str)
            .map(str::to_owned),
    })
}

/// A workload list (C1) body.
pub fn workload_list(body: &[u8]) -> Result<Vec<Workload>, Error> {
    decode_workload_list(body)
}

/// A single-workload (C2, C3) body.
pub fn workload_body(body: &[u8]) -> Result<Workload, Error> {
    Workload::from_body(body)
}

/// A readiness (C5) event's data as `(phase, message, step)`.
pub fn readiness(data: &[u8]) -> Option<(String, String, Option<String>)> {
    decode_readiness(data).map(|p| (p.phase, p.message, p.step))
}

/// The error for a non-2xx response with `status` and `body`.
pub fn error_response(status: u16, request_id: Option<String>, body: &[u8]) -> Error {
    Error::from_response(status, request_id, body)
}

/// The in-band error a 2xx JSON body carries, if it parses and is one.
pub fn inband(body: &[u8]) -> Option<Error> {
    let value: Value = serde_json::from_slice(body).ok()?;
    inband_error(&value, SLUG)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::error::ErrorKind;

    // The wrappers are exercised here so that they build and agree with the code they wrap in every `cargo test`,
    // not only in a fuzz build.
    #[test]
    fn wrappers_reach_the_decoders() {
        let stream = b"data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n";
        let outcome = chat_stream(&[&stream[..9], &stream[9..]]);
        assert_eq!(outcome.chunks.len(), 1);
        assert_eq!(outcome.chunks[0].text, "Hi");
        assert!(outcome.done && outcome.finished && outcome.error.is_none());
        let data = br#"{"choices":[{"delta":{"content":"x"},"finish_reason":"length"}]}"#;
        assert_eq!(chat_event(data), chat_event_by_value(data));
        assert_eq!(chat_event(data).unwrap().text, "x");
        assert!(chat_event(b"{").is_err());
        assert_eq!(
            workload_list(br#"[{"id":"w1","slug":"a"},5]"#).unwrap()[0].slug,
            "a"
        );
        assert_eq!(workload_body(br#"{"id":1,"slug":"a"}"#).unwrap().id, "1");
        assert_eq!(readiness(br#"{"phase":"ready"}"#).unwrap().0, "ready");
        let err = error_response(403, None, br#"{"error":{"code":"c","message":"m"}}"#);
        assert_eq!(err.kind, ErrorKind::PermissionDenied);
        assert!(inband(br#"{"object":"error","message":"m"}"#).is_some());
        assert!(inband(b"[]").is_none());
    }
}
