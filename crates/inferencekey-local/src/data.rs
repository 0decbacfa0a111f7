//! The data plane (platform-wire section 7): chat completions (non-stream and SSE in the workload
//! engine's dialect), embeddings (float or base64) and rerank, behind key, scope and readiness checks.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use axum::Extension;
use base64::Engine as _;
use serde_json::{json, Map, Value};

use crate::app::{App, RequestCtx};
use crate::auth::require_project;
use crate::chat::{plan, ChatOptions, Planned, ToolCall};
use crate::clock::unix_now;
use crate::dialects::{
    completion_value, content_steps, ChatHead, ChatStream, Dialect, StepDelta, Tokens, Unsupported,
    Usage,
};
use crate::engines::{self, BENCH_DEFAULT_TOKENS};
use crate::faults::{preflight, tag, Fault, Route};
use crate::readiness::Phase;
use crate::real::{forward, Upstream, UpstreamEvents};
use crate::reply::{json_response, ApiError, Params, Reply};
use crate::rng::{fnv1a, SplitMix64, FNV_BASIS};
use crate::settings::EngineSettings;
use crate::sse::{stream_response, EventSource};
use crate::sync::lock;
use crate::token::redact_text;
use http_body_util::BodyExt;

/// Floats one embeddings reply may hold (texts × `embedding_dim`): above it, a 400 instead of a
/// reply that would not fit in memory (a 4 MiB body can hold a million empty texts).
pub const MAX_EMBEDDING_FLOATS: usize = 1 << 24;
/// Tokens of a non-stream reply in bench mode (a stream of any length costs nothing; a
/// non-stream reply is built in memory).
pub const MAX_BENCH_REPLY_TOKENS: u64 = 1_000_000;

/// Task types that serve chat completions.
const CHAT_TASKS: [&str; 2] = ["text2text", "omni"];

/// The workload a data-plane request reaches, once the key, scope and readiness checks passed.
struct Target {
    slug: String,
    task_type: String,
    dialect: Dialect,
    settings: EngineSettings,
    /// The real engine serving the workload, if one does.
    upstream: Option<Upstream>,
}

impl Target {
    /// 400 in the engine's own error shape.
    fn engine_error(&self, message: impl AsRef<str>) -> Response {
        json_response(
            StatusCode::BAD_REQUEST,
            &self.dialect.request_error(&redact_text(message.as_ref())),
        )
    }

    /// 400 in the platform's shape when the workload does not serve this kind of request; an
    /// engine that answers such a request itself (llama-server's 501 for an endpoint it was not
    /// started for) answers in its own shape.
    #[allow(clippy::result_large_err)]
    fn require_task(
        &self,
        accepted: &[&str],
        what: &str,
        unsupported: Option<Unsupported>,
    ) -> Result<(), Response> {
        if accepted.contains(&self.task_type.as_str()) {
            return Ok(());
        }
        if let Some(body) = unsupported.and_then(|what| self.dialect.not_supported(what)) {
            return Err(json_response(StatusCode::NOT_IMPLEMENTED, &body));
        }
        Err(ApiError::validation(format!(
            "workload \"{}\" has task_type \"{}\"; {what} need a workload with task_type {}",
            self.slug,
            self.task_type,
            accepted.join(" or ")
        ))
        .into())
    }

    /// The `model` a reply names: llama-server answers chat with its alias (the platform starts
    /// it with the workload slug), the other engines echo the request's.
    fn reply_model(&self, body: &Map<String, Value>) -> String {
        if self.dialect.answers_with_alias() {
            self.slug.clone()
        } else {
            echoed_model(body, &self.slug)
        }
    }
}

/// Headers an engine adds to its own answers: llama-server echoes the request's `Origin` (empty
/// when there is none: the platform refuses requests that carry one) and names its charset.
// The error is the early reply itself, as in every handler's `Reply`.
#[allow(clippy::result_large_err)]
pub fn with_engine_headers(dialect: Option<Dialect>, headers: &HeaderMap, reply: Reply) -> Reply {
    if dialect != Some(Dialect::LlamaCpp) {
        return reply;
    }
    let add = |mut response: Response| {
        let origin = headers
            .get(header::ORIGIN)
            .cloned()
            .unwrap_or_else(|| HeaderValue::from_static(""));
        let fields = response.headers_mut();
        fields.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        if fields.get(header::CONTENT_TYPE).map(HeaderValue::as_bytes) == Some(b"application/json")
        {
            fields.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json; charset=utf-8"),
            );
        }
        response
    };
    reply.map(add).map_err(add)
}

