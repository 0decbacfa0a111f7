//! Calls settled on an asyncio event loop's own thread.
//!
//! Each loop that can watch a descriptor has one `LoopWaker`, which the loop watches as a whole
//! (`loop.add_reader(waker.fileno(), waker.drain)`): one poller of the loop's own (epoll, kqueue) holding
//!
//! - the socket pair through which the I/O runtime's threads wake the loop when calls they ran have finished
//!   (`LoopQueue::push`), and
//! - the sockets the requests run on the loop's thread (`LoopCall`) wait for.
//!
//! A `LoopCall` polls its request inside the core's loop scope, where the direct path never blocks: it goes as far
//! as the network allows and suspends, naming the socket and the deadline it waits for. The socket goes into the
//! poller (one system call, no Python object) and the deadline into a heap; one loop timer stands for the earliest
//! deadline, so a wait arms no timer of its own. When the socket is ready or the deadline passes, the loop calls
//! `drain` (or the timer's `Expire`), which polls the request again. Nothing here ever runs off the loop's thread.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use inferencekey_core::direct::Want;
use pyo3::prelude::*;
use tokio::task::AbortHandle;

use crate::errors::internal_error;
use crate::logs;
use crate::runtime::{panic_message, settle_all, spawn, CallFuture, Completion, Outcome, Route};

/// Most ready sockets taken from the poller per `drain` (the rest come at the next one).
const READY_BATCH: usize = 256;

/// Lock a mutex of this module (poisoned only if a thread panicked while holding it).
fn locked<T>(mutex: &Mutex<T>) -> PyResult<MutexGuard<'_, T>> {
    mutex
        .lock()
        .map_err(|_| internal_error("an event loop's lock was poisoned"))
}

/// The outcomes finished for one event loop by the I/O runtime, the socket pair that wakes it, and what the
/// requests on its thread wait for.
pub struct LoopQueue {
    pending: Mutex<Vec<Completion>>,
    #[cfg(unix)]
    wake: std::os::unix::net::UnixStream,
    #[cfg(unix)]
    watched: std::os::unix::net::UnixStream,
    reactor: Mutex<Reactor>,
}

impl LoopQueue {
    /// Queue a finished call (on an I/O thread); the first outcome of an empty queue wakes the loop with one
    /// byte. The loop's reader reads the bytes before it takes the queue, so no outcome is ever left unseen.
    pub(crate) fn push(&self, completion: Completion) {
        let Ok(mut pending) = self.pending.lock() else {
            return;
        };
        let was_empty = pending.is_empty();
        pending.push(completion);
        drop(pending);
        if was_empty {
            #[cfg(unix)]
            {
                use std::io::Write as _;
                // Non-blocking: a full socket already holds bytes the loop has yet to read.
                let _ = (&self.wake).write(&[1]);
            }
        }
    }

    /// Make sure a loop timer stands for the earliest deadline (re-armed only when an earlier one came).
    fn arm(self: &Arc<Self>, event_loop: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = event_loop.py();
        let mut reactor = locked(&self.reactor)?;
        let Some(next) = reactor.next_deadline() else {
            return Ok(());
        };
        if reactor.armed.as_ref().is_some_and(|(at, _)| *at <= next) {
            return Ok(());
        }
        if let Some((_, stale)) = reactor.armed.take() {
            stale.bind(py).call_method0("cancel")?;
        }
        let expire = Expire {
            queue: Arc::downgrade(self),
            event_loop: event_loop.clone().unbind(),
        };
        let delay = next.saturating_duration_since(Instant::now()).as_secs_f64();
        let timer = event_loop.call_method1("call_later", (delay, expire))?;
        reactor.armed = Some((next, timer.unbind()));
        Ok(())
    }
}

/// A request waiting on the loop: the call, and the socket registered for it (none for a plain deadline).
struct Waiter {
    call: Py<LoopCall>,
    fd: Option<i32>,
}

/// The poller and deadlines of one loop's requests. Tokens are never reused, so a deadline left in the heap after
/// its request went on (the heap is pruned, not searched) matches no waiter.
struct Reactor {
    poll: mio::Poll,
    events: mio::Events,
    next: usize,
    waiting: HashMap<usize, Waiter>,
    deadlines: BinaryHeap<Reverse<(Instant, usize)>>,
    /// The loop timer armed for the earliest deadline, and that deadline.
    armed: Option<(Instant, Py<PyAny>)>,
}

/// The poller's token of the wake-up socket.
const WAKE: mio::Token = mio::Token(0);

