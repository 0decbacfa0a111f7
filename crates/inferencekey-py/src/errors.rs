//! Core errors raised as the exception classes of `inferencekey.exceptions` (owned by Python), with their
//! structured attributes. The one kind-to-class table lives here (`Classes::for_kind`): every exception the binding
//! raises goes through `to_pyerr`, its class chosen from the core's error kind and nothing else.

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyType};

use inferencekey_core::{Error, ErrorBody, ErrorKind};

use crate::json::{value_to_py, NotJson};
use crate::results;

/// One typed handle per exception class of `inferencekey.exceptions`, imported together the first time an error
/// is raised (outside any lock Python code could need), so a raise looks nothing up by name.
struct Classes {
    base: Py<PyType>,
    configuration: Py<PyType>,
    validation: Py<PyType>,
    drift: Py<PyType>,
    auth: Py<PyType>,
    permission_denied: Py<PyType>,
    not_found: Py<PyType>,
    rate_limited: Py<PyType>,
    api: Py<PyType>,
    connection: Py<PyType>,
    timeout: Py<PyType>,
    wait_timeout: Py<PyType>,
}

static CLASSES: PyOnceLock<Classes> = PyOnceLock::new();

impl Classes {
    fn import(py: Python<'_>) -> PyResult<Self> {
        let module = py.import("inferencekey.exceptions")?;
        let class = |name: &str| -> PyResult<Py<PyType>> {
            Ok(module.getattr(name)?.cast_into::<PyType>()?.unbind())
        };
        Ok(Classes {
            base: class("InferenceKeyError")?,
            configuration: class("ConfigurationError")?,
            validation: class("ValidationError")?,
            drift: class("DriftError")?,
            auth: class("AuthError")?,
            permission_denied: class("PermissionDenied")?,
            not_found: class("NotFoundError")?,
            rate_limited: class("RateLimitError")?,
            api: class("ApiError")?,
            connection: class("ApiConnectionError")?,
            timeout: class("ApiTimeoutError")?,
            wait_timeout: class("WaitTimeoutError")?,
        })
    }

    fn get(py: Python<'_>) -> PyResult<&Classes> {
        CLASSES.get_or_try_init(py, || Classes::import(py))
    }

    /// The class that stands for a core error kind.
    fn for_kind(&self, kind: ErrorKind) -> &Py<PyType> {
        match kind {
            ErrorKind::Configuration => &self.configuration,
            ErrorKind::Validation => &self.validation,
            ErrorKind::Drift => &self.drift,
            ErrorKind::Auth => &self.auth,
            ErrorKind::PermissionDenied => &self.permission_denied,
            ErrorKind::NotFound => &self.not_found,
            ErrorKind::RateLimited => &self.rate_limited,
            ErrorKind::Api => &self.api,
            ErrorKind::Connection => &self.connection,
            ErrorKind::Timeout => &self.timeout,
            ErrorKind::WaitTimeout => &self.wait_timeout,
        }
    }
}

/// Build the Python exception for a core error; a failure to build it becomes a RuntimeError.
pub fn to_pyerr(py: Python<'_>, err: Error) -> PyErr {
    build(py, &err).unwrap_or_else(|failure| failure)
}

fn build(py: Python<'_>, err: &Error) -> PyResult<PyErr> {
    let class = Classes::get(py)?.for_kind(err.kind).bind(py);
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
    if err.kind == ErrorKind::RateLimited {
        kwargs.set_item("retry_after", err.retry_after)?;
    }
    let instance = class.call((err.message.as_str(),), Some(&kwargs))?;
    Ok(PyErr::from_value(instance))
}

/// A Python object JSON cannot carry, raised as a `ValidationError` (or the Python error met reading it).
pub fn not_json(py: Python<'_>, failure: NotJson) -> PyErr {
    match failure {
        NotJson::Python(err) => err,
        NotJson::Invalid(err) => to_pyerr(py, err),
    }
}

/// An error of the binding's own machinery (never expected): an `InferenceKeyError`, so
/// `except InferenceKeyError` still catches it; a RuntimeError only if even that cannot be built.
pub fn internal_error(message: &str) -> PyErr {
    Python::attach(|py| {
        let built = Classes::get(py).and_then(|classes| {
            classes
                .base
                .bind(py)
                .call1((format!("internal error: {message}"),))
        });
        match built {
            Ok(instance) => PyErr::from_value(instance),
            Err(_) => PyRuntimeError::new_err(format!("internal error: {message}")),
        }
    })
}
