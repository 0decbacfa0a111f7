//! What the data plane receives: chat completions and chunks, embeddings (floats or base64), rerank results, and
//! in-band errors, decoded tolerantly across engine dialects.

use std::borrow::Cow;

use serde::de::IgnoredAny;

use bytes::Bytes;
use serde_json::Value;

use crate::error::{is_inband_error, Error, Result};
use crate::event::ToolCallDelta;

/// A non-streamed chat completion.
#[derive(Clone, Debug, PartialEq)]
pub struct ChatCompletion {
    /// `choices[0].message.content` (`""` when null).
    pub text: String,
    /// The body's `model` (the workload slug when the body has none).
    pub model: String,
    /// `choices[0].finish_reason`.
    pub finish_reason: Option<String>,
    /// The body's `usage`, when it has one.
    pub usage: Option<Usage>,
    /// `choices[0].message.tool_calls`, in order (empty when the reply calls none).
    pub tool_calls: Vec<ToolCall>,
    /// The response body as received (`raw()` parses it).
    pub body: Bytes,
}

impl ChatCompletion {
    /// The response body as JSON (parsed on each call: the answer is never kept as a tree).
    pub fn raw(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// One streamed event.
#[derive(Clone, Debug, PartialEq)]
pub struct ChatChunk {
    /// `choices[0].delta.content` (`""` when null, absent, or `choices` is empty).
    pub text: String,
    /// Set only on the chunk that carries it.
    pub finish_reason: Option<String>,
    /// What few chunks carry (usage, tool-call fragments, the model on the first chunk), boxed so that the
    /// common chunk stays small; `None` when the chunk carries none of it.
    pub extras: Option<Box<ChunkExtras>>,
    /// The chunk JSON as received (already validated): kept as bytes so the stream builds no JSON tree per
    /// chunk; `raw` parses it on demand.
    pub data: Bytes,
}

/// The rarely present parts of a chunk.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChunkExtras {
    /// The reply's token counts: on the usage chunk a stream sends when asked with
    /// `stream_options={"include_usage": true}`, or a finish chunk that carries them.
    pub usage: Option<Usage>,
    /// Tool-call fragments of this chunk, assembled by the stream into whole calls (not shown per chunk).
    pub tool_calls: Option<Vec<ToolCallDelta>>,
    /// The reply's `model`, on the stream's first chunk only.
    pub model: Option<String>,
}

impl ChunkExtras {
    /// The extras, boxed, or `None` when all are absent.
    pub(crate) fn boxed(
        usage: Option<Usage>,
        tool_calls: Option<Vec<ToolCallDelta>>,
        model: Option<String>,
    ) -> Option<Box<Self>> {
        (usage.is_some() || tool_calls.is_some() || model.is_some()).then(|| {
            Box::new(Self {
                usage,
                tool_calls,
                model,
            })
        })
    }
}

impl ChatChunk {
    /// The chunk's usage, when it carries one.
    pub fn usage(&self) -> Option<Usage> {
        self.extras.as_ref().and_then(|extras| extras.usage)
    }

    /// The chunk JSON (`Value::Null` if `data` is not JSON, which no chunk the SDK yields can be).
    pub fn raw(&self) -> Value {
        serde_json::from_slice(&self.data).unwrap_or(Value::Null)
    }
}

/// Embedding vectors, one per input, in input order.
#[derive(Clone, Debug, PartialEq)]
pub struct Embeddings {
    /// The vectors, ordered by `index`.
    pub vectors: Vec<Vec<f32>>,
    /// The body's `model` (the workload slug when the body has none).
    pub model: String,
    /// The body's `usage`, when it has one (`completion_tokens` 0).
    pub usage: Option<Usage>,
    /// The response body as received (`raw()` parses it).
    pub body: Bytes,
}

impl Embeddings {
    /// The response body as JSON (parsed on each call: a large answer is never kept as a tree).
    pub fn raw(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// One reranked document.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RerankResult {
    /// Position of the document in the request.
    pub index: usize,
    /// The engine's relevance score.
    pub relevance_score: f64,
}

/// A rerank answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Rerank {
    /// Results in the order the server gave (best first).
    pub results: Vec<RerankResult>,
    /// The body's `model` (the workload slug when the body has none).
    pub model: String,
    /// The response body.
    pub raw: Value,
    /// The response body as received, for a binding that materialises `raw` only when it is read.
    pub body: Bytes,
}

/// Token counts of a reply, as the engine reported them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Tokens of the prompt.
    pub prompt_tokens: u64,
    /// Tokens generated (0 for embeddings).
    pub completion_tokens: u64,
    /// Their sum, as the engine reported it.
    pub total_tokens: u64,
}

