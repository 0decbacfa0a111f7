//! `load_manifest`: a deploy manifest read and checked by the core, handed over as one dict per workload (the
//! `WorkloadSpec` field names the file set, nothing else), for the surface to build its `WorkloadSpec`s from.

use std::path::PathBuf;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use inferencekey_core::WorkloadSpec;

use crate::errors::to_pyerr;
use crate::json::map_to_py;

/// One workload as a dict of the fields it sets (an unset optional field is left out, not None).
fn spec_fields<'py>(py: Python<'py>, spec: &WorkloadSpec) -> PyResult<Bound<'py, PyDict>> {
    let fields = PyDict::new(py);
    fields.set_item("name", &spec.name)?;
    fields.set_item("slug", &spec.slug)?;
    fields.set_item("model", &spec.model)?;
    fields.set_item("backend", &spec.backend)?;
    for (name, value) in [
        ("project", &spec.project),
        ("description", &spec.description),
        ("command", &spec.command),
        ("vllm_version", &spec.vllm_version),
        ("task_type", &spec.task_type),
        ("execution_policy", &spec.execution_policy),
        ("worker_id", &spec.worker_id),
        ("gpu_resource_id", &spec.gpu_resource_id),
    ] {
        if let Some(value) = value {
            fields.set_item(name, value)?;
        }
    }
    for (name, value) in [
        ("config", &spec.config),
        ("execution_policy_config", &spec.execution_policy_config),
    ] {
        if let Some(map) = value {
            fields.set_item(name, map_to_py(py, map)?)?;
        }
    }
    Ok(fields)
}

/// Read the deploy manifest at `path` (the file read and checked with the interpreter released): one dict of
/// `WorkloadSpec` fields per `[[workload]]` table, in file order. Errors are the core's, raised through the table.
#[pyfunction]
pub fn load_manifest(py: Python<'_>, path: PathBuf) -> PyResult<Bound<'_, PyList>> {
    let specs = py
        .detach(move || inferencekey_core::load_manifest(&path))
        .map_err(|err| to_pyerr(py, err))?;
    let list = PyList::empty(py);
    for spec in &specs {
        list.append(spec_fields(py, spec)?)?;
    }
    Ok(list)
}
