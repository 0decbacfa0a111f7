//! Chat streams: `OpenStream` (a response begun), `ChatStream` (its chunks: a native iterator for the sync
//! surface, `next_batch()` calls for the async one) and `ChunkBatch` (one batch, handed out chunk by chunk).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use pyo3::exceptions::PyStopIteration;
use pyo3::prelude::*;

use inferencekey_core as core;

use crate::errors::{internal_error, to_pyerr};
use crate::results;
use crate::runtime::{existing_thread_driver, settle, wait_direct, Call, Driver, Home, Pending};

/// Most chunks handed over per crossing of the I/O boundary: enough to amortise it, small enough to stay
/// interactive.
const STREAM_BATCH: usize = 256;

/// A chat stream whose response has begun, waiting to be taken by a `ChatStream`.
#[pyclass(module = "inferencekey._core", frozen)]
pub struct OpenStream {
    stream: Mutex<Option<core::ChatStream>>,
}

impl From<core::ChatStream> for OpenStream {
    fn from(stream: core::ChatStream) -> Self {
        Self {
            stream: Mutex::new(Some(stream)),
        }
    }
}

/// A core stream or watch lent to one reader at a time: taken out for each read (no lock is held while it
/// waits) and given back after, unless it ended. `ChatStream` and `ReadinessWatch` hold theirs this way.
pub(crate) struct Lent<T> {
    value: Option<T>,
    /// Lent out: a read is in progress.
    out: bool,
}

impl<T> Lent<T> {
    pub(crate) fn new(value: T) -> Self {
        Self {
            value: Some(value),
            out: false,
        }
    }

    /// Take the value out for one read; None once it has ended or was closed. Two reads at once are refused.
    pub(crate) fn lend(&mut self) -> PyResult<Option<T>> {
        if self.out {
            return Err(internal_error(
                "a stream was read from two places at once (use one reader per stream)",
            ));
        }
        let value = self.value.take();
        self.out = value.is_some();
        Ok(value)
    }

    /// The read is over: the value comes back (None: it ended, or was dropped with an interrupted read).
    pub(crate) fn give_back(&mut self, value: Option<T>) {
        self.out = false;
        if value.is_some() {
            self.value = value;
        }
    }

    /// Whether a read is in progress.
    pub(crate) fn is_out(&self) -> bool {
        self.out
    }

    /// Take the value for good (closing), whether or not a read is in progress.
    pub(crate) fn take(&mut self) -> Option<T> {
        self.value.take()
    }
}

/// Lock a mutex of the binding's own state (poisoned only if a thread panicked while holding it).
pub(crate) fn locked<T>(state: &Mutex<T>) -> PyResult<std::sync::MutexGuard<'_, T>> {
    state
        .lock()
        .map_err(|_| internal_error("a stream lock was poisoned"))
}

/// What a `ChatStream` holds: decoded chunks not yet handed out, and the core stream while it is open.
struct ChatStreamState {
    buffered: VecDeque<core::ChatChunk>,
    /// The open stream, lent out while a batch is being read.
    stream: Lent<core::ChatStream>,
    /// Closed by the user: a batch that comes back is dropped, and with it the connection.
    closed: bool,
    /// The whole reply, kept when the stream ends cleanly (for `final_result` after iteration).
    reply: Option<core::StreamedReply>,
    /// The stream ended with an error (already raised to the reader).
    failed: bool,
}

impl ChatStreamState {
    /// Give the stream back after a batch, unless the stream ended, failed or was closed meanwhile.
    fn returned(&mut self, stream: core::ChatStream, batch: &core::Result<Vec<core::ChatChunk>>) {
        let keep = match batch {
            Ok(chunks) if !chunks.is_empty() => !self.closed,
            Ok(_) => {
                self.reply = Some(stream.reply());
                false
            }
            Err(_) => {
                self.failed = true;
                false
            }
        };
        self.stream.give_back(keep.then_some(stream));
    }
}