impl Usage {
    /// Usage from the counts present; none at all is no usage. A missing count is 0, a missing total the sum.
    pub(crate) fn from_counts(
        prompt: Option<u64>,
        completion: Option<u64>,
        total: Option<u64>,
    ) -> Option<Self> {
        if prompt.is_none() && completion.is_none() && total.is_none() {
            return None;
        }
        let (prompt_tokens, completion_tokens) = (prompt.unwrap_or(0), completion.unwrap_or(0));
        Some(Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: total.unwrap_or(prompt_tokens.saturating_add(completion_tokens)),
        })
    }

    /// The `usage` object of a body, if it has one.
    pub(crate) fn of(body: &Value) -> Option<Self> {
        Self::of_object(body.get("usage")?)
    }

    /// Usage from a `usage` value, when it is an object with counts.
    fn of_object(usage: &Value) -> Option<Self> {
        let usage = usage.as_object()?;
        let count = |key: &str| usage.get(key).and_then(Value::as_u64);
        Self::from_counts(
            count("prompt_tokens"),
            count("completion_tokens"),
            count("total_tokens"),
        )
    }
}

/// A function call the model asked for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ToolCall {
    /// The call's id, to answer it with a `tool` message (empty when the engine gave none).
    pub id: String,
    /// The function's name.
    pub name: String,
    /// The arguments as JSON text, as received (parse it yourself: a model may produce invalid JSON).
    pub arguments: String,
}

/// The tool calls of a unary reply's message; arguments given as an object (some engines) become JSON text.
fn tool_calls_of(message: &Value) -> Vec<ToolCall> {
    let Some(calls) = message.get("tool_calls").and_then(Value::as_array) else {
        return Vec::new();
    };
    calls
        .iter()
        .filter_map(|call| {
            let function = call.get("function")?;
            let text = |value: Option<&Value>| {
                value.and_then(Value::as_str).unwrap_or_default().to_owned()
            };
            let arguments = match function.get("arguments") {
                Some(Value::String(text)) => text.clone(),
                Some(Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            };
            Some(ToolCall {
                id: text(call.get("id")),
                name: text(function.get("name")),
                arguments,
            })
        })
        .collect()
}

/// Message text: a string, or the `text` of each part of list-form content; anything else is `""`.
pub(crate) fn content_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect(),
        _ => String::new(),
    }
}

/// The parts of a unary chat completion the result shows.
#[derive(Debug, PartialEq)]
pub(super) struct CompletionParts {
    pub(super) text: String,
    pub(super) finish_reason: Option<String>,
    pub(super) usage: Option<Usage>,
    pub(super) tool_calls: Vec<ToolCall>,
}

/// The parts of a completion body (`message`, or `delta` for a chunk-shaped body): text, finish reason, usage and
/// tool calls. A body with no choice, or a choice with neither, is malformed: answering `text=""` would hide a
/// broken engine.
pub(super) fn completion_parts(body: &Value) -> Result<CompletionParts> {
    let malformed = |why: &str| Error::api(format!("malformed response: chat completion {why}"));
    let choice = body
        .get("choices")
        .and_then(Value::as_array)
        .ok_or_else(|| malformed("without a choices list"))?
        .first()
        .ok_or_else(|| malformed("with an empty choices list"))?;
    let message = choice
        .get("message")
        .or_else(|| choice.get("delta"))
        .filter(|m| m.is_object())
        .ok_or_else(|| malformed("choice without a message"))?;
    let text = content_text(message.get("content"));
    let finish_reason = choice
        .get("finish_reason")
        .and_then(Value::as_str)
        .map(str::to_owned);
    Ok(CompletionParts {
        text,
        finish_reason,
        usage: Usage::of(body),
        tool_calls: tool_calls_of(message),
    })
}

