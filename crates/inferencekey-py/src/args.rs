//! Python arguments as core values: the `WorkloadSpec` read by attribute, JSON-like arguments, `on_drift`, the
//! embed input. Conversions only; every rule (bounds, combinations, wording) is the core's.

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use serde_json::{Map, Value};

use inferencekey_core::{field_type, wrong_type, FieldSetter, OnDrift, WorkloadSpec, SPEC_FIELDS};

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
        Err(_) => Err(to_pyerr(obj.py(), field_type(name, "a string"))),
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
        Err(_) => Err(to_pyerr(obj.py(), field_type(name, "a dict"))),
    }
}

/// The core spec from a Python `WorkloadSpec`, read by attribute (so any object with those fields works), field by
/// field as the core lists them (`SPEC_FIELDS`).
pub fn spec(obj: &Bound<'_, PyAny>) -> PyResult<WorkloadSpec> {
    if obj.getattr("slug").is_err() {
        return Err(PyTypeError::new_err(wrong_type(
            "spec",
            "a WorkloadSpec",
            &type_name(obj),
        )));
    }
    let mut spec = WorkloadSpec::default();
    for field in &SPEC_FIELDS {
        match field.set {
            FieldSetter::Text(set) => {
                if let Some(text) = opt_str(obj, field.name)? {
                    set(&mut spec, text);
                }
            }
            FieldSetter::Table(set) => {
                if let Some(map) = opt_map(obj, field.name)? {
                    set(&mut spec, map);
                }
            }
        }
    }
    Ok(spec)
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
pub fn texts(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<Vec<String>> {
    match obj.cast::<PyString>() {
        Ok(text) => Ok(vec![text.to_str()?.to_owned()]),
        Err(_) => text_list(obj, name).map_err(|err| {
            if obj.cast::<PyList>().is_ok() || obj.cast::<PyTuple>().is_ok() {
                err
            } else {
                wrong_type_error(obj, name, "a str or a list of str")
            }
        }),
    }
}

/// The `TypeError` for an argument of the wrong type: it names the argument and what it must be.
fn wrong_type_error(obj: &Bound<'_, PyAny>, name: &str, expected: &str) -> PyErr {
    PyTypeError::new_err(wrong_type(name, expected, &type_name(obj)))
}

/// The name of `obj`'s type, for messages.
fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "another type".to_owned())
}

