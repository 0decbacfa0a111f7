//! Core errors raised as the exception classes of `inferencekey.exceptions` (owned by Python), with their
//! structured attributes. The one kind-to-class table lives here: every exception the binding raises goes
//! through `to_pyerr`, its class chosen from the core's error kind and nothing else.

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyModule};

use inferencekey_core::{Error, ErrorBody, ErrorKind};

use crate::json::{value_to_py, NotJson};
use crate::results;

static EXCEPTIONS_MODULE: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

/// The exception class that stands for a core error kind.
fn class_name(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Configuration => "ConfigurationError",
        ErrorKind::Validation => "ValidationError",
        ErrorKind::Drift => "DriftError",
        ErrorKind::Auth => "AuthError",
        ErrorKind::PermissionDenied => "PermissionDenied",
        ErrorKind::Api => "ApiError",
        ErrorKind::Connection => "ApiConnectionError",
        ErrorKind::Timeout => "ApiTimeoutError",
        ErrorKind::WaitTimeout => "WaitTimeoutError",
    }
}

/// `inferencekey.exceptions`, imported once (outside any lock Python code could need).
fn exceptions(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    EXCEPTIONS_MODULE
        .get_or_try_init(py, || {
            py.import("inferencekey.exceptions").map(Bound::unbind)
        })
        .map(|module| module.bind(py))
}

/// Build the Python exception for a core error; a failure to build it becomes a RuntimeError.
pub fn to_pyerr(py: Python<'_>, err: Error) -> PyErr {
    build(py, &err).unwrap_or_else(|failure| failure)
}

fn build(py: Python<'_>, err: &Error) -> PyResult<PyErr> {
    let class = exceptions(py)?.getattr(class_name(err.kind))?;
    let kwargs = PyDict::new(py);
    kwargs.set_item("status_code", err.status)?;
    kwargs.set_item("code", err.code.as_deref())?;
    kwargs.set_item("request_id", err.request_id.as_deref())?;
    match &err.body {
        Some(ErrorBody::Json(value)) => kwargs.set_item("body", value_to_py(py, value)?)?,
        Some(ErrorBody::Text(text)) => kwargs.set_item("body", text)?,
        None => kwargs.set_item("body", py.None())?,
    }
    if let Some(plan) = &err.plan {
        kwargs.set_item("plan", results::plan(py, plan)?)?;
    }
    let instance = class.call((err.message.as_str(),), Some(&kwargs))?;
    Ok(PyErr::from_value(instance))
}

/// A Python object JSON cannot carry, raised as a `ValidationError` (or the Python error met reading it).
pub fn not_json(py: Python<'_>, failure: NotJson) -> PyErr {
    match failure {
        NotJson::Python(err) => err,
        NotJson::Invalid(message) => to_pyerr(py, Error::validation(message)),
    }
}

/// An error of the binding's own machinery (never expected): an `InferenceKeyError`, so
/// `except InferenceKeyError` still catches it; a RuntimeError only if even that cannot be built.
pub fn internal_error(message: &str) -> PyErr {
    Python::attach(|py| {
        let built = exceptions(py)
            .and_then(|module| module.getattr("InferenceKeyError"))
            .and_then(|cls| cls.call1((format!("internal error: {message}"),)));
        match built {
            Ok(instance) => PyErr::from_value(instance),
            Err(_) => PyRuntimeError::new_err(format!("internal error: {message}")),
        }
    })
}