/// The message of a body that is not a JSON object, in the engine's words (llama-server reports
/// its JSON library's parse error).
fn body_error(dialect: Dialect, ctx: &RequestCtx, message: String) -> String {
    match (&ctx.syntax_error, dialect) {
        (Some((line, column, what)), Dialect::LlamaCpp) => format!(
            "[json.exception.parse_error.101] parse error at line {line}, column {column}: \
             syntax error while parsing value - {what}"
        ),
        _ => message,
    }
}

/// Key (401/403), project (403), workload scope (403), existence (404) and readiness (503).
fn target(app: &App, headers: &HeaderMap, project: &str, slug: &str) -> Result<Target, ApiError> {
    let store = lock(&app.store);
    let (granted, scoped_workload) = store.tokens.data(headers)?;
    require_project(&granted, project)?;
    if let Some(scoped) = scoped_workload.filter(|scoped| scoped != slug) {
        return Err(ApiError::forbidden(
            "scope_insufficient",
            format!("key is scoped to workload \"{scoped}\", not \"{slug}\""),
        ));
    }
    let workload = store.workload_by_slug(project, slug).ok_or_else(|| {
        ApiError::not_found(format!(
            "workload \"{slug}\" not found in project \"{project}\""
        ))
    })?;
    let stage = workload.readiness_now();
    let upstream = app.engines.upstream(&workload.record.id);
    // A real engine that just went away: its error phase is on its way.
    let engine_gone = upstream.is_none() && app.engines.is_real(&workload.record.id);
    if stage.phase != Phase::Ready || engine_gone {
        return Err(ApiError::not_ready(format!(
            "workload \"{slug}\" is not ready (phase: {}; {})",
            stage.phase.as_str(),
            stage.message
        )));
    }
    Ok(Target {
        slug: slug.to_string(),
        task_type: workload.record.task_type.clone(),
        dialect: Dialect::for_backend(&workload.record.backend),
        settings: workload.settings.clone(),
        upstream,
    })
}

/// The checks every data route makes, in the platform's order: [`target`], then the body and its
/// parameters, whose errors come in the engine's own shape.
// The error is the early reply itself, as in every handler's `Reply`.
#[allow(clippy::result_large_err)]
fn open<'c, P>(
    app: &App,
    headers: &HeaderMap,
    ctx: &'c RequestCtx,
    (project, slug): &(String, String),
    dialect: &mut Option<Dialect>,
    parse: impl FnOnce(&Map<String, Value>, Dialect) -> Result<P, String>,
) -> Result<(Target, &'c Map<String, Value>, P), Response> {
    let target = target(app, headers, project, slug)?;
    *dialect = Some(target.dialect);
    let body = ctx
        .object()
        .map_err(|m| target.engine_error(body_error(target.dialect, ctx, m)))?;
    let params = parse(body, target.dialect).map_err(|m| target.engine_error(m))?;
    Ok((target, body, params))
}

/// A data-plane request passed to a real engine once the platform's own checks and fault pick are
/// done: the engine's key instead of the client's, its answer passed back (a stream event by
/// event, through the platform's stream faults and journal).
// The error is the early reply itself, as in every handler's `Reply`.
#[allow(clippy::result_large_err)]
async fn proxy(
    upstream: &Upstream,
    path: &str,
    body: &Map<String, Value>,
    fault: Option<Fault>,
    dialect: Dialect,
) -> Result<Response, Response> {
    let response = forward(upstream, path, &Value::Object(body.clone()))
        .await
        .map_err(|e| {
            Response::from(ApiError::not_ready(format!(
                "the workload's engine did not answer: {e}"
            )))
        })?;
    let status = response.status();
    let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
    let cors = response
        .headers()
        .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
        .cloned();
    let is_stream = content_type
        .as_ref()
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    let mut reply = if is_stream && status == StatusCode::OK {
        let events = UpstreamEvents::new(response.into_body());
        stream_response(EventSource::Upstream(events), fault, Some(dialect), false)
    } else {
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| {
                Response::from(ApiError::not_ready(format!(
                    "the workload's engine broke off its answer: {e}"
                )))
            })?
            .to_bytes();
        let mut reply = Response::new(axum::body::Body::from(bytes));
        *reply.status_mut() = status;
        reply
    };
    let headers = reply.headers_mut();
    if let Some(content_type) = content_type {
        headers.insert(header::CONTENT_TYPE, content_type);
    }
    if let Some(cors) = cors {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, cors);
    }
    Ok(reply)
}

