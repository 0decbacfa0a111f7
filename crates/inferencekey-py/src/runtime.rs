//! The process-wide tokio runtime, the one blocking helper every synchronous call goes through (it releases the
//! GIL while waiting and polls Python signals so Ctrl+C cancels the request), and `Call`, which runs one core call
//! either through that helper or as a task that resolves an asyncio future.

use std::future::Future;
use std::pin::Pin;
use std::sync::mpsc::{sync_channel, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyModule;
use tokio::runtime::Runtime;
use tokio::task::AbortHandle;

use crate::convert::cached_module;
use crate::errors::{internal_error, to_pyerr};

/// How often a waiting call wakes to let Python run signal handlers (Ctrl+C).
const SIGNAL_TICK: Duration = Duration::from_millis(100);

/// The runtime and the pid that built it: tokio does not survive `fork()`, so a child builds its own.
static RUNTIME: Mutex<Option<(u32, Arc<Runtime>)>> = Mutex::new(None);

/// The runtime of this process, built on first use (and again in a forked child).
pub fn runtime() -> PyResult<Arc<Runtime>> {
    let pid = std::process::id();
    let mut slot = RUNTIME
        .lock()
        .map_err(|_| internal_error("the runtime lock was poisoned"))?;
    if let Some((owner, rt)) = slot.as_ref() {
        if *owner == pid {
            return Ok(Arc::clone(rt));
        }
    }
    if let Some((_, stale)) = slot.take() {
        // The parent's worker threads do not exist in a forked child: dropping the runtime would wait
        // for them forever, so the stale one is leaked on purpose.
        std::mem::forget(stale);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("inferencekey-io")
        .enable_all()
        .build()
        .map_err(|err| internal_error(&format!("cannot start the I/O runtime: {err}")))?;
    let rt = Arc::new(rt);
    *slot = Some((pid, Arc::clone(&rt)));
    Ok(rt)
}

/// Run `future` on the runtime and wait for it without holding the GIL.
///
/// Every `SIGNAL_TICK` the wait re-attaches to run Python's signal handlers; when one raises
/// (KeyboardInterrupt), the task is aborted (closing its connection) and the exception propagates.
pub fn wait<F, T>(py: Python<'_>, future: F) -> PyResult<T>
where
    F: Future<Output = inferencekey_core::Result<T>> + Send + 'static,
    T: Send + 'static,
{
    let rt = runtime()?;
    let (tx, rx) = sync_channel(1);
    let task = rt.spawn(async move {
        // The receiver may be gone after an interrupt; nothing is waiting for the result then.
        let _ = tx.send(future.await);
    });
    let mut rx = rx;
    loop {
        let (back, received) = py.detach(move || {
            let received = rx.recv_timeout(SIGNAL_TICK);
            (rx, received)
        });
        rx = back;
        match received {
            Ok(result) => return result.map_err(|err| to_pyerr(py, err)),
            Err(RecvTimeoutError::Timeout) => {
                if let Err(interrupt) = py.check_signals() {
                    task.abort();
                    return Err(interrupt);
                }
            }
            Err(RecvTimeoutError::Disconnected) => {
                return Err(internal_error("the request task stopped unexpectedly"));
            }
        }
    }
}

/// Turns the value of a core call into its Python object (run attached, on the thread that receives it).
pub type Convert<T> = for<'py> fn(Python<'py>, T) -> PyResult<Bound<'py, PyAny>>;

/// One core call, prepared from converted arguments: run it blocking (`wait`) or on an asyncio loop (`spawn`).
pub struct Call<T> {
    future: Pin<Box<dyn Future<Output = inferencekey_core::Result<T>> + Send>>,
    convert: Convert<T>,
}

impl<T: Send + 'static> Call<T> {
    pub fn new<F>(future: F, convert: Convert<T>) -> Self
    where
        F: Future<Output = inferencekey_core::Result<T>> + Send + 'static,
    {
        Self {
            future: Box::pin(future),
            convert,
        }
    }

    /// Run the call and wait for its Python result (the synchronous API).
    pub fn wait(self, py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
        let value = wait(py, self.future)?;
        (self.convert)(py, value)
    }

    /// Run the call on the runtime and resolve the asyncio `future` (from `loop.create_future()`) with it.
    ///
    /// The task attaches only to hand an unconverted `Outcome` to `loop.call_soon_threadsafe`; conversion and the
    /// exception are made on the loop thread by `inferencekey._aio._resolve`. Cancelling `future` aborts the task.
    pub fn spawn(self, future: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = future.py();
        let event_loop = future.call_method0("get_loop")?.unbind();
        let resolve = cached_module(&AIO_MODULE, py, "inferencekey._aio")?
            .getattr("_resolve")?
            .unbind();
        let target = future.clone().unbind();
        let Self {
            future: call,
            convert,
        } = self;
        let task = runtime()?.spawn(async move {
            let result = call.await;
            let outcome = Outcome::new(move |py| match result {
                Ok(value) => convert(py, value).map(Bound::unbind),
                Err(err) => Err(to_pyerr(py, err)),
            });
            // Not attachable only while the interpreter shuts down: nobody awaits the result then.
            let _ = Python::try_attach(|py| -> PyResult<()> {
                let outcome = Py::new(py, outcome)?;
                // Fails only when the loop is closed: nothing can receive the result then.
                event_loop
                    .into_bound(py)
                    .call_method1("call_soon_threadsafe", (resolve, target, outcome))?;
                Ok(())
            });
        });
        let abort = AbortOnCancel {
            handle: task.abort_handle(),
        };
        if let Err(err) = future.call_method1("add_done_callback", (abort,)) {
            task.abort();
            return Err(err);
        }
        Ok(())
    }
}

static AIO_MODULE: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

/// The conversion of a finished call's result (or of its error) into Python, run once on the loop thread.
type Take = Box<dyn FnOnce(Python<'_>) -> PyResult<Py<PyAny>> + Send>;

/// The result of a core call awaiting conversion: `take()` returns the Python value or raises the mapped exception.
#[pyclass(module = "inferencekey._core", frozen)]
pub struct Outcome {
    take: Mutex<Option<Take>>,
}

impl Outcome {
    fn new(take: impl FnOnce(Python<'_>) -> PyResult<Py<PyAny>> + Send + 'static) -> Self {
        Self {
            take: Mutex::new(Some(Box::new(take))),
        }
    }
}

#[pymethods]
impl Outcome {
    /// The converted result (raises the call's exception); a second call is an internal error.
    fn take(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let take = self
            .take
            .lock()
            .map_err(|_| internal_error("an outcome lock was poisoned"))?
            .take()
            .ok_or_else(|| internal_error("the outcome was already taken"))?;
        take(py)
    }
}

/// The done-callback of an asyncio future: aborts the task serving it when the future was cancelled.
#[pyclass(module = "inferencekey._core", frozen)]
struct AbortOnCancel {
    handle: AbortHandle,
}

#[pymethods]
impl AbortOnCancel {
    fn __call__(&self, future: &Bound<'_, PyAny>) -> PyResult<()> {
        if future.call_method0("cancelled")?.is_truthy()? {
            self.handle.abort();
        }
        Ok(())
    }
}
