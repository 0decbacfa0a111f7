//! The data plane: `DataClient` and per-workload `Endpoint`s (key checks, chat, streamed chat decoded by a
//! background task into batches, embeddings as floats or base64, rerank), tolerant of every engine dialect.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use bytes::Bytes;
use reqwest::header::{HeaderValue, CONTENT_TYPE};
use serde::ser::SerializeSeq;
use serde::{Serialize, Serializer};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::args::{at_least, below_bound};
use crate::config::{
    non_blank, normalize_base_url, resolve_setting, Sources, TransportOptions, ENV_API_KEY,
    ENV_BASE_URL, ENV_PROJECT,
};
use crate::error::{is_inband_error, Error, Result};
use crate::event;
use crate::spec::{checked_project, checked_slug};
use crate::sse::{EventRef, SseDecoder};
use crate::token::{token_kind, Secret, TokenKind};
use crate::transport::{bearer, AttemptError, Failure, Method, Request, Transport};

/// Decoded batches queued ahead of the consumer; a full queue stops reading the socket (backpressure).
const STREAM_QUEUE: usize = 32;
/// Standard base64, padding optional (engines differ).
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);
/// How long a finished stream keeps reading to the end of the body so the connection can be reused.
const DRAIN_AFTER_DONE: Duration = Duration::from_secs(1);

/// Data-plane client: a project, a connection pool and an optional default `ik_live_` key. Cloning shares them.
#[derive(Clone)]
pub struct DataClient {
    inner: Arc<DataInner>,
}

struct DataInner {
    transport: Transport,
    project: String,
    api_key: Option<Secret>,
}

impl fmt::Debug for DataClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataClient")
            .field("base_url", &self.inner.transport.base_url())
            .field("project", &self.inner.project)
            .field("api_key", &self.inner.api_key)
            .finish()
    }
}

impl DataClient {
    /// A client from explicit values only (`base_url` `None` means the default). A blank project is a
    /// `ConfigurationError`; the key is checked when an endpoint is made.
    pub fn new(
        base_url: Option<&str>,
        project: Option<&str>,
        api_key: Option<&str>,
        options: TransportOptions,
    ) -> Result<Self> {
        Self::build(Sources::Explicit, base_url, project, api_key, &options)
    }

    /// Like `new`, each value resolved explicit > `INFERENCEKEY_BASE_URL` / `INFERENCEKEY_PROJECT` /
    /// `INFERENCEKEY_API_KEY` > default.
    pub fn from_env(
        base_url: Option<&str>,
        project: Option<&str>,
        api_key: Option<&str>,
        options: TransportOptions,
    ) -> Result<Self> {
        Self::build(
            Sources::ExplicitThenEnv,
            base_url,
            project,
            api_key,
            &options,
        )
    }

    fn build(
        sources: Sources,
        base_url: Option<&str>,
        project: Option<&str>,
        api_key: Option<&str>,
        options: &TransportOptions,
    ) -> Result<Self> {
        let base_url = sources.get(base_url, ENV_BASE_URL);
        let project = sources.get(project, ENV_PROJECT);
        let api_key = sources.get(api_key, ENV_API_KEY);
        let Some(project) = project else {
            return Err(Error::configuration(
                "configuration error: no project: pass project= or set INFERENCEKEY_PROJECT",
            ));
        };
        let project = checked_project(project)?;
        let transport = Transport::new(normalize_base_url(base_url)?, options)?;
        Ok(Self {
            inner: Arc::new(DataInner {
                transport,
                project,
                api_key: api_key.map(Secret::new),
            }),
        })
    }

    /// The normalized base URL.
    pub fn base_url(&self) -> &str {
        self.inner.transport.base_url()
    }

    /// The project every endpoint of this client lives in.
    pub fn project(&self) -> &str {
        &self.inner.project
    }

    /// The default `ik_live_` key itself, for handing this client's configuration to another process (a
    /// pickled client for a worker). Never log or show it.
    pub fn exposed_api_key(&self) -> Option<&str> {
        self.inner.api_key.as_ref().map(Secret::expose)
    }

    /// The endpoint of one workload, bound to `api_key` > the client's default key. No key is a
    /// `ConfigurationError`; an `ik_sdk_` token is `PermissionDenied [wrong_credential_type]`. Nothing is sent.
    pub fn endpoint(&self, workload_slug: &str, api_key: Option<&str>) -> Result<Endpoint> {
        let slug = checked_slug(workload_slug)?;
        let key = match non_blank(api_key) {
            Some(key) => Secret::new(key),
            // Like the project of the control plane, the key falls back to the environment at call time,
            // so a client built with no default key still honours INFERENCEKEY_API_KEY.
            None => self
                .inner
                .api_key
                .clone()
                .or_else(|| resolve_setting(None, ENV_API_KEY).map(Secret::new))
                .ok_or_else(|| {
                Error::configuration(format!(
                    "No ik_live_ key for workload \"{slug}\". Pass api_key= or set INFERENCEKEY_API_KEY."
                ))
            })?,
        };
        if token_kind(key.expose()) == TokenKind::Sdk {
            return Err(Error::permission_denied(
                "wrong_credential_type",
                format_args!(
                    "{} is a control token; the data plane requires an ik_live_ key",
                    key.redacted()
                ),
            ));
        }
        let transport = self.inner.transport.clone();
        let project = self.inner.project.clone();
        let base_url = transport.url(&["endpoint", &project, &slug, "v1"]);
        Ok(Endpoint {
            inner: Arc::new(EndpointInner {
                auth: bearer(&key)?,
                key,
                chat_url: format!("{base_url}/chat/completions"),
                embeddings_url: format!("{base_url}/embeddings"),
                rerank_url: format!("{base_url}/rerank"),
                base_url,
                transport,
                project,
                slug,
            }),
        })
    }
}

/// A chat request: exactly one of `prompt` / `messages`; unset parameters are not sent.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChatRequest {
    /// One user turn.
    pub prompt: Option<String>,
    /// OpenAI-style message dicts, forwarded as given.
    pub messages: Option<Vec<Value>>,
    /// Sampling temperature.
    pub temperature: Option<f64>,
    /// Completion length limit.
    pub max_tokens: Option<u64>,
}

