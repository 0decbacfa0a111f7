//! The deploy-manifest reader (`parse_manifest`, TOML): it never panics; what it accepts is at least one workload,
//! each valid, with distinct canonical slugs; what it refuses is a one-line `Validation` or `Configuration` error
//! that names the file and the line (1 ..= lines + 1) unless the file as a whole is at fault, and never quotes a
//! token; a file holding a token anywhere is refused as such.
#![no_main]

use inferencekey_core::{canonical_slug, parse_manifest, ErrorKind};
use inferencekey_fuzz::assert_redacted;
use libfuzzer_sys::fuzz_target;

const ORIGIN: &str = "fuzz.toml";

/// A token prefix followed by an ASCII letter or digit, as the SDK's secret scan defines a token.
fn has_token(text: &str) -> bool {
    ["ik_sdk_", "ik_live_"].iter().any(|prefix| {
        text.match_indices(prefix).any(|(at, _)| {
            text.as_bytes()
                .get(at + prefix.len())
                .is_some_and(u8::is_ascii_alphanumeric)
        })
    })
}

/// The line number right after `ORIGIN:` at the start of `text`.
fn line_after_origin(text: &str) -> Option<usize> {
    let rest = text.strip_prefix(ORIGIN)?.strip_prefix(':')?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let lines = text.split('\n').count();
    let result = parse_manifest(&text, ORIGIN);
    let body = text.strip_prefix('\u{feff}').unwrap_or(&text);
    if has_token(body) {
        let err = result
            .as_ref()
            .expect_err("a file with a token was accepted");
        assert_eq!(err.kind, ErrorKind::Configuration, "{}", err.message);
        // The first line holding any secret is named, with the secret's kind (`… holds a Hugging Face token)`).
        assert!(
            err.message.starts_with("configuration error: secrets must never go in specs (")
                && err.message.contains(" holds ")
                && err.message.ends_with(')'),
            "{}",
            err.message
        );
    }
    match result {
        Ok(specs) => {
            assert!(!specs.is_empty());
            let mut slugs: Vec<String> = specs.iter().map(|s| canonical_slug(&s.slug)).collect();
            for spec in &specs {
                spec.validate().expect("an accepted spec validates");
            }
            slugs.sort();
            slugs.dedup();
            assert_eq!(slugs.len(), specs.len(), "duplicate slugs accepted");
        }
        Err(err) => {
            let message = &err.message;
            assert!(
                !message.contains(['\n', '\r']),
                "message on several lines: {message:?}"
            );
            assert_redacted("message", message);
            let line = match err.kind {
                ErrorKind::Validation => {
                    let rest = message
                        .strip_prefix("validation error: ")
                        .expect("validation wording");
                    let whole_file = [
                        format!("{ORIGIN}: declares no workload"),
                        format!("{ORIGIN}: invalid TOML: "),
                    ];
                    if whole_file.iter().any(|p| rest.starts_with(p.as_str())) {
                        None
                    } else {
                        Some(
                            line_after_origin(rest).unwrap_or_else(|| panic!("no line: {message}")),
                        )
                    }
                }
                ErrorKind::Configuration => {
                    let at = message
                        .find(&format!("({ORIGIN}:"))
                        .expect("the file is named");
                    Some(
                        line_after_origin(&message[at + 1..])
                            .unwrap_or_else(|| panic!("no line: {message}")),
                    )
                }
                kind => panic!("unexpected kind {kind:?}: {message}"),
            };
            if let Some(line) = line {
                assert!(
                    (1..=lines + 1).contains(&line),
                    "line {line} of {lines}: {message}"
                );
            }
        }
    }
});
