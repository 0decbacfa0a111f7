//! Conversions between Python objects and JSON values, done natively (never through JSON strings).
//! Also the Python `WorkloadSpec` to core spec conversion and the core plan to Python `Plan`.

use std::fmt;

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyModule, PyString, PyTuple};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use inferencekey_core::{Plan, WorkloadSpec};

use crate::errors::local_error;

static TYPES_MODULE: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

/// A module imported once and kept (the import happens outside any lock that Python code could need).
pub fn cached_module<'py>(
    cell: &'static PyOnceLock<Py<PyModule>>,
    py: Python<'py>,
    name: &str,
) -> PyResult<&'py Bound<'py, PyModule>> {
    cell.get_or_try_init(py, || py.import(name).map(Bound::unbind))
        .map(|module| module.bind(py))
}

/// `inferencekey.types`, imported once.
fn types_module(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    cached_module(&TYPES_MODULE, py, "inferencekey.types")
}

/// A JSON value as the equivalent Python object (dict, list, str, int, float, bool, None).
pub fn value_to_py<'py>(py: Python<'py>, value: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into_pyobject(py)?.into_any()
            } else if let Some(u) = n.as_u64() {
                u.into_pyobject(py)?.into_any()
            } else {
                PyFloat::new(py, n.as_f64().unwrap_or(f64::NAN)).into_any()
            }
        }
        Value::String(s) => PyString::new(py, s).into_any(),
        Value::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(value_to_py(py, item)?)?;
            }
            list.into_any()
        }
        Value::Object(map) => map_to_py(py, map)?.into_any(),
    })
}

/// A JSON object as a Python dict.
pub fn map_to_py<'py>(py: Python<'py>, map: &Map<String, Value>) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for (key, item) in map {
        dict.set_item(key, value_to_py(py, item)?)?;
    }
    Ok(dict)
}

/// A JSON value that should be an object, as a dict (anything else becomes an empty dict).
pub fn raw_to_py<'py>(py: Python<'py>, value: &Value) -> PyResult<Bound<'py, PyDict>> {
    match value {
        Value::Object(map) => map_to_py(py, map),
        _ => Ok(PyDict::new(py)),
    }
}

/// Builds Python objects straight from JSON text in one pass (no `Value` tree, no `json.loads`). Object keys
/// seen before are reused, as `json.loads` does: repeated keys then cost no allocation and hash once.
pub struct JsonToPy<'de, 'py> {
    py: Python<'py>,
    keys: Vec<(&'de str, Bound<'py, PyString>)>,
    failure: Option<PyErr>,
}

/// Enough for the keys of chat chunks; keys beyond it are built each time.
const KEY_CACHE: usize = 64;

impl<'de, 'py> JsonToPy<'de, 'py> {
    pub fn new(py: Python<'py>) -> Self {
        Self {
            py,
            keys: Vec::new(),
            failure: None,
        }
    }

    /// JSON text that should be an object, as a dict (any other value becomes an empty dict).
    pub fn dict(&mut self, json: &'de [u8]) -> PyResult<Bound<'py, PyDict>> {
        // One UTF-8 check of the whole text is cheaper than one per string.
        let value = match std::str::from_utf8(json) {
            Ok(text) => self.parse(&mut serde_json::Deserializer::from_str(text)),
            Err(_) => self.parse(&mut serde_json::Deserializer::from_slice(json)),
        };
        match value {
            Ok(value) => Ok(value
                .cast_into::<PyDict>()
                .unwrap_or_else(|_| PyDict::new(self.py))),
            Err(err) => Err(self.failure.take().unwrap_or_else(|| {
                local_error(
                    self.py,
                    "ApiError",
                    &format!("malformed JSON in a stream event: {err}"),
                )
            })),
        }
    }

    fn parse<R: serde_json::de::Read<'de>>(
        &mut self,
        deserializer: &mut serde_json::Deserializer<R>,
    ) -> serde_json::Result<Bound<'py, PyAny>> {
        let value = PyValue(self).deserialize(&mut *deserializer)?;
        deserializer.end()?;
        Ok(value)
    }

    fn key(&mut self, key: &'de str) -> Bound<'py, PyString> {
        if let Some((_, cached)) = self.keys.iter().find(|(seen, _)| *seen == key) {
            return cached.clone();
        }
        let built = PyString::new(self.py, key);
        if self.keys.len() < KEY_CACHE {
            self.keys.push((key, built.clone()));
        }
        built
    }

    /// Keep a Python failure for `dict` to raise; serde only carries a message.
    fn fail<E: de::Error>(&mut self, err: PyErr) -> E {
        self.failure = Some(err);
        E::custom("a Python object could not be built")
    }
}