impl ChatRequest {
    /// A request from the values a user passed, with every chat rule checked before any request: `max_tokens`
    /// at least 1, `messages` a JSON array (`Null` counts as not given, the way a binding passes `None`),
    /// then [`ChatRequest::check`]. Each failure is an `ErrorKind::Validation`.
    pub fn from_user(
        prompt: Option<String>,
        messages: Option<Value>,
        temperature: Option<f64>,
        max_tokens: Option<i64>,
    ) -> Result<Self> {
        let max_tokens = max_tokens
            .map(|n| at_least("max_tokens", n, 1))
            .transpose()?;
        let messages = match messages {
            None | Some(Value::Null) => None,
            Some(Value::Array(items)) => Some(items),
            Some(_) => return Err(Error::validation("messages must be a list")),
        };
        let request = Self {
            prompt,
            messages,
            temperature,
            max_tokens,
        };
        request.check()?;
        Ok(request)
    }

    /// The rules of a chat request, which `Endpoint::chat` and `chat_stream` also apply before sending:
    /// exactly one of `prompt` / `messages`, a finite `temperature`, `max_tokens` at least 1.
    pub fn check(&self) -> Result<()> {
        self.checked_messages().map(drop)
    }

    /// The messages to send, once every rule of `check` holds (one place for the rules and their wording).
    fn checked_messages(&self) -> Result<Messages<'_>> {
        let messages = match (&self.prompt, &self.messages) {
            (Some(_), Some(_)) => {
                return Err(Error::validation(
                    "pass either prompt or messages, not both",
                ))
            }
            (None, None) => return Err(Error::validation("pass prompt or messages")),
            (Some(prompt), None) => Messages::Prompt(prompt),
            (None, Some(messages)) => Messages::List(messages),
        };
        if self.temperature.is_some_and(|t| !t.is_finite()) {
            return Err(Error::validation("temperature must be a finite number"));
        }
        if self.max_tokens == Some(0) {
            return Err(below_bound("max_tokens", 1));
        }
        Ok(messages)
    }
}

/// A rerank `top_n` from the value a user passed: at least 1 and at most `u32::MAX`, else an
/// `ErrorKind::Validation` (`validation error: top_n must be an integer of at least 1`, `… top_n is too large`).
pub fn checked_top_n(top_n: i64) -> Result<u32> {
    at_least("top_n", top_n, 1)
}

/// A non-streamed chat completion.
#[derive(Clone, Debug, PartialEq)]
pub struct ChatCompletion {
    /// `choices[0].message.content` (`""` when null).
    pub text: String,
    /// The body's `model` (the workload slug when the body has none).
    pub model: String,
    /// `choices[0].finish_reason`.
    pub finish_reason: Option<String>,
    /// The response body.
    pub raw: Value,
    /// The response body as received, for a binding that materialises `raw` only when it is read.
    pub body: Bytes,
}

/// One streamed event.
#[derive(Clone, Debug, PartialEq)]
pub struct ChatChunk {
    /// `choices[0].delta.content` (`""` when null, absent, or `choices` is empty).
    pub text: String,
    /// Set only on the chunk that carries it.
    pub finish_reason: Option<String>,
    /// The chunk JSON as received (already validated): kept as bytes so the stream builds no JSON tree per
    /// chunk; `raw` parses it on demand.
    pub data: Bytes,
}

impl ChatChunk {
    /// The chunk JSON (`Value::Null` if `data` is not JSON, which no chunk the SDK yields can be).
    pub fn raw(&self) -> Value {
        serde_json::from_slice(&self.data).unwrap_or(Value::Null)
    }
}

/// How embeddings travel on the wire. The SDK asks for base64 by default: 4x fewer bytes than JSON numbers
/// and no float parsing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EmbeddingFormat {
    /// JSON arrays of numbers.
    Float,
    /// Base64 of little-endian float32; float replies are still accepted.
    #[default]
    Base64,
}

/// Embedding vectors, one per input, in input order.
#[derive(Clone, Debug, PartialEq)]
pub struct Embeddings {
    /// The vectors, ordered by `index`.
    pub vectors: Vec<Vec<f32>>,
    /// The body's `model` (the workload slug when the body has none).
    pub model: String,
    /// The response body.
    pub raw: Value,
    /// The response body as received, for a binding that materialises `raw` only when it is read.
    pub body: Bytes,
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

/// One workload's OpenAI-compatible endpoint, bound to one `ik_live_` key. Cloning shares the pool.
#[derive(Clone)]
pub struct Endpoint {
    inner: Arc<EndpointInner>,
}

struct EndpointInner {
    transport: Transport,
    project: String,
    slug: String,
    key: Secret,
    auth: HeaderValue,
    base_url: String,
    chat_url: String,
    embeddings_url: String,
    rerank_url: String,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("base_url", &self.inner.base_url)
            .field("api_key", &self.inner.key)
            .finish()
    }
}

/// The chat body: exactly `model`, `messages`, `stream` and the parameters that are set.
#[derive(Serialize)]
struct ChatBody<'a> {
    model: &'a str,
    messages: Messages<'a>,
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u64>,
}

enum Messages<'a> {
    Prompt(&'a str),
    List(&'a [Value]),
}

#[derive(Serialize)]
struct UserMessage<'a> {
    role: &'static str,
    content: &'a str,
}

impl Serialize for Messages<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Self::Prompt(prompt) => {
                let mut seq = serializer.serialize_seq(Some(1))?;
                seq.serialize_element(&UserMessage {
                    role: "user",
                    content: prompt,
                })?;
                seq.end()
            }
            Self::List(messages) => messages.serialize(serializer),
        }
    }
}

#[derive(Serialize)]
struct EmbedBody<'a> {
    model: &'a str,
    input: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    encoding_format: Option<&'static str>,
}

#[derive(Serialize)]
struct RerankBody<'a> {
    model: &'a str,
    query: &'a str,
    documents: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    top_n: Option<u32>,
}

fn encode(body: &impl Serialize) -> Result<Bytes> {
    serde_json::to_vec(body)
        .map(Bytes::from)
        .map_err(|err| Error::api(format!("cannot encode the request: {err}")))
}

impl Endpoint {
    /// The `ik_live_` key itself, for handing this endpoint to another process (a pickled endpoint for a
    /// worker). Never log or show it.
    pub fn exposed_api_key(&self) -> &str {
        self.inner.key.expose()
    }

    /// The canonical workload slug.
    pub fn workload_slug(&self) -> &str {
        &self.inner.slug
    }

