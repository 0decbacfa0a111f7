//! The stream dialects of vLLM, llama.cpp, Ollama and SGLang (engine-dialects.md): chunk shapes,
//! where `finish_reason` rides, usage chunks, error frames and error bodies, per workload backend.

use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};

use crate::engines;
use crate::event::SseEvent;
use crate::faults::ErrorShape;
use crate::rng::SplitMix64;

/// The engine whose wire format a workload speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// vLLM (also `vllm-omni` and any backend without a dialect of its own).
    Vllm,
    /// llama.cpp's `llama-server`.
    LlamaCpp,
    /// Ollama's OpenAI-compatible `/v1`.
    Ollama,
    /// SGLang.
    Sglang,
}

impl Dialect {
    /// The dialect of a workload `backend`.
    pub fn for_backend(backend: &str) -> Self {
        match backend {
            "llamacpp" => Dialect::LlamaCpp,
            "ollama" => Dialect::Ollama,
            "sglang" => Dialect::Sglang,
            _ => Dialect::Vllm,
        }
    }

    /// Whether the engine still sends `[DONE]` after a mid-stream error frame.
    fn done_after_error(self) -> bool {
        matches!(self, Dialect::Vllm | Dialect::Sglang)
    }

    /// Whether the engine returns float arrays even when base64 embeddings are asked for.
    pub fn ignores_base64(self) -> bool {
        self == Dialect::Sglang
    }

    /// A completion id in the engine's style; vLLM honours an incoming `X-Request-Id`.
    pub fn completion_id(self, rng: &mut SplitMix64, incoming_request_id: Option<&str>) -> String {
        match (self, incoming_request_id) {
            (Dialect::Vllm, Some(id)) => format!("chatcmpl-{id}"),
            (Dialect::Vllm, None) => format!("chatcmpl-{}", rng.hex(32)),
            (Dialect::LlamaCpp, _) => format!("chatcmpl-{}", rng.base36(32)),
            (Dialect::Ollama, _) => format!("chatcmpl-{}", rng.below(1000)),
            (Dialect::Sglang, _) => rng.hex(32),
        }
    }

    /// The engine's body for a rejected request (HTTP 400).
    pub fn request_error(self, message: &str) -> Value {
        match self {
            Dialect::Vllm | Dialect::Sglang => json!({
                "object": "error", "message": message, "type": "BadRequestError", "param": null, "code": 400,
            }),
            Dialect::LlamaCpp => json!({
                "error": {"code": 400, "message": message, "type": "invalid_request_error"},
            }),
            Dialect::Ollama => json!({
                "error": {"message": message, "type": "invalid_request_error", "param": null, "code": null},
            }),
        }
    }
}

/// Fields every chunk and completion of one reply share.
#[derive(Debug, Clone)]
pub struct ChatHead {
    /// Completion id.
    pub id: String,
    /// Unix seconds.
    pub created: u64,
    /// The `model` echoed back (the workload slug as requested).
    pub model: String,
}

/// Token counts of one reply.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    /// Prompt tokens.
    pub prompt: u64,
    /// Generated tokens.
    pub completion: u64,
}

impl Usage {
    fn json(self) -> Value {
        json!({
            "prompt_tokens": self.prompt,
            "completion_tokens": self.completion,
            "total_tokens": self.prompt + self.completion,
        })
    }
}

/// A non-stream chat completion (the same standard shape for every engine).
pub fn completion_json(head: &ChatHead, text: &str, finish_reason: &str, usage: Usage) -> Value {
    json!({
        "id": head.id,
        "object": "chat.completion",
        "created": head.created,
        "model": head.model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": finish_reason,
        }],
        "usage": usage.json(),
    })
}

/// The tokens of a streamed reply.
#[derive(Debug, Clone)]
pub enum Tokens {
    /// A generated reply.
    Generated(Vec<String>),
    /// `n` tokens of the cyclic bench reply.
    Bench(usize),
}

impl Tokens {
    fn len(&self) -> usize {
        match self {
            Tokens::Generated(tokens) => tokens.len(),
            Tokens::Bench(n) => *n,
        }
    }

    fn get(&self, index: usize) -> String {
        match self {
            Tokens::Generated(tokens) => tokens.get(index).cloned().unwrap_or_default(),
            Tokens::Bench(_) => engines::bench_token(index),
        }
    }
}

/// One frame of a streamed reply, before rendering.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Frame {
    Role,
    Token(usize),
    Finish,
    Usage,
    Done,
}

/// The events of one streamed reply in a dialect, produced lazily so a bench reply of any length
/// costs a few rendered frames: content frames of the bench cycle are rendered once and reused.
pub struct ChatStream {
    dialect: Dialect,
    head: ChatHead,
    tokens: Tokens,
    finish_reason: &'static str,
    usage: Option<Usage>,
    ttft: Duration,
    itl: Duration,
    position: usize,
    rendered: Vec<Option<Bytes>>,
}

