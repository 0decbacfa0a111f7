//! Core errors raised as the exception classes of `inferencekey.exceptions` (owned by Python),
//! with their structured attributes; the class is chosen from the core's error kind, nothing else.

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyModule};

use inferencekey_core::{Error, ErrorBody, ErrorKind};

use crate::convert::{cached_module, plan_to_py, value_to_py};

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

/// Build the Python exception for a core error; a failure to build it becomes a RuntimeError.
pub fn to_pyerr(py: Python<'_>, err: Error) -> PyErr {
    build(py, &err).unwrap_or_else(|failure| failure)
}

fn build(py: Python<'_>, err: &Error) -> PyResult<PyErr> {
    let module = cached_module(&EXCEPTIONS_MODULE, py, "inferencekey.exceptions")?;
    let class = module.getattr(class_name(err.kind))?;
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
        kwargs.set_item("plan", plan_to_py(py, plan)?)?;
    }
    let instance = class.call((err.message.as_str(),), Some(&kwargs))?;
    Ok(PyErr::from_value(instance))
}

/// An exception of `inferencekey.exceptions` for a problem found in the binding itself (before any request).
pub fn local_error(py: Python<'_>, class: &str, message: &str) -> PyErr {
    let built = cached_module(&EXCEPTIONS_MODULE, py, "inferencekey.exceptions")
        .and_then(|module| module.getattr(class))
        .and_then(|cls| cls.call1((message,)));
    match built {
        Ok(instance) => PyErr::from_value(instance),
        Err(failure) => failure,
    }
}

/// An error of the binding's own machinery (never expected): an `InferenceKeyError`, so
/// `except InferenceKeyError` still catches it; a RuntimeError only if even that cannot be built.
pub fn internal_error(message: &str) -> PyErr {
    Python::attach(|py| {
        let built = cached_module(&EXCEPTIONS_MODULE, py, "inferencekey.exceptions")
            .and_then(|module| module.getattr("InferenceKeyError"))
            .and_then(|cls| cls.call1((format!("internal error: {message}"),)));
        match built {
            Ok(instance) => PyErr::from_value(instance),
            Err(_) => PyRuntimeError::new_err(format!("internal error: {message}")),
        }
    })
}