impl Reactor {
    /// A reactor on `poll` (which watches the wake-up socket as `WAKE`).
    fn new(poll: mio::Poll) -> Self {
        Self {
            poll,
            events: mio::Events::with_capacity(READY_BATCH),
            next: WAKE.0 + 1,
            waiting: HashMap::new(),
            deadlines: BinaryHeap::new(),
            armed: None,
        }
    }

    /// Let `call` wait for `fd` (readable, or writable with `write`; None: only the deadline) until `until`.
    fn watch(
        &mut self,
        call: Py<LoopCall>,
        fd: Option<i64>,
        write: bool,
        until: Instant,
    ) -> PyResult<usize> {
        let fd = fd
            .map(|fd| i32::try_from(fd).map_err(|_| internal_error("a descriptor out of range")))
            .transpose()?;
        let token = self.next;
        self.next += 1;
        if let Some(fd) = fd {
            self.register(fd, write, token)?;
        }
        self.waiting.insert(token, Waiter { call, fd });
        self.deadlines.push(Reverse((until, token)));
        if self.deadlines.len() > 64 + 2 * self.waiting.len() {
            // Deadlines of requests that went on long before them: dropped, so the heap stays the size of the
            // waits in progress.
            let waiting = &self.waiting;
            self.deadlines
                .retain(|Reverse((_, token))| waiting.contains_key(token));
        }
        Ok(token)
    }

    #[cfg(unix)]
    fn register(&self, fd: i32, write: bool, token: usize) -> PyResult<()> {
        let interest = if write {
            mio::Interest::WRITABLE
        } else {
            mio::Interest::READABLE
        };
        self.poll
            .registry()
            .register(&mut mio::unix::SourceFd(&fd), mio::Token(token), interest)
            .map_err(|err| internal_error(&format!("cannot watch a connection: {err}")))
    }

    #[cfg(not(unix))]
    fn register(&self, _fd: i32, _write: bool, _token: usize) -> PyResult<()> {
        Err(internal_error("sockets are watched on Unix only"))
    }

    /// The request waiting under `token`, no longer waiting (its socket out of the poller); None if it was not.
    fn forget(&mut self, token: usize) -> Option<Py<LoopCall>> {
        let waiter = self.waiting.remove(&token)?;
        #[cfg(unix)]
        if let Some(fd) = waiter.fd {
            // The socket is still open: a request forgets its wait before anything can close it.
            let _ = self
                .poll
                .registry()
                .deregister(&mut mio::unix::SourceFd(&fd));
        }
        Some(waiter.call)
    }

    /// The requests whose socket is ready, no longer waiting.
    fn ready(&mut self) -> Vec<Py<LoopCall>> {
        if self
            .poll
            .poll(&mut self.events, Some(Duration::ZERO))
            .is_err()
        {
            return Vec::new();
        }
        let tokens: Vec<usize> = self
            .events
            .iter()
            .map(|event| event.token().0)
            .filter(|&token| token != WAKE.0)
            .collect();
        tokens
            .into_iter()
            .filter_map(|token| self.forget(token))
            .collect()
    }

    /// The requests whose deadline is `now` or past, no longer waiting.
    fn due(&mut self, now: Instant) -> Vec<Py<LoopCall>> {
        let mut due = Vec::new();
        while let Some(&Reverse((until, token))) = self.deadlines.peek() {
            if until > now {
                break;
            }
            self.deadlines.pop();
            due.extend(self.forget(token));
        }
        due
    }

    /// The earliest deadline of a request still waiting.
    fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(&Reverse((until, token))) = self.deadlines.peek() {
            if self.waiting.contains_key(&token) {
                return Some(until);
            }
            self.deadlines.pop();
        }
        None
    }
}

/// The loop timer of the earliest deadline: polls every request whose deadline passed, then re-arms.
#[pyclass(module = "inferencekey._core", frozen)]
struct Expire {
    queue: Weak<LoopQueue>,
    event_loop: Py<PyAny>,
}

#[pymethods]
impl Expire {
    fn __call__(&self, py: Python<'_>) -> PyResult<()> {
        let Some(queue) = self.queue.upgrade() else {
            return Ok(());
        };
        let due = {
            let mut reactor = locked(&queue.reactor)?;
            reactor.armed = None;
            reactor.due(Instant::now())
        };
        // Every due request is polled, even when one fails to settle (the first failure is raised after).
        let resumed = resume_all(py, due);
        queue.arm(self.event_loop.bind(py))?;
        resumed
    }
}