    /// The project.
    pub fn project(&self) -> &str {
        &self.inner.project
    }

    /// `{base_url}/endpoint/{project}/{workload}/v1`, for OpenAI-compatible clients.
    pub fn base_url(&self) -> &str {
        &self.inner.base_url
    }

    fn post<'a>(&'a self, url: &'a str, body: Bytes, event_stream: bool) -> Request<'a> {
        Request {
            method: Method::Post,
            url,
            auth: &self.inner.auth,
            body: Some(body),
            event_stream,
        }
    }

    /// The chat body, after the rules of `ChatRequest::check`.
    fn chat_body(&self, request: &ChatRequest, stream: bool) -> Result<Bytes> {
        let messages = request.checked_messages()?;
        encode(&ChatBody {
            model: &self.inner.slug,
            messages,
            stream,
            temperature: request.temperature,
            max_tokens: request.max_tokens,
        })
    }

    /// POST `body` and decode the JSON answer with `decode`; every failure after the 2xx answer (malformed
    /// JSON, an in-band error, a body `decode` refuses) carries the answer's `x-request-id`.
    async fn post_json<T>(
        &self,
        url: &str,
        body: Bytes,
        what: &str,
        decode: impl FnOnce(Value, Bytes) -> Result<T>,
    ) -> Result<T> {
        let transport = &self.inner.transport;
        let response = transport.send(&self.post(url, body, false)).await?;
        transport
            .read_body(response, |bytes| {
                decode(answer_json(&bytes, what, &self.inner.slug)?, bytes)
            })
            .await
    }

    fn model_of(&self, body: &Value) -> String {
        body.get("model")
            .and_then(Value::as_str)
            .unwrap_or(&self.inner.slug)
            .to_owned()
    }

    /// A non-streamed chat completion.
    pub async fn chat(&self, request: &ChatRequest) -> Result<ChatCompletion> {
        let body = self.chat_body(request, false)?;
        self.post_json(
            &self.inner.chat_url,
            body,
            "chat completion",
            |raw, body| {
                let (text, finish_reason) = completion_parts(&raw)?;
                Ok(ChatCompletion {
                    text,
                    model: self.model_of(&raw),
                    finish_reason,
                    raw,
                    body,
                })
            },
        )
        .await
    }

    /// A streamed chat completion. The request is made here, so HTTP errors are returned by this call; the
    /// body is then read and decoded by a background task.
    pub async fn chat_stream(&self, request: &ChatRequest) -> Result<ChatStream> {
        let body = self.chat_body(request, true)?;
        let transport = &self.inner.transport;
        let response = transport
            .send(&self.post(&self.inner.chat_url, body, true))
            .await?;
        let mime = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_ascii_lowercase()
            });
        match mime.as_deref() {
            None | Some("text/event-stream") => Ok(ChatStream::spawn(response, self.inner.clone())),
            Some(mime) if mime == "application/json" || mime.ends_with("+json") => {
                // An engine that ignored `stream: true`: its whole answer is one chunk.
                transport
                    .read_body(response, |bytes| {
                        let raw = answer_json(&bytes, "chat completion", &self.inner.slug)?;
                        let (text, finish_reason) = completion_parts(&raw)?;
                        Ok(ChatStream::ready(ChatChunk {
                            text,
                            finish_reason,
                            data: bytes,
                        }))
                    })
                    .await
            }
            Some(other) => Err(Error::api(format!(
                "workload {:?} answered a stream request with content-type {other:?}, not an event stream",
                self.inner.slug
            ))
            .with_request_id(crate::transport::request_id(&response).as_deref())),
        }
    }

    /// Embeddings for `input`, one vector per item in input order.
    pub async fn embed(&self, input: Vec<String>, format: EmbeddingFormat) -> Result<Embeddings> {
        let encoding_format = match format {
            EmbeddingFormat::Float => None,
            EmbeddingFormat::Base64 => Some("base64"),
        };
        let body = encode(&EmbedBody {
            model: &self.inner.slug,
            input: &input,
            encoding_format,
        })?;
        let expected = input.len();
        self.post_json(
            &self.inner.embeddings_url,
            body,
            "embeddings",
            |raw, body| {
                Ok(Embeddings {
                    vectors: decode_embeddings(&raw, expected)?,
                    model: self.model_of(&raw),
                    raw,
                    body,
                })
            },
        )
        .await
    }

    /// One embeddings request for `input` in base64, without the transport's retries: the batch job decides
    /// what to retry (and adapts its concurrency to the answers). A failure that says nothing about overload or
    /// the connection (a malformed or refused body after a 2xx) comes back with no `Failure`.
    pub(crate) async fn embed_attempt(
        &self,
        input: &[String],
    ) -> std::result::Result<Vec<Vec<f32>>, (Error, Option<Failure>)> {
        let body = encode(&EmbedBody {
            model: &self.inner.slug,
            input,
            encoding_format: Some("base64"),
        })
        .map_err(|err| (err, None))?;
        let request = self.post(&self.inner.embeddings_url, body, false);
        let transport = &self.inner.transport;
        let response = transport
            .attempt(&request)
            .await
            .map_err(|AttemptError { error, failure }| (error, Some(failure)))?;
        let request_id = crate::transport::request_id(&response);
        let tag = |err: Error| err.with_request_id(request_id.as_deref());
        // A connection lost while the body is read is worth another attempt: embedding the same texts again
        // gives the same vectors.
        let bytes = response.bytes().await.map_err(|err| {
            let (error, failure) = transport.transport_error(&err, "reading the response from");
            (tag(error), Some(failure))
        })?;
        answer_json(&bytes, "embeddings", &self.inner.slug)
            .and_then(|raw| decode_embeddings(&raw, input.len()))
            .map_err(|err| (tag(err), None))
    }

    /// Rerank `documents` against `query`; `top_n` limits the results when set (at least 1: a `top_n` of 0 is
    /// an `ErrorKind::Validation` before any request; see [`checked_top_n`] for a user's integer).
    pub async fn rerank(
        &self,
        query: &str,
        documents: Vec<String>,
        top_n: Option<u32>,
    ) -> Result<Rerank> {
        if top_n == Some(0) {
            return Err(below_bound("top_n", 1));
        }
        let body = encode(&RerankBody {
            model: &self.inner.slug,
            query,
            documents: &documents,
            top_n,
        })?;
        self.post_json(&self.inner.rerank_url, body, "rerank", |raw, body| {
            Ok(Rerank {
                results: decode_rerank(&raw)?,
                model: self.model_of(&raw),
                raw,
                body,
            })
        })
        .await
    }
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

