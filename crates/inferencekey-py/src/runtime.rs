//! How a core call is waited for. Every operation of the binding is one `Call` (the core future and the
//! conversion of its value), returned to Python as a `Pending`; the sync API runs it with `wait()`, the async API
//! with `start(future)`. The two differ only in how they wait:
//!
//! - `wait()` of a unary call first polls it once in the core's blocking scope, outside any runtime: on the direct
//!   path the request runs to its end in that poll, on this thread, and no runtime is ever built for it. Otherwise
//!   (and for every other call) `wait()` drives the future on the calling thread with the interpreter released, on
//!   that thread's own current-thread runtime: the thread itself polls the socket, runs the connection's task and
//!   the call, so a request crosses no thread (the core keeps one connection pool per such thread). It wakes every
//!   `SIGNAL_TICK` to run Python's signal handlers, so Ctrl+C drops the future, which cancels the request and
//!   closes its connection.
//! - `start(future, waker)` of a call allowed on the loop (`Call::on_loop`), given the `waker` of a loop that
//!   watches descriptors, runs it on the loop's thread as a `LoopCall`: polled in the core's loop scope, where the
//!   direct path suspends instead of blocking, naming the socket and deadline it waits for, which wait in the
//!   loop's poller (`event_loop`) until it is polled again. No other thread is involved; a request the
//!   direct path does not serve hands itself to the I/O runtime at its first poll, and settles as below.
//! - Any other call, `start(future, waker)` spawns on the I/O runtime. When it ends, the I/O thread queues the outcome
//!   and goes on: it never waits for the interpreter lock. With a `LoopWaker` (one per event loop, where the loop
//!   can watch a file descriptor), the outcome goes on that loop's queue and one byte on its socket wakes the loop,
//!   whose reader callback converts the outcomes and sets them on their futures: no other thread is involved.
//!   Without one (a loop that cannot watch descriptors, such as Windows' proactor), the resolver thread hands
//!   each batch of outcomes to the loop with `call_soon_threadsafe`. Whatever ends the task (a value, an error, a
//!   panic, the runtime going away) resolves the future; cancelling the future aborts the task.

use std::any::Any;
use std::cell::RefCell;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures_util::FutureExt as _;
use pyo3::prelude::*;
use pyo3::types::PyList;
use tokio::runtime::Runtime;
use tokio::task::AbortHandle;

use crate::errors::{internal_error, to_pyerr};
use crate::event_loop::{LoopCall, LoopQueue, LoopWaker};
use crate::logs;

/// How often a waiting call wakes to let Python run signal handlers (Ctrl+C).
const SIGNAL_TICK: Duration = Duration::from_millis(100);

/// Most outcomes the resolver hands to one event loop in one callback.
const RESOLVE_BATCH: usize = 1024;

/// The runtime and the process generation that built it: tokio does not survive `fork()`, so a child builds its own.
static RUNTIME: Mutex<Option<(u64, Arc<Runtime>)>> = Mutex::new(None);

/// The runtime of this process, built on first use (and again in a forked child).
pub fn runtime() -> PyResult<Arc<Runtime>> {
    let generation = crate::fork::generation();
    let mut slot = RUNTIME
        .lock()
        .map_err(|_| internal_error("the runtime lock was poisoned"))?;
    if let Some((owner, rt)) = slot.as_ref() {
        if *owner == generation {
            return Ok(Arc::clone(rt));
        }
    }
    if let Some((_, stale)) = slot.take() {
        // The parent's worker threads do not exist in a forked child: dropping the runtime would wait
        // for them forever, so the stale one is leaked on purpose.
        std::mem::forget(stale);
    }
    // One worker: the async calls' I/O and decoding keep one thread busy at most while the interpreter's thread
    // converts their results, and a second worker only added wake-ups (tokio wakes an idle worker to steal the work
    // a task spawns): measured, 1 in flight cost 22% less client CPU per request with one worker, 26-chunk streams
    // 35% less, 64 in flight and 1,000 concurrent streams no more (benches/README.md).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("inferencekey-io")
        .enable_all()
        .build()
        .map_err(|err| internal_error(&format!("cannot start the I/O runtime: {err}")))?;
    let rt = Arc::new(rt);
    *slot = Some((generation, Arc::clone(&rt)));
    Ok(rt)
}

/// What a thread drives its blocking calls on: a current-thread runtime, and the core's context that gives that
/// runtime connections of its own. A thread takes one on its first blocking call and gives it back when it exits, so
/// the next new thread starts with a built runtime, built HTTP clients and warm connections (a thread pool made
/// per batch of work costs no new connections).
pub struct Driver {
    runtime: Runtime,
    context: inferencekey_core::IoContext,
}

