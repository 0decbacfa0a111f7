//! Deterministic synthetic engines: text generated from the messages with a seeded generator,
//! hashing embeddings (L2-normalised, texts sharing words are similar), and lexical rerank.

use serde_json::Value;

use crate::rng::{fnv1a, SplitMix64, FNV_BASIS};

/// First words of every reply: all non-ASCII, so each reply exercises multi-byte UTF-8.
const GREETINGS: &[&str] = &["¡Hola", "Grüß", "Olá", "こんにちは", "Привет", "Hallå"];

/// The rest of the vocabulary: mostly English, with accents, CJK and an emoji.
const WORDS: &[&str] = &[
    "the",
    "model",
    "answers",
    "quickly",
    "café",
    "日本",
    "naïve",
    "Zürich",
    "data",
    "stream",
    "token",
    "GPU",
    "inference",
    "key",
    "local",
    "platform",
    "works",
    "today",
    "with",
    "every",
    "engine",
    "and",
    "🙂",
    "über",
    "fast",
    "reply",
    "here",
    "is",
    "a",
    "small",
    "test",
    "of",
    "señor",
    "crème",
    "brûlée",
    "road",
    "to",
    "serving",
    "déjà",
    "vu",
];

/// Shortest and longest natural reply, in tokens.
const MIN_TOKENS: u64 = 12;
const MAX_TOKENS: u64 = 40;
/// Tokens of a bench-mode reply when `max_tokens` is not given.
pub const BENCH_DEFAULT_TOKENS: u64 = 16;

/// A generated reply.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// The tokens; concatenated they form the text.
    pub tokens: Vec<String>,
    /// `stop` when the reply ended naturally, `length` when `max_tokens` cut it.
    pub finish_reason: &'static str,
    /// Tokens counted in the prompt.
    pub prompt_tokens: u64,
}

/// The reply to `messages`: a prompt-derived length of 12-40 tokens, cut at `max_tokens`. (The chat
/// route plans through `chat::plan`, which draws the same reply from [`complete_from`].)
#[cfg(test)]
pub fn complete(seed: u64, messages: &Value, max_tokens: Option<u64>) -> Completion {
    let rendered = serde_json::to_string(messages).unwrap_or_default();
    complete_from(
        fnv1a(FNV_BASIS ^ seed, rendered.as_bytes()),
        messages,
        max_tokens,
    )
}

/// The reply of [`complete`] drawn from a generator seeded with `reply_seed` (the hash of the
/// platform seed and the messages, and of a request's `seed` when one is given).
pub fn complete_from(reply_seed: u64, messages: &Value, max_tokens: Option<u64>) -> Completion {
    let mut rng = SplitMix64::new(reply_seed);
    let natural = MIN_TOKENS + rng.below(MAX_TOKENS - MIN_TOKENS + 1);
    let (count, finish_reason) = match max_tokens {
        Some(limit) if limit < natural => (limit, "length"),
        _ => (natural, "stop"),
    };
    let tokens = (0..count)
        .map(|position| {
            let word = if position == 0 {
                GREETINGS[rng.below(GREETINGS.len() as u64) as usize]
            } else {
                WORDS[rng.below(WORDS.len() as u64) as usize]
            };
            token_text(word, position)
        })
        .collect();
    Completion {
        tokens,
        finish_reason,
        prompt_tokens: prompt_tokens(messages),
    }
}

/// The `position`-th token of the fixed bench-mode reply (a cycle over the vocabulary).
pub fn bench_token(position: usize) -> String {
    let word = if position == 0 {
        GREETINGS[0]
    } else {
        WORDS[position % WORDS.len()]
    };
    token_text(word, position as u64)
}

/// How many distinct bench tokens there are before the cycle repeats.
pub fn bench_cycle() -> usize {
    WORDS.len()
}

fn token_text(word: &str, position: u64) -> String {
    if position == 0 {
        word.to_string()
    } else {
        format!(" {word}")
    }
}

