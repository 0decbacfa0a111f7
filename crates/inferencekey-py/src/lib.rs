//! The native module `inferencekey._core`: a thin PyO3 binding of `inferencekey-core` (clients) and
//! `inferencekey-local` (the embedded platform). It converts and waits; it decides nothing (every rule, bound
//! and message is the core's). See README.md beside this crate for the seam's conventions.
//!
//! The seam, in one place:
//! - Results: the surface hands its result classes over once at import (`register_result_types`); the binding
//!   builds instances of them by field name (`results`), never tuples unpacked by position, and never imports
//!   surface modules. Fields nobody reads (`raw`, `embeddings`) stay as the bytes received until first read.
//! - Errors: raised only through the kind-to-class table of `errors` (classes owned by `inferencekey.exceptions`).
//! - Operations: each is one method returning a `Pending` call; sync code `wait()`s it on the calling thread
//!   with the interpreter released, async code `start(future)`s it on the I/O runtime (`runtime`).
//!
//! Modules read top-down, each using only those above it: json, logs, results, errors, runtime, args, batch,
//! clients (what the client classes share), stream, data, management, local, manifest.

// The core's `Error` is large on purpose (structured fields); errors are the cold path.
#![allow(clippy::result_large_err)]

mod args;
mod batch;
mod clients;
mod data;
mod errors;
mod event_loop;
mod fork;
mod json;
mod local;
mod logs;
mod management;
mod manifest;
mod results;
mod runtime;
mod stream;

use pyo3::prelude::*;

/// Return `text` with every ik_sdk_/ik_live_ token shortened to its prefix and id.
#[pyfunction]
fn redact(text: &str) -> String {
    inferencekey_core::redact(text)
}

/// The platform's canonical form of a slug (may be empty).
#[pyfunction]
fn canonical_slug(raw: &str) -> String {
    inferencekey_core::canonical_slug(raw)
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    fork::register();
    // Rust `log` records of our crates reach Python's `logging` under the `inferencekey` logger (e.g.
    // `inferencekey.inferencekey_core.control`), queued so that no I/O thread waits for the interpreter.
    logs::install(runtime::wake_resolver);
    // From interpreter exit on, no thread of ours attaches (see `runtime::_interpreter_exiting`).
    let exiting = wrap_pyfunction!(runtime::_interpreter_exiting, m)?;
    m.py()
        .import("atexit")?
        .call_method1("register", (exiting,))?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("DEFAULT_BATCH_SIZE", inferencekey_core::DEFAULT_BATCH_SIZE)?;
    m.add("MAX_SSE_EVENT_BYTES", inferencekey_core::MAX_EVENT_BYTES)?;
    m.add(
        "DEFAULT_MAX_CONCURRENCY",
        inferencekey_core::DEFAULT_MAX_CONCURRENCY,
    )?;
    m.add_function(wrap_pyfunction!(redact, m)?)?;
    m.add_function(wrap_pyfunction!(logs::log_level_from_env, m)?)?;
    m.add_function(wrap_pyfunction!(canonical_slug, m)?)?;
    m.add_function(wrap_pyfunction!(manifest::load_manifest, m)?)?;
    m.add_function(wrap_pyfunction!(manifest::spec_fields, m)?)?;
    m.add_function(wrap_pyfunction!(data::chat_option_names, m)?)?;
    m.add_function(wrap_pyfunction!(local::_local_client_certificate, m)?)?;
    m.add_function(wrap_pyfunction!(results::register_result_types, m)?)?;
    m.add_function(wrap_pyfunction!(results::result_fields, m)?)?;
    m.add_function(wrap_pyfunction!(runtime::_panicking_call, m)?)?;
    m.add_class::<runtime::Pending>()?;
    m.add_class::<event_loop::LoopWaker>()?;
    m.add_class::<event_loop::LoopCall>()?;
    m.add_class::<results::RawJson>()?;
    m.add_class::<results::Vectors>()?;
    m.add_class::<management::ManagementClient>()?;
    m.add_class::<management::Ensured>()?;
    m.add_class::<management::ReadinessWatch>()?;
    m.add_class::<data::DataClient>()?;
    m.add_class::<data::Endpoint>()?;
    m.add_class::<stream::OpenStream>()?;
    m.add_class::<stream::ChatStream>()?;
    m.add_class::<stream::ChunkBatch>()?;
    m.add_class::<batch::EmbedJob>()?;
    m.add_class::<batch::DoneBatch>()?;
    m.add_class::<local::LocalPlatform>()?;
    Ok(())
}
