//! Conversions between Python objects and JSON values, done natively (never through JSON strings).
//! The bottom of the binding: it depends on no other module of the crate, so a value that JSON
//! cannot carry comes back as a `NotJson` for the caller to raise through the error table.

use std::fmt;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use inferencekey_core::{not_json, Error, NotJson as Reason, MAX_JSON_DEPTH};

/// Why a Python object could not become JSON.
pub enum NotJson {
    /// Python itself failed while the object was read.
    Python(PyErr),
    /// The object holds something JSON cannot carry: the core's validation error, which says what.
    Invalid(Error),
}

impl From<PyErr> for NotJson {
    fn from(err: PyErr) -> Self {
        NotJson::Python(err)
    }
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
            // Only JSON the core has already validated reaches here, so this is a broken invariant.
            Err(err) => Err(self
                .failure
                .take()
                .unwrap_or_else(|| PyValueError::new_err(format!("malformed JSON: {err}")))),
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

/// How deep Python values may nest on their way to JSON (the core's limit): as deep as the platform's JSON parsers
/// read, and far from the native stack's limit.
const MAX_DEPTH: usize = MAX_JSON_DEPTH;

/// A Python object as JSON; `what` names it in the error for values JSON cannot hold. Nesting deeper than
/// [`MAX_DEPTH`] and reference cycles are refused (the recursion would otherwise exhaust the stack).
pub fn py_to_value(obj: &Bound<'_, PyAny>, what: &str) -> Result<Value, NotJson> {
    Walk::new(what).value(obj)
}

/// A Python dict with string keys as a JSON object, with the same limits as [`py_to_value`].
pub fn dict_to_map(dict: &Bound<'_, PyDict>, what: &str) -> Result<Map<String, Value>, NotJson> {
    Walk::new(what).map(dict)
}

/// One conversion: the argument's name and the containers being converted (outermost first), which give both the
/// depth and the cycle check.
struct Walk<'a> {
    what: &'a str,
    open: Vec<usize>,
}

impl<'a> Walk<'a> {
    fn new(what: &'a str) -> Self {
        Self {
            what,
            open: Vec::new(),
        }
    }

    /// The refusal of this walk's value, worded by the core.
    fn refuse(&self, reason: Reason<'_>) -> NotJson {
        NotJson::Invalid(not_json(self.what, reason))
    }

    /// Enter a container: refused when it is already open (a cycle) or too deep.
    fn enter(&mut self, obj: &Bound<'_, PyAny>) -> Result<(), NotJson> {
        let id = obj.as_ptr() as usize;
        if self.open.contains(&id) {
            return Err(self.refuse(Reason::Cycle));
        }
        if self.open.len() >= MAX_DEPTH {
            return Err(self.refuse(Reason::TooDeep));
        }
        self.open.push(id);
        Ok(())
    }

    fn value(&mut self, obj: &Bound<'_, PyAny>) -> Result<Value, NotJson> {
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
            return Err(self.refuse(Reason::IntegerTooLarge));
        }
        if let Ok(f) = obj.cast::<PyFloat>() {
            return Number::from_f64(f.value())
                .map(Value::Number)
                .ok_or_else(|| self.refuse(Reason::NonFinite));
        }
        if let Ok(dict) = obj.cast::<PyDict>() {
            return self.map(dict).map(Value::Object);
        }
        let items: Result<Vec<Value>, NotJson> = if let Ok(list) = obj.cast::<PyList>() {
            self.enter(obj)?;
            list.iter().map(|item| self.value(&item)).collect()
        } else if let Ok(tuple) = obj.cast::<PyTuple>() {
            self.enter(obj)?;
            tuple.iter().map(|item| self.value(&item)).collect()
        } else {
            let type_name = obj.get_type().name()?.to_string();
            return Err(self.refuse(Reason::Type(&type_name)));
        };
        self.open.pop();
        items.map(Value::Array)
    }

    fn map(&mut self, dict: &Bound<'_, PyDict>) -> Result<Map<String, Value>, NotJson> {
        self.enter(dict.as_any())?;
        let mut map = Map::with_capacity(dict.len());
        for (key, item) in dict.iter() {
            let key = key
                .cast::<PyString>()
                .map_err(|_| self.refuse(Reason::KeyNotString))?;
            map.insert(key.to_str()?.to_owned(), self.value(&item)?);
        }
        self.open.pop();
        Ok(map)
    }
}
