//! How a core call is waited for. Every operation of the binding is one `Call` (the core future and the
//! conversion of its value), returned to Python as a `Pending`; the sync API runs it with `wait()`, the async API
//! with `start(future)`. The two differ only in how they wait:
//!
//! - `wait()` drives the future on the calling thread with the interpreter released, on that thread's own
//!   current-thread runtime: the thread itself polls the socket, runs the connection's task and the call, so a
//!   request crosses no thread (the core keeps one connection pool per such thread). It wakes every `SIGNAL_TICK`
//!   to run Python's signal handlers, so Ctrl+C drops the future, which cancels the request and closes its
//!   connection.
//! - `start(future)` spawns the call on the I/O runtime. When it ends, the I/O thread queues the outcome for the
//!   resolver thread and goes on: it never waits for the interpreter lock. The resolver hands each batch of
//!   outcomes to the event loop (`call_soon_threadsafe`), where they are converted and set on their futures.
//!   Whatever ends the task (a value, an error, a panic, the runtime going away) resolves the future; cancelling
//!   the future aborts the task.

use std::any::Any;
use std::cell::RefCell;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt as _;
use pyo3::prelude::*;
use pyo3::types::PyList;
use tokio::runtime::Runtime;
use tokio::task::AbortHandle;

use crate::errors::{internal_error, to_pyerr};
use crate::logs;

/// How often a waiting call wakes to let Python run signal handlers (Ctrl+C).
const SIGNAL_TICK: Duration = Duration::from_millis(100);

/// Most outcomes the resolver hands to one event loop in one callback.
const RESOLVE_BATCH: usize = 1024;

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

/// A thread's own runtime, shut down when the thread exits (without waiting: nothing of it can be running then).
struct ThreadRuntime {
    pid: u32,
    runtime: Option<Arc<Runtime>>,
}

impl Drop for ThreadRuntime {
    fn drop(&mut self) {
        let Some(runtime) = self.runtime.take() else {
            return;
        };
        if self.pid != std::process::id() {
            // A forked child's copy of its parent's runtime: its sockets and driver are the parent's.
            std::mem::forget(runtime);
        } else if let Ok(runtime) = Arc::try_unwrap(runtime) {
            runtime.shutdown_background();
        }
    }
}

thread_local! {
    static THREAD_RUNTIME: RefCell<Option<ThreadRuntime>> = const { RefCell::new(None) };
}

/// This thread's current-thread runtime, built on first use (and again in a forked child), on which its blocking
/// calls run. Another thread may drive it too (`wait_on`), which tokio allows: one thread at a time runs its tasks.
pub fn thread_runtime() -> PyResult<Arc<Runtime>> {
    let pid = std::process::id();
    THREAD_RUNTIME.with(|slot| {
        let mut slot = slot.borrow_mut();
        if let Some(ThreadRuntime {
            pid: owner,
            runtime: Some(rt),
        }) = slot.as_ref()
        {
            if *owner == pid {
                return Ok(Arc::clone(rt));
            }
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|err| {
                internal_error(&format!("cannot start this thread's I/O runtime: {err}"))
            })?;
        let rt = Arc::new(rt);
        // A stale one (the parent's, in a forked child) is forgotten by its own drop.
        *slot = Some(ThreadRuntime {
            pid,
            runtime: Some(Arc::clone(&rt)),
        });
        Ok(rt)
    })
}

/// This thread's runtime if it has built one (in this process).
pub fn existing_thread_runtime() -> Option<Arc<Runtime>> {
    let pid = std::process::id();
    THREAD_RUNTIME.with(|slot| match slot.borrow().as_ref() {
        Some(ThreadRuntime {
            pid: owner,
            runtime: Some(rt),
        }) if *owner == pid => Some(Arc::clone(rt)),
        _ => None,
    })
}

/// Scheduler rounds `settle` gives a runtime: one runs an aborted task's cancellation, which drops its response;
/// the next runs the connection's task, which then closes the socket.
const SETTLE_ROUNDS: usize = 3;

/// Let `rt` run what is ready now, without waiting for anything: a thread's runtime runs its tasks only while
/// a thread drives it, so a request or stream dropped between calls (closed, interrupted, collected) closes its
/// connection only once the runtime runs again. Does nothing inside a runtime (whose own thread drives it).
pub fn settle(rt: &Runtime) {
    if tokio::runtime::Handle::try_current().is_ok() {
        return;
    }
    rt.block_on(async {
        for _ in 0..SETTLE_ROUNDS {
            tokio::task::yield_now().await;
        }
    });
}

