//! `DataClient` and its per-workload `Endpoint`s: configuration and key checks, and the calls (chat, streamed
//! chat, embeddings, rerank) that send a request body and hand the answer to its decoder.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use reqwest::header::{HeaderValue, CONTENT_TYPE};
use serde_json::Value;

use crate::args::below_bound;
use crate::config::{
    non_blank, normalize_base_url, resolve_setting, Sources, TransportOptions, ENV_API_KEY,
    ENV_BASE_URL, ENV_PROJECT,
};
use crate::error::{Error, Result};
use crate::spec::{checked_project, checked_slug};
use crate::token::{token_kind, Secret, TokenKind};
use crate::transport::{bearer, AttemptError, Failure, Method, Overrides, Request, Transport};

use super::*;

/// Data-plane client: a project, a connection pool and an optional default `ik_live_` key. Cloning shares them.
#[derive(Clone)]
pub struct DataClient {
    pub(super) inner: Arc<DataInner>,
}

pub(super) struct DataInner {
    pub(super) transport: Transport,
    pub(super) project: String,
    pub(super) api_key: Option<Secret>,
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
    /// A copy with `overrides` applied (read timeout, retries, headers) that shares this client's connection
    /// pool; its endpoints use them.
    pub fn with_overrides(&self, overrides: &Overrides) -> Self {
        let inner = &self.inner;
        Self {
            inner: Arc::new(DataInner {
                transport: inner.transport.with_overrides(overrides),
                project: inner.project.clone(),
                api_key: inner.api_key.clone(),
            }),
        }
    }

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

    pub(super) fn build(
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

/// One workload's OpenAI-compatible endpoint, bound to one `ik_live_` key. Cloning shares the pool.
#[derive(Clone)]
pub struct Endpoint {
    pub(super) inner: Arc<EndpointInner>,
}

pub(super) struct EndpointInner {
    pub(super) transport: Transport,
    pub(super) project: String,
    pub(super) slug: String,
    pub(super) key: Secret,
    pub(super) auth: HeaderValue,
    pub(super) base_url: String,
    pub(super) chat_url: String,
    pub(super) embeddings_url: String,
    pub(super) rerank_url: String,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("base_url", &self.inner.base_url)
            .field("api_key", &self.inner.key)
            .finish()
    }
}

impl Endpoint {
    /// A copy with `overrides` applied that shares the pool, for one call's `timeout`, `max_retries` and
    /// `extra_headers`.
    pub fn with_overrides(&self, overrides: &Overrides) -> Self {
        let inner = &self.inner;
        Self {
            inner: Arc::new(EndpointInner {
                transport: inner.transport.with_overrides(overrides),
                project: inner.project.clone(),
                slug: inner.slug.clone(),
                key: inner.key.clone(),
                auth: inner.auth.clone(),
                base_url: inner.base_url.clone(),
                chat_url: inner.chat_url.clone(),
                embeddings_url: inner.embeddings_url.clone(),
                rerank_url: inner.rerank_url.clone(),
            }),
        }
    }

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

    pub(super) fn post<'a>(&'a self, url: &'a str, body: Bytes, event_stream: bool) -> Request<'a> {
        Request {
            method: Method::Post,
            url,
            auth: &self.inner.auth,
            body: Some(body),
            event_stream,
        }
    }

    /// The chat body, after the rules of `ChatRequest::check`.
    pub(super) fn chat_body(&self, request: &ChatRequest, stream: bool) -> Result<Bytes> {
        let messages = request.checked_messages()?;
        let options = request.options.as_deref();
        if let Some(options) = options {
            options.check(stream)?;
        }
        let body = ChatBody {
            model: &self.inner.slug,
            messages,
            stream,
            temperature: request.temperature,
            max_tokens: request.max_tokens,
            options,
        };
        match options.and_then(|options| options.extra_body.as_ref()) {
            Some(Value::Object(extra)) => encode(&merged(&body, extra)?),
            _ => encode(&body),
        }
    }

    /// POST `body` and decode the 2xx answer with `decode`; every failure after the 2xx answer (malformed JSON, an
    /// in-band error, a body `decode` refuses) carries the answer's `x-request-id`.
    pub(super) async fn post_decoded<T>(
        &self,
        url: &str,
        body: Bytes,
        decode: impl FnOnce(Bytes) -> Result<T>,
    ) -> Result<T> {
        let (bytes, request_id) = self
            .inner
            .transport
            .fetch(&self.post(url, body, false))
            .await?;
        decode(bytes).map_err(|err| err.with_request_id(request_id.as_deref()))
    }

    pub(super) fn model_of(&self, body: &Value) -> String {
        body.get("model")
            .and_then(Value::as_str)
            .unwrap_or(&self.inner.slug)
            .to_owned()
    }

    /// A non-streamed chat completion.
    pub async fn chat(&self, request: &ChatRequest) -> Result<ChatCompletion> {
        let body = self.chat_body(request, false)?;
        self.post_decoded(&self.inner.chat_url, body, |bytes| {
            let (parts, model) = chat_parts(&bytes, &self.inner.slug)?;
            Ok(ChatCompletion {
                text: parts.text,
                model: model.unwrap_or_else(|| self.inner.slug.clone()),
                finish_reason: parts.finish_reason,
                usage: parts.usage,
                tool_calls: parts.tool_calls,
                body: bytes,
            })
        })
        .await
    }

