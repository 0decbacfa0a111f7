//! The stream task: a streamed chat body read on the runtime, decoded into batches of chunks, and handed to the
//! consumer through a bounded queue (backpressure), with the connection drained for reuse when it ends.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt as _;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::event;
use crate::sse::{EventRef, SseDecoder};

use super::*;

/// Decoded batches queued ahead of the consumer; a full queue stops reading the socket (backpressure).
pub(super) const STREAM_QUEUE: usize = 32;
/// How long a finished stream keeps reading to the end of the body so the connection can be reused.
pub(super) const DRAIN_AFTER_DONE: Duration = Duration::from_secs(1);

/// Why a stream has no final result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unfinished {
    /// The reader closed it before its end.
    Closed,
    /// It failed before its end (the error was raised to the reader).
    Failed,
}

/// The error of `final_result` on a stream that cannot have one.
pub fn no_final_result(why: Unfinished) -> Error {
    Error::api(match why {
        Unfinished::Closed => "the stream was closed before its end; it has no final result",
        Unfinished::Failed => {
            "the stream failed before its end (the error was raised while reading it); it has no final result"
        }
    })
}

/// Only the `model` of an event.
#[derive(serde::Deserialize)]
pub(super) struct ModelOnly {
    model: Option<String>,
}

/// The whole reply of a stream, assembled from every chunk the stream handed out: what `final_result` returns.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StreamedReply {
    /// Every chunk's text, joined.
    pub text: String,
    /// The first chunk's `model`.
    pub model: Option<String>,
    /// The last `finish_reason` seen.
    pub finish_reason: Option<String>,
    /// The last usage seen.
    pub usage: Option<Usage>,
    /// The tool calls assembled from their fragments, by index.
    pub tool_calls: Vec<ToolCall>,
    /// The index each of `tool_calls` was sent under.
    indexes: Vec<u64>,
}

impl StreamedReply {
    fn absorb(&mut self, chunk: &ChatChunk) {
        self.text.push_str(&chunk.text);
        if chunk.finish_reason.is_some() {
            self.finish_reason.clone_from(&chunk.finish_reason);
        }
        let Some(extras) = &chunk.extras else {
            return;
        };
        if extras.usage.is_some() {
            self.usage = extras.usage;
        }
        if self.model.is_none() {
            self.model.clone_from(&extras.model);
        }
        if let Some(deltas) = &extras.tool_calls {
            for (position, delta) in deltas.iter().enumerate() {
                self.merge(position, delta);
            }
        }
    }

    /// Add one fragment to the call of its index (a fragment without one is the call at its position in the
    /// list). Ids and names are taken from the first fragment that has them (some engines repeat them, some
    /// send `null` after); arguments are appended.
    fn merge(&mut self, position: usize, delta: &ToolCallDelta) {
        let index = delta
            .index
            .unwrap_or_else(|| u64::try_from(position).unwrap_or(u64::MAX));
        let at = match self.indexes.iter().position(|&i| i == index) {
            Some(at) => at,
            None => {
                self.indexes.push(index);
                self.tool_calls.push(ToolCall::default());
                self.tool_calls.len() - 1
            }
        };
        let Some(call) = self.tool_calls.get_mut(at) else {
            return;
        };
        for (field, value) in [(&mut call.id, &delta.id), (&mut call.name, &delta.name)] {
            if let Some(value) = value.as_deref().filter(|v| !v.is_empty()) {
                if field.is_empty() {
                    value.clone_into(field);
                }
            }
        }
        if let Some(arguments) = &delta.arguments {
            call.arguments.push_str(arguments);
        }
    }
}

pub(super) enum StreamMessage {
    Chunks(Vec<ChatChunk>),
    Failed(Error),
}

/// An open chat stream. A background task reads the body, decodes SSE and JSON, and queues chunks;
/// dropping or closing the stream aborts the task, which closes the connection.
pub struct ChatStream {
    pub(super) receiver: Option<mpsc::Receiver<StreamMessage>>,
    pub(super) buffered: VecDeque<ChatChunk>,
    pub(super) failed: Option<Error>,
    pub(super) task: Option<JoinHandle<()>>,
    /// Everything handed out so far, assembled.
    pub(super) reply: StreamedReply,
    /// The model a reply names when no chunk named one (the workload slug).
    pub(super) fallback_model: String,
    /// The body on a direct connection, read by the thread that reads the stream (no task, no queue).
    pub(super) direct: Option<Box<DirectSource>>,
}

