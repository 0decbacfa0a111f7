//! The stream dialects of vLLM, llama.cpp, Ollama and SGLang (engine-dialects.md): chunk shapes,
//! where `finish_reason` rides, usage chunks, error frames and error bodies, per workload backend.

use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};

use crate::chat::{logprob_entry, ToolCall};
use crate::engines;
use crate::event::SseEvent;
use crate::faults::ErrorShape;
use crate::rng::SplitMix64;

/// The `system_fingerprint` of llama-server: its build info, `b<build number>-<commit>`, which a
/// build from sources without git metadata (as the pinned sdist's) reports as `b0-unknown`.
pub const LLAMACPP_FINGERPRINT: &str = "b0-unknown";
/// The context size llama-server gives the packaged model (`n_ctx`): a longer prompt is refused.
pub const LLAMACPP_N_CTX: u64 = 2048;

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
            (Dialect::LlamaCpp, _) => format!("chatcmpl-{}", rng.base62(32)),
            (Dialect::Ollama, _) => format!("chatcmpl-{}", rng.below(1000)),
            (Dialect::Sglang, _) => rng.hex(32),
        }
    }

    /// A tool-call id in the engine's style.
    pub fn tool_call_id(self, rng: &mut SplitMix64) -> String {
        match self {
            Dialect::Vllm => format!("chatcmpl-tool-{}", rng.hex(32)),
            Dialect::LlamaCpp => rng.base36(32),
            Dialect::Ollama => format!("call_{}", rng.base36(8)),
            Dialect::Sglang => format!("call_{}", rng.hex(24)),
        }
    }

    /// The steps of a streamed tool-call reply, split as the engine splits them: vLLM, llama.cpp
    /// and SGLang send each call's header (id, type, name) and then its arguments in pieces;
    /// Ollama sends each whole call in one step. `top_logprobs` is set when logprobs were asked.
    pub fn tool_steps(self, calls: &[ToolCall], top_logprobs: Option<usize>) -> Vec<Step> {
        let mut steps = Vec::new();
        let mut position = 0usize;
        let mut logprobs = |pieces: &[String]| {
            let entries = top_logprobs.map(|top| {
                pieces
                    .iter()
                    .enumerate()
                    .map(|(k, piece)| logprob_entry(piece, position + k, top))
                    .collect::<Vec<_>>()
            });
            position += pieces.len();
            entries
        };
        for (index, call) in calls.iter().enumerate() {
            let pieces = call.pieces();
            if self == Dialect::Ollama {
                steps.push(Step {
                    delta: StepDelta::ToolCall(json!({"id": call.id, "index": index,
                        "type": "function",
                        "function": {"name": call.name, "arguments": call.arguments}})),
                    logprobs: logprobs(&pieces),
                });
                continue;
            }
            let header = match self {
                Dialect::Vllm => json!({"id": call.id, "type": "function", "index": index,
                    "function": {"name": call.name}}),
                _ => json!({"index": index, "id": call.id, "type": "function",
                    "function": {"name": call.name, "arguments": ""}}),
            };
            steps.push(Step {
                delta: StepDelta::ToolCall(header),
                logprobs: logprobs(&pieces[..1]),
            });
            for piece in pieces.iter().skip(1) {
                let fragment = match self {
                    Dialect::Sglang => json!({"index": index, "id": null, "type": "function",
                        "function": {"name": null, "arguments": piece}}),
                    _ => json!({"index": index, "function": {"arguments": piece}}),
                };
                steps.push(Step {
                    delta: StepDelta::ToolCall(fragment),
                    logprobs: logprobs(std::slice::from_ref(piece)),
                });
            }
        }
        steps
    }

    /// Whether the engine answers with its own model name (llama-server's `--alias`) rather than
    /// echoing the request's `model` in chat replies.
    pub fn answers_with_alias(self) -> bool {
        self == Dialect::LlamaCpp
    }

    /// The engine's body for an endpoint it was not started to serve (HTTP 501), when it has
    /// one: llama-server without `--embeddings` or `--reranking`.
    pub fn not_supported(self, what: Unsupported) -> Option<Value> {
        if self != Dialect::LlamaCpp {
            return None;
        }
        let message = match what {
            Unsupported::Embeddings => {
                "This server does not support embeddings. Start it with `--embeddings`"
            }
            Unsupported::Rerank => {
                "This server does not support reranking. Start it with `--reranking`"
            }
        };
        Some(json!({"error": {"code": 501, "message": message, "type": "not_supported_error"}}))
    }

    /// llama-server's 400 for a prompt longer than its context.
    pub fn context_overflow(self, prompt_tokens: u64) -> Option<Value> {
        (self == Dialect::LlamaCpp && prompt_tokens > LLAMACPP_N_CTX).then(|| {
            json!({"error": {"code": 400, "message": format!(
                "request ({prompt_tokens} tokens) exceeds the available context size \
                 ({LLAMACPP_N_CTX} tokens), try increasing it"),
                "type": "exceed_context_size_error", "n_prompt_tokens": prompt_tokens,
                "n_ctx": LLAMACPP_N_CTX}})
        })
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

/// An endpoint a llama-server may not have been started for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsupported {
    /// `/v1/embeddings` (needs `--embeddings`).
    Embeddings,
    /// `/v1/rerank` (needs `--reranking`).
    Rerank,
}