/// The text of a panic payload.
fn panic_message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".to_owned())
}

/// Drive `future` to its end on this thread, on `rt` (the runtime whose tasks the future waits for: its own
/// thread's, or the thread's that opened a stream), without holding the interpreter lock.
///
/// Every `SIGNAL_TICK` it re-attaches to run Python's signal handlers; when one raises (KeyboardInterrupt), the
/// future is dropped, which cancels the request and closes its connection, and the exception propagates. A
/// panic inside the future becomes an `InferenceKeyError`, never a `PanicException`.
pub fn wait_on<F, T>(py: Python<'_>, rt: &Runtime, future: F) -> PyResult<T>
where
    F: Future<Output = inferencekey_core::Result<T>> + Send,
    T: Send,
{
    if tokio::runtime::Handle::try_current().is_ok() {
        // Only Python code run from an I/O thread could get here; blocking that thread would deadlock it.
        return Err(internal_error(
            "a blocking call was made from an I/O thread of the SDK",
        ));
    }
    logs::refresh_level(py);
    let mut future = Box::pin(AssertUnwindSafe(future).catch_unwind());
    loop {
        let polled = py
            .detach(|| rt.block_on(async { tokio::time::timeout(SIGNAL_TICK, &mut future).await }));
        // The records the call logged on I/O threads are emitted here, before its result. A Ctrl+C that lands
        // while they are emitted ends the wait like one seen by `check_signals` (dropping the future cancels it).
        logs::drain(py)?;
        match polled {
            Ok(Ok(result)) => return result.map_err(|err| to_pyerr(py, err)),
            Ok(Err(payload)) => {
                return Err(internal_error(&format!(
                    "the request panicked: {}",
                    panic_message(payload.as_ref())
                )))
            }
            Err(_tick) => {
                if let Err(interrupted) = py.check_signals() {
                    // The request is dropped here; its connection closes once the runtime runs again.
                    drop(future);
                    settle(rt);
                    return Err(interrupted);
                }
            }
        }
    }
}

/// A finished call's value, converted into Python when the receiving thread holds the interpreter.
type Convert = Box<dyn FnOnce(Python<'_>) -> PyResult<Py<PyAny>> + Send>;

/// Turns the value of a core call into its Python object.
pub type ToPy<T> = for<'py> fn(Python<'py>, T) -> PyResult<Bound<'py, PyAny>>;

/// One core call, prepared from converted arguments.
pub struct Call {
    future: Pin<Box<dyn Future<Output = inferencekey_core::Result<Convert>> + Send>>,
}

impl Call {
    /// The call of `future`, whose value `to_py` converts.
    pub fn new<F, T>(future: F, to_py: ToPy<T>) -> Self
    where
        F: Future<Output = inferencekey_core::Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        let future = future.map(move |result| {
            result
                .map(|value| -> Convert { Box::new(move |py| to_py(py, value).map(Bound::unbind)) })
        });
        Self {
            future: Box::pin(future),
        }
    }

    /// Run the call on this thread and return its Python result.
    pub fn wait(self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.wait_on(py, &*thread_runtime()?)
    }

    /// Run the call on this thread, driving `rt`, and return its Python result.
    pub fn wait_on(self, py: Python<'_>, rt: &Runtime) -> PyResult<Py<PyAny>> {
        let convert = wait_on(py, rt, self.future)?;
        convert(py)
    }

    /// Run the call on the I/O runtime; its outcome resolves the asyncio `future` on that future's loop.
    pub fn start(self, future: &Bound<'_, PyAny>) -> PyResult<()> {
        logs::refresh_level(future.py());
        let completion = Completion {
            event_loop: future.call_method0("get_loop")?.unbind(),
            future: future.clone().unbind(),
            outcome: None,
        };
        let resolver = resolver()?;
        let call = self.future;
        let task = runtime()?.spawn(async move {
            // Dropped with the task, however it ends: a panic or an abort still resolves the future.
            let mut guard = Resolving {
                completion: Some(completion),
                resolver,
            };
            let outcome = match AssertUnwindSafe(call).catch_unwind().await {
                Ok(result) => Outcome::Done(result),
                Err(payload) => Outcome::Panicked(panic_message(payload.as_ref())),
            };
            guard.finish(outcome);
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

/// How a spawned call ended.
enum Outcome {
    Done(inferencekey_core::Result<Convert>),
    Panicked(String),
    Dropped,
}

impl Outcome {
    /// The Python value, or the exception for the awaiting task.
    fn into_py(self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        match self {
            Outcome::Done(Ok(convert)) => convert(py),
            Outcome::Done(Err(err)) => Err(to_pyerr(py, err)),
            Outcome::Panicked(message) => {
                Err(internal_error(&format!("the request panicked: {message}")))
            }
            Outcome::Dropped => Err(internal_error(
                "the request task ended without a result (the I/O runtime stopped)",
            )),
        }
    }
}

/// An outcome on its way to the future it settles.
struct Completion {
    event_loop: Py<PyAny>,
    future: Py<PyAny>,
    outcome: Option<Outcome>,
}

/// What the resolver thread is handed: an outcome to deliver, or log records to emit.
enum Message {
    Completed(Completion),
    Logged,
}

/// Sends the completion to the resolver when the task finishes, or when it is dropped unfinished.
struct Resolving {
    completion: Option<Completion>,
    resolver: Sender<Message>,
}

impl Resolving {
    fn finish(&mut self, outcome: Outcome) {
        if let Some(mut completion) = self.completion.take() {
            completion.outcome = Some(outcome);
            // The resolver lives as long as the process; a failed send means the interpreter is going away.
            let _ = self.resolver.send(Message::Completed(completion));
        }
    }
}

impl Drop for Resolving {
    fn drop(&mut self) {
        self.finish(Outcome::Dropped);
    }
}

/// The resolver's queue and the pid that started it (a forked child starts its own).
static RESOLVER: Mutex<Option<(u32, Sender<Message>)>> = Mutex::new(None);

/// The queue of the resolver thread, started on first use; None if the thread cannot be started. Touches no
/// Python object, so any thread may call it.
fn resolver_queue() -> Option<Sender<Message>> {
    let pid = std::process::id();
    let mut slot = RESOLVER.lock().ok()?;
    if let Some((owner, sender)) = slot.as_ref() {
        if *owner == pid {
            return Some(sender.clone());
        }
    }
    let (sender, receiver) = channel();
    std::thread::Builder::new()
        .name("inferencekey-resolve".to_owned())
        .spawn(move || resolve_forever(&receiver))
        .ok()?;
    *slot = Some((pid, sender.clone()));
    Some(sender)
}

fn resolver() -> PyResult<Sender<Message>> {
    resolver_queue().ok_or_else(|| internal_error("cannot start the resolver thread"))
}

/// Set once the interpreter begins to exit (an `atexit` hook registered at import).
static EXITING: AtomicBool = AtomicBool::new(false);

/// How many of our threads are attached, or about to attach (counted before `EXITING` is checked).
static ATTACHED: AtomicUsize = AtomicUsize::new(0);

/// The longest the exit hook waits for an attached resolver to finish its call (a few microseconds in practice).
const EXIT_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The interpreter is exiting: the resolver thread must not attach any more, and one attached now must have left
/// before finalization begins. Before CPython 3.14 a thread that takes the interpreter lock back during finalization
/// (even one attached before it began, inside a call that released the lock, such as the socket send of
/// `call_soon_threadsafe`) is ended with `pthread_exit` in the middle of our frames, which aborts the process;
/// nothing awaits results then anyway.
#[pyfunction]
pub fn _interpreter_exiting(py: Python<'_>) {
    EXITING.store(true, Ordering::SeqCst);
    // Release the lock so that an attached resolver can finish its call; it attaches no more after that.
    py.detach(|| {
        let started = std::time::Instant::now();
        while ATTACHED.load(Ordering::SeqCst) != 0 && started.elapsed() < EXIT_WAIT {
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
    });
}

/// Wake the resolver to emit queued log records (called by the log bridge on the thread that logged).
pub fn wake_resolver() {
    if EXITING.load(Ordering::SeqCst) {
        return;
    }
    if let Some(queue) = resolver_queue() {
        let _ = queue.send(Message::Logged);
    }
}

/// One count in `ATTACHED` for as long as it lives (however the attached call ends).
struct Counted;

impl Counted {
    fn new() -> Self {
        ATTACHED.fetch_add(1, Ordering::SeqCst);
        Self
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        ATTACHED.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The resolver thread: waits (without the interpreter) for outcomes and records, then emits the records and
/// hands each loop its outcomes.
fn resolve_forever(receiver: &Receiver<Message>) {
    while let Ok(first) = receiver.recv() {
        let mut batch = Vec::new();
        let mut next = Some(first);
        while let Some(message) = next.take() {
            if let Message::Completed(completion) = message {
                batch.push(completion);
            }
            if batch.len() < RESOLVE_BATCH {
                next = receiver.try_recv().ok();
            }
        }
        // Counted before the check, as the exit hook sets the flag before it reads the count: one of the two
        // always sees the other (both sequentially consistent).
        let counted = Counted::new();
        if EXITING.load(Ordering::SeqCst) {
            drop(counted);
            // Dropped without attaching: their Python references are released by the interpreter's teardown.
            std::mem::forget(batch);
            continue;
        }
        // Not attachable only while the interpreter shuts down: nobody awaits these results then.
        let _ = Python::try_attach(|py| {
            // Signal handlers run on the main thread only, so nothing but a handler's own failure can come back here.
            let _ = logs::drain(py);
            hand_over(py, batch);
        });
        drop(counted);
    }
}

/// Schedule `settle_all` on each event loop with the completions that belong to it.
fn hand_over(py: Python<'_>, mut batch: Vec<Completion>) {
    while let Some(first) = batch.first() {
        let event_loop = first.event_loop.clone_ref(py);
        let (mine, rest): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .partition(|c| c.event_loop.is(&event_loop));
        batch = rest;
        let settle = Settle {
            completions: Mutex::new(mine),
        };
        let scheduled = Bound::new(py, settle).and_then(|settle| {
            event_loop
                .bind(py)
                .call_method1("call_soon_threadsafe", (settle,))
        });
        // Fails only when the loop is closed: nothing can receive these results then.
        drop(scheduled);
    }
}

/// Called once on an event loop's thread: converts each outcome and settles its future, unless cancelled.
#[pyclass(module = "inferencekey._core", frozen)]
struct Settle {
    completions: Mutex<Vec<Completion>>,
}

#[pymethods]
impl Settle {
    fn __call__(&self, py: Python<'_>) -> PyResult<()> {
        let completions = std::mem::take(
            &mut *self
                .completions
                .lock()
                .map_err(|_| internal_error("a settle lock was poisoned"))?,
        );
        for completion in completions {
            let future = completion.future.bind(py);
            if future.call_method0("cancelled")?.is_truthy()? {
                continue;
            }
            let outcome = completion.outcome.unwrap_or(Outcome::Dropped);
            match outcome.into_py(py) {
                Ok(value) => future.call_method1("set_result", (value,))?,
                Err(err) => future.call_method1("set_exception", (err.into_value(py),))?,
            };
        }
        // The awaiting tasks resume after this callback, so the records of their calls still come first. A Ctrl+C
        // that lands while they are emitted propagates: the loop is being interrupted.
        logs::drain(py)
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

/// A prepared call: `wait()` runs it here (the sync API), `start(future)` on the I/O runtime (the async API).
/// Each runs at most once.
#[pyclass(module = "inferencekey._core", frozen)]
pub struct Pending {
    call: Mutex<Option<Call>>,
}

impl Pending {
    fn take(&self) -> PyResult<Call> {
        self.call
            .lock()
            .map_err(|_| internal_error("a call lock was poisoned"))?
            .take()
            .ok_or_else(|| internal_error("this call was already run"))
    }
}

impl From<Call> for Pending {
    fn from(call: Call) -> Self {
        Self {
            call: Mutex::new(Some(call)),
        }
    }
}

#[pymethods]
impl Pending {
    /// Run the call on this thread (the interpreter released) and return its result.
    fn wait(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.take()?.wait(py)
    }

    /// Run the call on the I/O runtime and resolve `future` (from `loop.create_future()`) with its result.
    fn start(&self, future: &Bound<'_, PyAny>) -> PyResult<()> {
        self.take()?.start(future)
    }
}

/// Test hook: a call that panics inside the core future, to prove a panic still resolves its awaiter.
#[pyfunction]
#[pyo3(signature = (message))]
pub fn _panicking_call(message: String) -> Pending {
    Pending::from(Call::new(
        async move {
            if !message.is_empty() {
                #[allow(clippy::panic)]
                {
                    panic!("{message}");
                }
            }
            Ok(())
        },
        |py, ()| Ok(py.None().into_bound(py)),
    ))
}

/// A list of Python objects built from `items` (a helper for conversions of batches).
pub fn list_of<'py, T>(
    py: Python<'py>,
    items: impl IntoIterator<Item = T>,
    to_py: impl Fn(Python<'py>, T) -> PyResult<Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let list = PyList::empty(py);
    for item in items {
        list.append(to_py(py, item)?)?;
    }
    Ok(list.into_any())
}