impl ChatStream {
    /// The stream of `tokens`, with usage when `usage` is set and the given latencies.
    pub fn new(
        dialect: Dialect,
        head: ChatHead,
        tokens: Tokens,
        finish_reason: &'static str,
        usage: Option<Usage>,
        latency: (Duration, Duration),
    ) -> Self {
        let cache = match tokens {
            Tokens::Bench(_) => engines::bench_cycle(),
            Tokens::Generated(_) => 0,
        };
        Self {
            dialect,
            head,
            tokens,
            finish_reason,
            usage,
            ttft: latency.0,
            itl: latency.1,
            position: 0,
            rendered: vec![None; cache],
        }
    }

    /// The next event, or `None` after `[DONE]`.
    pub fn next_event(&mut self) -> Option<SseEvent> {
        let frame = self.frame(self.position)?;
        self.position += 1;
        let n = self.tokens.len();
        let (terminal, delay) = match frame {
            Frame::Role => (
                false,
                self.token_delay(0).filter(|_| self.role_carries_token()),
            ),
            Frame::Token(i) => (
                self.dialect == Dialect::Vllm && i + 1 == n,
                self.token_delay(i),
            ),
            Frame::Finish | Frame::Usage | Frame::Done => (true, None),
        };
        let event = match frame {
            Frame::Done => SseEvent::done(),
            Frame::Token(i) if i > 0 && !self.rendered.is_empty() && i + 1 < n => {
                let slot = i % self.rendered.len();
                let data = match &self.rendered[slot] {
                    Some(data) => data.clone(),
                    None => {
                        let data = self.render(frame);
                        self.rendered[slot] = Some(data.clone());
                        data
                    }
                };
                SseEvent::data(data, terminal)
            }
            _ => SseEvent::data(self.render(frame), terminal),
        };
        Some(event.after(delay.unwrap_or(Duration::ZERO)))
    }

    fn role_carries_token(&self) -> bool {
        self.dialect == Dialect::Ollama && self.tokens.len() > 0
    }

    fn token_delay(&self, index: usize) -> Option<Duration> {
        Some(if index == 0 { self.ttft } else { self.itl }).filter(|d| !d.is_zero())
    }

    /// The frame at `position`: role, content tokens, separate finish, usage, `[DONE]`.
    fn frame(&self, position: usize) -> Option<Frame> {
        let n = self.tokens.len();
        // Ollama's role chunk carries token 0; vLLM's last token carries the finish (a lone
        // finish frame only when there is no token at all).
        let first_token = usize::from(self.role_carries_token());
        let separate_finish = self.dialect != Dialect::Vllm || n == 0;
        let mut rest = position;
        if rest == 0 {
            return Some(Frame::Role);
        }
        rest -= 1;
        if rest < n - first_token {
            return Some(Frame::Token(first_token + rest));
        }
        rest -= n - first_token;
        for (present, frame) in [
            (separate_finish, Frame::Finish),
            (self.usage.is_some(), Frame::Usage),
            (true, Frame::Done),
        ] {
            if present {
                if rest == 0 {
                    return Some(frame);
                }
                rest -= 1;
            }
        }
        None
    }

    fn render(&self, frame: Frame) -> Bytes {
        let value = match frame {
            Frame::Role => self.role_chunk(),
            Frame::Token(i) => {
                let last = i + 1 == self.tokens.len();
                self.content_chunk(&self.tokens.get(i), last)
            }
            Frame::Finish => self.finish_chunk(),
            Frame::Usage => self.usage_chunk(),
            Frame::Done => return Bytes::from_static(b"[DONE]"),
        };
        Bytes::from(serde_json::to_vec(&value).unwrap_or_default())
    }

    fn chunk(&self, choices: Value) -> Value {
        let head = &self.head;
        match self.dialect {
            Dialect::Vllm | Dialect::Sglang => json!({
                "id": head.id, "object": "chat.completion.chunk", "created": head.created,
                "model": head.model, "choices": choices,
            }),
            Dialect::LlamaCpp => json!({
                "choices": choices, "created": head.created, "id": head.id, "model": head.model,
                "object": "chat.completion.chunk",
            }),
            Dialect::Ollama => json!({
                "id": head.id, "object": "chat.completion.chunk", "created": head.created,
                "model": head.model, "system_fingerprint": "fp_ollama", "choices": choices,
            }),
        }
    }

    fn with(mut chunk: Value, extra: &[(&str, Value)]) -> Value {
        if let Some(fields) = chunk.as_object_mut() {
            for (key, value) in extra {
                fields.insert((*key).to_string(), value.clone());
            }
        }
        chunk
    }