struct PyValue<'b, 'de, 'py>(&'b mut JsonToPy<'de, 'py>);

impl<'de, 'py> DeserializeSeed<'de> for PyValue<'_, 'de, 'py> {
    type Value = Bound<'py, PyAny>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de, 'py> Visitor<'de> for PyValue<'_, 'de, 'py> {
    type Value = Bound<'py, PyAny>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(self.0.py.None().into_bound(self.0.py))
    }

    fn visit_bool<E>(self, b: bool) -> Result<Self::Value, E> {
        Ok(PyBool::new(self.0.py, b).to_owned().into_any())
    }

    fn visit_i64<E>(self, i: i64) -> Result<Self::Value, E> {
        let Ok(int) = i.into_pyobject(self.0.py);
        Ok(int.into_any())
    }

    fn visit_u64<E>(self, u: u64) -> Result<Self::Value, E> {
        let Ok(int) = u.into_pyobject(self.0.py);
        Ok(int.into_any())
    }

    fn visit_f64<E>(self, f: f64) -> Result<Self::Value, E> {
        Ok(PyFloat::new(self.0.py, f).into_any())
    }

    fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
        Ok(PyString::new(self.0.py, s).into_any())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let list = PyList::empty(self.0.py);
        while let Some(item) = seq.next_element_seed(PyValue(&mut *self.0))? {
            list.append(item).map_err(|err| self.0.fail(err))?;
        }
        Ok(list.into_any())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let dict = PyDict::new(self.0.py);
        while let Some(key) = map.next_key_seed(PyKey(&mut *self.0))? {
            let item = map.next_value_seed(PyValue(&mut *self.0))?;
            dict.set_item(key, item).map_err(|err| self.0.fail(err))?;
        }
        Ok(dict.into_any())
    }
}

struct PyKey<'b, 'de, 'py>(&'b mut JsonToPy<'de, 'py>);

impl<'de, 'py> DeserializeSeed<'de> for PyKey<'_, 'de, 'py> {
    type Value = Bound<'py, PyString>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de, 'py> Visitor<'de> for PyKey<'_, 'de, 'py> {
    type Value = Bound<'py, PyString>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string key")
    }

    fn visit_borrowed_str<E>(self, key: &'de str) -> Result<Self::Value, E> {
        Ok(self.0.key(key))
    }

    // A key with escapes lives only in the parser's scratch buffer, so it is not cached.
    fn visit_str<E>(self, key: &str) -> Result<Self::Value, E> {
        Ok(PyString::new(self.0.py, key))
    }
}