/// A required `str` argument.
pub fn text(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<String> {
    match obj.cast::<PyString>() {
        Ok(s) => Ok(s.to_str()?.to_owned()),
        Err(_) => Err(wrong_type_error(obj, name, "a str")),
    }
}

/// An optional `str` argument (None stays None).
pub fn opt_text(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<Option<String>> {
    if obj.is_none() {
        return Ok(None);
    }
    text(obj, name).map(Some)
}

/// A required `int` argument (not a bool). One beyond the 64-bit range is a `ValidationError` naming the
/// argument, as the core's range checks word it, never an `OverflowError`.
pub fn int(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<i64> {
    if obj.cast::<PyBool>().is_ok() || obj.cast::<PyInt>().is_err() {
        return Err(wrong_type_error(obj, name, "an int"));
    }
    if let Ok(value) = obj.extract::<i64>() {
        return Ok(value);
    }
    let negative = obj.lt(0)?;
    Err(to_pyerr(
        obj.py(),
        inferencekey_core::integer_out_of_range(name, negative),
    ))
}

/// An `int` argument that must lie in `min..=max` (checked by the core, which words the error); any Python int
/// is read, however large, so none raises `OverflowError`.
pub fn int_in<T: TryFrom<i128>>(
    obj: &Bound<'_, PyAny>,
    name: &str,
    min: i128,
    max: i128,
) -> PyResult<T> {
    if obj.cast::<PyBool>().is_ok() || obj.cast::<PyInt>().is_err() {
        return Err(wrong_type_error(obj, name, "an int"));
    }
    // Beyond 128 bits is out of every range: saturate to a value outside it.
    let value = obj.extract::<i128>().or_else(|_| {
        obj.lt(0)
            .map(|negative| if negative { i128::MIN } else { i128::MAX })
    })?;
    inferencekey_core::int_in_range(name, value, min, max).map_err(|err| to_pyerr(obj.py(), err))
}

/// An optional `int` argument (None stays None).
pub fn opt_int(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<Option<i64>> {
    if obj.is_none() {
        return Ok(None);
    }
    int(obj, name).map(Some)
}

/// An optional dict of `str` to `str` (HTTP headers) as name/value pairs (None stays None).
pub fn opt_str_pairs(
    obj: &Bound<'_, PyAny>,
    name: &str,
) -> PyResult<Option<Vec<(String, String)>>> {
    if obj.is_none() {
        return Ok(None);
    }
    let Ok(dict) = obj.cast::<PyDict>() else {
        return Err(wrong_type_error(obj, name, "a dict of str to str"));
    };
    let mut pairs = Vec::with_capacity(dict.len());
    for (key, value) in dict.iter() {
        let key = text(&key, &format!("{name} keys"))?;
        let value = text(&value, &format!("{name}[{key:?}]"))?;
        pairs.push((key, value));
    }
    Ok(Some(pairs))
}

/// A path argument: a `str` or an `os.PathLike` (as `os.fspath` gives it).
fn path(obj: &Bound<'_, PyAny>, name: &str, expected: &str) -> PyResult<std::path::PathBuf> {
    if obj.cast::<PyString>().is_ok() {
        return Ok(std::path::PathBuf::from(text(obj, name)?));
    }
    let fspath = obj.py().import("os")?.getattr("fspath")?;
    match fspath.call1((obj,)) {
        Ok(path) if path.cast::<PyString>().is_ok() => {
            Ok(std::path::PathBuf::from(text(&path, name)?))
        }
        _ => Err(wrong_type_error(obj, name, expected)),
    }
}

/// `verify`: `True` (the default trust), `False` (none), or the path of a PEM bundle.
pub fn verify(obj: &Bound<'_, PyAny>) -> PyResult<inferencekey_core::net::Verify> {
    use inferencekey_core::net::Verify;
    if obj.is_none() {
        return Ok(Verify::Default);
    }
    if let Ok(flag) = obj.cast::<PyBool>() {
        return Ok(if flag.is_true() {
            Verify::Default
        } else {
            Verify::Off
        });
    }
    path(obj, "verify", "a bool or a path").map(Verify::Bundle)
}

/// `cert`: None, the path of a PEM file with the certificate and its key, or a `(cert, key)` pair of paths.
pub fn client_cert(obj: &Bound<'_, PyAny>) -> PyResult<Option<inferencekey_core::net::ClientCert>> {
    use inferencekey_core::net::ClientCert;
    if obj.is_none() {
        return Ok(None);
    }
    let expected = "a path or a (cert, key) tuple of paths";
    if let Ok(pair) = obj.cast::<PyTuple>() {
        if pair.len() != 2 {
            return Err(wrong_type_error(obj, "cert", expected));
        }
        return Ok(Some(ClientCert {
            cert: path(&pair.get_item(0)?, "cert", expected)?,
            key: Some(path(&pair.get_item(1)?, "cert", expected)?),
        }));
    }
    Ok(Some(ClientCert {
        cert: path(obj, "cert", expected)?,
        key: None,
    }))
}

/// An optional `bool` argument (None stays None; an int is not a bool).
pub fn opt_bool(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<Option<bool>> {
    if obj.is_none() {
        return Ok(None);
    }
    match obj.cast::<PyBool>() {
        Ok(b) => Ok(Some(b.is_true())),
        Err(_) => Err(wrong_type_error(obj, name, "a bool")),
    }
}

/// A required number (`int` or `float`, not a bool or a str).
pub fn number(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<f64> {
    if obj.cast::<PyBool>().is_ok() {
        return Err(wrong_type_error(obj, name, "a number"));
    }
    if let Ok(f) = obj.cast::<PyFloat>() {
        return Ok(f.value());
    }
    if obj.cast::<PyInt>().is_ok() {
        // An int too large for a float is infinite, which the core's range checks refuse.
        return Ok(obj.extract::<f64>().unwrap_or(f64::INFINITY));
    }
    Err(wrong_type_error(obj, name, "a number"))
}

/// An optional number (None stays None).
pub fn opt_number(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<Option<f64>> {
    if obj.is_none() {
        return Ok(None);
    }
    number(obj, name).map(Some)
}

/// A list (or tuple) of `str`.
pub fn text_list(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<Vec<String>> {
    let expected = "a list of str";
    if obj.cast::<PyString>().is_ok() {
        return Err(wrong_type_error(obj, name, expected));
    }
    let items: Vec<Bound<'_, PyAny>> = if let Ok(list) = obj.cast::<PyList>() {
        list.iter().collect()
    } else if let Ok(tuple) = obj.cast::<PyTuple>() {
        tuple.iter().collect()
    } else {
        return Err(wrong_type_error(obj, name, expected));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| text(item, &format!("{name}[{i}]")))
        .collect()
}