impl Driver {
    /// Run `future` to its end on this runtime, in this context (on the calling thread).
    fn block_on<F: Future>(&self, future: F) -> F::Output {
        let _entered = self.context.enter();
        self.runtime.block_on(future)
    }
}

/// The runtime a blocking wait drives, if the call needs one.
#[derive(Clone, Copy)]
pub enum Home<'a> {
    /// This one: the runtime whose tasks the future waits for (the one of the thread that opened a stream).
    Of(&'a Driver),
    /// This thread's, taken (built, the first time) only when the call needs a runtime: a call on the core's direct
    /// path never does.
    ThisThread,
}

thread_local! {
    /// The exception a signal handler raised while a blocking request asked whether to stop.
    static INTERRUPTION: RefCell<Option<PyErr>> = const { RefCell::new(None) };
}

/// The interrupt check of a blocking request: runs Python's signal handlers (taking the interpreter for it), and
/// keeps the exception one raises (Ctrl+C) for the waiting call to raise.
fn interrupted() -> bool {
    Python::attach(|py| match py.check_signals() {
        Ok(()) => false,
        Err(err) => {
            INTERRUPTION.with(|slot| *slot.borrow_mut() = Some(err));
            true
        }
    })
}

/// Most drivers kept for threads to come; beyond this, a thread's driver is shut down when it exits.
const SPARE_DRIVERS: usize = 64;

/// Drivers given back by threads that exited, and the process they belong to (a forked child keeps none).
static SPARE: Mutex<Option<(u64, Vec<Arc<Driver>>)>> = Mutex::new(None);

/// A thread's driver, given back when the thread exits.
struct ThreadDriver {
    generation: u64,
    driver: Option<Arc<Driver>>,
}

impl Drop for ThreadDriver {
    fn drop(&mut self) {
        let Some(driver) = self.driver.take() else {
            return;
        };
        if self.generation != crate::fork::generation() {
            // A forked child's copy of its parent's driver: its sockets and its epoll instance are the parent's.
            std::mem::forget(driver);
            return;
        }
        // Kept by a stream or watch that another thread may still read: it stays with them.
        if Arc::strong_count(&driver) > 1 {
            return;
        }
        if let Ok(mut spare) = SPARE.lock() {
            if let Some((owner, drivers)) = spare.as_mut() {
                if *owner == self.generation && drivers.len() < SPARE_DRIVERS {
                    drivers.push(driver);
                    return;
                }
            }
        }
        if let Ok(driver) = Arc::try_unwrap(driver) {
            // Nothing of it runs now (no thread drives it): its tasks and connections are dropped at once.
            driver.runtime.shutdown_background();
        }
    }
}

thread_local! {
    static THREAD_DRIVER: RefCell<Option<ThreadDriver>> = const { RefCell::new(None) };
}

/// A spare driver of this process, or a new one.
fn take_driver(generation: u64) -> PyResult<Arc<Driver>> {
    if let Ok(mut spare) = SPARE.lock() {
        if spare
            .as_ref()
            .is_some_and(|(owner, _)| *owner != generation)
        {
            // The parent's, in a forked child: not ours to run or to drop.
            std::mem::forget(spare.take());
        }
        let (_, drivers) = spare.get_or_insert_with(|| (generation, Vec::new()));
        if let Some(driver) = drivers.pop() {
            return Ok(driver);
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| internal_error(&format!("cannot start this thread's I/O runtime: {err}")))?;
    Ok(Arc::new(Driver {
        runtime,
        context: inferencekey_core::IoContext::new(),
    }))
}

/// This thread's driver, taken on first use (and again in a forked child), on which its blocking calls run.
/// Another thread may drive it too (`wait_with`), which tokio allows: one thread at a time runs its tasks.
pub fn thread_driver() -> PyResult<Arc<Driver>> {
    if let Some(driver) = existing_thread_driver() {
        return Ok(driver);
    }
    let generation = crate::fork::generation();
    let driver = take_driver(generation)?;
    // A stale one (the parent's, in a forked child) is forgotten by its own drop.
    THREAD_DRIVER.with(|slot| {
        *slot.borrow_mut() = Some(ThreadDriver {
            generation,
            driver: Some(Arc::clone(&driver)),
        });
    });
    Ok(driver)
}

/// This thread's driver if it has one (in this process).
pub fn existing_thread_driver() -> Option<Arc<Driver>> {
    let generation = crate::fork::generation();
    THREAD_DRIVER.with(|slot| match slot.borrow().as_ref() {
        Some(ThreadDriver {
            generation: owner,
            driver: Some(driver),
        }) if *owner == generation => Some(Arc::clone(driver)),
        _ => None,
    })
}

/// Scheduler rounds `settle` gives a runtime: one runs an aborted task's cancellation, which drops its response;
/// the next runs the connection's task, which then closes the socket.
const SETTLE_ROUNDS: usize = 3;

/// Let `rt` run what is ready now, without waiting for anything: a thread's runtime runs its tasks only while
/// a thread drives it, so a request or stream dropped between calls (closed, interrupted, collected) closes its
/// connection only once the runtime runs again. Does nothing inside a runtime (whose own thread drives it).
pub fn settle(driver: &Driver) {
    if tokio::runtime::Handle::try_current().is_ok() {
        return;
    }
    driver.block_on(async {
        for _ in 0..SETTLE_ROUNDS {
            tokio::task::yield_now().await;
        }
    });
}

/// Let this thread's driver and every spare one run what is ready (a client closed: connections of its dropped
/// pools close once their runtime runs). Drivers of other live threads run at their next call.
pub fn settle_idle() {
    if let Some(driver) = existing_thread_driver() {
        settle(&driver);
    }
    let spares: Vec<Arc<Driver>> = match SPARE.lock() {
        Ok(spare) => match spare.as_ref() {
            Some((owner, drivers)) if *owner == crate::fork::generation() => drivers.clone(),
            _ => Vec::new(),
        },
        Err(_) => Vec::new(),
    };
    for driver in spares {
        settle(&driver);
    }
}

/// The text of a panic payload.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".to_owned())
}