/// Text and finish reason of a completion body (`message`, or `delta` for a chunk-shaped body). A body with no
/// choice, or a choice with neither, is malformed: answering `text=""` would hide a broken engine.
fn completion_parts(body: &Value) -> Result<(String, Option<String>)> {
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
    Ok((text, finish_reason))
}

/// A 2xx JSON answer, parsed; an in-band error in it is returned as the error it reports.
fn answer_json(bytes: &[u8], what: &str, slug: &str) -> Result<Value> {
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

fn workload_error(body: Value, slug: &str) -> Error {
    Error::reported(&format!("workload {slug:?}"), body)
}

/// Vectors from an embeddings body: each `embedding` a number array or base64 little-endian f32, by `index`.
fn decode_embeddings(body: &Value, expected: usize) -> Result<Vec<Vec<f32>>> {
    let malformed = |why: &str| Error::api(format!("malformed response: embeddings {why}"));
    let items = body
        .get("data")
        .and_then(Value::as_array)
        .ok_or_else(|| malformed("without a data list"))?;
    let mut indexed = Vec::with_capacity(items.len());
    for (position, item) in items.iter().enumerate() {
        let index = match item.get("index") {
            Some(index) => index
                .as_u64()
                .ok_or_else(|| malformed("item with a non-integer index"))?,
            None => position as u64,
        };
        let vector = match item.get("embedding") {
            Some(Value::Array(numbers)) => numbers
                .iter()
                .map(|n| n.as_f64().map(|x| x as f32))
                .collect::<Option<Vec<f32>>>()
                .ok_or_else(|| malformed("vector holding a non-number"))?,
            Some(Value::String(encoded)) => decode_base64_f32(encoded)
                .ok_or_else(|| malformed("vector that is not base64 float32"))?,
            _ => return Err(malformed("item without an embedding")),
        };
        indexed.push((index, vector));
    }
    if indexed.len() != expected {
        return Err(malformed(&format!(
            "count {} for {expected} inputs",
            indexed.len()
        )));
    }
    indexed.sort_by_key(|(index, _)| *index);
    Ok(indexed.into_iter().map(|(_, vector)| vector).collect())
}

fn decode_base64_f32(encoded: &str) -> Option<Vec<f32>> {
    let bytes = BASE64.decode(encoded.trim()).ok()?;
    if bytes.len() % 4 != 0 {
        return None;
    }
    Some(
        bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
    )
}

fn decode_rerank(body: &Value) -> Result<Vec<RerankResult>> {
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

enum StreamMessage {
    Chunks(Vec<ChatChunk>),
    Failed(Error),
}

/// An open chat stream. A background task reads the body, decodes SSE and JSON, and queues chunks;
/// dropping or closing the stream aborts the task, which closes the connection.
pub struct ChatStream {
    receiver: Option<mpsc::Receiver<StreamMessage>>,
    buffered: VecDeque<ChatChunk>,
    failed: Option<Error>,
    task: Option<JoinHandle<()>>,
}

impl fmt::Debug for ChatStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChatStream")
            .field("open", &self.receiver.is_some())
            .field("buffered", &self.buffered.len())
            .finish()
    }
}

impl ChatStream {
    fn spawn(response: reqwest::Response, endpoint: Arc<EndpointInner>) -> Self {
        let (sender, receiver) = mpsc::channel(STREAM_QUEUE);
        let task = tokio::spawn(pump(response, sender, endpoint));
        Self {
            receiver: Some(receiver),
            buffered: VecDeque::new(),
            failed: None,
            task: Some(task),
        }
    }

    fn ready(chunk: ChatChunk) -> Self {
        Self {
            receiver: None,
            buffered: VecDeque::from([chunk]),
            failed: None,
            task: None,
        }
    }

    /// Wait for at least one chunk, then take every chunk already decoded (at most `max`). An empty batch
    /// means the stream finished; a stream failure is returned after the chunks that preceded it.
    pub async fn next_batch(&mut self, max: usize) -> Result<Vec<ChatChunk>> {
        let max = max.max(1);
        let from_buffer = self.buffered.len().min(max);
        let mut out: Vec<ChatChunk> = self.buffered.drain(..from_buffer).collect();
        if out.is_empty() && self.failed.is_none() {
            if let Some(receiver) = self.receiver.as_mut() {
                match receiver.recv().await {
                    Some(message) => self.accept(message, &mut out, max),
                    None => self.receiver = None,
                }
            }
        }
        // Then whatever is already decoded, without waiting; leftovers wait in `buffered`, in order.
        while out.len() < max && self.buffered.is_empty() && self.failed.is_none() {
            let Some(receiver) = self.receiver.as_mut() else {
                break;
            };
            match receiver.try_recv() {
                Ok(message) => self.accept(message, &mut out, max),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => self.receiver = None,
            }
        }
        if !out.is_empty() {
            return Ok(out);
        }
        match self.failed.take() {
            Some(err) => {
                self.close();
                Err(err)
            }
            None => Ok(Vec::new()),
        }
    }

    fn accept(&mut self, message: StreamMessage, out: &mut Vec<ChatChunk>, max: usize) {
        match message {
            StreamMessage::Chunks(mut chunks) => {
                if out.is_empty() && chunks.len() <= max {
                    // The common case: the task's batch is handed over as it is, no copy.
                    *out = chunks;
                    return;
                }
                let room = max.saturating_sub(out.len());
                if chunks.len() > room {
                    self.buffered.extend(chunks.drain(room..));
                }
                out.append(&mut chunks);
            }
            StreamMessage::Failed(err) => self.failed = Some(err),
        }
    }

    /// Stop reading and close the connection; later batches are empty.
    pub fn close(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        self.receiver = None;
        self.buffered.clear();
    }
}

impl Drop for ChatStream {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Per-stream decoding state of the background task.
struct StreamState<'a> {
    slug: &'a str,
    /// `[DONE]` seen: later frames are ignored.
    done: bool,
    /// A `finish_reason` was seen: an end without `[DONE]` is then complete.
    finished: bool,
    error: Option<Error>,
}

