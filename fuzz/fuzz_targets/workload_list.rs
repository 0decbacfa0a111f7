//! The control plane's decoders of platform JSON: the workload list (C1, every shape), a single workload (C2/C3)
//! and a readiness event (C5). They never panic; whatever they accept has a non-empty id and slug, a list never
//! grows, and a readiness phase is non-empty and trimmed.
#![no_main]

use inferencekey_core::fuzzing::{readiness, workload_body, workload_list};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    if let Ok(workloads) = workload_list(data) {
        let items = match serde_json::from_slice::<Value>(data) {
            Ok(Value::Array(items)) => items.len(),
            Ok(Value::Object(map)) => map
                .get("workloads")
                .and_then(Value::as_array)
                .map_or(0, Vec::len),
            _ => 0,
        };
        assert!(
            workloads.len() <= items,
            "{} workloads from {items} items",
            workloads.len()
        );
        for w in &workloads {
            assert!(!w.id.is_empty() && !w.slug.is_empty());
            assert!(w.raw.is_object());
        }
    }
    if let Ok(w) = workload_body(data) {
        assert!(!w.id.is_empty() && !w.slug.is_empty());
        assert!(w.raw.is_object());
    }
    if let Some((phase, _message, step)) = readiness(data) {
        assert!(!phase.is_empty() && phase.trim() == phase);
        assert_ne!(step.as_deref(), Some(""));
    }
});