/// `wait_with` for a future that may read on the core's direct path (a unary request, a direct stream's next
/// batch): it is first polled once with blocking allowed, so such a read runs to its end on this thread.
pub fn wait_direct<F, T>(py: Python<'_>, home: Home<'_>, future: F) -> PyResult<T>
where
    F: Future<Output = inferencekey_core::Result<T>> + Send,
    T: Send,
{
    wait_with(py, home, future, true)
}

/// Drive `future` to its end on this thread, on the runtime of `home` (the runtime whose tasks the future waits
/// for: its own thread's, or the thread's that opened a stream), without holding the interpreter lock.
///
/// Every `SIGNAL_TICK` it re-attaches to run Python's signal handlers; when one raises (KeyboardInterrupt), the
/// future is dropped, which cancels the request and closes its connection, and the exception propagates. A
/// panic inside the future becomes an `InferenceKeyError`, never a `PanicException`.
///
/// With `blocking_first`, the future is first polled once with blocking requests allowed and outside any runtime (a
/// unary call: its request, on the direct path, runs to its end in that poll, on this thread, with no runtime
/// involved or built); a request the pool sends asks for the runtime in that poll and goes on there.
fn wait_with<F, T>(py: Python<'_>, home: Home<'_>, future: F, blocking_first: bool) -> PyResult<T>
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
    if blocking_first {
        let (polled, _wants_runtime) = py.detach(|| {
            inferencekey_core::direct::blocking_scope(interrupted, || {
                future
                    .as_mut()
                    .poll(&mut Context::from_waker(Waker::noop()))
            })
        });
        if let Poll::Ready(outcome) = polled {
            drop(future);
            let interruption = INTERRUPTION.with(|slot| slot.borrow_mut().take());
            logs::drain(py)?;
            if let Some(interrupted) = interruption {
                return Err(interrupted);
            }
            return caught(py, outcome);
        }
        // The pool's request (it asked for a runtime), or a wait only a runtime ends: it goes on below.
    }
    let owned;
    let driver = match home {
        Home::Of(driver) => driver,
        Home::ThisThread => {
            owned = thread_driver()?;
            &*owned
        }
    };
    loop {
        let polled = py.detach(|| {
            driver.block_on(async { tokio::time::timeout(SIGNAL_TICK, &mut future).await })
        });
        // The records the call logged on I/O threads are emitted here, before its result. A Ctrl+C that lands
        // while they are emitted ends the wait like one seen by `check_signals` (dropping the future cancels it).
        logs::drain(py)?;
        match polled {
            Ok(outcome) => return caught(py, outcome),
            Err(_tick) => {
                if let Err(interrupted) = py.check_signals() {
                    // The request is dropped here; its connection closes once the runtime runs again.
                    drop(future);
                    settle(driver);
                    return Err(interrupted);
                }
            }
        }
    }
}

/// The result of a call whose panic was caught: a panic becomes an `InferenceKeyError`.
fn caught<T>(
    py: Python<'_>,
    outcome: std::thread::Result<inferencekey_core::Result<T>>,
) -> PyResult<T> {
    match outcome {
        Ok(result) => result.map_err(|err| to_pyerr(py, err)),
        Err(payload) => Err(internal_error(&format!(
            "the request panicked: {}",
            panic_message(payload.as_ref())
        ))),
    }
}