/// A stream body read on the direct path, by the reader's own thread, and its decoding state.
pub(super) struct DirectSource {
    body: crate::direct::Body,
    decoder: SseDecoder,
    done: bool,
    finished: bool,
    model_seen: bool,
    request_id: Option<String>,
    endpoint: Arc<EndpointInner>,
}

impl fmt::Debug for ChatStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChatStream")
            .field("open", &(self.receiver.is_some() || self.direct.is_some()))
            .field("buffered", &self.buffered.len())
            .finish()
    }
}

impl ChatStream {
    pub(super) fn spawn(response: reqwest::Response, endpoint: Arc<EndpointInner>) -> Self {
        let (sender, receiver) = mpsc::channel(STREAM_QUEUE);
        let fallback_model = endpoint.slug.clone();
        let task = tokio::spawn(pump(response, sender, endpoint));
        Self {
            receiver: Some(receiver),
            buffered: VecDeque::new(),
            failed: None,
            task: Some(task),
            reply: StreamedReply::default(),
            fallback_model,
            direct: None,
        }
    }

    /// The stream of a response on the direct path: its body is read when the reader asks for a batch.
    pub(super) fn direct(response: crate::direct::Response, endpoint: Arc<EndpointInner>) -> Self {
        Self {
            receiver: None,
            buffered: VecDeque::new(),
            failed: None,
            task: None,
            reply: StreamedReply::default(),
            fallback_model: endpoint.slug.clone(),
            direct: Some(Box::new(DirectSource {
                body: response.body,
                decoder: SseDecoder::new(),
                done: false,
                finished: false,
                model_seen: false,
                request_id: response.request_id,
                endpoint,
            })),
        }
    }

    pub(super) fn ready(chunk: ChatChunk) -> Self {
        Self {
            receiver: None,
            buffered: VecDeque::from([chunk]),
            failed: None,
            task: None,
            reply: StreamedReply::default(),
            fallback_model: String::new(),
            direct: None,
        }
    }

    /// Wait for at least one chunk, then take every chunk already decoded (at most `max`). An empty batch
    /// means the stream finished; a stream failure is returned after the chunks that preceded it.
    pub async fn next_batch(&mut self, max: usize) -> Result<Vec<ChatChunk>> {
        let max = max.max(1);
        let mut out = self.take_buffered(max);
        if self.direct.is_some() {
            // Read right here, on this thread (which waits for it): a direct stream has no task to wait for.
            return self.read_direct(out, max, true).await;
        }
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
        self.hand_out(out)
    }

    /// The first `max` chunks decoded but not yet handed out.
    fn take_buffered(&mut self, max: usize) -> Vec<ChatChunk> {
        let from_buffer = self.buffered.len().min(max);
        self.buffered.drain(..from_buffer).collect()
    }

