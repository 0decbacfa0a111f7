//! The process-wide tokio runtime and the one blocking helper every synchronous call goes through.
//! The helper releases the GIL while waiting and polls Python signals so Ctrl+C cancels the request.

use std::future::Future;
use std::sync::mpsc::{sync_channel, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::prelude::*;
use tokio::runtime::Runtime;

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

/// Forget the runtime after `fork()` (called from `os.register_at_fork` in the child).
#[pyfunction]
pub fn _reset_after_fork() {
    if let Ok(mut slot) = RUNTIME.lock() {
        if let Some(stale) = slot.take() {
            std::mem::forget(stale);
        }
    }
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