/// A finished call's value, converted into Python when the receiving thread holds the interpreter.
type Convert = Box<dyn FnOnce(Python<'_>) -> PyResult<Py<PyAny>> + Send>;

/// Turns the value of a core call into its Python object.
pub type ToPy<T> = for<'py> fn(Python<'py>, T) -> PyResult<Bound<'py, PyAny>>;

/// The core future of a call, its value still to convert.
pub(crate) type CallFuture =
    Pin<Box<dyn Future<Output = inferencekey_core::Result<Convert>> + Send>>;

/// One core call, prepared from converted arguments.
pub struct Call {
    future: CallFuture,
    /// One unary request: a blocking wait may run it on the direct path.
    unary: bool,
    /// A call that waits for nothing but the direct path (a request, a direct stream's batches): an event loop's
    /// thread may run it.
    on_loop: bool,
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
            unary: false,
            on_loop: false,
        }
    }

    /// The call of `future`, one unary request (nothing else waited for, no other request made), whose value
    /// `to_py` converts: a sync wait runs its request on the calling thread, without a runtime, where the core's
    /// direct path applies.
    pub fn unary<F, T>(future: F, to_py: ToPy<T>) -> Self
    where
        F: Future<Output = inferencekey_core::Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        Self {
            unary: true,
            ..Self::new(future, to_py)
        }
    }

    /// This call, allowed (`allowed`) to run on its event loop's thread: it waits for nothing but the core's direct
    /// path, which suspends it there, or it hands itself to the I/O runtime (a request the pool sends).
    pub fn on_loop(self, allowed: bool) -> Self {
        Self {
            on_loop: allowed,
            ..self
        }
    }

    /// Run the call on this thread and return its Python result.
    pub fn wait(self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.wait_at(py, Home::ThisThread)
    }

    /// Run the call on this thread, driving `driver`, and return its Python result.
    pub fn wait_on(self, py: Python<'_>, driver: &Driver) -> PyResult<Py<PyAny>> {
        self.wait_at(py, Home::Of(driver))
    }

    fn wait_at(self, py: Python<'_>, home: Home<'_>) -> PyResult<Py<PyAny>> {
        let convert = wait_with(py, home, self.future, self.unary)?;
        convert(py)
    }

    /// Run the call for the asyncio `future`. A request that may run on the event loop's thread (`waker` given:
    /// a loop that watches descriptors) starts there, and its `LoopCall` is returned, to be closed if the await is
    /// cancelled; any other call runs on the I/O runtime, and its outcome resolves `future` through `waker`, else
    /// through the resolver thread (cancelling `future` aborts it).
    pub fn start(
        self,
        future: &Bound<'_, PyAny>,
        waker: Option<&LoopWaker>,
    ) -> PyResult<Option<Py<LoopCall>>> {
        let py = future.py();
        logs::refresh_level(py);
        if let (true, Some(waker)) = (self.on_loop, waker) {
            return LoopCall::begin(self.future, future, waker).map(Some);
        }
        let route = match waker {
            Some(waker) => Route::Loop(Arc::clone(&waker.queue)),
            None => Route::Resolver {
                event_loop: future.call_method0("get_loop")?.unbind(),
                resolver: resolver()?,
            },
        };
        let task = spawn(self.future, future.clone().unbind(), route)?;
        let abort = AbortOnCancel {
            handle: task.clone(),
        };
        if let Err(err) = future.call_method1("add_done_callback", (abort,)) {
            task.abort();
            return Err(err);
        }
        Ok(None)
    }
}

/// Run `call` on the I/O runtime; its outcome (whatever ends the task) resolves `future` through `route`.
pub(crate) fn spawn(call: CallFuture, future: Py<PyAny>, route: Route) -> PyResult<AbortHandle> {
    let completion = Completion {
        future,
        outcome: None,
    };
    let task = runtime()?.spawn(async move {
        // Dropped with the task, however it ends: a panic or an abort still resolves the future.
        let mut guard = Resolving {
            completion: Some(completion),
            route: Some(route),
        };
        let outcome = match AssertUnwindSafe(call).catch_unwind().await {
            Ok(result) => Outcome::Done(result),
            Err(payload) => Outcome::Panicked(panic_message(payload.as_ref())),
        };
        guard.finish(outcome);
    });
    Ok(task.abort_handle())
}

