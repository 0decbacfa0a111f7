//! Results cross the seam one way: the Python surface hands its result classes to the binding once, at import
//! (`register_result_types`), and the binding builds instances of them from core values, filling each field by
//! name. `RESULT_FIELDS` is the contract: registration refuses a class whose dataclass fields differ from what
//! the binding fills, so a renamed or reordered field fails loudly at import, never silently at a call.
//!
//! Instances are made without running `__init__` (the dataclasses are plain, frozen, without `__post_init__`):
//! `object.__new__(cls)` and the fields written into the instance's `__dict__`. A field the user may never read
//! costs nothing until read: `raw` is left unset and `_raw_source` holds the bytes already received; the
//! surface's `__getattr__` parses them into `raw` on first access (likewise `embeddings` from `_vectors`).

use bytes::Bytes;
use pyo3::exceptions::{PyRuntimeError, PyTypeError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyByteArray, PyDict, PyList, PyString, PyTuple, PyType};
use pyo3::{intern, IntoPyObjectExt};

use inferencekey_core as core;

use crate::json::{value_to_py, JsonToPy};

/// The fields the binding fills in each result class, by class name, in dataclass order. A lazy field is
/// listed too (the class must declare it); it is filled on first read from the private source set instead.
pub const RESULT_FIELDS: &[(&str, &[&str])] = &[
    ("TextChunk", &["text", "finish_reason", "raw", "usage"]),
    (
        "TextResult",
        &[
            "text",
            "model",
            "finish_reason",
            "raw",
            "usage",
            "tool_calls",
        ],
    ),
    ("EmbedResult", &["embeddings", "model", "raw", "usage"]),
    ("RerankItem", &["index", "relevance_score"]),
    ("RerankResult", &["results", "model", "raw"]),
    (
        "ReadinessEvent",
        &["phase", "message", "elapsed_ms", "step"],
    ),
    ("EndpointRef", &["project_slug", "workload_slug"]),
    ("FieldChange", &["field", "live", "desired"]),
    (
        "Plan",
        &["action", "project", "workload_slug", "changes", "rendered"],
    ),
    (
        "Usage",
        &["prompt_tokens", "completion_tokens", "total_tokens"],
    ),
    ("ToolCall", &["id", "name", "arguments"]),
];

/// The registered classes, in `RESULT_FIELDS` order, and `object.__new__`.
struct Classes {
    classes: Vec<Py<PyType>>,
    object_new: Py<PyAny>,
}

static CLASSES: PyOnceLock<Classes> = PyOnceLock::new();

/// Index of each class in `RESULT_FIELDS` / `Classes::classes`.
#[derive(Clone, Copy)]
enum Class {
    TextChunk = 0,
    TextResult,
    EmbedResult,
    RerankItem,
    RerankResult,
    ReadinessEvent,
    EndpointRef,
    FieldChange,
    Plan,
    Usage,
    ToolCall,
}

/// Hand the binding the result classes it builds (called once by `inferencekey.types` at import). Each class
/// must be a dataclass whose field names are exactly those the binding fills (`RESULT_FIELDS`).
#[pyfunction]
#[pyo3(signature = (**classes))]
pub fn register_result_types(py: Python<'_>, classes: Option<&Bound<'_, PyDict>>) -> PyResult<()> {
    let given = classes.ok_or_else(|| PyTypeError::new_err("no result classes given"))?;
    let fields_of = py.import("dataclasses")?.getattr("fields")?;
    let mut registered = Vec::with_capacity(RESULT_FIELDS.len());
    for (name, expected) in RESULT_FIELDS {
        let class = given
            .get_item(name)?
            .ok_or_else(|| PyTypeError::new_err(format!("result class {name} not given")))?
            .cast_into::<PyType>()
            .map_err(|_| PyTypeError::new_err(format!("{name} must be a class")))?;
        let mut declared = Vec::new();
        for field in fields_of.call1((&class,))?.try_iter()? {
            declared.push(field?.getattr("name")?.extract::<String>()?);
        }
        if declared != *expected {
            return Err(PyTypeError::new_err(format!(
                "{name} declares the fields {declared:?}; the binding fills {expected:?}"
            )));
        }
        registered.push(class.unbind());
    }
    if given.len() != RESULT_FIELDS.len() {
        return Err(PyTypeError::new_err("unknown result classes given"));
    }
    let object_new = py
        .import("builtins")?
        .getattr("object")?
        .getattr("__new__")?
        .unbind();
    let classes = Classes {
        classes: registered,
        object_new,
    };
    // A second registration (a reload of the surface) keeps the first classes: instances stay comparable.
    let _ = CLASSES.set(py, classes);
    Ok(())
}

