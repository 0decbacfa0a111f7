//! Token shapes: the `ik_sdk_` / `ik_live_` / `ik_admin_` prefixes, minting real-shaped tokens,
//! and cutting any secret in a text to what may be shown, for every output.

use crate::rng::SplitMix64;

/// Prefix of management-plane tokens.
pub const SDK_PREFIX: &str = "ik_sdk_";
/// Prefix of data-plane keys.
pub const LIVE_PREFIX: &str = "ik_live_";
/// Prefix of the local admin token.
pub const ADMIN_PREFIX: &str = "ik_admin_";

/// A new token `<prefix><8 hex>_<64 hex>` from a seeded generator (same seed, same tokens).
pub fn mint(prefix: &str, rng: &mut SplitMix64) -> String {
    format!("{prefix}{}_{}", rng.hex(8), rng.hex(64))
}

/// A new token `<prefix><8 hex>_<64 hex>` from the operating system's random generator: 32 bits
/// of id and 256 bits of secret that nobody can predict.
pub fn mint_random(prefix: &str) -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 4 + 32];
    getrandom::fill(&mut bytes)?;
    let (id, secret) = bytes.split_at(4);
    Ok(format!("{prefix}{}_{}", hex(id), hex(secret)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// `ik_sdk_0a1b2c3d…`: the prefix and the first 8 characters of the id.
pub fn redact_token(token: &str) -> String {
    redact_text(token)
}

/// `text` with every secret cut to what may be shown: an `ik_sdk_` / `ik_live_` / `ik_admin_` token to its
/// prefix and id, every other recognised credential (`hf_…`, `sk-…`, passwords in URLs, ...) to its prefix; the
/// one definition of a secret is the `inferencekey-secrets` crate's, shared with the SDK.
pub fn redact_text(text: &str) -> String {
    inferencekey_secrets::redact(text)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn minted_tokens_have_the_real_shape() {
        let token = mint(SDK_PREFIX, &mut SplitMix64::new(1));
        let rest = token.strip_prefix("ik_sdk_").unwrap();
        let (id, secret) = rest.split_once('_').unwrap();
        assert_eq!(id.len(), 8);
        assert_eq!(secret.len(), 64);
        assert!(id
            .chars()
            .chain(secret.chars())
            .all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn random_tokens_have_the_real_shape_and_differ() {
        let token = mint_random(LIVE_PREFIX).unwrap();
        let (id, secret) = token
            .strip_prefix("ik_live_")
            .unwrap()
            .split_once('_')
            .unwrap();
        assert_eq!((id.len(), secret.len()), (8, 64));
        assert!(id
            .chars()
            .chain(secret.chars())
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(token, mint_random(LIVE_PREFIX).unwrap());
    }

    #[test]
    fn redaction_keeps_prefix_and_id_only() {
        let token = "ik_live_0a1b2c3d_".to_string() + &"f".repeat(64);
        assert_eq!(redact_token(&token), "ik_live_0a1b2c3d…");
        let text = format!("Bearer {token}, ik_sdk_ alone, x ik_admin_99887766_abc!");
        let once = redact_text(&text);
        assert_eq!(
            once,
            "Bearer ik_live_0a1b2c3d…, ik_sdk_ alone, x ik_admin_99887766…!"
        );
        assert_eq!(redact_text(&once), once);
    }
}