    fn role_chunk(&self) -> Value {
        match self.dialect {
            Dialect::Vllm => Self::with(
                self.chunk(
                    json!([{"index": 0, "delta": {"role": "assistant", "content": ""},
                    "logprobs": null, "finish_reason": null}]),
                ),
                &[("prompt_token_ids", Value::Null)],
            ),
            Dialect::LlamaCpp => {
                let chunk = self.chunk(json!([{"index": 0,
                    "delta": {"role": "assistant", "content": null}, "finish_reason": null}]));
                Self::with(chunk, &[("system_fingerprint", json!("b1-local"))])
            }
            Dialect::Ollama => {
                let first = if self.tokens.len() > 0 {
                    self.tokens.get(0)
                } else {
                    String::new()
                };
                self.chunk(
                    json!([{"index": 0, "delta": {"role": "assistant", "content": first},
                    "finish_reason": null}]),
                )
            }
            Dialect::Sglang => Self::with(
                self.chunk(
                    json!([{"index": 0, "delta": {"role": "assistant", "content": "",
                    "reasoning_content": null, "tool_calls": null}, "logprobs": null,
                    "finish_reason": null, "matched_stop": null}]),
                ),
                &[("usage", Value::Null)],
            ),
        }
    }

    fn content_chunk(&self, token: &str, last: bool) -> Value {
        match self.dialect {
            Dialect::Vllm if last => self.chunk(json!([{"index": 0, "delta": {"content": token},
                "logprobs": null, "finish_reason": self.finish_reason, "stop_reason": null,
                "token_ids": null}])),
            Dialect::Vllm => self.chunk(json!([{"index": 0, "delta": {"content": token},
                "logprobs": null, "finish_reason": null, "token_ids": null}])),
            Dialect::LlamaCpp | Dialect::Ollama => self.chunk(json!([{"index": 0,
                "delta": {"content": token}, "finish_reason": null}])),
            Dialect::Sglang => Self::with(
                self.chunk(json!([{"index": 0, "delta": {"content": token,
                    "reasoning_content": null, "tool_calls": null}, "logprobs": null,
                    "finish_reason": null, "matched_stop": null}])),
                &[("usage", Value::Null)],
            ),
        }
    }

    fn finish_chunk(&self) -> Value {
        let finish = self.finish_reason;
        match self.dialect {
            // vLLM with no token at all: an empty content chunk carries the finish.
            Dialect::Vllm => self.content_chunk("", true),
            Dialect::LlamaCpp => Self::with(
                self.chunk(json!([{"index": 0, "delta": {}, "finish_reason": finish}])),
                &[("timings", json!({"predicted_n": self.tokens.len()}))],
            ),
            Dialect::Ollama => {
                self.chunk(json!([{"index": 0, "delta": {}, "finish_reason": finish}]))
            }
            Dialect::Sglang => {
                let matched_stop = if finish == "stop" {
                    json!(2)
                } else {
                    Value::Null
                };
                Self::with(
                    self.chunk(
                        json!([{"index": 0, "delta": {"content": null}, "logprobs": null,
                        "finish_reason": finish, "matched_stop": matched_stop}]),
                    ),
                    &[("usage", Value::Null)],
                )
            }
        }
    }

    fn usage_chunk(&self) -> Value {
        let usage = self.usage.map_or(Value::Null, Usage::json);
        let chunk = Self::with(self.chunk(json!([])), &[("usage", usage)]);
        match self.dialect {
            Dialect::Vllm => Self::with(chunk, &[("system_fingerprint", json!("vllm-local"))]),
            _ => chunk,
        }
    }
}

