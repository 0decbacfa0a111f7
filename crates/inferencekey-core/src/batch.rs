//! Batch embedding for pipelines: the caller cuts its inputs into numbered batches and submits them; each runs as
//! a task on the runtime, at most `limit` at once, where the limit adapts to the platform's answers (it halves on
//! a 429 or 503 and grows by one per window of clean answers, never past the configured maximum). A batch that
//! is refused for overload, or loses its connection, is retried (honouring `Retry-After`); anything else fails it.
//! Results come back with their batch number, so the caller keeps input order however they finish.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::args::at_least;
use crate::data::Endpoint;
use crate::error::{Error, Result};
use crate::transport::{backoff, jitter, Failure};

/// The default batch size: the input cap of common embedding servers (text-embeddings-inference refuses more
/// than 32 inputs per request by default; vLLM and Ollama take more).
pub const DEFAULT_BATCH_SIZE: usize = 32;
/// The default number of requests in flight.
pub const DEFAULT_MAX_CONCURRENCY: usize = 8;
/// How many times one batch is sent at most before its failure is final.
const MAX_ATTEMPTS: u32 = 10;
/// Longest `Retry-After` honoured for one batch.
const RETRY_AFTER_CAP: Duration = Duration::from_secs(60);
/// The largest batch accepted (OpenAI-compatible servers cap a request at 2,048 inputs).
const MAX_BATCH_SIZE: i64 = 2048;

/// What `embed_many` returns its vectors as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EmbedOutput {
    /// One float32 array of shape `(n, dim)`.
    Numpy,
    /// A list of lists of floats.
    List,
}

impl EmbedOutput {
    /// The output a user named (`"numpy"` or `"list"`); anything else is a validation error naming `output`.
    pub fn from_user(value: &str) -> Result<Self> {
        match value {
            "numpy" => Ok(Self::Numpy),
            "list" => Ok(Self::List),
            other => Err(Error::validation(format_args!(
                "output must be 'numpy' or 'list'; got {other:?}"
            ))),
        }
    }

    /// The name a user gives it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Numpy => "numpy",
            Self::List => "list",
        }
    }
}

/// The validation error for `embed_many` given one string: it would embed its characters one by one.
pub fn one_string_inputs() -> Error {
    Error::validation("inputs must be an iterable of strings, not one string (use embed())")
}

/// How a batch job runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchOptions {
    /// Inputs per request.
    pub batch_size: usize,
    /// Requests in flight at most.
    pub max_concurrency: usize,
}

impl Default for BatchOptions {
    fn default() -> Self {
        Self {
            batch_size: DEFAULT_BATCH_SIZE,
            max_concurrency: DEFAULT_MAX_CONCURRENCY,
        }
    }
}

impl BatchOptions {
    /// Options from the values a user passed: `batch_size` from 1 to 2,048 and `max_concurrency` at least 1;
    /// anything else is an `ErrorKind::Validation` naming the argument.
    pub fn from_user(batch_size: i64, max_concurrency: i64) -> Result<Self> {
        if batch_size > MAX_BATCH_SIZE {
            return Err(Error::validation(format_args!(
                "batch_size must be an integer from 1 to {MAX_BATCH_SIZE}"
            )));
        }
        Ok(Self {
            batch_size: at_least("batch_size", batch_size, 1)?,
            max_concurrency: at_least("max_concurrency", max_concurrency, 1)?,
        })
    }
}

/// The concurrency limit, adapted additive-increase / multiplicative-decrease. A decrease happens at most once
/// per window: an overload answer to a request sent before the last decrease does not decrease again.
#[derive(Debug)]
struct AdaptiveLimit {
    state: Mutex<LimitState>,
    max: f64,
}

#[derive(Debug)]
struct LimitState {
    limit: f64,
    /// Counts decreases; a request remembers the value it was sent under.
    window: u64,
}

impl AdaptiveLimit {
    fn new(max: usize) -> Self {
        let max = max as f64;
        Self {
            state: Mutex::new(LimitState {
                limit: max,
                window: 0,
            }),
            max,
        }
    }

    fn current(&self) -> usize {
        self.state
            .lock()
            .map(|state| state.limit.floor().max(1.0) as usize)
            .unwrap_or(1)
    }

    fn window(&self) -> u64 {
        self.state.lock().map(|state| state.window).unwrap_or(0)
    }

    /// A clean answer: one more request in flight per window's worth of clean answers.
    fn on_success(&self) {
        if let Ok(mut state) = self.state.lock() {
            state.limit = (state.limit + 1.0 / state.limit.max(1.0)).min(self.max);
        }
    }

    /// An overload answer to a request sent in `window`: halve, once per window.
    fn on_overload(&self, window: u64) {
        if let Ok(mut state) = self.state.lock() {
            if state.window == window {
                state.limit = (state.limit / 2.0).max(1.0);
                state.window += 1;
            }
        }
    }
}

/// One finished batch: its number and its vectors (in the batch's input order), or why it failed for good.
#[derive(Debug)]
pub struct BatchDone {
    /// The number the batch was submitted with.
    pub batch: u64,
    /// The vectors, one per input of the batch.
    pub result: Result<Vec<Vec<f32>>>,
}