/// Decode a chat completion: its parts and its body's `model`. The common answer (a first choice whose `message`
/// has plain text content and no tool calls) is read in one pass, without a JSON tree; any other (tool calls, content
/// parts, an error in a 200, a duplicate key, an odd field) takes the general path, `answer_json` and
/// `completion_parts`, so the outcome and the error are those of the general path.
pub(super) fn chat_parts(bytes: &[u8], slug: &str) -> Result<(CompletionParts, Option<String>)> {
    if let Ok(answer) =
        serde_json::from_slice::<OnePass<'_, Vec<ChatChoice<'_>>, IgnoredAny>>(bytes)
    {
        let usage = answer.usage();
        if let Some(choice) = answer
            .plain()
            .then_some(answer.choices)
            .flatten()
            .and_then(|c| c.into_iter().next())
        {
            if let Some(message) = choice.message.filter(|m| m.tool_calls.is_none()) {
                let parts = CompletionParts {
                    text: message.content.map(Cow::into_owned).unwrap_or_default(),
                    finish_reason: choice.finish_reason.map(Cow::into_owned),
                    usage,
                    tool_calls: Vec::new(),
                };
                return Ok((parts, answer.model.map(Cow::into_owned)));
            }
        }
    }
    let raw = answer_json(bytes, "chat completion", slug)?;
    let parts = completion_parts(&raw)?;
    let model = raw.get("model").and_then(Value::as_str).map(str::to_owned);
    Ok((parts, model))
}

/// The fields of a 2xx answer the one-pass decoders read, borrowed from the body where they need no unescaping:
/// the payload (`choices` of a chat completion, `data` of embeddings; the other is ignored as any unknown field is),
/// and what every answer may carry.
#[derive(serde::Deserialize)]
struct OnePass<'a, C, D> {
    choices: Option<C>,
    data: Option<D>,
    #[serde(borrow)]
    model: Option<Cow<'a, str>>,
    usage: Option<Value>,
    /// Present and not null: an error in a 200 body.
    error: Option<IgnoredAny>,
    #[serde(borrow)]
    object: Option<Cow<'a, str>>,
}

impl<C, D> OnePass<'_, C, D> {
    /// Not an error in a 200 (which the general path reports).
    fn plain(&self) -> bool {
        self.error.is_none() && self.object.as_deref() != Some("error")
    }

    fn usage(&self) -> Option<Usage> {
        self.usage.as_ref().and_then(Usage::of_object)
    }
}

#[derive(serde::Deserialize)]
struct ChatChoice<'a> {
    #[serde(borrow)]
    message: Option<ChatMessage<'a>>,
    #[serde(borrow)]
    finish_reason: Option<Cow<'a, str>>,
}

#[derive(serde::Deserialize)]
struct ChatMessage<'a> {
    /// Plain text (content parts take the general path); null or absent is "".
    #[serde(borrow)]
    content: Option<Cow<'a, str>>,
    /// Present and not null: tool calls, which the general path reads.
    tool_calls: Option<IgnoredAny>,
}

/// A 2xx JSON answer, parsed; an in-band error in it is returned as the error it reports.
pub(super) fn answer_json(bytes: &[u8], what: &str, slug: &str) -> Result<Value> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|err| Error::api(format!("malformed response: {what} is not JSON ({err})")))?;
    match inband_error(&value, slug) {
        Some(err) => Err(err),
        None => Ok(value),
    }
}

