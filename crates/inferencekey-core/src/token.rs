//! Tokens: telling `ik_sdk_` control tokens from `ik_live_` data keys, and the secret scan and redaction
//! (every recognised credential format, from `inferencekey-secrets`) wherever text leaves the SDK.

use std::fmt;

pub use inferencekey_secrets::redact;
pub(crate) use inferencekey_secrets::{contains_secret, Kind};

/// Prefix of control-plane tokens.
pub(crate) const SDK_PREFIX: &str = "ik_sdk_";
/// Prefix of data-plane keys.
pub(crate) const LIVE_PREFIX: &str = "ik_live_";

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
        if contains_secret(&self.0).is_some() {
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

    fn contains_token(text: &str) -> bool {
        contains_secret(text).is_some()
    }

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
