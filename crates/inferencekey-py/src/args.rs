//! Python arguments as core values: the `WorkloadSpec` read by attribute, JSON-like arguments, `on_drift`, the
//! embed input. Conversions only; every rule (bounds, combinations, wording) is the core's.

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use serde_json::{Map, Value};

use inferencekey_core::{Error, OnDrift, WorkloadSpec};

use crate::errors::{not_json, to_pyerr};
use crate::json::{dict_to_map, py_to_value};

/// An optional string attribute of `obj` (None stays None; a non-string raises ValidationError).
fn opt_str(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<Option<String>> {
    let value = obj.getattr(name)?;
    if value.is_none() {
        return Ok(None);
    }
    match value.cast::<PyString>() {
        Ok(s) => Ok(Some(s.to_str()?.to_owned())),
        Err(_) => Err(to_pyerr(
            obj.py(),
            Error::validation(format_args!("{name} must be a string")),
        )),
    }
}

/// An optional dict attribute of `obj` as a JSON object.
fn opt_map(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<Option<Map<String, Value>>> {
    let value = obj.getattr(name)?;
    if value.is_none() {
        return Ok(None);
    }
    match value.cast::<PyDict>() {
        Ok(dict) => dict_to_map(dict, name)
            .map(Some)
            .map_err(|failure| not_json(obj.py(), failure)),
        Err(_) => Err(to_pyerr(
            obj.py(),
            Error::validation(format_args!("{name} must be a dict")),
        )),
    }
}

/// The core spec from a Python `WorkloadSpec` (read by attribute, so any object with those fields works).
pub fn spec(obj: &Bound<'_, PyAny>) -> PyResult<WorkloadSpec> {
    if obj.getattr("slug").is_err() {
        return Err(PyTypeError::new_err("spec must be a WorkloadSpec"));
    }
    Ok(WorkloadSpec {
        name: opt_str(obj, "name")?.unwrap_or_default(),
        slug: opt_str(obj, "slug")?.unwrap_or_default(),
        model: opt_str(obj, "model")?.unwrap_or_default(),
        backend: opt_str(obj, "backend")?.unwrap_or_default(),
        project: opt_str(obj, "project")?,
        description: opt_str(obj, "description")?,
        command: opt_str(obj, "command")?,
        vllm_version: opt_str(obj, "vllm_version")?,
        task_type: opt_str(obj, "task_type")?,
        config: opt_map(obj, "config")?,
        execution_policy: opt_str(obj, "execution_policy")?,
        execution_policy_config: opt_map(obj, "execution_policy_config")?,
        worker_id: opt_str(obj, "worker_id")?,
        gpu_resource_id: opt_str(obj, "gpu_resource_id")?,
    })
}

/// A JSON-like argument (`what` names it in errors); None stays None.
pub fn json(obj: Option<&Bound<'_, PyAny>>, what: &str) -> PyResult<Option<Value>> {
    match obj {
        Some(obj) if !obj.is_none() => py_to_value(obj, what)
            .map(Some)
            .map_err(|failure| not_json(obj.py(), failure)),
        _ => Ok(None),
    }
}

/// The `on_drift` mode from an `OnDrift` member or its string; anything else is refused as the core words it.
pub fn on_drift(obj: &Bound<'_, PyAny>) -> PyResult<OnDrift> {
    let py = obj.py();
    let parsed = match obj.cast::<PyString>() {
        Ok(text) => text.to_str()?.parse(),
        Err(_) => Err(OnDrift::unknown(obj.repr()?.to_str()?)),
    };
    parsed.map_err(|err| to_pyerr(py, err))
}

/// The texts of an embed input: a bare string is a one-element batch.
pub fn texts(obj: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
    match obj.cast::<PyString>() {
        Ok(text) => Ok(vec![text.to_str()?.to_owned()]),
        Err(_) => obj.extract(),
    }
}