/// How a spawned call ended.
pub(crate) enum Outcome {
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
pub(crate) struct Completion {
    future: Py<PyAny>,
    outcome: Option<Outcome>,
}

impl Completion {
    /// `outcome`, on its way to `future`.
    pub(crate) fn new(future: Py<PyAny>, outcome: Outcome) -> Self {
        Self {
            future,
            outcome: Some(outcome),
        }
    }

    /// Set the outcome on the future (on its loop's thread), unless the future was cancelled.
    pub(crate) fn settle(self, py: Python<'_>) -> PyResult<()> {
        let future = self.future.bind(py);
        if future.call_method0("cancelled")?.is_truthy()? {
            return Ok(());
        }
        match self.outcome.unwrap_or(Outcome::Dropped).into_py(py) {
            Ok(value) => future.call_method1("set_result", (value,))?,
            Err(err) => future.call_method1("set_exception", (err.into_value(py),))?,
        };
        Ok(())
    }
}

/// Settle every completion, even when one fails (its loop then sees the first failure).
pub(crate) fn settle_all(py: Python<'_>, completions: Vec<Completion>) -> PyResult<()> {
    let mut first_failure = None;
    for completion in completions {
        if let Err(err) = completion.settle(py) {
            first_failure.get_or_insert(err);
        }
    }
    first_failure.map_or(Ok(()), Err)
}

/// What the resolver thread is handed: an outcome to deliver to a loop, or log records to emit.
pub(crate) enum Message {
    Completed(Py<PyAny>, Completion),
    Logged,
}

/// How a finished call reaches its loop.
pub(crate) enum Route {
    /// The loop's own queue and wake-up socket.
    Loop(Arc<LoopQueue>),
    /// The resolver thread, which schedules the settling on `event_loop`.
    Resolver {
        event_loop: Py<PyAny>,
        resolver: Sender<Message>,
    },
}

/// Sends the completion on its route when the task finishes, or when it is dropped unfinished.
struct Resolving {
    completion: Option<Completion>,
    route: Option<Route>,
}

impl Resolving {
    fn finish(&mut self, outcome: Outcome) {
        let (Some(mut completion), Some(route)) = (self.completion.take(), self.route.take())
        else {
            return;
        };
        completion.outcome = Some(outcome);
        match route {
            Route::Loop(queue) => queue.push(completion),
            // The resolver lives as long as the process; a failed send means the interpreter is going away.
            Route::Resolver {
                event_loop,
                resolver,
            } => drop(resolver.send(Message::Completed(event_loop, completion))),
        }
    }
}

impl Drop for Resolving {
    fn drop(&mut self) {
        self.finish(Outcome::Dropped);
    }
}

/// The resolver's queue and the process generation that started it (a forked child starts its own).
static RESOLVER: Mutex<Option<(u64, Sender<Message>)>> = Mutex::new(None);

/// The queue of the resolver thread, started on first use; None if the thread cannot be started. Touches no
/// Python object, so any thread may call it.
fn resolver_queue() -> Option<Sender<Message>> {
    let generation = crate::fork::generation();
    let mut slot = RESOLVER.lock().ok()?;
    if let Some((owner, sender)) = slot.as_ref() {
        if *owner == generation {
            return Some(sender.clone());
        }
    }
    let (sender, receiver) = channel();
    std::thread::Builder::new()
        .name("inferencekey-resolve".to_owned())
        .spawn(move || resolve_forever(&receiver))
        .ok()?;
    *slot = Some((generation, sender.clone()));
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
            if let Message::Completed(event_loop, completion) = message {
                batch.push((event_loop, completion));
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

/// Schedule a `Settle` on each event loop with the completions that belong to it.
fn hand_over(py: Python<'_>, mut batch: Vec<(Py<PyAny>, Completion)>) {
    while let Some((first, _)) = batch.first() {
        let event_loop = first.clone_ref(py);
        let (mine, rest): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .partition(|(owner, _)| owner.is(&event_loop));
        batch = rest;
        let settle = Settle {
            completions: Mutex::new(mine.into_iter().map(|(_, c)| c).collect()),
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
        settle_all(py, completions)?;
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

    /// Run the call and resolve `future` (from `loop.create_future()`) with its result: a request on the loop's
    /// thread (returning its `LoopCall`, to close if the await ends otherwise), anything else on the I/O runtime,
    /// through `waker` (the `LoopWaker` of the future's loop) when given.
    #[pyo3(signature = (future, waker=None))]
    fn start(
        &self,
        future: &Bound<'_, PyAny>,
        waker: Option<PyRef<'_, LoopWaker>>,
    ) -> PyResult<Option<Py<LoopCall>>> {
        self.take()?.start(future, waker.as_deref())
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