impl StreamState<'_> {
    /// One network read through the decoder: its events into `batch`, and an event past the size cap as the
    /// stream's error.
    fn feed(&mut self, decoder: &mut SseDecoder, bytes: &[u8], batch: &mut Vec<ChatChunk>) {
        decoder.feed_with(bytes, |event| self.on_event(event, batch));
        if decoder.overflowed() && self.error.is_none() {
            self.error = Some(Error::event_too_large(&format!("workload {:?}", self.slug)));
        }
    }

    fn on_event(&mut self, event: EventRef<'_>, batch: &mut Vec<ChatChunk>) {
        if self.done || self.error.is_some() {
            return;
        }
        let data = event.data.trim_ascii();
        if event.event == b"error" {
            let body = serde_json::from_slice::<Value>(data)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(data).into_owned()));
            self.error = Some(workload_error(body, self.slug));
            return;
        }
        if data.is_empty() {
            return;
        }
        if data == b"[DONE]" {
            self.done = true;
            return;
        }
        // The one decode of this event, straight from the decoder's buffer, into only the fields the
        // stream needs; the bytes are kept for `raw`.
        let fields = match event::decode(data) {
            Ok(fields) => fields,
            Err(err) => {
                self.error = Some(Error::api(format!(
                    "malformed JSON in a stream event from workload {:?}: {err}",
                    self.slug
                )));
                return;
            }
        };
        if fields.is_error {
            // Rare: the error keeps the whole body, so this event alone is parsed into a tree.
            let body = serde_json::from_slice::<Value>(data).unwrap_or(Value::Null);
            self.error = Some(workload_error(body, self.slug));
            return;
        }
        self.finished |= fields.finish_reason.is_some();
        batch.push(ChatChunk {
            text: fields.text,
            finish_reason: fields.finish_reason,
            data: Bytes::copy_from_slice(data),
        });
    }
}

/// What a stream body decodes to without a connection: the chunks, whether `[DONE]` and a `finish_reason` were
/// seen, and the failure that ended it. The same decoding as `pump`, for `crate::fuzzing`.
pub(crate) fn decode_stream<'r>(
    reads: impl IntoIterator<Item = &'r [u8]>,
    slug: &str,
) -> (Vec<ChatChunk>, bool, bool, Option<Error>) {
    let mut decoder = SseDecoder::new();
    let mut state = StreamState {
        slug,
        done: false,
        finished: false,
        error: None,
    };
    let mut chunks = Vec::new();
    for read in reads {
        state.feed(&mut decoder, read, &mut chunks);
    }
    decoder.finish_with(|event| state.on_event(event, &mut chunks));
    (chunks, state.done, state.finished, state.error)
}

