//! Engine settings of a workload (readiness profile, latencies, embedding size, bench mode, usage
//! reporting) and the partial updates the admin API applies to them.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::readiness::Profile;

/// The largest latency a setting accepts, so a typo cannot hang a test for hours.
const MAX_LATENCY_MS: u64 = 600_000;
/// The largest embedding dimension accepted.
const MAX_EMBEDDING_DIM: u64 = 8192;

/// How a workload behaves; the admin API's "engine settings".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngineSettings {
    /// Readiness profile.
    pub readiness: Profile,
    /// Message of the `error` phase under the `error` profile.
    pub error_message: String,
    /// Time to first token of streamed chat, in ms.
    pub ttft_ms: u64,
    /// Time between tokens of streamed chat, in ms.
    pub itl_ms: u64,
    /// Dimension of the hashing embeddings.
    pub embedding_dim: usize,
    /// Stream `max_tokens` chunks from pre-rendered frames with no delay.
    pub bench: bool,
    /// Force the usage chunk on or off; `None` follows `stream_options.include_usage`.
    pub include_usage: Option<bool>,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            readiness: Profile::Fast,
            error_message: "CUDA out of memory".to_string(),
            ttft_ms: 0,
            itl_ms: 0,
            embedding_dim: 64,
            bench: false,
            include_usage: None,
        }
    }
}

impl EngineSettings {
    /// Applies the fields present in `body` (a JSON object); unknown fields are refused so a
    /// typo in a test setup fails loudly. Returns whether `readiness` was given.
    pub fn apply(&mut self, body: &Value) -> Result<bool, String> {
        let fields = body
            .as_object()
            .ok_or_else(|| "engine settings must be a JSON object".to_string())?;
        let mut next = self.clone();
        let mut readiness_given = false;
        for (key, value) in fields {
            match key.as_str() {
                "readiness" => {
                    next.readiness = value
                        .as_str()
                        .and_then(Profile::parse)
                        .ok_or_else(|| format!("readiness must be one of {}", Profile::NAMES))?;
                    readiness_given = true;
                }
                "error_message" => {
                    next.error_message = value
                        .as_str()
                        .ok_or_else(|| "error_message must be a string".to_string())?
                        .to_string();
                }
                "ttft_ms" => next.ttft_ms = bounded(key, value, MAX_LATENCY_MS)?,
                "itl_ms" => next.itl_ms = bounded(key, value, MAX_LATENCY_MS)?,
                "embedding_dim" => {
                    let dim = bounded(key, value, MAX_EMBEDDING_DIM)?;
                    if dim == 0 {
                        return Err("embedding_dim must be at least 1".to_string());
                    }
                    next.embedding_dim = usize::try_from(dim).unwrap_or(64);
                }
                "bench" => {
                    next.bench = value
                        .as_bool()
                        .ok_or_else(|| "bench must be a boolean".to_string())?;
                }
                "include_usage" => {
                    next.include_usage = match value {
                        Value::Null => None,
                        Value::Bool(flag) => Some(*flag),
                        _ => return Err("include_usage must be a boolean or null".to_string()),
                    };
                }
                other => return Err(format!("unknown engine setting \"{other}\"")),
            }
        }
        *self = next;
        Ok(readiness_given)
    }
}

fn bounded(key: &str, value: &Value, max: u64) -> Result<u64, String> {
    value
        .as_u64()
        .filter(|n| *n <= max)
        .ok_or_else(|| format!("{key} must be an integer from 0 to {max}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use serde_json::json;

    #[test]
    fn partial_update_keeps_other_fields() {
        let mut settings = EngineSettings::default();
        let given = settings
            .apply(&json!({"ttft_ms": 5, "include_usage": true}))
            .unwrap();
        assert!(!given);
        assert_eq!(settings.ttft_ms, 5);
        assert_eq!(settings.include_usage, Some(true));
        assert_eq!(settings.readiness, Profile::Fast);
        assert!(settings
            .apply(&json!({"readiness": "stuck", "include_usage": null}))
            .unwrap());
        assert_eq!(settings.include_usage, None);
        assert_eq!(settings.readiness, Profile::Stuck);
    }

    #[test]
    fn bad_updates_change_nothing() {
        let mut settings = EngineSettings::default();
        for bad in [
            json!({"readiness": "slow"}),
            json!({"embedding_dim": 0}),
            json!({"ttft_ms": -1}),
            json!({"bench": "yes"}),
            json!({"ttft_ms": 1, "colour": "red"}),
            json!([1]),
        ] {
            assert!(settings.apply(&bad).is_err(), "{bad}");
        }
        assert_eq!(settings, EngineSettings::default());
    }
}