/// `RESULT_FIELDS` as a dict, for the test that holds the surface's classes to it.
#[pyfunction]
pub fn result_fields(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let dict = PyDict::new(py);
    for (name, fields) in RESULT_FIELDS {
        dict.set_item(name, PyTuple::new(py, fields.iter())?)?;
    }
    Ok(dict)
}

/// A new instance of a registered class with `fields` set, without running `__init__`.
fn instance<'py>(
    py: Python<'py>,
    class: Class,
    fields: &[(&Bound<'py, PyString>, Bound<'py, PyAny>)],
) -> PyResult<Bound<'py, PyAny>> {
    let classes = CLASSES.get(py).ok_or_else(|| {
        PyRuntimeError::new_err("inferencekey.types has not registered its result classes")
    })?;
    let class = classes.classes[class as usize].bind(py);
    let object = classes.object_new.bind(py).call1((class,))?;
    let dict = object
        .getattr(intern!(py, "__dict__"))?
        .cast_into::<PyDict>()?;
    for (name, value) in fields {
        dict.set_item(name, value)?;
    }
    Ok(object)
}

/// JSON bytes already received, parsed into a dict only when asked (`raw` on first read).
#[pyclass(module = "inferencekey._core", frozen)]
pub struct RawJson {
    bytes: Bytes,
}

#[pymethods]
impl RawJson {
    /// The JSON object as a new dict.
    fn parse<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        JsonToPy::new(py).dict(&self.bytes)
    }
}

fn raw_source<'py>(py: Python<'py>, bytes: Bytes) -> PyResult<Bound<'py, PyAny>> {
    Ok(Bound::new(py, RawJson { bytes })?.into_any())
}

/// The `TextChunk` of one streamed event. `usage` is set only on the chunk that carries it; the others read the
/// class default (`None`), so a chunk without usage costs nothing more.
pub fn text_chunk<'py>(py: Python<'py>, chunk: core::ChatChunk) -> PyResult<Bound<'py, PyAny>> {
    let counts = chunk.usage();
    let text = (
        intern!(py, "text"),
        PyString::new(py, &chunk.text).into_any(),
    );
    let finish_reason = (
        intern!(py, "finish_reason"),
        chunk.finish_reason.into_bound_py_any(py)?,
    );
    let raw = (intern!(py, "_raw_source"), raw_source(py, chunk.data)?);
    match counts {
        None => instance(py, Class::TextChunk, &[text, finish_reason, raw]),
        Some(counts) => {
            let usage = (intern!(py, "usage"), usage(py, counts)?);
            instance(py, Class::TextChunk, &[text, finish_reason, raw, usage])
        }
    }
}