/// Poll each of `calls` again, even when one fails to settle; the first failure.
fn resume_all(py: Python<'_>, calls: Vec<Py<LoopCall>>) -> PyResult<()> {
    let mut first_failure = None;
    for call in calls {
        if let Err(err) = LoopCall::resume(call.bind(py)) {
            first_failure.get_or_insert(err);
        }
    }
    first_failure.map_or(Ok(()), Err)
}

/// Where a call run on its event loop's thread stands.
struct LoopState {
    /// The call, while it is suspended between polls.
    call: Option<CallFuture>,
    /// Its wait in the loop's reactor.
    token: Option<usize>,
    /// The task, once the call was handed to the I/O runtime.
    spawned: Option<AbortHandle>,
}

/// A request run on its event loop's thread, with nothing blocking: each poll goes as far as the network allows,
/// then the request waits in the loop's reactor for its socket or its deadline, and is polled again then. No other
/// thread is involved. A request the direct path does not serve (TLS, a proxy) is handed to the I/O runtime at its
/// first poll, and settles through the loop's queue.
#[pyclass(module = "inferencekey._core", frozen)]
pub struct LoopCall {
    future: Py<PyAny>,
    event_loop: Py<PyAny>,
    /// The loop's queue and reactor: kept alive by the loop's `LoopWaker`, not by its calls.
    queue: Weak<LoopQueue>,
    state: Mutex<LoopState>,
}

impl LoopCall {
    /// Start `call` on the loop of `future` (whose `LoopWaker` is `waker`): its first poll runs now.
    pub(crate) fn begin(
        call: CallFuture,
        future: &Bound<'_, PyAny>,
        waker: &LoopWaker,
    ) -> PyResult<Py<LoopCall>> {
        let call = Bound::new(
            future.py(),
            LoopCall {
                future: future.clone().unbind(),
                event_loop: future.call_method0("get_loop")?.unbind(),
                queue: Arc::downgrade(&waker.queue),
                state: Mutex::new(LoopState {
                    call: Some(call),
                    token: None,
                    spawned: None,
                }),
            },
        )?;
        LoopCall::step(&call)?;
        Ok(call.unbind())
    }

    fn queue(&self) -> PyResult<Arc<LoopQueue>> {
        self.queue
            .upgrade()
            .ok_or_else(|| internal_error("the request's event loop is gone"))
    }

    /// Take the request out of the reactor, if it waits there.
    fn unwatch(&self, state: &mut LoopState) {
        if let (Some(token), Some(queue)) = (state.token.take(), self.queue.upgrade()) {
            if let Ok(mut reactor) = queue.reactor.lock() {
                drop(reactor.forget(token));
            }
        }
    }

    /// Poll again (what the request waited for came); a failure settles its future.
    fn resume(slf: &Bound<'_, Self>) -> PyResult<()> {
        let Err(err) = Self::step(slf) else {
            return Ok(());
        };
        let py = slf.py();
        let this = slf.get();
        // Nothing polls it any more: the request is dropped (closing its connection) and the await fails.
        let _ = this.close();
        let future = this.future.bind(py);
        if !future.call_method0("done")?.is_truthy()? {
            future.call_method1("set_exception", (err.into_value(py),))?;
        }
        Ok(())
    }

    /// Poll the call once on this thread (the interpreter released), and settle it, let it wait, or hand it to the
    /// runtime.
    fn step(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let mut call = {
            let mut state = locked(&this.state)?;
            this.unwatch(&mut state);
            match state.call.take() {
                Some(call) => call,
                // Closed, or handed to the runtime.
                None => return Ok(()),
            }
        };
        let (polled, want) = py.detach(|| {
            inferencekey_core::direct::loop_scope(|| {
                std::panic::catch_unwind(AssertUnwindSafe(|| {
                    call.as_mut().poll(&mut Context::from_waker(Waker::noop()))
                }))
            })
        });
        let outcome = match polled {
            Ok(Poll::Ready(result)) => Outcome::Done(result),
            Err(payload) => Outcome::Panicked(panic_message(payload.as_ref())),
            Ok(Poll::Pending) => return this.suspend(slf, call, want),
        };
        // The call ends here: its connection is back in the pool, or closed.
        drop(call);
        Completion::new(this.future.clone_ref(py), outcome).settle(py)?;
        logs::drain(py)
    }

