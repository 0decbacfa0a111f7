//! The native module `inferencekey._core`: a thin PyO3 binding of `inferencekey-core` (clients) and
//! `inferencekey-local` (the embedded platform). Conversions and error mapping only; no behaviour.

// The core's `Error` is large on purpose (structured fields); errors are the cold path.
#![allow(clippy::result_large_err)]

mod clients;
mod convert;
mod errors;
mod local;
mod runtime;

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
    // Rust `log` records of our crates reach Python's `logging` under the `inferencekey` logger
    // (e.g. `inferencekey.inferencekey_core.control`). Levels are not cached, so a change of level
    // in Python (or pytest's caplog) takes effect at once. A second import in one process (e.g. a
    // sub-interpreter) finds a logger installed already, which is fine.
    let _ = pyo3_log::Logger::new(m.py(), pyo3_log::Caching::Loggers)?
        .filter(log::LevelFilter::Off)
        .filter_target("inferencekey_core".to_owned(), log::LevelFilter::Trace)
        .filter_target("inferencekey_local".to_owned(), log::LevelFilter::Trace)
        .set_prefix("inferencekey")
        .install();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(redact, m)?)?;
    m.add_function(wrap_pyfunction!(canonical_slug, m)?)?;
    m.add_class::<clients::ManagementClient>()?;
    m.add_class::<clients::ReadinessWatch>()?;
    m.add_class::<clients::DataClient>()?;
    m.add_class::<clients::Endpoint>()?;
    m.add_class::<clients::ChatStream>()?;
    m.add_class::<runtime::Outcome>()?;
    m.add_class::<local::LocalPlatform>()?;
    Ok(())
}