    /// A streamed chat completion. The request is made here, so HTTP errors are returned by this call; the
    /// body is then read and decoded by a background task, or, opened inside a blocking or loop scope with a direct
    /// path, by whoever asks the stream for its next batch (the waiting thread, or the event loop's).
    pub async fn chat_stream(&self, request: &ChatRequest) -> Result<ChatStream> {
        let body = self.chat_body(request, true)?;
        let transport = &self.inner.transport;
        let request = self.post(&self.inner.chat_url, body, true);
        if let Some(opened) = transport.open_here(&request).await {
            let response = opened?;
            let request_id = response.request_id.clone();
            let kind = self.stream_kind(response.content_type.as_deref(), request_id.as_deref())?;
            return match kind {
                StreamKind::Events => Ok(ChatStream::direct(response, self.inner.clone())),
                StreamKind::Whole => {
                    let (bytes, request_id) = transport.read_whole(response).await?;
                    self.whole_stream(bytes)
                        .map_err(|err| err.with_request_id(request_id.as_deref()))
                }
            };
        }
        let response = transport.send(&request).await?;
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        let request_id = crate::transport::request_id(&response);
        match self.stream_kind(content_type, request_id.as_deref())? {
            StreamKind::Events => Ok(ChatStream::spawn(response, self.inner.clone())),
            StreamKind::Whole => {
                transport
                    .read_body(response, |bytes| self.whole_stream(bytes))
                    .await
            }
        }
    }

    /// What a stream request was answered with, from its content type.
    fn stream_kind(
        &self,
        content_type: Option<&str>,
        request_id: Option<&str>,
    ) -> Result<StreamKind> {
        let mime = content_type.map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        });
        match mime.as_deref() {
            None | Some("text/event-stream") => Ok(StreamKind::Events),
            Some(mime) if mime == "application/json" || mime.ends_with("+json") => {
                Ok(StreamKind::Whole)
            }
            Some(other) => Err(Error::api(format!(
                "workload {:?} answered a stream request with content-type {other:?}, not an event stream",
                self.inner.slug
            ))
            .with_request_id(request_id)),
        }
    }

    /// The stream of an engine that ignored `stream: true`: its whole answer is one chunk.
    fn whole_stream(&self, bytes: Bytes) -> Result<ChatStream> {
        let (parts, model) = chat_parts(&bytes, &self.inner.slug)?;
        let model = model.unwrap_or_else(|| self.inner.slug.clone());
        Ok(ChatStream::ready(ChatChunk {
            text: parts.text,
            finish_reason: parts.finish_reason,
            extras: ChunkExtras::boxed(
                parts.usage,
                (!parts.tool_calls.is_empty()).then(|| {
                    parts
                        .tool_calls
                        .into_iter()
                        .map(ToolCallDelta::whole)
                        .collect()
                }),
                Some(model),
            ),
            data: bytes,
        }))
    }

    /// Embeddings for `input`, one vector per item in input order.
    pub async fn embed(&self, input: Vec<String>, format: EmbeddingFormat) -> Result<Embeddings> {
        self.embed_with(input, format, &EmbedOptions::default())
            .await
    }

    /// Embeddings for `input` with `options` (`dimensions`, `extra_body`).
    pub async fn embed_with(
        &self,
        input: Vec<String>,
        format: EmbeddingFormat,
        options: &EmbedOptions,
    ) -> Result<Embeddings> {
        let encoding_format = match format {
            EmbeddingFormat::Float => None,
            EmbeddingFormat::Base64 => Some("base64"),
        };
        let body = EmbedBody {
            model: &self.inner.slug,
            input: &input,
            encoding_format,
            dimensions: options.dimensions,
        };
        let body = match &options.extra_body {
            Some(Value::Object(extra)) => encode(&merged(&body, extra)?)?,
            _ => encode(&body)?,
        };
        self.post_decoded(&self.inner.embeddings_url, body, |bytes| {
            let parts = embed_parts(&bytes, input.len(), &self.inner.slug)?;
            Ok(Embeddings {
                vectors: parts.vectors,
                model: parts.model.unwrap_or_else(|| self.inner.slug.clone()),
                usage: parts.usage,
                body: bytes,
            })
        })
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
            dimensions: None,
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
        let bytes = transport.read_all(response).await.map_err(|err| {
            let (error, failure) = transport.read_error(&err, "reading the response from");
            (tag(error), Some(failure))
        })?;
        embed_parts(&bytes, input.len(), &self.inner.slug)
            .map(|parts| parts.vectors)
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
        self.post_decoded(&self.inner.rerank_url, body, |bytes| {
            let raw = answer_json(&bytes, "rerank", &self.inner.slug)?;
            Ok(Rerank {
                results: decode_rerank(&raw)?,
                model: self.model_of(&raw),
                raw,
                body: bytes,
            })
        })
        .await
    }
}

/// How a stream request was answered.
enum StreamKind {
    /// An event stream.
    Events,
    /// One JSON answer (the engine ignored `stream: true`).
    Whole,
}