/// llama-server's `timings` object: its 9 keys, from token counts and the simulated latencies.
/// A simulated engine with no latency set is given 10 µs a token, so rates stay finite.
pub fn llamacpp_timings(usage: Usage, ttft: Duration, itl: Duration) -> Value {
    let ms = |latency: Duration, n: u64| (latency.as_secs_f64() * 1000.0).max(n as f64 * 0.01);
    let prompt_ms = ms(ttft, usage.prompt);
    let predicted_ms = ms(
        itl.saturating_mul(u32::try_from(usage.completion.saturating_sub(1)).unwrap_or(u32::MAX)),
        usage.completion,
    );
    let per_token = |ms: f64, n: u64| ms / n.max(1) as f64;
    let per_second = |ms: f64, n: u64| {
        if ms > 0.0 {
            n as f64 * 1000.0 / ms
        } else {
            0.0
        }
    };
    json!({
        "cache_n": 0,
        "prompt_n": usage.prompt,
        "prompt_ms": prompt_ms,
        "prompt_per_token_ms": per_token(prompt_ms, usage.prompt),
        "prompt_per_second": per_second(prompt_ms, usage.prompt),
        "predicted_n": usage.completion,
        "predicted_ms": predicted_ms,
        "predicted_per_token_ms": per_token(predicted_ms, usage.completion),
        "predicted_per_second": per_second(predicted_ms, usage.completion),
    })
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
    /// `{prompt_tokens, completion_tokens, total_tokens}`.
    pub fn json(self) -> Value {
        json!({
            "prompt_tokens": self.prompt,
            "completion_tokens": self.completion,
            "total_tokens": self.prompt + self.completion,
        })
    }

    /// llama-server's usage: its key order, with `prompt_tokens_details` (nothing is cached).
    pub fn llamacpp_json(self) -> Value {
        json!({
            "completion_tokens": self.completion,
            "prompt_tokens": self.prompt,
            "total_tokens": self.prompt + self.completion,
            "prompt_tokens_details": {"cached_tokens": 0},
        })
    }
}

/// A non-stream chat completion with any `message` (text or tool calls) and, when asked,
/// the choice's `logprobs`: the standard shape, or llama-server's (its key order, fingerprint,
/// usage details and `timings`, from the latencies `(ttft, itl)`).
pub fn completion_value(
    dialect: Dialect,
    head: &ChatHead,
    message: Value,
    finish_reason: &str,
    usage: Usage,
    logprobs: Option<Value>,
    latency: (Duration, Duration),
) -> Value {
    if dialect == Dialect::LlamaCpp {
        let mut choice = json!({"finish_reason": finish_reason, "index": 0, "message": message});
        if let (Some(logprobs), Some(fields)) = (logprobs, choice.as_object_mut()) {
            fields.insert("logprobs".to_string(), logprobs);
        }
        return json!({
            "choices": [choice],
            "created": head.created,
            "model": head.model,
            "system_fingerprint": LLAMACPP_FINGERPRINT,
            "object": "chat.completion",
            "usage": usage.llamacpp_json(),
            "id": head.id,
            "timings": llamacpp_timings(usage, latency.0, latency.1),
        });
    }
    let mut choice = json!({"index": 0, "message": message});
    if let (Some(logprobs), Some(fields)) = (logprobs, choice.as_object_mut()) {
        fields.insert("logprobs".to_string(), logprobs);
    }
    if let Some(fields) = choice.as_object_mut() {
        fields.insert("finish_reason".to_string(), json!(finish_reason));
    }
    json!({
        "id": head.id,
        "object": "chat.completion",
        "created": head.created,
        "model": head.model,
        "choices": [choice],
        "usage": usage.json(),
    })
}