/// A batch embedding job on one endpoint. Submit batches while [`EmbedJob::capacity`] allows, and collect them
/// with [`EmbedJob::next_done`]. Dropping the job (or [`EmbedJob::abort`]) cancels every request in flight.
#[derive(Debug)]
pub struct EmbedJob {
    endpoint: Endpoint,
    limit: Arc<AdaptiveLimit>,
    in_flight: Arc<AtomicUsize>,
    tasks: Mutex<JoinSet<()>>,
    done_tx: mpsc::UnboundedSender<BatchDone>,
    done_rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<BatchDone>>,
}

impl EmbedJob {
    /// A job on `endpoint` (its key and connection pool) with `options`.
    pub fn new(endpoint: &Endpoint, options: BatchOptions) -> Self {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        Self {
            endpoint: endpoint.clone(),
            limit: Arc::new(AdaptiveLimit::new(options.max_concurrency)),
            in_flight: Arc::new(AtomicUsize::new(0)),
            tasks: Mutex::new(JoinSet::new()),
            done_tx,
            done_rx: tokio::sync::Mutex::new(done_rx),
        }
    }

    /// How many more batches may be submitted now (the adaptive limit less the batches in flight).
    pub fn capacity(&self) -> usize {
        self.limit
            .current()
            .saturating_sub(self.in_flight.load(Ordering::SeqCst))
    }

    /// Batches submitted and not yet collected by [`EmbedJob::next_done`].
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// The current concurrency limit.
    pub fn concurrency(&self) -> usize {
        self.limit.current()
    }

    /// Start embedding `texts` as batch number `batch`, on `runtime`.
    pub fn submit(&self, runtime: &Handle, batch: u64, texts: Vec<String>) {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let endpoint = self.endpoint.clone();
        let limit = Arc::clone(&self.limit);
        let done = self.done_tx.clone();
        let task = async move {
            let result = embed_with_retries(&endpoint, &limit, &texts).await;
            // The receiver lives as long as the job; a failed send means the job was dropped.
            let _ = done.send(BatchDone { batch, result });
        };
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.spawn_on(task, runtime);
        }
    }

    /// The next finished batch, waiting for one; `None` when no batch is in flight.
    pub async fn next_done(&self) -> Option<BatchDone> {
        if self.in_flight() == 0 {
            return None;
        }
        let done = self.done_rx.lock().await.recv().await;
        if done.is_some() {
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
        }
        done
    }

    /// Cancel every request in flight.
    pub fn abort(&self) {
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.abort_all();
        }
        self.in_flight.store(0, Ordering::SeqCst);
    }
}

/// Embed one batch, retrying overload answers (adapting the limit) and lost connections.
async fn embed_with_retries(
    endpoint: &Endpoint,
    limit: &AdaptiveLimit,
    texts: &[String],
) -> Result<Vec<Vec<f32>>> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let window = limit.window();
        let (error, failure) = match endpoint.embed_attempt(texts).await {
            Ok(vectors) => {
                limit.on_success();
                return Ok(vectors);
            }
            Err(failed) => failed,
        };
        let wait = match failure {
            Some(Failure::Status {
                status: 429 | 503,
                retry_after,
            }) => {
                limit.on_overload(window);
                retry_after.map(|wait| wait.min(RETRY_AFTER_CAP))
            }
            Some(Failure::Status {
                status: 502 | 504, ..
            })
            | Some(Failure::Connect | Failure::Transport) => None,
            _ => return Err(error),
        };
        if attempt >= MAX_ATTEMPTS {
            return Err(error);
        }
        let wait = wait.unwrap_or_else(|| backoff(attempt - 1, jitter()));
        log::debug!(
            "embedding batch of {} retried in {} ms after: {}",
            texts.len(),
            wait.as_millis(),
            error.message
        );
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn options_from_user() {
        assert_eq!(
            BatchOptions::from_user(32, 8).unwrap(),
            BatchOptions {
                batch_size: 32,
                max_concurrency: 8
            }
        );
        for (size, conc, word) in [
            (0, 1, "batch_size"),
            (2049, 1, "batch_size"),
            (1, 0, "max_concurrency"),
            (1, -5, "max_concurrency"),
        ] {
            let err = BatchOptions::from_user(size, conc).unwrap_err();
            assert_eq!(err.kind, ErrorKind::Validation);
            assert!(err.message.contains(word), "{}", err.message);
        }
    }

    #[test]
    fn the_limit_halves_once_per_window_and_grows_back_to_the_maximum() {
        let limit = AdaptiveLimit::new(8);
        assert_eq!(limit.current(), 8);
        let window = limit.window();
        // Three overload answers to requests of the same window: one decrease.
        for _ in 0..3 {
            limit.on_overload(window);
        }
        assert_eq!(limit.current(), 4);
        limit.on_overload(limit.window());
        limit.on_overload(limit.window());
        limit.on_overload(limit.window());
        assert_eq!(limit.current(), 1, "never below one");
        limit.on_overload(limit.window());
        assert_eq!(limit.current(), 1);
        // About `limit` clean answers per step up, and never past the maximum.
        for _ in 0..200 {
            limit.on_success();
        }
        assert_eq!(limit.current(), 8);
    }
}