    /// Hand `out` to the reader (assembled into the reply), or when it is empty, the failure or the end.
    fn hand_out(&mut self, out: Vec<ChatChunk>) -> Result<Vec<ChatChunk>> {
        if !out.is_empty() {
            for chunk in &out {
                self.reply.absorb(chunk);
            }
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

    /// Move every message already queued into the stream's buffer, without waiting.
    fn take_ready(&mut self) {
        while self.failed.is_none() {
            let Some(receiver) = self.receiver.as_mut() else {
                return;
            };
            match receiver.try_recv() {
                Ok(StreamMessage::Chunks(chunks)) => self.buffered.extend(chunks),
                Ok(StreamMessage::Failed(err)) => self.failed = Some(err),
                Err(mpsc::error::TryRecvError::Empty) => return,
                Err(mpsc::error::TryRecvError::Disconnected) => self.receiver = None,
            }
        }
    }

    /// The next batch when it needs no wait: chunks already decoded, the end already seen, or the failure; None
    /// when only the network can answer (then `next_batch` waits).
    pub fn ready_batch(&mut self, max: usize) -> Option<Result<Vec<ChatChunk>>> {
        if self.direct.is_some() && self.buffered.is_empty() && self.failed.is_none() {
            // What the network already delivered is read and decoded now, with no wait to arrange (a read that may
            // not wait ends in its first poll). Nothing decoded, the stream still open: only the network can answer.
            let batch = self
                .read_direct(Vec::new(), max.max(1), false)
                .now_or_never()?;
            let still_open = self.direct.is_some();
            return match batch {
                Ok(chunks) if chunks.is_empty() && still_open => None,
                batch => Some(batch),
            };
        }
        self.take_ready();
        let open = self.receiver.is_some() || self.direct.is_some();
        if self.buffered.is_empty() && self.failed.is_none() && open {
            return None;
        }
        let out = self.take_buffered(max.max(1));
        Some(self.hand_out(out))
    }

    /// Whether the stream's body is read on the direct path, by whoever asks for a batch (no task reads it).
    pub fn is_direct(&self) -> bool {
        self.direct.is_some()
    }

    /// `next_batch` of a direct stream: with `wait`, wait for the network until at least one chunk is decoded (or
    /// the end, or a failure), then decode what else was already read, without waiting; without, read only what the
    /// network already delivered (an empty batch then, with the stream still open, means nothing yet). The wait
    /// blocks in a blocking scope (asking it about interruption) and suspends in a loop scope; elsewhere it blocks.
    async fn read_direct(
        &mut self,
        mut out: Vec<ChatChunk>,
        max: usize,
        wait: bool,
    ) -> Result<Vec<ChatChunk>> {
        if !out.is_empty() || self.failed.is_some() {
            return self.hand_out(out);
        }
        let Some(mut source) = self.direct.take() else {
            return self.hand_out(out);
        };
        let endpoint = Arc::clone(&source.endpoint);
        let mut state = DecodeState {
            slug: &endpoint.slug,
            done: source.done,
            finished: source.finished,
            model_seen: source.model_seen,
            error: None,
        };
        if wait {
            source.body.suit(crate::direct::mode());
        }
        let clock = source.body.clock(crate::direct::interrupt_check());
        // Without waiting, a non-blocking socket (a loop's) is read for what arrived, which costs one read; a
        // blocking one would cost a check first, and its reader waits next anyway, so only its buffer is decoded.
        let at_hand = if source.body.nonblocking() {
            crate::direct::Wait::Arrived
        } else {
            crate::direct::Wait::Buffered
        };
        let mut batch = Vec::new();
        let mut ended = false;
        loop {
            let reading = match (batch.is_empty(), wait) {
                (true, true) => crate::direct::Wait::Block(&clock),
                (true, false) => at_hand,
                (false, _) => crate::direct::Wait::Buffered,
            };
            match source.body.piece(reading).await {
                Ok(crate::direct::Piece::Data(bytes)) => {
                    state.feed(&mut source.decoder, bytes, &mut batch);
                }
                Ok(crate::direct::Piece::Later) => break,
                Ok(crate::direct::Piece::End) => {
                    state.body_ended(&mut source.decoder, &mut batch);
                    ended = true;
                }
                Err(fail) => {
                    state.connection_failed(|| {
                        endpoint
                            .transport
                            .direct_failure(fail, "reading the stream from")
                            .error
                    });
                    ended = true;
                }
            }
            if ended || state.done || state.error.is_some() {
                break;
            }
        }
        source.done = state.done;
        source.finished = state.finished;
        source.model_seen = state.model_seen;
        if let Some(err) = state.error.take() {
            self.failed = Some(err.with_request_id(source.request_id.as_deref()));
        } else if state.done && !ended {
            // The answer is complete: what is left of the body (its end, normally already here) is read now, so
            // the connection can carry the next request; a body that needs waiting for is closed instead.
            source.body.finish_now();
        } else if !ended {
            self.direct = Some(source);
        }
        self.accept(StreamMessage::Chunks(batch), &mut out, max);
        self.hand_out(out)
    }

    pub(super) fn accept(&mut self, message: StreamMessage, out: &mut Vec<ChatChunk>, max: usize) {
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

    /// Read the rest of the stream and return the whole reply, the chunks already handed out included. A stream
    /// failure is returned as it would be from `next_batch`.
    pub async fn final_result(&mut self) -> Result<StreamedReply> {
        while !self.next_batch(usize::MAX).await?.is_empty() {}
        Ok(self.reply())
    }

    /// The reply assembled from the chunks handed out so far (its model the workload slug when no chunk named
    /// one).
    pub fn reply(&self) -> StreamedReply {
        let mut reply = self.reply.clone();
        if reply.model.is_none() {
            reply.model = Some(self.fallback_model.clone());
        }
        reply
    }

    /// Stop reading and close the connection; later batches are empty.
    pub fn close(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        self.direct = None;
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
pub(super) struct DecodeState<'a> {
    pub(super) slug: &'a str,
    /// `[DONE]` seen: later frames are ignored.
    pub(super) done: bool,
    /// A `finish_reason` was seen: an end without `[DONE]` is then complete.
    pub(super) finished: bool,
    /// The first chunk (the one that names the model) was decoded.
    pub(super) model_seen: bool,
    pub(super) error: Option<Error>,
}

impl DecodeState<'_> {
    /// Whether nothing more can change the stream's outcome: its answer is complete (`[DONE]` or a finish_reason),
    /// or it already failed.
    fn settled(&self) -> bool {
        self.done || self.finished || self.error.is_some()
    }

    /// The body ended: what the decoder still holds is decoded, and an end before the answer was complete is the
    /// stream's error.
    fn body_ended(&mut self, decoder: &mut SseDecoder, batch: &mut Vec<ChatChunk>) {
        decoder.finish_with(|event| self.on_event(event, batch));
        if !self.settled() {
            self.error = Some(Error::api(format!(
                "stream ended before completion (workload {:?} sent no [DONE] and no finish_reason)",
                self.slug
            )));
        }
    }

    /// The connection failed: the stream's error, unless the answer was already complete (a broken connection then
    /// loses nothing).
    fn connection_failed(&mut self, error: impl FnOnce() -> Error) {
        if !self.settled() {
            self.error = Some(error());
        }
    }

    /// One network read through the decoder: its events into `batch`, and an event past the size cap as the
    /// stream's error.
    pub(super) fn feed(
        &mut self,
        decoder: &mut SseDecoder,
        bytes: &[u8],
        batch: &mut Vec<ChatChunk>,
    ) {
        decoder.feed_with(bytes, |event| self.on_event(event, batch));
        if decoder.overflowed() && self.error.is_none() {
            self.error = Some(Error::event_too_large(&format!("workload {:?}", self.slug)));
        }
    }

    pub(super) fn on_event(&mut self, event: EventRef<'_>, batch: &mut Vec<ChatChunk>) {
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
        // The reply's model, read once from the first chunk (a second, shallow parse of that event only).
        let model = (!self.model_seen).then(|| {
            self.model_seen = true;
            serde_json::from_slice::<ModelOnly>(data)
                .ok()
                .and_then(|m| m.model)
        });
        batch.push(ChatChunk {
            text: fields.text,
            finish_reason: fields.finish_reason,
            extras: ChunkExtras::boxed(fields.usage, fields.tool_calls, model.flatten()),
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
    let mut state = DecodeState {
        slug,
        done: false,
        finished: false,
        model_seen: false,
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
pub(super) async fn pump(
    mut response: reqwest::Response,
    sender: mpsc::Sender<StreamMessage>,
    endpoint: Arc<EndpointInner>,
) {
    let request_id = crate::transport::request_id(&response);
    let mut decoder = SseDecoder::new();
    let mut state = DecodeState {
        slug: &endpoint.slug,
        done: false,
        finished: false,
        model_seen: false,
        error: None,
    };
    let mut batch = Vec::new();
    let mut timer = endpoint.transport.idle_timer();
    loop {
        let ended = match timer.next_chunk(&mut response).await {
            Ok(Some(bytes)) => {
                state.feed(&mut decoder, &bytes, &mut batch);
                false
            }
            Ok(None) => {
                state.body_ended(&mut decoder, &mut batch);
                true
            }
            Err(err) => {
                state.connection_failed(|| {
                    endpoint
                        .transport
                        .read_error(&err, "reading the stream from")
                        .0
                });
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