/// What one content-bearing chunk carries.
#[derive(Debug, Clone)]
pub enum StepDelta {
    /// A text token (`delta.content`).
    Content(String),
    /// One element of `delta.tool_calls`.
    ToolCall(Value),
}

/// One content-bearing chunk of a generated reply, with its logprob entries when asked.
#[derive(Debug, Clone)]
pub struct Step {
    /// The delta.
    pub delta: StepDelta,
    /// `logprobs.content` of the chunk.
    pub logprobs: Option<Vec<Value>>,
}

/// The steps of a text reply: one token each, with logprobs when `top_logprobs` is set.
pub fn content_steps(tokens: &[String], top_logprobs: Option<usize>) -> Vec<Step> {
    tokens
        .iter()
        .enumerate()
        .map(|(position, token)| Step {
            delta: StepDelta::Content(token.clone()),
            logprobs: top_logprobs.map(|top| vec![logprob_entry(token, position, top)]),
        })
        .collect()
}

/// The tokens of a streamed reply.
#[derive(Debug, Clone)]
pub enum Tokens {
    /// `n` tokens of the cyclic bench reply.
    Bench(usize),
    /// Content or tool-call chunks of a generated reply.
    Steps(Vec<Step>),
}

impl Tokens {
    /// A text reply of `tokens`, without logprobs.
    #[cfg(test)]
    pub fn text(tokens: Vec<String>) -> Self {
        Tokens::Steps(content_steps(&tokens, None))
    }

    fn len(&self) -> usize {
        match self {
            Tokens::Bench(n) => *n,
            Tokens::Steps(steps) => steps.len(),
        }
    }

    fn get(&self, index: usize) -> String {
        match self {
            Tokens::Bench(_) => engines::bench_token(index),
            Tokens::Steps(steps) => match steps.get(index).map(|step| &step.delta) {
                Some(StepDelta::Content(text)) => text.clone(),
                _ => String::new(),
            },
        }
    }