/// The `model` echoed back: the request's, else the workload slug.
fn echoed_model(body: &Map<String, Value>, slug: &str) -> String {
    body.get("model")
        .and_then(Value::as_str)
        .filter(|model| !model.is_empty())
        .unwrap_or(slug)
        .to_string()
}

/// A per-request generator for completion ids, seeded from the request id.
fn request_rng(app: &App, ctx: &RequestCtx) -> SplitMix64 {
    SplitMix64::new(fnv1a(FNV_BASIS ^ app.seed, ctx.request_id.as_bytes()))
}

/// The parameters of a chat request this platform acts on.
struct ChatParams {
    messages: Value,
    stream: bool,
    max_tokens: Option<u64>,
    include_usage: bool,
    options: ChatOptions,
}

impl ChatParams {
    fn parse(body: &Map<String, Value>, dialect: Dialect) -> Result<Self, String> {
        let llamacpp = dialect == Dialect::LlamaCpp;
        let messages = match body.get("messages") {
            Some(Value::Array(list)) if list.is_empty() => {
                return Err("messages must not be empty".to_string())
            }
            Some(Value::Array(list)) if list.iter().all(Value::is_object) => {
                Value::Array(list.clone())
            }
            // llama-server's words (its `oaicompat_chat_params_parse`).
            None if llamacpp => return Err("'messages' is required".to_string()),
            Some(value) if llamacpp && !value.is_array() => {
                return Err("Expected 'messages' to be an array".to_string())
            }
            Some(_) => return Err("messages must be a list of message objects".to_string()),
            None => return Err("messages is required".to_string()),
        };
        let stream = match body.get("stream") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(flag)) => *flag,
            Some(_) => return Err("stream must be a boolean".to_string()),
        };
        let max_tokens = match body
            .get("max_tokens")
            .filter(|value| !value.is_null())
            .or_else(|| body.get("max_completion_tokens"))
        {
            None | Some(Value::Null) => None,
            Some(value) => Some(
                value
                    .as_u64()
                    .ok_or_else(|| "max_tokens must be a non-negative integer".to_string())?,
            ),
        };
        let options = ChatOptions::parse(body)?;
        let include_usage = body
            .get("stream_options")
            .and_then(|options| options.get("include_usage"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        Ok(Self {
            messages,
            stream,
            max_tokens,
            include_usage,
            options,
        })
    }
}

/// `POST /endpoint/{project}/{workload}/v1/chat/completions`.
pub async fn chat(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Extension(ctx): Extension<Arc<RequestCtx>>,
    Params(path): Params<(String, String)>,
) -> Reply {
    let mut dialect = None;
    let reply = chat_reply(&app, &headers, &ctx, &path, &mut dialect).await;
    with_engine_headers(dialect, &headers, reply)
}

