//! Rust `log` records of our crates reach Python's `logging` without an I/O thread ever waiting for the
//! interpreter lock: `log()` only queues the record (and wakes the resolver thread); records are emitted by a
//! thread that holds the interpreter anyway. A sync call drains the queue while it waits and before it returns,
//! so the records of a call are logged before its result; the event loop drains when it settles outcomes.
//!
//! Records go to the logger `inferencekey.<target>` with `::` as `.` (e.g.
//! `inferencekey.inferencekey_core.control`), so configuring the `inferencekey` logger configures them all.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyAnyMethods;

/// Targets whose records are forwarded.
const TARGETS: [&str; 2] = ["inferencekey_core", "inferencekey_local"];

/// Records kept at most while nobody drains (a process that logs without ever calling Python again);
/// past it the oldest go.
const MAX_QUEUED: usize = 10_000;

struct Record {
    target: String,
    level: log::Level,
    message: String,
}

static QUEUE: Mutex<VecDeque<Record>> = Mutex::new(VecDeque::new());

/// Called after a record is queued, from the thread that logged: wakes a thread that can emit it.
static WAKE: Mutex<Option<fn()>> = Mutex::new(None);

struct Bridge;

impl log::Log for Bridge {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        TARGETS.iter().any(|t| metadata.target().starts_with(t))
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let queued = Record {
            target: record.target().to_owned(),
            level: record.level(),
            message: record.args().to_string(),
        };
        if let Ok(mut queue) = QUEUE.lock() {
            if queue.len() == MAX_QUEUED {
                queue.pop_front();
            }
            queue.push_back(queued);
        }
        if let Some(wake) = WAKE.lock().ok().and_then(|wake| *wake) {
            wake();
        }
    }

    fn flush(&self) {}
}

static BRIDGE: Bridge = Bridge;

/// Install the bridge as the process's `log` logger; `wake` is called after each record is queued. A logger
/// installed already (another extension in the process) is left in place.
pub fn install(wake: fn()) {
    if let Ok(mut slot) = WAKE.lock() {
        *slot = Some(wake);
    }
    if log::set_logger(&BRIDGE).is_ok() {
        INSTALLED.store(true, Ordering::Relaxed);
        log::set_max_level(log::LevelFilter::Debug);
    }
}

/// Whether the bridge is the process's logger (so the level filter is ours to set).
static INSTALLED: AtomicBool = AtomicBool::new(false);

static INFERENCEKEY_LOGGER: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// Set the `log` level filter to what the `inferencekey` logger lets through now, so a record it would drop is
/// never formatted, queued or handed to Python (a debug line per request otherwise woke the resolver thread and
/// took the interpreter lock on every call). Called with the interpreter held at the start of every call, so a
/// level changed in between applies to the next call.
pub fn refresh_level(py: Python<'_>) {
    if !INSTALLED.load(Ordering::Relaxed) {
        return;
    }
    let level = INFERENCEKEY_LOGGER
        .get_or_try_init(py, || {
            py.import("logging")?
                .getattr("getLogger")?
                .call1(("inferencekey",))
                .map(Bound::unbind)
        })
        .and_then(|logger| {
            logger
                .bind(py)
                .call_method0("getEffectiveLevel")?
                .extract::<i64>()
        });
    let filter = match level {
        Ok(level) if level <= 5 => log::LevelFilter::Trace,
        Ok(level) if level <= 10 => log::LevelFilter::Debug,
        Ok(level) if level <= 20 => log::LevelFilter::Info,
        Ok(level) if level <= 30 => log::LevelFilter::Warn,
        Ok(level) if level <= 40 => log::LevelFilter::Error,
        Ok(_) => log::LevelFilter::Off,
        // Logging itself failing: keep everything, as before.
        Err(_) => log::LevelFilter::Debug,
    };
    if log::max_level() != filter {
        log::set_max_level(filter);
    }
}

static GET_LOGGER: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

fn python_level(level: log::Level) -> u8 {
    match level {
        log::Level::Error => 40,
        log::Level::Warn => 30,
        log::Level::Info => 20,
        log::Level::Debug => 10,
        log::Level::Trace => 5,
    }
}

/// Emit every queued record through Python's `logging` (on this thread, which holds the interpreter).
///
/// A failing handler does not fail the call (logging's own rule), but an exception that is not an `Exception`
/// propagates: Python runs a pending Ctrl+C handler inside any Python code, a logging call included, and swallowing
/// its `KeyboardInterrupt` here would leave the interrupted wait running.
pub fn drain(py: Python<'_>) -> PyResult<()> {
    loop {
        let next = QUEUE.lock().ok().and_then(|mut queue| queue.pop_front());
        let Some(record) = next else { return Ok(()) };
        if let Err(err) = emit(py, &record) {
            if !err.is_instance_of::<PyException>(py) {
                return Err(err);
            }
        }
    }
}

/// What `INFERENCEKEY_LOG` asks for, as the core reads it: `(level, None)` with Python's level number,
/// `(None, None)` when unset, or `(None, warning)` for a value the core refuses.
#[pyfunction]
pub fn log_level_from_env() -> (Option<u8>, Option<String>) {
    match inferencekey_core::log_level_from_env() {
        Ok(level) => (level.map(python_level), None),
        Err(warning) => (None, Some(warning)),
    }
}

fn emit(py: Python<'_>, record: &Record) -> PyResult<()> {
    let get_logger = GET_LOGGER.get_or_try_init(py, || {
        py.import("logging")?
            .getattr("getLogger")
            .map(Bound::unbind)
    })?;
    let name = format!("inferencekey.{}", record.target.replace("::", "."));
    let logger = get_logger.bind(py).call1((name,))?;
    logger.call_method1("log", (python_level(record.level), "%s", &record.message))?;
    Ok(())
}