    fn step(&self, index: usize) -> Step {
        match self {
            Tokens::Steps(steps) => steps.get(index).cloned(),
            _ => None,
        }
        .unwrap_or_else(|| Step {
            delta: StepDelta::Content(self.get(index)),
            logprobs: None,
        })
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
    stop_reason: Option<String>,
    usage: Option<Usage>,
    prompt_tokens: u64,
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
            Tokens::Steps(_) => 0,
        };
        Self {
            dialect,
            head,
            tokens,
            finish_reason,
            stop_reason: None,
            usage,
            prompt_tokens: usage.map_or(0, |usage| usage.prompt),
            ttft: latency.0,
            itl: latency.1,
            position: 0,
            rendered: vec![None; cache],
        }
    }

    /// The stream with the stop string that ended the reply (vLLM's `stop_reason`, SGLang's
    /// `matched_stop`).
    pub fn with_stop_reason(mut self, stop: Option<String>) -> Self {
        self.stop_reason = stop;
        self
    }

    /// The stream with the prompt's token count (llama.cpp's `timings` report it also when no
    /// usage chunk is sent).
    pub fn with_prompt_tokens(mut self, prompt: u64) -> Self {
        self.prompt_tokens = prompt;
        self
    }

    /// llama-server's `timings` of this reply.
    fn timings(&self) -> Value {
        let usage = Usage {
            prompt: self.prompt_tokens,
            completion: self.predicted(),
        };
        llamacpp_timings(usage, self.ttft, self.itl)
    }

    /// Tokens generated: the usage count when given (a tool-call step may hold several).
    fn predicted(&self) -> u64 {
        self.usage
            .map_or(self.tokens.len() as u64, |usage| usage.completion)
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
                self.step_chunk(&self.tokens.step(i), last)
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
                "system_fingerprint": LLAMACPP_FINGERPRINT, "object": "chat.completion.chunk",
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
            Dialect::LlamaCpp => self.chunk(json!([{"finish_reason": null, "index": 0,
                "delta": {"role": "assistant", "content": null}}])),
            Dialect::Ollama => {
                let first = (self.tokens.len() > 0).then(|| self.tokens.step(0));
                let delta = match first.as_ref().map(|step| &step.delta) {
                    Some(StepDelta::ToolCall(call)) => {
                        json!({"role": "assistant", "content": "", "tool_calls": [call]})
                    }
                    Some(StepDelta::Content(text)) => json!({"role": "assistant", "content": text}),
                    None => json!({"role": "assistant", "content": ""}),
                };
                let mut choice = json!({"index": 0, "delta": delta, "finish_reason": null});
                if let Some(entries) = first.and_then(|step| step.logprobs) {
                    choice = Self::with(choice, &[("logprobs", json!({"content": entries}))]);
                }
                self.chunk(json!([choice]))
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
        self.step_chunk(
            &Step {
                delta: StepDelta::Content(token.to_string()),
                logprobs: None,
            },
            last,
        )
    }

    /// A content or tool-call chunk; on vLLM the last one carries the finish.
    fn step_chunk(&self, step: &Step, last: bool) -> Value {
        let delta = match (&step.delta, self.dialect) {
            (StepDelta::Content(token), Dialect::Sglang) => {
                json!({"content": token, "reasoning_content": null, "tool_calls": null})
            }
            (StepDelta::Content(token), _) => json!({"content": token}),
            (StepDelta::ToolCall(call), Dialect::Sglang) => {
                json!({"content": null, "reasoning_content": null, "tool_calls": [call]})
            }
            (StepDelta::ToolCall(call), _) => json!({"tool_calls": [call]}),
        };
        let logprobs = step
            .logprobs
            .as_ref()
            .map_or(Value::Null, |entries| json!({"content": entries}));
        match self.dialect {
            Dialect::Vllm if last => self.chunk(json!([{"index": 0, "delta": delta,
                "logprobs": logprobs, "finish_reason": self.finish_reason,
                "stop_reason": self.stop_reason, "token_ids": null}])),
            Dialect::Vllm => self.chunk(json!([{"index": 0, "delta": delta,
                "logprobs": logprobs, "finish_reason": null, "token_ids": null}])),
            Dialect::LlamaCpp | Dialect::Ollama => {
                let choice = if self.dialect == Dialect::LlamaCpp {
                    json!({"finish_reason": null, "index": 0, "delta": delta})
                } else {
                    json!({"index": 0, "delta": delta, "finish_reason": null})
                };
                let choice = if logprobs.is_null() {
                    choice
                } else {
                    Self::with(choice, &[("logprobs", logprobs)])
                };
                self.chunk(json!([choice]))
            }
            Dialect::Sglang => Self::with(
                self.chunk(json!([{"index": 0, "delta": delta, "logprobs": logprobs,
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
            // With a usage chunk the timings move there (as llama-server does).
            Dialect::LlamaCpp if self.usage.is_some() => {
                self.chunk(json!([{"finish_reason": finish, "index": 0, "delta": {}}]))
            }
            Dialect::LlamaCpp => Self::with(
                self.chunk(json!([{"finish_reason": finish, "index": 0, "delta": {}}])),
                &[("timings", self.timings())],
            ),
            Dialect::Ollama => {
                self.chunk(json!([{"index": 0, "delta": {}, "finish_reason": finish}]))
            }
            Dialect::Sglang => {
                // The stop string matched, else the end-of-sequence token id on `stop`.
                let matched_stop = match (&self.stop_reason, finish) {
                    (Some(stop), _) => json!(stop),
                    (None, "stop") => json!(2),
                    _ => Value::Null,
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
        match self.dialect {
            Dialect::Vllm => Self::with(
                Self::with(self.chunk(json!([])), &[("usage", usage)]),
                &[("system_fingerprint", json!("vllm-local"))],
            ),
            // llama-server: usage with `prompt_tokens_details`, then the timings.
            Dialect::LlamaCpp => {
                let usage = self.usage.map_or(Value::Null, Usage::llamacpp_json);
                Self::with(
                    self.chunk(json!([])),
                    &[("usage", usage), ("timings", self.timings())],
                )
            }
            Dialect::Ollama => Self::with(self.chunk(json!([])), &[("usage", usage)]),
            // SGLang serialises its whole usage model, nulls included.
            Dialect::Sglang => {
                let mut usage = usage;
                if let Some(fields) = usage.as_object_mut() {
                    fields.insert("prompt_tokens_details".to_string(), Value::Null);
                    fields.insert("reasoning_tokens".to_string(), json!(0));
                }
                Self::with(self.chunk(json!([])), &[("usage", usage)])
            }
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
        Tokens::text(vec!["Hi".to_string(), "!".to_string()])
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
            let f = frames(dialect, Tokens::text(Vec::new()), false);
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