/// The chunks of one streamed chat completion: a native iterator of `TextChunk` (the base of `TextStream`),
/// and `next_batch()` calls for the async surface. Chunks are read from the connection in batches (everything
/// decoded so far) and each `TextChunk` is built only when handed out.
#[pyclass(module = "inferencekey._core", frozen, subclass)]
pub struct ChatStream {
    state: Arc<Mutex<ChatStreamState>>,
    /// The driver of the thread that opened it, when that thread waits on its own (a sync stream): the task
    /// reading its body runs there, so every read drives that runtime, from whichever thread iterates.
    home: Option<Arc<Driver>>,
}

impl ChatStream {
    fn lock(&self) -> PyResult<std::sync::MutexGuard<'_, ChatStreamState>> {
        locked(&self.state)
    }
}

#[pymethods]
impl ChatStream {
    #[new]
    fn new(open: &OpenStream) -> PyResult<Self> {
        let stream = open
            .stream
            .lock()
            .map_err(|_| internal_error("a stream lock was poisoned"))?
            .take()
            .ok_or_else(|| internal_error("this stream was already taken"))?;
        Ok(Self {
            state: Arc::new(Mutex::new(ChatStreamState {
                buffered: VecDeque::new(),
                stream: Lent::new(stream),
                closed: false,
                reply: None,
                failed: false,
            })),
            home: existing_thread_driver(),
        })
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    /// The next chunk, reading the next batch when none is buffered; StopIteration at the end.
    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        loop {
            if let Some(chunk) = self.lock()?.buffered.pop_front() {
                return results::text_chunk(py, chunk);
            }
            let Some(mut stream) = self.lock()?.stream.lend()? else {
                return Err(PyStopIteration::new_err(()));
            };
            if let Some(batch) = stream.ready_batch(STREAM_BATCH) {
                // Decoded already, or the end already seen: nothing to wait for.
                let mut state = self.lock()?;
                state.returned(stream, &batch);
                state
                    .buffered
                    .extend(batch.map_err(|err| to_pyerr(py, err))?);
                continue;
            }
            let home = self.home.as_deref().map_or(Home::ThisThread, Home::Of);
            // A stream on the core's direct path reads its batch right here, on this thread (with no runtime).
            let batch = wait_direct(py, home, async move {
                let batch = stream.next_batch(STREAM_BATCH).await;
                Ok((stream, batch))
            });
            let (stream, batch) = match batch {
                Ok(read) => read,
                Err(interrupted) => {
                    // Ctrl+C while waiting: the stream was dropped with the wait, so it is over.
                    self.lock()?.stream.give_back(None);
                    return Err(interrupted);
                }
            };
            let mut state = self.lock()?;
            state.returned(stream, &batch);
            state
                .buffered
                .extend(batch.map_err(|err| to_pyerr(py, err))?);
        }
    }

    /// The next batch when it is known without waiting (chunks already read, or the end already seen), else None:
    /// the async surface then awaits `next_batch()`, so a stream's end costs no round trip through the runtime.
    fn batch_now(&self, py: Python<'_>) -> PyResult<Option<ChunkBatch>> {
        let mut state = self.lock()?;
        if !state.buffered.is_empty() {
            return Ok(Some(ChunkBatch::from(std::mem::take(&mut state.buffered))));
        }
        if state.stream.is_out() {
            return Ok(None);
        }
        let Some(mut stream) = state.stream.lend()? else {
            return Ok(Some(ChunkBatch::from(VecDeque::new())));
        };
        let Some(batch) = stream.ready_batch(STREAM_BATCH) else {
            state.stream.give_back(Some(stream));
            return Ok(None);
        };
        state.returned(stream, &batch);
        let chunks = batch.map_err(|err| to_pyerr(py, err))?;
        Ok(Some(ChunkBatch::from(VecDeque::from(chunks))))
    }

