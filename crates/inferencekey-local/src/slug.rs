//! Slug canonicalisation (platform-wire section 4): non-alphanumerics become `-`, lower-case,
//! runs of `-` collapse, no leading or trailing `-`.

/// The canonical form of `raw`; may be empty when `raw` has no ASCII letter or digit.
pub fn canonical_slug(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for ch in raw.chars() {
        if ch.is_ascii_alphanumeric() {
            out.push(ch.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    while out.ends_with('-') {
        out.pop();
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn spec_examples() {
        assert_eq!(
            canonical_slug("Gemma 4 26B (llama.cpp / GGUF) on R9700"),
            "gemma-4-26b-llama-cpp-gguf-on-r9700"
        );
        assert_eq!(canonical_slug("  Mixed_Case--Slug  "), "mixed-case-slug");
        assert_eq!(canonical_slug("café-日本"), "caf");
        assert_eq!(canonical_slug(" -- "), "");
    }
}