/// Prompt size: words of every text part of every message, plus 4 per message for the template.
pub fn prompt_tokens(messages: &Value) -> u64 {
    let Some(list) = messages.as_array() else {
        return 0;
    };
    list.iter()
        .map(|message| {
            let words = match message.get("content") {
                Some(Value::String(text)) => count_words(text),
                Some(Value::Array(parts)) => parts
                    .iter()
                    .filter_map(|part| part.get("text").and_then(Value::as_str))
                    .map(count_words)
                    .sum(),
                _ => 0,
            };
            words + 4
        })
        .sum()
}

/// Whitespace-separated words in `text`.
pub fn count_words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

/// Lower-cased alphanumeric words of `text`.
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// The hashing embedding of `text`: each word adds ±1 to a hashed coordinate, then L2-normalised.
/// A text with no words hashes as a whole, so every vector has unit length.
pub fn embed(seed: u64, text: &str, dim: usize) -> Vec<f32> {
    let dim = dim.max(1);
    let mut vector = vec![0f32; dim];
    let mut features = words(text);
    if features.is_empty() {
        features.push(text.to_string());
    }
    for feature in &features {
        let hash = fnv1a(FNV_BASIS ^ seed, feature.as_bytes());
        let index = (hash % dim as u64) as usize;
        vector[index] += if hash >> 63 == 0 { 1.0 } else { -1.0 };
    }
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        vector.iter_mut().for_each(|x| *x /= norm);
    } else {
        // Opposite signs of colliding words cancelled out: fall back to a fixed unit vector.
        vector[0] = 1.0;
    }
    vector
}

/// Lexical relevance of each document to `query`: the cosine of their word sets, in `[0, 1]`.
pub fn rerank_scores(query: &str, documents: &[String]) -> Vec<f64> {
    let mut query_words = words(query);
    query_words.sort();
    query_words.dedup();
    documents
        .iter()
        .map(|document| {
            let mut doc_words = words(document);
            doc_words.sort();
            doc_words.dedup();
            if query_words.is_empty() || doc_words.is_empty() {
                return 0.0;
            }
            let shared = query_words
                .iter()
                .filter(|word| doc_words.binary_search(word).is_ok())
                .count();
            shared as f64 / ((query_words.len() * doc_words.len()) as f64).sqrt()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use serde_json::json;

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn replies_are_deterministic_and_bounded() {
        let messages = json!([{"role": "user", "content": "hello there"}]);
        let a = complete(0, &messages, None);
        assert_eq!(a, complete(0, &messages, None));
        assert_ne!(a.tokens, complete(1, &messages, None).tokens);
        assert!((MIN_TOKENS..=MAX_TOKENS).contains(&(a.tokens.len() as u64)));
        assert_eq!(a.finish_reason, "stop");
        assert!(!a.tokens.concat().is_ascii());
        assert_eq!(a.prompt_tokens, 6);
        let cut = complete(0, &messages, Some(3));
        assert_eq!((cut.tokens.len(), cut.finish_reason), (3, "length"));
        assert_eq!(cut.tokens[..], a.tokens[..3]);
        let roomy = complete(0, &messages, Some(1000));
        assert_eq!(roomy.finish_reason, "stop");
    }

    #[test]
    fn embeddings_are_unit_and_similar_for_shared_words() {
        let a = embed(0, "the cat sat on the mat", 64);
        let b = embed(0, "the cat sat on a mat", 64);
        let c = embed(0, "quantum chromodynamics lecture notes", 64);
        assert_eq!(a.len(), 64);
        for v in [&a, &b, &c, &embed(0, "", 8)] {
            assert!((cosine(v, v) - 1.0).abs() < 1e-5);
        }
        assert!(cosine(&a, &b) > cosine(&a, &c));
        assert_eq!(embed(0, "x", 3).len(), 3);
    }

    #[test]
    fn rerank_prefers_shared_words() {
        let docs = vec![
            "pasta recipes".to_string(),
            "GPU inference at scale".to_string(),
            String::new(),
        ];
        let scores = rerank_scores("fast GPU inference", &docs);
        assert!(scores[1] > scores[0]);
        assert_eq!(scores[2], 0.0);
        assert!(scores.iter().all(|s| (0.0..=1.0).contains(s)));
    }

    #[test]
    fn bench_tokens_cycle() {
        assert_eq!(bench_token(0), "¡Hola");
        assert_eq!(bench_token(1), bench_token(1 + bench_cycle()));
    }
}