/// The background task of a chat stream: read, decode, queue one batch per network read.
async fn pump(
    mut response: reqwest::Response,
    sender: mpsc::Sender<StreamMessage>,
    endpoint: Arc<EndpointInner>,
) {
    let request_id = crate::transport::request_id(&response);
    let mut decoder = SseDecoder::new();
    let mut state = StreamState {
        slug: &endpoint.slug,
        done: false,
        finished: false,
        error: None,
    };
    let mut batch = Vec::new();
    loop {
        let ended = match response.chunk().await {
            Ok(Some(bytes)) => {
                state.feed(&mut decoder, &bytes, &mut batch);
                false
            }
            Ok(None) => {
                decoder.finish_with(|event| state.on_event(event, &mut batch));
                if !state.done && !state.finished && state.error.is_none() {
                    state.error = Some(Error::api(format!(
                        "stream ended before completion (workload {:?} sent no [DONE] and no finish_reason)",
                        endpoint.slug
                    )));
                }
                true
            }
            Err(err) => {
                // After `[DONE]` or a finish_reason the answer is complete; a broken connection then loses nothing.
                if !state.done && !state.finished && state.error.is_none() {
                    state.error = Some(
                        endpoint
                            .transport
                            .transport_error(&err, "reading the stream from")
                            .0,
                    );
                }
                true
            }
        };
        if !batch.is_empty()
            && sender
                .send(StreamMessage::Chunks(std::mem::take(&mut batch)))
                .await
                .is_err()
        {
            return;
        }
        if let Some(err) = state.error.take() {
            let err = err.with_request_id(request_id.as_deref());
            let _ = sender.send(StreamMessage::Failed(err)).await;
            return;
        }
        if state.done || ended {
            break;
        }
    }
    // The consumer sees the end now; reading the (normally empty) rest lets the connection be reused.
    drop(sender);
    let _ = tokio::time::timeout(DRAIN_AFTER_DONE, async {
        while let Ok(Some(_)) = response.chunk().await {}
    })
    .await;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::error::ErrorKind;
    use serde_json::json;

    const LIVE: &str = "ik_live_a1b2c3d4_ffffffffffffffff";
    const SDK: &str = "ik_sdk_0a1b2c3d_0123456789abcdef";

    fn client(api_key: Option<&str>) -> DataClient {
        DataClient::new(
            Some("http://127.0.0.1:9"),
            Some("acme"),
            api_key,
            TransportOptions::default(),
        )
        .unwrap()
    }

    #[test]
    fn blank_project_is_a_configuration_error() {
        for project in [None, Some(""), Some("  ")] {
            let err = DataClient::new(None, project, Some(LIVE), TransportOptions::default())
                .unwrap_err();
            assert_eq!(err.kind, ErrorKind::Configuration);
        }
    }

    #[test]
    fn endpoint_key_resolution_and_checks() {
        let err = client(None).endpoint("Support Bot", None).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Configuration);
        assert_eq!(err.message, "No ik_live_ key for workload \"support-bot\". Pass api_key= or set INFERENCEKEY_API_KEY.");
        let err = client(Some(LIVE))
            .endpoint("support-bot", Some(SDK))
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::PermissionDenied);
        assert_eq!(err.code.as_deref(), Some("wrong_credential_type"));
        assert_eq!(
            err.message,
            "permission denied [wrong_credential_type]: ik_sdk_0a1b2c3d\u{2026} is a control token; the data plane requires an ik_live_ key"
        );
        let err = client(Some(SDK)).endpoint("support-bot", None).unwrap_err();
        assert_eq!(err.kind, ErrorKind::PermissionDenied);
        let ep = client(Some(LIVE))
            .endpoint(" Support Bot ", Some("  "))
            .unwrap();
        assert_eq!(ep.workload_slug(), "support-bot");
        assert_eq!(ep.project(), "acme");
        assert_eq!(
            ep.base_url(),
            "http://127.0.0.1:9/endpoint/acme/support-bot/v1"
        );
        assert!(!format!("{ep:?}").contains("ffffffff"));
        assert_eq!(
            client(Some(LIVE)).endpoint("__", None).unwrap_err().kind,
            ErrorKind::Validation
        );
    }

    #[test]
    fn chat_body_exact_shapes() {
        let ep = client(Some(LIVE)).endpoint("support-bot", None).unwrap();
        let body = |r: &ChatRequest, stream| {
            serde_json::from_slice::<Value>(&ep.chat_body(r, stream).unwrap()).unwrap()
        };
        let prompt = ChatRequest {
            prompt: Some("Hola".into()),
            ..ChatRequest::default()
        };
        assert_eq!(
            body(&prompt, false),
            json!({"model": "support-bot", "messages": [{"role": "user", "content": "Hola"}], "stream": false})
        );
        let messages = vec![
            json!({"role": "system", "content": "x", "name": "n"}),
            json!({"role": "user", "content": [{"type": "text", "text": "hi"}]}),
        ];
        let full = ChatRequest {
            prompt: None,
            messages: Some(messages.clone()),
            temperature: Some(0.2),
            max_tokens: Some(300),
        };
        assert_eq!(
            body(&full, true),
            json!({"model": "support-bot", "messages": messages, "stream": true, "temperature": 0.2, "max_tokens": 300})
        );
        let keys: Vec<String> = body(&full, true)
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        assert_eq!(
            keys,
            ["model", "messages", "stream", "temperature", "max_tokens"]
        );
    }

    #[test]
    fn chat_request_checks() {
        let ep = client(Some(LIVE)).endpoint("support-bot", None).unwrap();
        let both = ChatRequest {
            prompt: Some("a".into()),
            messages: Some(vec![]),
            ..ChatRequest::default()
        };
        let err = ep.chat_body(&both, false).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Validation);
        assert_eq!(
            err.message,
            "validation error: pass either prompt or messages, not both"
        );
        let err = ep.chat_body(&ChatRequest::default(), false).unwrap_err();
        assert_eq!(err.message, "validation error: pass prompt or messages");
        let nan = ChatRequest {
            prompt: Some("a".into()),
            temperature: Some(f64::NAN),
            ..ChatRequest::default()
        };
        assert_eq!(
            ep.chat_body(&nan, false).unwrap_err().kind,
            ErrorKind::Validation
        );
    }

    #[test]
    fn chat_request_from_user_values() {
        let messages = json!([{"role": "user", "content": "hi"}]);
        let request =
            ChatRequest::from_user(None, Some(messages.clone()), Some(0.0), Some(7)).unwrap();
        assert_eq!(
            request,
            ChatRequest {
                prompt: None,
                messages: Some(vec![json!({"role": "user", "content": "hi"})]),
                temperature: Some(0.0),
                max_tokens: Some(7),
            }
        );
        // Null messages are "not given", the way a binding passes None.
        let request =
            ChatRequest::from_user(Some("Hola".into()), Some(Value::Null), None, None).unwrap();
        assert_eq!(request.messages, None);
        assert_eq!(request.prompt.as_deref(), Some("Hola"));
        assert_eq!(
            ChatRequest::from_user(Some("a".into()), None, None, Some(i64::MAX))
                .unwrap()
                .max_tokens,
            Some(i64::MAX.unsigned_abs())
        );
        // An empty list is a list: sent as given, the server judges it.
        assert_eq!(
            ChatRequest::from_user(None, Some(json!([])), None, None)
                .unwrap()
                .messages,
            Some(vec![])
        );
    }

    #[test]
    fn chat_request_from_user_refusals_and_wording() {
        let refused =
            |prompt: Option<&str>, messages: Option<Value>, t: Option<f64>, n: Option<i64>| {
                let err =
                    ChatRequest::from_user(prompt.map(str::to_owned), messages, t, n).unwrap_err();
                assert_eq!(err.kind, ErrorKind::Validation);
                assert_eq!(err.status, None);
                err.message
            };
        let list = || Some(json!([{"role": "user", "content": "b"}]));
        for n in [0, -5, i64::MIN] {
            assert_eq!(
                refused(Some("a"), None, None, Some(n)),
                "validation error: max_tokens must be an integer of at least 1"
            );
        }
        for not_a_list in [json!({"role": "user"}), json!("hi"), json!(3), json!(true)] {
            assert_eq!(
                refused(None, Some(not_a_list), None, None),
                "validation error: messages must be a list"
            );
        }
        assert_eq!(
            refused(Some("a"), list(), None, None),
            "validation error: pass either prompt or messages, not both"
        );
        assert_eq!(
            refused(None, None, None, None),
            "validation error: pass prompt or messages"
        );
        assert_eq!(
            refused(None, None, Some(0.5), None),
            "validation error: pass prompt or messages"
        );
        for t in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert_eq!(
                refused(Some("a"), None, Some(t), None),
                "validation error: temperature must be a finite number"
            );
        }
        // The order of the checks: bounds first, then the messages type, then prompt xor messages.
        assert_eq!(
            refused(Some("a"), Some(json!("x")), Some(f64::NAN), Some(0)),
            "validation error: max_tokens must be an integer of at least 1"
        );
        assert_eq!(
            refused(Some("a"), Some(json!("x")), Some(f64::NAN), None),
            "validation error: messages must be a list"
        );
    }

    #[test]
    fn chat_request_check_applies_to_hand_built_requests() {
        let zero = ChatRequest {
            prompt: Some("a".into()),
            max_tokens: Some(0),
            ..ChatRequest::default()
        };
        assert_eq!(
            zero.check().unwrap_err().message,
            "validation error: max_tokens must be an integer of at least 1"
        );
        let ep = client(Some(LIVE)).endpoint("support-bot", None).unwrap();
        assert_eq!(
            ep.chat_body(&zero, false).unwrap_err().kind,
            ErrorKind::Validation
        );
        let fine = ChatRequest {
            prompt: Some("a".into()),
            max_tokens: Some(1),
            ..ChatRequest::default()
        };
        assert!(fine.check().is_ok());
    }

    #[test]
    fn top_n_bounds() {
        assert_eq!(checked_top_n(1).unwrap(), 1);
        assert_eq!(checked_top_n(i64::from(u32::MAX)).unwrap(), u32::MAX);
        for bad in [0, -1, i64::MIN] {
            let err = checked_top_n(bad).unwrap_err();
            assert_eq!(err.kind, ErrorKind::Validation);
            assert_eq!(
                err.message,
                "validation error: top_n must be an integer of at least 1"
            );
        }
        for bad in [i64::from(u32::MAX) + 1, i64::MAX] {
            let err = checked_top_n(bad).unwrap_err();
            assert_eq!(err.message, "validation error: top_n is too large");
        }
    }

    #[tokio::test]
    async fn rerank_refuses_top_n_zero_before_any_request() {
        // Port 9 has no listener: an attempt would fail as a connection error, not a validation error.
        let ep = client(Some(LIVE)).endpoint("support-bot", None).unwrap();
        let err = ep.rerank("q", vec!["a".into()], Some(0)).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Validation);
        assert_eq!(
            err.message,
            "validation error: top_n must be an integer of at least 1"
        );
    }

    #[test]
    fn completion_parts_tolerate_nulls_and_refuse_missing_choices() {
        assert_eq!(
            completion_parts(
                &json!({"choices": [{"message": {"content": "hi"}, "finish_reason": "stop"}]})
            )
            .unwrap(),
            ("hi".to_owned(), Some("stop".to_owned()))
        );
        assert_eq!(
            completion_parts(&json!({"choices": [{"message": {"content": null}}]})).unwrap(),
            (String::new(), None)
        );
        for (body, why) in [
            (json!({"choices": []}), "with an empty choices list"),
            (json!({}), "without a choices list"),
            (json!({"choices": null}), "without a choices list"),
            (
                json!({"choices": [{"index": 0}]}),
                "choice without a message",
            ),
        ] {
            let err = completion_parts(&body).unwrap_err();
            assert_eq!(err.kind, ErrorKind::Api);
            assert_eq!(
                err.message,
                format!("malformed response: chat completion {why}")
            );
        }
    }

    #[test]
    fn inband_error_shapes() {
        let nested =
            json!({"error": {"message": "boom", "type": "InternalServerError", "code": 500}});
        let err = inband_error(&nested, "w").unwrap();
        assert_eq!(err.kind, ErrorKind::Api);
        assert_eq!(err.message, "workload \"w\" reported an error: boom");
        assert_eq!(err.code.as_deref(), Some("500"));
        let flat = json!({"object": "error", "message": "bad request", "type": "BadRequestError", "code": 400});
        assert!(inband_error(&flat, "w")
            .unwrap()
            .message
            .ends_with("bad request"));
        assert!(inband_error(&json!({"error": null, "choices": []}), "w").is_none());
        assert!(inband_error(&json!({"choices": []}), "w").is_none());
    }

    fn stream_events(input: &[u8]) -> (Vec<ChatChunk>, StreamState<'static>) {
        let mut decoder = SseDecoder::new();
        let mut state = StreamState {
            slug: "w",
            done: false,
            finished: false,
            error: None,
        };
        let mut batch = Vec::new();
        decoder.feed_with(input, |event| state.on_event(event, &mut batch));
        decoder.finish_with(|event| state.on_event(event, &mut batch));
        (batch, state)
    }

    #[test]
    fn stream_dialects_decode() {
        let llama = b"data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":null},\"finish_reason\":null}]}\n\n\
data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}]}\n\n\
data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"timings\":{}}\n\n\
data: {\"choices\":[],\"usage\":{\"total_tokens\":3}}\n\n\
data: [DONE]\n\ndata: {\"choices\":[{\"delta\":{\"content\":\"late\"}}]}\n\n";
        let (chunks, state) = stream_events(llama);
        let texts: Vec<&str> = chunks.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(texts, ["", "Hi", "", ""]);
        assert_eq!(chunks[2].finish_reason.as_deref(), Some("stop"));
        assert_eq!(chunks[0].finish_reason, None);
        assert_eq!(
            chunks[3].raw(),
            json!({"choices": [], "usage": {"total_tokens": 3}})
        );
        assert!(state.done && state.finished && state.error.is_none());
    }

    /// What the stream read from one event when it parsed a `Value` tree: the reference for `event::decode`.
    fn decode_by_value(data: &[u8]) -> std::result::Result<(bool, String, Option<String>), String> {
        let raw: Value = serde_json::from_slice(data).map_err(|err| err.to_string())?;
        let choice = raw.get("choices").and_then(|c| c.get(0));
        let text = content_text(
            choice
                .and_then(|c| c.get("delta"))
                .and_then(|d| d.get("content")),
        );
        let finish_reason = choice
            .and_then(|c| c.get("finish_reason"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        Ok((inband_error(&raw, "w").is_some(), text, finish_reason))
    }

    #[test]
    fn typed_event_decode_matches_a_value_parse() {
        let cases: &[&[u8]] = &[
            br#"{"choices":[{"delta":{"content":"a\u00e9\n"},"finish_reason":null}]}"#,
            br#"{"choices":[{"delta":{"content":[{"type":"text","text":"x"},{"text":5},"s",{"text":"y"}]}}]}"#,
            br#"{"choices":[{"delta":{"content":"a","content":null},"finish_reason":"stop","finish_reason":1}]}"#,
            br#"{"choices":[{"delta":{"content":"a"}}],"choices":{"0":{}}}"#,
            br#"{"choices":[5,{"delta":{"content":"b"}}]}"#,
            br#"{"choices":[],"usage":{"total_tokens":3}}"#,
            br#"{"ch\u006fices":[{"d\u0065lta":{"c\u006fntent":"esc"},"finish_reason":"l\u0065ngth"}]}"#,
            br#"{"error":null,"object":"chat.completion.chunk","choices":[]}"#,
            br#"{"error":{"message":"oom"},"error":null}"#,
            br#"{"error":false}"#,
            br#"{"error":0}"#,
            br#"{"object":"error","message":"m"}"#,
            br#"{"object":"\u0065rror"}"#,
            br#"{"object":["error"]}"#,
            br#"[{"choices":[{"delta":{"content":"x"}}]}]"#,
            br#""text""#,
            b"5",
            b"null",
            br#"{"a":1e400}"#,
            br#"{"a":-0,"b":18446744073709551615,"c":-9223372036854775808,"d":1.5e-300}"#,
            b"{\"a\":\"\xff\"}",
            b"{\"\xff\":1}",
            br#"{"a":"\ud800"}"#,
            br#"{"a":1,}"#,
            br#"{"a":1} x"#,
            br#"{"a":tru}"#,
            b"{\"a\":\"tab\there\"}",
        ];
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let nested = format!(r#"{{"x":{}1{}}}"#, "[".repeat(127), "]".repeat(127));
        for data in cases
            .iter()
            .copied()
            .chain([deep.as_bytes(), nested.as_bytes()])
        {
            let typed = event::decode(data)
                .map(|f| (f.is_error, f.text, f.finish_reason))
                .map_err(|err| err.to_string());
            assert_eq!(
                typed,
                decode_by_value(data),
                "{}",
                String::from_utf8_lossy(data)
            );
        }
    }

    #[test]
    fn stream_errors() {
        let (chunks, state) = stream_events(b"data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\ndata: {\"error\":{\"message\":\"oom\",\"code\":500}}\n\ndata: [DONE]\n\n");
        assert_eq!(chunks.len(), 1);
        assert!(state.error.unwrap().message.ends_with("oom"));
        let (_, state) = stream_events(b"event: error\ndata: {\"message\":\"evt\"}\n\n");
        assert!(state.error.unwrap().message.ends_with("evt"));
        let (_, state) = stream_events(b"event: error\ndata: plain words\n\n");
        assert!(state.error.unwrap().message.ends_with("plain words"));
        let (_, state) = stream_events(b"data: {not json\n\n");
        assert!(state
            .error
            .unwrap()
            .message
            .starts_with("malformed JSON in a stream event"));
        let (chunks, state) = stream_events(b"data:\n\n: ping\n\ndata: [DONE]\n\n");
        assert!(chunks.is_empty() && state.done && state.error.is_none());
    }

    #[test]
    fn embeddings_floats_and_base64_by_index() {
        let b64 = base64::engine::general_purpose::STANDARD
            .encode([1.5f32.to_le_bytes(), (-2.0f32).to_le_bytes()].concat());
        let body = json!({"data": [{"index": 1, "embedding": b64}, {"index": 0, "embedding": [0.25, 1]}], "model": "e"});
        assert_eq!(
            decode_embeddings(&body, 2).unwrap(),
            vec![vec![0.25, 1.0], vec![1.5, -2.0]]
        );
        assert_eq!(
            decode_embeddings(&json!({"data": [{"embedding": [1]}]}), 1).unwrap(),
            vec![vec![1.0]]
        );
        let unpadded =
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(1.5f32.to_le_bytes());
        assert_eq!(
            decode_embeddings(&json!({"data": [{"embedding": unpadded}]}), 1).unwrap(),
            vec![vec![1.5]]
        );
        for bad in [
            json!({"data": [{"embedding": "AAA"}]}),
            json!({"data": [{"embedding": "not base64!"}]}),
            json!({"data": [{"embedding": ["x"]}]}),
            json!({"data": [{"index": "0", "embedding": [1]}]}),
            json!({"data": [{}]}),
            json!({"nodata": true}),
        ] {
            assert_eq!(
                decode_embeddings(&bad, 1).unwrap_err().kind,
                ErrorKind::Api,
                "{bad}"
            );
        }
        assert!(decode_embeddings(&json!({"data": [{"embedding": [1]}]}), 2).is_err());
    }

    #[test]
    fn rerank_results() {
        let body =
            json!({"results": [{"index": 2, "relevance_score": 0.9}, {"index": 0, "score": 0.1}]});
        assert_eq!(
            decode_rerank(&body).unwrap(),
            vec![
                RerankResult {
                    index: 2,
                    relevance_score: 0.9
                },
                RerankResult {
                    index: 0,
                    relevance_score: 0.1
                }
            ]
        );
        assert!(decode_rerank(&json!({"results": [{"index": 0}]})).is_err());
        assert!(decode_rerank(&json!({})).is_err());
    }

    fn chunk(text: &str) -> ChatChunk {
        ChatChunk {
            text: text.into(),
            finish_reason: None,
            data: Bytes::from_static(b"{}"),
        }
    }

    /// A stream fed by hand through the returned sender, as `pump` feeds a real one.
    fn channel_stream() -> (mpsc::Sender<StreamMessage>, ChatStream) {
        let (sender, receiver) = mpsc::channel(8);
        let stream = ChatStream {
            receiver: Some(receiver),
            buffered: VecDeque::new(),
            failed: None,
            task: None,
        };
        (sender, stream)
    }

    #[tokio::test]
    async fn batches_keep_order_and_error_comes_last() {
        let (sender, mut stream) = channel_stream();
        sender
            .send(StreamMessage::Chunks(vec![
                chunk("a"),
                chunk("b"),
                chunk("c"),
            ]))
            .await
            .unwrap();
        sender
            .send(StreamMessage::Chunks(vec![chunk("d"), chunk("e")]))
            .await
            .unwrap();
        sender
            .send(StreamMessage::Failed(Error::api("boom")))
            .await
            .unwrap();
        drop(sender);
        let texts = |batch: Vec<ChatChunk>| batch.into_iter().map(|c| c.text).collect::<Vec<_>>();
        assert_eq!(
            texts(stream.next_batch(4).await.unwrap()),
            ["a", "b", "c", "d"]
        );
        assert_eq!(texts(stream.next_batch(4).await.unwrap()), ["e"]);
        assert_eq!(stream.next_batch(4).await.unwrap_err().message, "boom");
        assert!(stream.next_batch(4).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn batch_of_one_and_clean_end() {
        let (sender, mut stream) = channel_stream();
        sender
            .send(StreamMessage::Chunks(vec![chunk("a"), chunk("b")]))
            .await
            .unwrap();
        drop(sender);
        assert_eq!(stream.next_batch(0).await.unwrap().len(), 1);
        assert_eq!(stream.next_batch(1).await.unwrap()[0].text, "b");
        assert!(stream.next_batch(1).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn ready_stream_yields_then_finishes() {
        let mut stream = ChatStream::ready(ChatChunk {
            text: "x".into(),
            finish_reason: Some("stop".into()),
            data: Bytes::from_static(b"{}"),
        });
        let batch = stream.next_batch(8).await.unwrap();
        assert_eq!(batch.len(), 1);
        assert!(stream.next_batch(8).await.unwrap().is_empty());
    }
}