/// A Python object as JSON; `what` names it in the error for values JSON cannot hold.
pub fn py_to_value(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Value> {
    if obj.is_none() {
        return Ok(Value::Null);
    }
    // bool before int: Python's bool is an int subclass.
    if let Ok(b) = obj.cast::<PyBool>() {
        return Ok(Value::Bool(b.is_true()));
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(Value::String(s.to_str()?.to_owned()));
    }
    if obj.cast::<PyInt>().is_ok() {
        if let Ok(i) = obj.extract::<i64>() {
            return Ok(Value::Number(i.into()));
        }
        if let Ok(u) = obj.extract::<u64>() {
            return Ok(Value::Number(u.into()));
        }
        return Err(local_error(
            obj.py(),
            "ValidationError",
            &format!("validation error: {what} holds an integer too large for JSON"),
        ));
    }
    if let Ok(f) = obj.cast::<PyFloat>() {
        return Number::from_f64(f.value()).map(Value::Number).ok_or_else(|| {
            local_error(
                obj.py(),
                "ValidationError",
                &format!("validation error: {what} holds a float JSON cannot carry (NaN or infinity)"),
            )
        });
    }
    if let Ok(dict) = obj.cast::<PyDict>() {
        return dict_to_map(dict, what).map(Value::Object);
    }
    if let Ok(list) = obj.cast::<PyList>() {
        return list
            .iter()
            .map(|item| py_to_value(&item, what))
            .collect::<PyResult<_>>()
            .map(Value::Array);
    }
    if let Ok(tuple) = obj.cast::<PyTuple>() {
        return tuple
            .iter()
            .map(|item| py_to_value(&item, what))
            .collect::<PyResult<_>>()
            .map(Value::Array);
    }
    let type_name = obj.get_type().name()?.to_string();
    Err(local_error(
        obj.py(),
        "ValidationError",
        &format!("validation error: {what} holds a value of type {type_name}, which is not JSON-compatible"),
    ))
}

/// A Python dict with string keys as a JSON object.
pub fn dict_to_map(dict: &Bound<'_, PyDict>, what: &str) -> PyResult<Map<String, Value>> {
    let mut map = Map::with_capacity(dict.len());
    for (key, item) in dict.iter() {
        let key = key.cast::<PyString>().map_err(|_| {
            local_error(
                dict.py(),
                "ValidationError",
                &format!("validation error: {what} keys must be strings"),
            )
        })?;
        map.insert(key.to_str()?.to_owned(), py_to_value(&item, what)?);
    }
    Ok(map)
}

/// An optional string attribute of `obj` (None stays None; a non-string raises ValidationError).
fn opt_str(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<Option<String>> {
    let value = obj.getattr(name)?;
    if value.is_none() {
        return Ok(None);
    }
    match value.cast::<PyString>() {
        Ok(s) => Ok(Some(s.to_str()?.to_owned())),
        Err(_) => Err(local_error(
            obj.py(),
            "ValidationError",
            &format!("validation error: {name} must be a string"),
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
        Ok(dict) => dict_to_map(dict, name).map(Some),
        Err(_) => Err(local_error(
            obj.py(),
            "ValidationError",
            &format!("validation error: {name} must be a dict"),
        )),
    }
}

/// The core spec from a Python `WorkloadSpec` (read by attribute, so any object with those fields works).
pub fn spec_from_py(obj: &Bound<'_, PyAny>) -> PyResult<WorkloadSpec> {
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

/// The Python `inferencekey.types.Plan` for a core plan.
pub fn plan_to_py<'py>(py: Python<'py>, plan: &Plan) -> PyResult<Bound<'py, PyAny>> {
    let types = types_module(py)?;
    let field_change = types.getattr("FieldChange")?;
    let mut changes = Vec::with_capacity(plan.changes.len());
    for change in &plan.changes {
        let kwargs = PyDict::new(py);
        kwargs.set_item("field", &change.field)?;
        match &change.live {
            Some(live) => kwargs.set_item("live", value_to_py(py, live)?)?,
            None => kwargs.set_item("live", py.None())?,
        }
        kwargs.set_item("desired", value_to_py(py, &change.desired)?)?;
        changes.push(field_change.call((), Some(&kwargs))?);
    }
    let kwargs = PyDict::new(py);
    kwargs.set_item("action", plan.action.as_str())?;
    kwargs.set_item("project", &plan.project)?;
    kwargs.set_item("workload_slug", &plan.workload_slug)?;
    kwargs.set_item("changes", PyTuple::new(py, changes)?)?;
    kwargs.set_item("rendered", plan.render())?;
    types.getattr("Plan")?.call((), Some(&kwargs))
}