/// An error carried in a 200 body: `{"error": {...}}` / `{"error": "..."}`, or a flat `{"object": "error"}`.
pub(crate) fn inband_error(body: &Value, slug: &str) -> Option<Error> {
    is_inband_error(body).then(|| workload_error(body.clone(), slug))
}

pub(super) fn workload_error(body: Value, slug: &str) -> Error {
    Error::reported(&format!("workload {slug:?}"), body)
}

/// An embeddings answer decoded: the vectors in input order, the body's `model` and its usage.
pub(super) struct EmbedParts {
    pub(super) vectors: Vec<Vec<f32>>,
    pub(super) model: Option<String>,
    pub(super) usage: Option<Usage>,
}

/// Decode an embeddings answer. The common answer (a `data` list of base64 or number vectors) is read in one pass
/// over the body, each base64 vector decoded straight from it (never copied into a string, never a JSON tree); any
/// other (an error in a 200, a duplicate key, an odd field) takes the general path, `answer_json` and
/// `decode_embeddings`, so the outcome and the error are those of the general path.
pub(super) fn embed_parts(bytes: &[u8], expected: usize, slug: &str) -> Result<EmbedParts> {
    if let Ok(answer) = serde_json::from_slice::<OnePass<'_, IgnoredAny, Vec<EmbedItem<'_>>>>(bytes)
    {
        let usage = answer.usage();
        if let Some(data) = answer.plain().then_some(answer.data).flatten() {
            let items = data.into_iter().map(|item| (item.index, item.embedding));
            return Ok(EmbedParts {
                vectors: ordered_vectors(items, expected)?,
                model: answer.model.map(Cow::into_owned),
                usage,
            });
        }
    }
    let raw = answer_json(bytes, "embeddings", slug)?;
    Ok(EmbedParts {
        vectors: decode_embeddings(&raw, expected)?,
        model: raw.get("model").and_then(Value::as_str).map(str::to_owned),
        usage: Usage::of(&raw),
    })
}

#[derive(serde::Deserialize)]
struct EmbedItem<'a> {
    /// Present, it must be an integer (a `null` takes the general path, which refuses it).
    #[serde(default, deserialize_with = "present_u64")]
    index: Option<u64>,
    #[serde(borrow)]
    embedding: Option<RawVector<'a>>,
}

fn present_u64<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> std::result::Result<Option<u64>, D::Error> {
    <u64 as serde::Deserialize>::deserialize(deserializer).map(Some)
}

/// One `embedding` as sent: base64 text, borrowed from the body, or numbers.
enum RawVector<'a> {
    Base64(&'a str),
    Numbers(Vec<f32>),
}

impl<'de: 'a, 'a> serde::Deserialize<'de> for RawVector<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        struct Visit<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visit<'a> {
            type Value = RawVector<'a>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("base64 text or a list of numbers")
            }

            // Only text borrowed as it is in the body (base64 needs no escapes); anything else takes the general
            // path.
            fn visit_borrowed_str<E: serde::de::Error>(
                self,
                text: &'de str,
            ) -> std::result::Result<Self::Value, E> {
                Ok(RawVector::Base64(text))
            }

            fn visit_seq<S: serde::de::SeqAccess<'de>>(
                self,
                mut seq: S,
            ) -> std::result::Result<Self::Value, S::Error> {
                let mut numbers = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(number) = seq.next_element::<f64>()? {
                    numbers.push(number as f32);
                }
                Ok(RawVector::Numbers(numbers))
            }
        }
        deserializer.deserialize_any(Visit(std::marker::PhantomData))
    }
}

