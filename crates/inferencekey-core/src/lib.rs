//! The InferenceKey SDK core (pure Rust): configuration, specs, slugs, the secret scan, wire types, drift
//! plans, SSE, transport with retries, and the control and data pipelines. See README.md for the public API.

// `Error` is large on purpose (its public fields are the contract with the binding); errors are the cold path.
#![allow(clippy::result_large_err)]
#![warn(missing_docs)]

mod args;
mod batch;
mod config;
mod control;
mod data;
pub mod direct;
mod drift;
mod error;
mod event;
// Wrappers over the private decoders for the fuzz targets in `fuzz/`; not part of the API.
#[doc(hidden)]
pub mod fuzzing;
mod manifest;
pub mod net;
mod plan;
mod quote;
mod spec;
mod sse;
mod suggest;
mod token;
mod transport;
mod wire;

pub use args::{
    field_type, int_in_range, integer_out_of_range, local_platform_failed, not_json,
    readiness_timeout, wrong_type, NotJson, MAX_JSON_DEPTH,
};
pub use batch::{
    one_string_inputs, BatchDone, BatchOptions, EmbedJob, EmbedOutput, DEFAULT_BATCH_SIZE,
    DEFAULT_MAX_CONCURRENCY,
};
pub use config::{
    log_level_from_env, resolve_setting, TransportOptions, DEFAULT_BASE_URL, ENV_LOG,
};
pub use control::{EnsureOutcome, ManagementClient, OnDrift, ReadinessEvent, ReadinessWatch};
pub use data::{
    checked_top_n, no_final_result, ChatChunk, ChatCompletion, ChatOptions, ChatRequest,
    ChatStream, ChunkExtras, DataClient, EmbedOptions, EmbeddingFormat, Embeddings, Endpoint,
    Rerank, RerankResult, StreamedReply, ToolCall, ToolCallDelta, Unfinished, Usage,
};
pub use error::{Error, ErrorBody, ErrorKind, Result};
pub use manifest::{load_manifest, parse_manifest};
pub use plan::{FieldChange, Plan, PlanAction};
pub use spec::{
    canonical_slug, checked_slug, spec_field, FieldSetter, FieldValue, SpecField, WorkloadSpec,
    SPEC_FIELDS,
};
pub use sse::{SseDecoder, SseEvent, MAX_EVENT_BYTES};
pub use token::redact;
pub use transport::{EnteredContext, IoContext, Overrides};
pub use wire::Workload;