async fn chat_reply(
    app: &App,
    headers: &HeaderMap,
    ctx: &RequestCtx,
    path: &(String, String),
    dialect: &mut Option<Dialect>,
) -> Reply {
    let (target, body, params) = open(app, headers, ctx, path, dialect, ChatParams::parse)?;
    target.require_task(&CHAT_TASKS, "chat completions", None)?;
    if let Some(upstream) = &target.upstream {
        let route = if params.stream {
            Route::ChatStream
        } else {
            Route::Chat
        };
        let fired = preflight(&app.faults, route, Some(&target.slug)).await?;
        let fault = fired.as_ref().map(|f| f.fault.clone());
        let reply = proxy(
            upstream,
            "/v1/chat/completions",
            body,
            fault,
            target.dialect,
        )
        .await?;
        return Ok(tag(reply, fired.as_ref()));
    }
    let prompt = engines::prompt_tokens(&params.messages);
    if let Some(overflow) = target.dialect.context_overflow(prompt) {
        return Err(json_response(StatusCode::BAD_REQUEST, &overflow));
    }
    let route = if params.stream {
        Route::ChatStream
    } else {
        Route::Chat
    };
    let fired = preflight(&app.faults, route, Some(&target.slug)).await?;
    let fault = fired.as_ref().map(|f| f.fault.clone());
    let settings = &target.settings;
    // vLLM builds the completion id from it: never echo a token put there.
    let incoming_id = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(redact_text);
    let mut ids = request_rng(app, ctx);
    let head = ChatHead {
        id: target
            .dialect
            .completion_id(&mut ids, incoming_id.as_deref()),
        created: unix_now(),
        model: target.reply_model(body),
    };
    let top_logprobs = params
        .options
        .logprobs
        .then_some(params.options.top_logprobs);
    let mut stop_reason = None;
    let mut tool_calls: Vec<ToolCall> = Vec::new();
    let mut completion_tokens = None;
    let (tokens, finish_reason) = if settings.bench {
        let n = params.max_tokens.unwrap_or(BENCH_DEFAULT_TOKENS);
        let built = !params.stream || fault == Some(Fault::NonSse {});
        if built && n > MAX_BENCH_REPLY_TOKENS {
            return Err(target.engine_error(format!(
                "max_tokens {n} is too large for a non-stream reply in bench mode \
                 (at most {MAX_BENCH_REPLY_TOKENS})"
            )));
        }
        let finish = if params.max_tokens.is_some() {
            "length"
        } else {
            "stop"
        };
        (
            Tokens::Bench(usize::try_from(n).unwrap_or(usize::MAX)),
            finish,
        )
    } else {
        let planned = plan(
            app.seed,
            &params.messages,
            params.max_tokens,
            &params.options,
            || target.dialect.tool_call_id(&mut ids),
        );
        completion_tokens = Some(planned.completion_tokens());
        match planned {
            Planned::Content {
                tokens,
                finish_reason,
                stop,
            } => {
                stop_reason = stop;
                (
                    Tokens::Steps(content_steps(&tokens, top_logprobs)),
                    finish_reason,
                )
            }
            Planned::Tools(calls) => {
                let steps = target.dialect.tool_steps(&calls, top_logprobs);
                tool_calls = calls;
                (Tokens::Steps(steps), "tool_calls")
            }
        }
    };
    // Bench mode sends as fast as the socket allows: no latencies.
    let (ttft, itl) = if settings.bench {
        (Duration::ZERO, Duration::ZERO)
    } else {
        (
            Duration::from_millis(settings.ttft_ms),
            Duration::from_millis(settings.itl_ms),
        )
    };

    if !params.stream || fault == Some(Fault::NonSse {}) {
        let (text, count, logprobs) = match &tokens {
            Tokens::Bench(n) => ((0..*n).map(engines::bench_token).collect(), *n, None),
            Tokens::Steps(steps) => {
                let text: String = steps
                    .iter()
                    .map(|step| match &step.delta {
                        StepDelta::Content(token) => token.as_str(),
                        StepDelta::ToolCall(_) => "",
                    })
                    .collect();
                let entries: Option<Vec<Value>> = top_logprobs.map(|_| {
                    steps
                        .iter()
                        .flat_map(|step| step.logprobs.clone().unwrap_or_default())
                        .collect()
                });
                let count = completion_tokens.map_or(steps.len(), |n| n as usize);
                (
                    text,
                    count,
                    entries.map(|content| json!({"content": content})),
                )
            }
        };
        // Generation time of the whole reply, as a real engine would take.
        let steps = u32::try_from(count.saturating_sub(1)).unwrap_or(u32::MAX);
        let generation = ttft + itl.saturating_mul(steps);
        if count > 0 && !generation.is_zero() {
            tokio::time::sleep(generation).await;
        }
        let usage = Usage {
            prompt,
            completion: count as u64,
        };
        let message = if tool_calls.is_empty() {
            json!({"role": "assistant", "content": text})
        } else {
            json!({"role": "assistant", "content": null,
                   "tool_calls": tool_calls.iter().map(ToolCall::json).collect::<Vec<_>>()})
        };
        let completion = completion_value(
            target.dialect,
            &head,
            message,
            finish_reason,
            usage,
            logprobs,
            (ttft, itl),
        );
        return Ok(tag(
            json_response(StatusCode::OK, &completion),
            fired.as_ref(),
        ));
    }

    let include_usage = settings.include_usage.unwrap_or(params.include_usage);
    let completion = match &tokens {
        Tokens::Bench(n) => *n as u64,
        Tokens::Steps(steps) => completion_tokens.unwrap_or(steps.len() as u64),
    };
    let usage = include_usage.then_some(Usage { prompt, completion });
    let stream = ChatStream::new(
        target.dialect,
        head,
        tokens,
        finish_reason,
        usage,
        (ttft, itl),
    )
    .with_stop_reason(stop_reason)
    .with_prompt_tokens(prompt);
    Ok(tag(
        stream_response(
            EventSource::Chat(stream),
            fault,
            Some(target.dialect),
            settings.bench,
        ),
        fired.as_ref(),
    ))
}

