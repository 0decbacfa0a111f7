//! A streamed chat body end to end (SSE decoder, then the per-event decode and the in-band error and `[DONE]`
//! handling of a `ChatStream`): it never panics, any split into reads gives the same outcome, every chunk holds
//! valid JSON whose text and finish reason a `Value` parse agrees with, and no error message holds a token.
#![no_main]

use inferencekey_core::fuzzing::{chat_event_by_value, chat_stream, StreamOutcome};
use inferencekey_fuzz::{assert_redacted, cuts, split};
use libfuzzer_sys::fuzz_target;

/// What a consumer can observe of an outcome.
fn observed(outcome: &StreamOutcome) -> impl PartialEq + std::fmt::Debug + '_ {
    (
        outcome
            .chunks
            .iter()
            .map(|c| (&c.text, &c.finish_reason, &c.data))
            .collect::<Vec<_>>(),
        outcome.done,
        outcome.finished,
        outcome
            .error
            .as_ref()
            .map(|e| (e.kind, &e.message, &e.code)),
    )
}

fuzz_target!(|data: &[u8]| {
    let whole = chat_stream(&[data]);
    let split_reads = split(data, &cuts(data, 3));
    let parts = chat_stream(&split_reads);
    assert_eq!(
        observed(&parts),
        observed(&whole),
        "outcome depends on the reads"
    );
    for chunk in &whole.chunks {
        let event = chat_event_by_value(&chunk.data).expect("a chunk's data is valid JSON");
        assert!(!event.is_error, "an in-band error became a chunk");
        assert_eq!(event.text, chunk.text);
        assert_eq!(event.finish_reason, chunk.finish_reason);
    }
    assert_eq!(
        whole.finished,
        whole.chunks.iter().any(|c| c.finish_reason.is_some())
    );
    if let Some(err) = &whole.error {
        assert_redacted("stream error message", &err.message);
    }
});