    /// Keep the suspended `call` until what it waits for comes, or hand it to the runtime.
    fn suspend(&self, slf: &Bound<'_, Self>, call: CallFuture, want: Option<Want>) -> PyResult<()> {
        let py = slf.py();
        let queue = self.queue()?;
        let (fd, write, until) = match want {
            Some(Want::Socket { fd, write, until }) => (Some(fd), write, until),
            Some(Want::Time { until }) => (None, false, until),
            // The pool's request (or a wait of the runtime's kind): it goes on there.
            Some(Want::Runtime) | None => {
                let task = spawn(call, self.future.clone_ref(py), Route::Loop(queue))?;
                locked(&self.state)?.spawned = Some(task);
                return Ok(());
            }
        };
        let mut state = locked(&self.state)?;
        state.call = Some(call);
        let token = locked(&queue.reactor)?.watch(slf.clone().unbind(), fd, write, until)?;
        state.token = Some(token);
        drop(state);
        queue.arm(self.event_loop.bind(py))
    }
}

#[pymethods]
impl LoopCall {
    /// The Python objects it holds, for the garbage collector: a task dropped while its request waits (its loop
    /// closed) forms a cycle through this call (task, coroutine, call, future), which the collector can then free,
    /// closing the connection.
    fn __traverse__(&self, visit: pyo3::PyVisit<'_>) -> Result<(), pyo3::PyTraverseError> {
        visit.call(&self.future)?;
        visit.call(&self.event_loop)
    }

    /// Stop the request (its await was cancelled or failed): its connection is closed, and the runtime's task, if
    /// it was handed there, aborted.
    fn close(&self) -> PyResult<()> {
        let mut state = locked(&self.state)?;
        self.unwatch(&mut state);
        let call = state.call.take();
        if let Some(task) = state.spawned.take() {
            task.abort();
        }
        drop(state);
        drop(call);
        Ok(())
    }
}

/// The wake-up of one asyncio event loop: the loop watches `fileno()` (`loop.add_reader(fileno, drain)`) and
/// `drain()` settles the outcomes the I/O threads queued for it and polls the requests on its thread whose socket
/// is ready. Unix only: elsewhere the constructor raises `NotImplementedError` and calls go through the resolver
/// thread. Only the loop's reader holds it (the SDK keeps a weak reference), so a closed loop releases it, and with
/// it the requests still waiting there.
#[pyclass(module = "inferencekey._core", frozen, weakref)]
pub struct LoopWaker {
    pub(crate) queue: Arc<LoopQueue>,
    /// The poller's descriptor, which the loop watches.
    fileno: i64,
}

#[pymethods]
impl LoopWaker {
    #[new]
    fn new() -> PyResult<Self> {
        #[cfg(unix)]
        {
            use std::os::fd::AsRawFd as _;
            let failed = |err: std::io::Error| {
                internal_error(&format!("cannot make a loop's poller: {err}"))
            };
            let (wake, watched) = std::os::unix::net::UnixStream::pair().map_err(failed)?;
            wake.set_nonblocking(true).map_err(failed)?;
            watched.set_nonblocking(true).map_err(failed)?;
            let poll = mio::Poll::new().map_err(failed)?;
            poll.registry()
                .register(
                    &mut mio::unix::SourceFd(&watched.as_raw_fd()),
                    WAKE,
                    mio::Interest::READABLE,
                )
                .map_err(failed)?;
            let fileno = i64::from(poll.as_raw_fd());
            Ok(Self {
                queue: Arc::new(LoopQueue {
                    pending: Mutex::new(Vec::new()),
                    wake,
                    watched,
                    reactor: Mutex::new(Reactor::new(poll)),
                }),
                fileno,
            })
        }
        #[cfg(not(unix))]
        {
            Err(pyo3::exceptions::PyNotImplementedError::new_err(
                "loop wake-up sockets are Unix only",
            ))
        }
    }

    /// The descriptor the loop watches for reading.
    fn fileno(&self) -> i64 {
        self.fileno
    }

    /// Settle every outcome queued for this loop and poll every request whose socket is ready (its reader
    /// callback, on the loop's thread).
    fn drain(&self, py: Python<'_>) -> PyResult<()> {
        let ready = locked(&self.queue.reactor)?.ready();
        #[cfg(unix)]
        {
            use std::io::Read as _;
            let mut bytes = [0_u8; 256];
            while matches!((&self.queue.watched).read(&mut bytes), Ok(n) if n > 0) {}
        }
        let completions = std::mem::take(&mut *locked(&self.queue.pending)?);
        let settled = settle_all(py, completions);
        let resumed = resume_all(py, ready);
        settled?;
        resumed?;
        // The records of these calls come before the awaiting tasks resume (as with `Settle`).
        logs::drain(py)
    }
}