/// The texts of an embeddings `input`: a string or a list of strings.
fn embedding_inputs(body: &Map<String, Value>, dialect: Dialect) -> Result<Vec<String>, String> {
    match body.get("input") {
        None if dialect == Dialect::LlamaCpp => {
            Err("\"input\" or \"content\" must be provided".to_string())
        }
        Some(Value::String(text)) => Ok(vec![text.clone()]),
        Some(Value::Array(items)) if items.is_empty() => Err("input must not be empty".to_string()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| "input must be a string or a list of strings".to_string())
            })
            .collect(),
        Some(_) => Err("input must be a string or a list of strings".to_string()),
        None => Err("input is required".to_string()),
    }
}

/// `POST /endpoint/{project}/{workload}/v1/embeddings`.
pub async fn embeddings(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Extension(ctx): Extension<Arc<RequestCtx>>,
    Params(path): Params<(String, String)>,
) -> Reply {
    let mut dialect = None;
    let reply = embeddings_reply(&app, &headers, &ctx, &path, &mut dialect).await;
    with_engine_headers(dialect, &headers, reply)
}

async fn embeddings_reply(
    app: &App,
    headers: &HeaderMap,
    ctx: &RequestCtx,
    path: &(String, String),
    dialect: &mut Option<Dialect>,
) -> Reply {
    let (target, body, inputs) = open(app, headers, ctx, path, dialect, embedding_inputs)?;
    let llamacpp = target.dialect == Dialect::LlamaCpp;
    let base64 = match body.get("encoding_format") {
        None | Some(Value::Null) => false,
        Some(Value::String(format)) if format == "float" => false,
        Some(Value::String(format)) if format == "base64" => true,
        Some(_) if llamacpp => {
            return Err(target.engine_error(
                "The format to return the embeddings in. Can be either float or base64",
            ))
        }
        Some(_) => {
            return Err(target.engine_error("encoding_format must be \"float\" or \"base64\""))
        }
    };
    target.require_task(&["embedding"], "embeddings", Some(Unsupported::Embeddings))?;
    if let Some(upstream) = &target.upstream {
        let fired = preflight(&app.faults, Route::Embeddings, Some(&target.slug)).await?;
        let reply = proxy(upstream, "/v1/embeddings", body, None, target.dialect).await?;
        return Ok(tag(reply, fired.as_ref()));
    }
    let full_dim = target.settings.embedding_dim;
    // `dimensions`: vectors produced at that size (a matryoshka-capable model), at most the
    // model's own dimension.
    let dim = match body.get("dimensions") {
        None | Some(Value::Null) => full_dim,
        Some(value) => match value.as_u64().and_then(|n| usize::try_from(n).ok()) {
            Some(n) if (1..=full_dim).contains(&n) => n,
            _ => {
                return Err(target.engine_error(format!(
                "dimensions must be an integer from 1 to {full_dim} (the model's embedding size)"
            )))
            }
        },
    };
    if inputs.len().saturating_mul(dim) > MAX_EMBEDDING_FLOATS {
        return Err(target.engine_error(format!(
            "input has {} texts; at most {} fit in one request at embedding_dim {dim}",
            inputs.len(),
            MAX_EMBEDDING_FLOATS / dim.max(1)
        )));
    }
    let fired = preflight(&app.faults, Route::Embeddings, Some(&target.slug)).await?;
    let as_base64 = base64 && !target.dialect.ignores_base64();
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, text)| {
            let vector = engines::embed(app.seed, text, dim);
            let embedding = if as_base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
                Value::from(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(vector)
            };
            if !llamacpp {
                return json!({"object": "embedding", "index": index, "embedding": embedding});
            }
            // llama-server's order, and it names the encoding of a base64 vector.
            let mut item = json!({"embedding": embedding, "index": index, "object": "embedding"});
            if let (true, Some(fields)) = (as_base64, item.as_object_mut()) {
                fields.insert("encoding_format".to_string(), json!("base64"));
            }
            item
        })
        .collect();
    let tokens: u64 = inputs.iter().map(|text| engines::count_words(text)).sum();
    let usage = json!({"prompt_tokens": tokens, "total_tokens": tokens});
    let model = echoed_model(body, &target.slug);
    let reply = if llamacpp {
        json!({"model": model, "object": "list", "usage": usage, "data": data})
    } else {
        json!({"object": "list", "data": data, "model": model, "usage": usage})
    };
    Ok(tag(json_response(StatusCode::OK, &reply), fired.as_ref()))
}

