//! The mapping of HTTP error responses to errors (`Error::from_response`, every body shape of platform-wire
//! section 8) and of in-band errors in 2xx bodies. The first byte picks the status, the rest is the body. It never
//! panics; the kind follows the status; the message has the kind's wording and a bounded quote of the server's text;
//! no message, body or `Debug` holds a full token; and redacting any text leaves at most 8 characters of a token id.
#![no_main]

use inferencekey_core::fuzzing::{error_response, inband, SLUG};
use inferencekey_core::{redact, ErrorBody, ErrorKind};
use inferencekey_fuzz::assert_redacted;
use libfuzzer_sys::fuzz_target;

const STATUSES: [u16; 16] = [
    400, 401, 403, 404, 405, 409, 413, 422, 429, 500, 501, 502, 503, 504, 418, 599,
];

fuzz_target!(|input: &[u8]| {
    let Some((&selector, body)) = input.split_first() else {
        return;
    };
    let status = match STATUSES.get(usize::from(selector)) {
        Some(&status) => status,
        // Any other u16, including ones that are not HTTP statuses at all.
        None => u16::from(selector) * 257,
    };
    let err = error_response(status, Some("req_fuzz".to_owned()), body);
    let (kind, prefix) = match status {
        400 | 422 => (ErrorKind::Validation, "validation error: ".to_owned()),
        401 => (ErrorKind::Auth, "authentication failed: ".to_owned()),
        403 => (ErrorKind::PermissionDenied, "permission denied".to_owned()),
        _ => (ErrorKind::Api, format!("HTTP {status}")),
    };
    assert_eq!(err.kind, kind);
    assert!(
        err.message.starts_with(&prefix),
        "{:?} for {status}",
        err.message
    );
    assert_eq!(err.status, Some(status));
    assert_eq!(err.request_id.as_deref(), Some("req_fuzz"));
    // The server's text is quoted up to 1000 characters; the code is not cut, so it is allowed for separately;
    // redaction shortens each token but adds an ellipsis to it, so ellipses are not counted.
    let code_chars = err.code.as_deref().map_or(0, |c| c.chars().count());
    let quoted = err.message.chars().filter(|&c| c != '\u{2026}').count();
    assert!(
        quoted <= prefix.len() + code_chars + 1000 + 16,
        "message of {quoted} chars"
    );
    assert_redacted("message", &err.message);
    match &err.body {
        Some(ErrorBody::Json(value)) => assert_redacted("JSON body", &value.to_string()),
        Some(ErrorBody::Text(text)) => assert_redacted("text body", text),
        None => assert!(body.iter().all(u8::is_ascii_whitespace)),
    }
    let _ = format!("{err:?}");
    // Redaction itself, on the raw body as text (it guards every message, log line and body the SDK shows).
    assert_redacted("redacted body", &redact(&String::from_utf8_lossy(body)));
    if let Some(err) = inband(body) {
        assert_eq!(err.kind, ErrorKind::Api);
        let expected = format!("workload {SLUG:?} reported an error: ");
        assert!(err.message.starts_with(&expected), "{:?}", err.message);
        assert_redacted("in-band message", &err.message);
    }
});