/// The vectors of `(index, embedding)` items in index order (an item without an index at its position), checked
/// against the number of inputs.
fn ordered_vectors<'a>(
    items: impl ExactSizeIterator<Item = (Option<u64>, Option<RawVector<'a>>)>,
    expected: usize,
) -> Result<Vec<Vec<f32>>> {
    let mut indexed = Vec::with_capacity(items.len());
    for (position, (index, vector)) in items.enumerate() {
        let vector = match vector {
            Some(RawVector::Numbers(numbers)) => numbers,
            Some(RawVector::Base64(encoded)) => decode_base64_f32(encoded)
                .ok_or_else(|| malformed_embeddings("vector that is not base64 float32"))?,
            None => return Err(malformed_embeddings("item without an embedding")),
        };
        indexed.push((index.unwrap_or(position as u64), vector));
    }
    if indexed.len() != expected {
        return Err(malformed_embeddings(&format!(
            "count {} for {expected} inputs",
            indexed.len()
        )));
    }
    indexed.sort_by_key(|(index, _)| *index);
    Ok(indexed.into_iter().map(|(_, vector)| vector).collect())
}

fn malformed_embeddings(why: &str) -> Error {
    Error::api(format!("malformed response: embeddings {why}"))
}

/// Vectors from an embeddings body: each `embedding` a number array or base64 little-endian f32, by `index`.
pub(super) fn decode_embeddings(body: &Value, expected: usize) -> Result<Vec<Vec<f32>>> {
    let items = body
        .get("data")
        .and_then(Value::as_array)
        .ok_or_else(|| malformed_embeddings("without a data list"))?;
    let mut raw = Vec::with_capacity(items.len());
    for item in items {
        let index = match item.get("index") {
            Some(index) => Some(
                index
                    .as_u64()
                    .ok_or_else(|| malformed_embeddings("item with a non-integer index"))?,
            ),
            None => None,
        };
        let vector = match item.get("embedding") {
            Some(Value::Array(numbers)) => Some(RawVector::Numbers(
                numbers
                    .iter()
                    .map(|n| n.as_f64().map(|x| x as f32))
                    .collect::<Option<Vec<f32>>>()
                    .ok_or_else(|| malformed_embeddings("vector holding a non-number"))?,
            )),
            Some(Value::String(encoded)) => Some(RawVector::Base64(encoded)),
            _ => None,
        };
        raw.push((index, vector));
    }
    ordered_vectors(raw.into_iter(), expected)
}

/// A vector from base64 of little-endian float32 (padding optional), decoded straight into the floats.
pub(super) fn decode_base64_f32(encoded: &str) -> Option<Vec<f32>> {
    let text = encoded.trim().as_bytes();
    let unpadded = text
        .strip_suffix(b"==")
        .or_else(|| text.strip_suffix(b"="))
        .unwrap_or(text);
    let engine = base64_simd::STANDARD_NO_PAD;
    let len = engine.decoded_length(unpadded).ok()?;
    if len % 4 != 0 {
        return None;
    }
    let mut floats = vec![0f32; len / 4];
    let decoded = engine
        .decode(
            unpadded,
            base64_simd::Out::from_slice(bytemuck::cast_slice_mut::<f32, u8>(&mut floats)),
        )
        .ok()?
        .len();
    if decoded != len {
        return None;
    }
    #[cfg(target_endian = "big")]
    for value in &mut floats {
        *value = f32::from_le_bytes(value.to_ne_bytes());
    }
    Some(floats)
}

pub(super) fn decode_rerank(body: &Value) -> Result<Vec<RerankResult>> {
    let malformed = |why: &str| Error::api(format!("malformed response: rerank {why}"));
    let items = body
        .get("results")
        .and_then(Value::as_array)
        .ok_or_else(|| malformed("without a results list"))?;
    items
        .iter()
        .map(|item| {
            let index = item
                .get("index")
                .and_then(Value::as_u64)
                .ok_or_else(|| malformed("result without an index"))?;
            let score = item
                .get("relevance_score")
                .or_else(|| item.get("score"))
                .and_then(Value::as_f64)
                .ok_or_else(|| malformed("result without a relevance_score"))?;
            let index =
                usize::try_from(index).map_err(|_| malformed("result index out of range"))?;
            Ok(RerankResult {
                index,
                relevance_score: score,
            })
        })
        .collect()
}
