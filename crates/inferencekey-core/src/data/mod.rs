//! The data plane: `DataClient` and per-workload `Endpoint`s (key checks, chat, streamed chat decoded by a
//! background task into batches, embeddings as floats or base64, rerank), tolerant of every engine dialect. One
//! file per concern: the client and its endpoints, request bodies, response decoding, the stream task.

mod client;
mod request;
mod response;
mod stream;
#[cfg(test)]
mod tests;

// One namespace for the data plane's internals: each file reaches its siblings' items through `use super::*`.
#[allow(unused_imports)]
use client::*;
#[allow(unused_imports)]
use request::*;
#[allow(unused_imports)]
use response::*;
#[allow(unused_imports)]
use stream::*;

pub use crate::event::ToolCallDelta;
pub use client::{DataClient, Endpoint};
pub use request::{checked_top_n, ChatOptions, ChatRequest, EmbedOptions, EmbeddingFormat};
pub(crate) use response::{content_text, inband_error};
pub use response::{
    ChatChunk, ChatCompletion, ChunkExtras, Embeddings, Rerank, RerankResult, ToolCall, Usage,
};
pub(crate) use stream::decode_stream;
pub use stream::{no_final_result, ChatStream, StreamedReply, Unfinished};
