//! The chat-chunk decoder (`event::decode`, the single typed pass a stream runs on each event's data): it never
//! panics and reads exactly what a `serde_json::Value` parse read with the non-stream helpers reads, errors
//! included (same message, same position).
#![no_main]

use inferencekey_core::fuzzing::{chat_event, chat_event_by_value};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let typed = chat_event(data);
    let reference = chat_event_by_value(data);
    assert_eq!(typed, reference, "typed decode and Value parse disagree");
});