/// The frames of a mid-stream failure: the error in `shape` (the engine's own shape when `None`),
/// then `[DONE]` when the engine sends it. `dialect` is `None` on the readiness stream.
pub fn inband_error(
    dialect: Option<Dialect>,
    shape: Option<ErrorShape>,
    message: &str,
) -> Vec<SseEvent> {
    let flat = json!({"object": "error", "message": message, "type": "InternalServerError",
        "param": null, "code": 500});
    let error = match shape.unwrap_or(ErrorShape::Nested) {
        ErrorShape::Flat => SseEvent::json(&flat, true),
        ErrorShape::Event => SseEvent::json(
            &json!({"message": message, "type": "server_error", "code": 500}),
            true,
        )
        .named("error"),
        ErrorShape::Nested => SseEvent::json(
            &match dialect {
                Some(Dialect::Vllm) => json!({"error": {"message": message,
                    "type": "InternalServerError", "param": null, "code": 500}}),
                Some(Dialect::LlamaCpp) => json!({"error": {"code": 500, "message": message,
                    "type": "server_error"}}),
                Some(Dialect::Ollama) => json!({"error": {"message": message, "type": "api_error",
                    "param": null, "code": null}}),
                Some(Dialect::Sglang) => json!({"error": flat}),
                None => json!({"error": {"code": "internal_error", "message": message}}),
            },
            true,
        ),
    };
    let mut events = vec![error];
    if dialect.is_some_and(Dialect::done_after_error) {
        events.push(SseEvent::done());
    }
    events
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn head() -> ChatHead {
        ChatHead {
            id: "chatcmpl-1".to_string(),
            created: 1,
            model: "m".to_string(),
        }
    }

    fn frames(dialect: Dialect, tokens: Tokens, usage: bool) -> Vec<Value> {
        let usage = usage.then_some(Usage {
            prompt: 5,
            completion: 2,
        });
        let mut stream = ChatStream::new(
            dialect,
            head(),
            tokens,
            "stop",
            usage,
            (Duration::ZERO, Duration::ZERO),
        );
        let mut out = Vec::new();
        while let Some(event) = stream.next_event() {
            let text = String::from_utf8(event.data.to_vec()).unwrap();
            out.push(if text == "[DONE]" {
                json!("[DONE]")
            } else {
                serde_json::from_str(&text).unwrap()
            });
        }
        out
    }

    fn two() -> Tokens {
        Tokens::Generated(vec!["Hi".to_string(), "!".to_string()])
    }

    #[test]
    fn vllm_finish_rides_on_last_token() {
        let f = frames(Dialect::Vllm, two(), true);
        assert_eq!(f.len(), 5);
        assert_eq!(
            f[0]["choices"][0]["delta"],
            json!({"role": "assistant", "content": ""})
        );
        assert_eq!(f[2]["choices"][0]["delta"]["content"], "!");
        assert_eq!(f[2]["choices"][0]["finish_reason"], "stop");
        assert_eq!(f[3]["choices"], json!([]));
        assert_eq!(f[3]["usage"]["total_tokens"], 7);
        assert_eq!(f[4], "[DONE]");
    }

    #[test]
    fn llamacpp_and_sglang_send_separate_finish() {
        let f = frames(Dialect::LlamaCpp, two(), false);
        assert_eq!(f.len(), 5);
        assert_eq!(f[0]["choices"][0]["delta"]["content"], Value::Null);
        assert_eq!(f[3]["choices"][0]["delta"], json!({}));
        assert_eq!(f[3]["timings"]["predicted_n"], 2);
        let s = frames(Dialect::Sglang, two(), false);
        assert_eq!(s[3]["choices"][0]["finish_reason"], "stop");
        assert_eq!(s[3]["choices"][0]["matched_stop"], 2);
        assert_eq!(s[1]["usage"], Value::Null);
    }

    #[test]
    fn ollama_merges_role_and_first_token() {
        let f = frames(Dialect::Ollama, two(), true);
        assert_eq!(f.len(), 5);
        assert_eq!(
            f[0]["choices"][0]["delta"],
            json!({"role": "assistant", "content": "Hi"})
        );
        assert_eq!(f[1]["choices"][0]["delta"]["content"], "!");
        assert_eq!(f[2]["choices"][0]["finish_reason"], "stop");
        assert_eq!(f[3]["usage"]["prompt_tokens"], 5);
    }

    #[test]
    fn no_tokens_still_finishes() {
        for dialect in [
            Dialect::Vllm,
            Dialect::LlamaCpp,
            Dialect::Ollama,
            Dialect::Sglang,
        ] {
            let f = frames(dialect, Tokens::Generated(Vec::new()), false);
            assert_eq!(f.len(), 3, "{dialect:?}");
            assert_eq!(f[1]["choices"][0]["finish_reason"], "stop", "{dialect:?}");
        }
    }

    #[test]
    fn bench_frames_reuse_the_cycle() {
        let n = 3 * engines::bench_cycle() + 5;
        let f = frames(Dialect::Vllm, Tokens::Bench(n), false);
        assert_eq!(f.len(), n + 2);
        let text: String = f[1..=n]
            .iter()
            .map(|c| {
                c["choices"][0]["delta"]["content"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        let expected: String = (0..n).map(engines::bench_token).collect();
        assert_eq!(text, expected);
        assert_eq!(f[n]["choices"][0]["finish_reason"], "stop");
    }

    #[test]
    fn inband_error_follows_the_dialect() {
        assert_eq!(inband_error(Some(Dialect::Vllm), None, "boom").len(), 2);
        assert_eq!(inband_error(Some(Dialect::LlamaCpp), None, "boom").len(), 1);
        let event = &inband_error(None, Some(ErrorShape::Event), "boom")[0];
        assert_eq!(event.name, Some("error"));
    }
}