    /// The next batch of chunks; resolves to a `ChunkBatch` (an iterator of `TextChunk`), empty at the end.
    fn next_batch(&self) -> PyResult<Pending> {
        let buffered = std::mem::take(&mut self.lock()?.buffered);
        let stream = if buffered.is_empty() {
            self.lock()?.stream.lend()?
        } else {
            None
        };
        let state = Arc::clone(&self.state);
        // A direct stream's batch is read on the awaiting loop's thread; one a task reads is awaited on the runtime.
        let direct = stream.as_ref().is_some_and(core::ChatStream::is_direct);
        Ok(Pending::from(
            Call::new(
                async move {
                    let Some(mut stream) = stream else {
                        return Ok(buffered);
                    };
                    let batch = stream.next_batch(STREAM_BATCH).await;
                    if let Ok(mut state) = state.lock() {
                        state.returned(stream, &batch);
                    }
                    batch.map(VecDeque::from)
                },
                |py, chunks| Ok(Bound::new(py, ChunkBatch::from(chunks))?.into_any()),
            )
            .on_loop(direct),
        ))
    }

    /// Read the rest of the stream and resolve to the whole reply as a `TextResult` (text, model, finish reason,
    /// usage and tool calls), the chunks already handed out included. Chunks read but not yet handed out are
    /// part of the reply and are not handed out afterwards.
    fn read_to_end(&self, py: Python<'_>) -> PyResult<Pending> {
        let (stream, done) = {
            let mut state = self.lock()?;
            // A stream that ended cleanly keeps its reply, even once closed.
            let refused = if state.failed {
                Some(core::Unfinished::Failed)
            } else if state.closed && state.reply.is_none() {
                Some(core::Unfinished::Closed)
            } else {
                None
            };
            if let Some(why) = refused {
                return Err(to_pyerr(py, core::no_final_result(why)));
            }
            state.buffered.clear();
            (state.stream.lend()?, state.reply.clone())
        };
        let state = Arc::clone(&self.state);
        let direct = stream.as_ref().is_some_and(core::ChatStream::is_direct);
        // Unary: a sync wait reads the rest of a direct stream on its own thread, an async one on its loop's.
        Ok(Pending::from(
            Call::unary(
                async move {
                    let Some(mut stream) = stream else {
                        return done.ok_or_else(|| core::no_final_result(core::Unfinished::Closed));
                    };
                    let reply = stream.final_result().await;
                    if let Ok(mut state) = state.lock() {
                        state.stream.give_back(None);
                        match &reply {
                            Ok(reply) => state.reply = Some(reply.clone()),
                            Err(_) => state.failed = true,
                        }
                    }
                    reply
                },
                results::streamed_text_result,
            )
            .on_loop(direct),
        ))
    }

    /// Close the stream and its connection; iteration ends. Idempotent.
    fn close(&self) -> PyResult<()> {
        let stream = {
            let mut state = self.lock()?;
            state.closed = true;
            state.buffered.clear();
            state.stream.take()
        };
        if let Some(mut stream) = stream {
            stream.close();
            if let Some(home) = &self.home {
                settle(home);
            }
        }
        Ok(())
    }
}

impl Drop for ChatStream {
    fn drop(&mut self) {
        // Collected while open: the reading task is aborted with the core stream; on a thread's own runtime it
        // ends (and its connection closes) only when that runtime runs, so let it run now.
        let open = self
            .state
            .lock()
            .map(|mut state| state.stream.take())
            .ok()
            .flatten();
        if let (Some(stream), Some(home)) = (open, &self.home) {
            drop(stream);
            settle(home);
        }
    }
}

/// Chunks read in one batch, handed out one `TextChunk` at a time (built on the way out).
#[pyclass(module = "inferencekey._core", frozen)]
pub struct ChunkBatch {
    chunks: Mutex<VecDeque<core::ChatChunk>>,
}

impl From<VecDeque<core::ChatChunk>> for ChunkBatch {
    fn from(chunks: VecDeque<core::ChatChunk>) -> Self {
        Self {
            chunks: Mutex::new(chunks),
        }
    }
}

#[pymethods]
impl ChunkBatch {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let chunk = self
            .chunks
            .lock()
            .map_err(|_| internal_error("a batch lock was poisoned"))?
            .pop_front();
        match chunk {
            Some(chunk) => results::text_chunk(py, chunk),
            None => Err(PyStopIteration::new_err(())),
        }
    }

    fn __len__(&self) -> PyResult<usize> {
        Ok(self
            .chunks
            .lock()
            .map_err(|_| internal_error("a batch lock was poisoned"))?
            .len())
    }
}
