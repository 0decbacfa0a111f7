//! Tokens: telling `ik_sdk_` control tokens from `ik_live_` data keys, finding them in any text,
//! and redacting them to `prefix + first 8 characters of the id + …` wherever text leaves the SDK.

use std::fmt;

/// Prefix of control-plane tokens.
pub(crate) const SDK_PREFIX: &str = "ik_sdk_";
/// Prefix of data-plane keys.
pub(crate) const LIVE_PREFIX: &str = "ik_live_";

/// How many characters of a token's id survive redaction.
const SHOWN_ID_CHARS: usize = 8;

/// What a credential string is, judged by its prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TokenKind {
    /// `ik_sdk_...`: control plane.
    Sdk,
    /// `ik_live_...`: data plane.
    Live,
    /// Anything else (passed through; the server judges it).
    Other,
}

/// The kind of a (trimmed) credential.
pub(crate) fn token_kind(token: &str) -> TokenKind {
    if token.starts_with(SDK_PREFIX) {
        TokenKind::Sdk
    } else if token.starts_with(LIVE_PREFIX) {
        TokenKind::Live
    } else {
        TokenKind::Other
    }
}

/// Where the next token prefix starts in `bytes[from..]` and how long that prefix is, only counting prefixes
/// followed by an ASCII letter or digit (so prose such as "an ik_sdk_ token" is not a token).
fn next_token(bytes: &[u8], from: usize) -> Option<(usize, usize)> {
    let mut at = from;
    while at + 3 <= bytes.len() {
        let rest = &bytes[at..];
        let found = rest.windows(3).position(|w| w == b"ik_")?;
        let start = at + found;
        let tail = &bytes[start..];
        for prefix in [SDK_PREFIX, LIVE_PREFIX] {
            if tail.starts_with(prefix.as_bytes()) {
                if let Some(next) = tail.get(prefix.len()) {
                    if next.is_ascii_alphanumeric() {
                        return Some((start, prefix.len()));
                    }
                }
            }
        }
        at = start + 3;
    }
    None
}

/// True when `text` holds something shaped like a token (a prefix followed by a letter or digit).
pub(crate) fn contains_token(text: &str) -> bool {
    next_token(text.as_bytes(), 0).is_some()
}

/// `text` with every `ik_sdk_`/`ik_live_` token shortened to its prefix, the first 8 characters of its id
/// and `…` (U+2026); the secret part never survives. Text without tokens comes back unchanged.
pub fn redact(text: &str) -> String {
    let bytes = text.as_bytes();
    let Some(mut found) = next_token(bytes, 0) else {
        return text.to_owned();
    };
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    loop {
        let (start, prefix_len) = found;
        let id_start = start + prefix_len;
        // The id runs up to the `_` before the secret; the whole token is every letter, digit and `_` after it.
        let id_len = bytes[id_start..]
            .iter()
            .take_while(|b| b.is_ascii_alphanumeric())
            .count();
        let token_len = bytes[id_start..]
            .iter()
            .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_')
            .count();
        out.push_str(&text[copied..id_start]);
        out.push_str(&text[id_start..id_start + id_len.min(SHOWN_ID_CHARS)]);
        copied = id_start + token_len;
        // Already-redacted text keeps its one ellipsis.
        if !text[copied..].starts_with('\u{2026}') {
            out.push('\u{2026}');
        }
        match next_token(bytes, copied) {
            Some(next) => found = next,
            None => break,
        }
    }
    out.push_str(&text[copied..]);
    out
}

/// A credential held by a client: usable on the wire, redacted in every `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret(String);

impl Secret {
    /// Wrap a credential.
    pub(crate) fn new(token: String) -> Self {
        Self(token)
    }

    /// The full credential, for the `Authorization` header only.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }

    /// The redacted form, for messages.
    pub(crate) fn redacted(&self) -> String {
        redact(&self.0)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if contains_token(&self.0) {
            write!(f, "{:?}", redact(&self.0))
        } else {
            // A credential of unknown shape is hidden entirely.
            f.write_str("\"<redacted>\"")
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    const SDK: &str =
        "ik_sdk_a1b2c3d4_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const LIVE: &str =
        "ik_live_proj1234_ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff";

    #[test]
    fn kinds_by_prefix() {
        assert_eq!(token_kind(SDK), TokenKind::Sdk);
        assert_eq!(token_kind(LIVE), TokenKind::Live);
        assert_eq!(token_kind("sk-abc"), TokenKind::Other);
        assert_eq!(token_kind("IK_SDK_x"), TokenKind::Other);
    }

    #[test]
    fn redacts_one_token_to_prefix_and_id() {
        assert_eq!(redact(SDK), "ik_sdk_a1b2c3d4\u{2026}");
        assert_eq!(redact(LIVE), "ik_live_proj1234\u{2026}");
    }

    #[test]
    fn redacts_every_token_inside_text() {
        let text = format!("Bearer {SDK} and key={LIVE}, done");
        assert_eq!(
            redact(&text),
            "Bearer ik_sdk_a1b2c3d4\u{2026} and key=ik_live_proj1234\u{2026}, done"
        );
    }

    #[test]
    fn long_id_without_separator_is_cut_at_eight() {
        assert_eq!(
            redact("x ik_sdk_abcdefghijklmnop y"),
            "x ik_sdk_abcdefgh\u{2026} y"
        );
        assert_eq!(redact("ik_live_ab_secret"), "ik_live_ab\u{2026}");
    }

    #[test]
    fn prose_and_already_redacted_text_unchanged() {
        let prose = "the data plane requires an ik_live_ key; the control plane an ik_sdk_ token (ik_live_...)";
        assert_eq!(redact(prose), prose);
        let once = redact(SDK);
        assert_eq!(redact(&once), once);
        assert_eq!(redact(""), "");
        assert_eq!(redact("ik_"), "ik_");
        assert_eq!(redact("ik_sdk_"), "ik_sdk_");
    }

    #[test]
    fn handles_non_ascii_around_tokens() {
        assert_eq!(
            redact("é ik_sdk_a1b2c3d4_s3cr3t ü"),
            "é ik_sdk_a1b2c3d4\u{2026} ü"
        );
    }

    #[test]
    fn contains_token_needs_alphanumeric_after_prefix() {
        assert!(contains_token(&format!("vllm serve --api-key {LIVE}")));
        assert!(contains_token("ik_sdk_0"));
        assert!(!contains_token("ik_sdk_"));
        assert!(!contains_token("ik_sdk_-x"));
        assert!(!contains_token("an ik_live_ key"));
    }

    #[test]
    fn secret_debug_never_shows_the_secret() {
        let secret = Secret::new(SDK.to_owned());
        let shown = format!("{secret:?}");
        assert_eq!(shown, "\"ik_sdk_a1b2c3d4\u{2026}\"");
        assert_eq!(
            format!("{:?}", Secret::new("hunter2".to_owned())),
            "\"<redacted>\""
        );
        assert_eq!(secret.expose(), SDK);
    }
}
