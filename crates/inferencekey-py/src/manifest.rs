//! `load_manifest`: a deploy manifest read and checked by the core, handed over as one dict per workload (the
//! `WorkloadSpec` field names the file set, nothing else), for the surface to build its `WorkloadSpec`s from.

use std::path::PathBuf;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};

use inferencekey_core::{FieldValue, WorkloadSpec, SPEC_FIELDS};

use crate::errors::to_pyerr;
use crate::json::map_to_py;

/// One workload as a dict of the fields it sets (an unset optional field is left out, not None).
fn spec_dict<'py>(py: Python<'py>, spec: &WorkloadSpec) -> PyResult<Bound<'py, PyDict>> {
    let fields = PyDict::new(py);
    for field in &SPEC_FIELDS {
        match field.get(spec) {
            FieldValue::Text(Some(text)) => fields.set_item(field.name, text)?,
            FieldValue::Table(Some(map)) => fields.set_item(field.name, map_to_py(py, map)?)?,
            FieldValue::Text(None) | FieldValue::Table(None) => {}
        }
    }
    Ok(fields)
}

/// The spec's field names in order (`SPEC_FIELDS`), for the test that holds `WorkloadSpec` to them.
#[pyfunction]
pub fn spec_fields(py: Python<'_>) -> PyResult<Bound<'_, PyTuple>> {
    PyTuple::new(py, SPEC_FIELDS.iter().map(|field| field.name))
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
        list.append(spec_dict(py, spec)?)?;
    }
    Ok(list)
}