/// A `Usage`.
pub fn usage(py: Python<'_>, usage: core::Usage) -> PyResult<Bound<'_, PyAny>> {
    instance(
        py,
        Class::Usage,
        &[
            (
                intern!(py, "prompt_tokens"),
                usage.prompt_tokens.into_bound_py_any(py)?,
            ),
            (
                intern!(py, "completion_tokens"),
                usage.completion_tokens.into_bound_py_any(py)?,
            ),
            (
                intern!(py, "total_tokens"),
                usage.total_tokens.into_bound_py_any(py)?,
            ),
        ],
    )
}

/// `usage` as a Python value: a `Usage`, or None.
fn opt_usage(py: Python<'_>, counts: Option<core::Usage>) -> PyResult<Bound<'_, PyAny>> {
    match counts {
        Some(counts) => usage(py, counts),
        None => Ok(py.None().into_bound(py)),
    }
}

/// A list of `ToolCall`s.
fn tool_calls(py: Python<'_>, calls: Vec<core::ToolCall>) -> PyResult<Bound<'_, PyAny>> {
    let list = PyList::empty(py);
    for call in calls {
        list.append(instance(
            py,
            Class::ToolCall,
            &[
                (intern!(py, "id"), call.id.into_bound_py_any(py)?),
                (intern!(py, "name"), call.name.into_bound_py_any(py)?),
                (
                    intern!(py, "arguments"),
                    call.arguments.into_bound_py_any(py)?,
                ),
            ],
        )?)?;
    }
    Ok(list.into_any())
}

/// The `TextResult` of a whole streamed reply (`TextStream.final_result()`): `raw` is the reply as one chat
/// completion object, built from what the stream carried.
pub fn streamed_text_result(
    py: Python<'_>,
    reply: core::StreamedReply,
) -> PyResult<Bound<'_, PyAny>> {
    let model = reply.model.unwrap_or_default();
    let raw = streamed_raw(
        &reply.text,
        &model,
        reply.finish_reason.as_deref(),
        reply.usage,
        &reply.tool_calls,
    );
    instance(
        py,
        Class::TextResult,
        &[
            (intern!(py, "text"), reply.text.into_bound_py_any(py)?),
            (intern!(py, "model"), model.into_bound_py_any(py)?),
            (
                intern!(py, "finish_reason"),
                reply.finish_reason.into_bound_py_any(py)?,
            ),
            (intern!(py, "raw"), value_to_py(py, &raw)?),
            (intern!(py, "usage"), opt_usage(py, reply.usage)?),
            (intern!(py, "tool_calls"), tool_calls(py, reply.tool_calls)?),
        ],
    )
}

/// A streamed reply as the chat completion object a unary call would have answered.
fn streamed_raw(
    text: &str,
    model: &str,
    finish_reason: Option<&str>,
    usage: Option<core::Usage>,
    calls: &[core::ToolCall],
) -> serde_json::Value {
    use serde_json::json;
    let mut message = json!({"role": "assistant", "content": text});
    if !calls.is_empty() {
        message["tool_calls"] = calls
            .iter()
            .map(|call| {
                json!({"id": call.id, "type": "function",
                       "function": {"name": call.name, "arguments": call.arguments}})
            })
            .collect();
    }
    let mut raw = json!({
        "object": "chat.completion",
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
    });
    if let Some(usage) = usage {
        raw["usage"] = json!({"prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens, "total_tokens": usage.total_tokens});
    }
    raw
}

/// The `TextResult` of a chat completion.
pub fn text_result(py: Python<'_>, completion: core::ChatCompletion) -> PyResult<Bound<'_, PyAny>> {
    instance(
        py,
        Class::TextResult,
        &[
            (intern!(py, "text"), completion.text.into_bound_py_any(py)?),
            (
                intern!(py, "model"),
                completion.model.into_bound_py_any(py)?,
            ),
            (
                intern!(py, "finish_reason"),
                completion.finish_reason.into_bound_py_any(py)?,
            ),
            (intern!(py, "_raw_source"), raw_source(py, completion.body)?),
            (intern!(py, "usage"), opt_usage(py, completion.usage)?),
            (
                intern!(py, "tool_calls"),
                tool_calls(py, completion.tool_calls)?,
            ),
        ],
    )
}

/// Embedding vectors as received, turned into lists or one float32 buffer only when asked.
#[pyclass(module = "inferencekey._core", frozen)]
pub struct Vectors {
    vectors: Vec<Vec<f32>>,
}

impl From<Vec<Vec<f32>>> for Vectors {
    fn from(vectors: Vec<Vec<f32>>) -> Self {
        Self { vectors }
    }
}

#[pymethods]
impl Vectors {
    /// How many vectors.
    #[getter]
    fn count(&self) -> usize {
        self.vectors.len()
    }

    /// The common length of the vectors (0 when there are none); None when their lengths differ.
    #[getter]
    fn dim(&self) -> Option<usize> {
        let dim = self.vectors.first().map_or(0, Vec::len);
        self.vectors.iter().all(|v| v.len() == dim).then_some(dim)
    }

    /// The vectors as lists of floats.
    fn to_lists<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let outer = PyList::empty(py);
        for vector in &self.vectors {
            outer.append(PyList::new(py, vector.iter().map(|x| f64::from(*x)))?)?;
        }
        Ok(outer)
    }

    /// Every vector, one after the other, as native-endian float32 bytes (for `numpy.frombuffer`).
    fn to_bytearray<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyByteArray>> {
        let size = self.vectors.iter().map(|v| v.len() * 4).sum();
        PyByteArray::new_with(py, size, |buffer| {
            let mut at = 0;
            for vector in &self.vectors {
                let bytes: &[u8] = bytemuck::cast_slice(vector);
                buffer[at..at + bytes.len()].copy_from_slice(bytes);
                at += bytes.len();
            }
            Ok(())
        })
    }
}

/// The `EmbedResult` of an embeddings answer (`embeddings` built on first read, or never for `to_numpy()`).
pub fn embed_result(py: Python<'_>, embeddings: core::Embeddings) -> PyResult<Bound<'_, PyAny>> {
    let vectors = Bound::new(
        py,
        Vectors {
            vectors: embeddings.vectors,
        },
    )?;
    instance(
        py,
        Class::EmbedResult,
        &[
            (
                intern!(py, "model"),
                embeddings.model.into_bound_py_any(py)?,
            ),
            (intern!(py, "_vectors"), vectors.into_any()),
            (intern!(py, "_raw_source"), raw_source(py, embeddings.body)?),
            (intern!(py, "usage"), opt_usage(py, embeddings.usage)?),
        ],
    )
}

/// The `RerankResult` of a rerank answer.
pub fn rerank_result(py: Python<'_>, rerank: core::Rerank) -> PyResult<Bound<'_, PyAny>> {
    let items = PyList::empty(py);
    for result in &rerank.results {
        items.append(instance(
            py,
            Class::RerankItem,
            &[
                (intern!(py, "index"), result.index.into_bound_py_any(py)?),
                (
                    intern!(py, "relevance_score"),
                    result.relevance_score.into_bound_py_any(py)?,
                ),
            ],
        )?)?;
    }
    instance(
        py,
        Class::RerankResult,
        &[
            (intern!(py, "results"), items.into_any()),
            (intern!(py, "model"), rerank.model.into_bound_py_any(py)?),
            (intern!(py, "_raw_source"), raw_source(py, rerank.body)?),
        ],
    )
}

/// The `ReadinessEvent` of one readiness update.
pub fn readiness_event(py: Python<'_>, event: core::ReadinessEvent) -> PyResult<Bound<'_, PyAny>> {
    instance(
        py,
        Class::ReadinessEvent,
        &[
            (intern!(py, "phase"), event.phase.into_bound_py_any(py)?),
            (intern!(py, "message"), event.message.into_bound_py_any(py)?),
            (
                intern!(py, "elapsed_ms"),
                event.elapsed_ms.into_bound_py_any(py)?,
            ),
            (intern!(py, "step"), event.step.into_bound_py_any(py)?),
        ],
    )
}

/// The `EndpointRef` of an ensured workload.
pub fn endpoint_ref<'py>(
    py: Python<'py>,
    project_slug: &str,
    workload_slug: &str,
) -> PyResult<Bound<'py, PyAny>> {
    instance(
        py,
        Class::EndpointRef,
        &[
            (
                intern!(py, "project_slug"),
                project_slug.into_bound_py_any(py)?,
            ),
            (
                intern!(py, "workload_slug"),
                workload_slug.into_bound_py_any(py)?,
            ),
        ],
    )
}

/// The `Plan` of a drift comparison.
pub fn plan<'py>(py: Python<'py>, plan: &core::Plan) -> PyResult<Bound<'py, PyAny>> {
    let mut changes = Vec::with_capacity(plan.changes.len());
    for change in &plan.changes {
        let live = match &change.live {
            Some(live) => value_to_py(py, live)?,
            None => py.None().into_bound(py),
        };
        changes.push(instance(
            py,
            Class::FieldChange,
            &[
                (
                    intern!(py, "field"),
                    change.field.as_str().into_bound_py_any(py)?,
                ),
                (intern!(py, "live"), live),
                (intern!(py, "desired"), value_to_py(py, &change.desired)?),
            ],
        )?);
    }
    instance(
        py,
        Class::Plan,
        &[
            (
                intern!(py, "action"),
                plan.action.as_str().into_bound_py_any(py)?,
            ),
            (
                intern!(py, "project"),
                plan.project.as_str().into_bound_py_any(py)?,
            ),
            (
                intern!(py, "workload_slug"),
                plan.workload_slug.as_str().into_bound_py_any(py)?,
            ),
            (
                intern!(py, "changes"),
                PyTuple::new(py, changes)?.into_any(),
            ),
            (
                intern!(py, "rendered"),
                plan.render().into_bound_py_any(py)?,
            ),
        ],
    )
}