/// The parameters of a rerank request.
struct RerankParams {
    query: String,
    documents: Vec<String>,
    top_n: Option<usize>,
}

impl RerankParams {
    fn parse(body: &Map<String, Value>, _dialect: Dialect) -> Result<Self, String> {
        let query = body
            .get("query")
            .and_then(Value::as_str)
            .ok_or_else(|| "query must be a string".to_string())?
            .to_string();
        let documents = body
            .get("documents")
            .and_then(Value::as_array)
            .ok_or_else(|| "documents must be a list".to_string())?
            .iter()
            .map(|doc| {
                doc.as_str()
                    .or_else(|| doc.get("text").and_then(Value::as_str))
                    .map(str::to_string)
                    .ok_or_else(|| "each document must be a string or {\"text\": ...}".to_string())
            })
            .collect::<Result<Vec<_>, _>>()?;
        let top_n = match body.get("top_n") {
            None | Some(Value::Null) => None,
            Some(value) => Some(
                value
                    .as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| "top_n must be a non-negative integer".to_string())?,
            ),
        };
        Ok(Self {
            query,
            documents,
            top_n,
        })
    }
}

/// `POST /endpoint/{project}/{workload}/v1/rerank`.
pub async fn rerank(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Extension(ctx): Extension<Arc<RequestCtx>>,
    Params(path): Params<(String, String)>,
) -> Reply {
    let mut dialect = None;
    let reply = rerank_reply(&app, &headers, &ctx, &path, &mut dialect).await;
    with_engine_headers(dialect, &headers, reply)
}

async fn rerank_reply(
    app: &App,
    headers: &HeaderMap,
    ctx: &RequestCtx,
    path: &(String, String),
    dialect: &mut Option<Dialect>,
) -> Reply {
    let (target, body, params) = open(app, headers, ctx, path, dialect, RerankParams::parse)?;
    target.require_task(&["reranker"], "rerank requests", Some(Unsupported::Rerank))?;
    if let Some(upstream) = &target.upstream {
        let fired = preflight(&app.faults, Route::Rerank, Some(&target.slug)).await?;
        let reply = proxy(upstream, "/v1/rerank", body, None, target.dialect).await?;
        return Ok(tag(reply, fired.as_ref()));
    }
    let fired = preflight(&app.faults, Route::Rerank, Some(&target.slug)).await?;
    let scores = engines::rerank_scores(&params.query, &params.documents);
    let mut order: Vec<usize> = (0..scores.len()).collect();
    // Stable sort: equal scores keep document order.
    order.sort_by(|a, b| scores[*b].total_cmp(&scores[*a]));
    order.truncate(params.top_n.unwrap_or(order.len()));
    let results: Vec<Value> = order
        .iter()
        .map(|&index| {
            json!({
                "index": index,
                "relevance_score": scores[index],
                "document": {"text": params.documents[index]},
            })
        })
        .collect();
    let words = engines::count_words(&params.query)
        + params
            .documents
            .iter()
            .map(|doc| engines::count_words(doc))
            .sum::<u64>();
    let mut rng = request_rng(app, ctx);
    let reply = json!({
        "id": format!("rerank-{}", rng.hex(32)),
        "model": echoed_model(body, &target.slug),
        "results": results,
        "usage": {"total_tokens": words},
    });
    Ok(tag(json_response(StatusCode::OK, &reply), fired.as_ref()))
}
