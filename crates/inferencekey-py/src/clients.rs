//! The native client classes: `ManagementClient`, `ReadinessWatch`, `DataClient`, `Endpoint`, `ChatStream`.
//! Each operation converts its arguments into one `runtime::Call` (the core call and the conversion of its result),
//! run blocking by the plain method and on an asyncio loop by its `_async` twin.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::exceptions::PyStopIteration;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyList};
use serde_json::Value;

use inferencekey_core as core;
use inferencekey_core::Workload;

use crate::convert::{plan_to_py, py_to_value, raw_to_py, spec_from_py, JsonToPy};
use crate::errors::{internal_error, local_error, to_pyerr};
use crate::runtime::Call;

/// Most chunks handed to Python per crossing: enough to amortise the crossing, small enough to stay interactive.
const STREAM_BATCH: usize = 256;

/// An integer argument checked against its lower bound locally (a ValidationError before any request, rather
/// than an OverflowError from the conversion or a round trip to the server).
fn at_least<T: TryFrom<i64>>(py: Python<'_>, name: &str, value: i64, min: i64) -> PyResult<T> {
    let fail = || {
        local_error(
            py,
            "ValidationError",
            &format!("validation error: {name} must be an integer of at least {min}"),
        )
    };
    if value < min {
        return Err(fail());
    }
    T::try_from(value).map_err(|_| fail())
}

/// Transport options from the Python keyword arguments, checked before anything is built.
fn transport_options(
    py: Python<'_>,
    connect_timeout: f64,
    timeout: f64,
    max_retries: i64,
) -> PyResult<core::TransportOptions> {
    let seconds = |name: &str, value: f64| {
        Duration::try_from_secs_f64(value)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| {
                local_error(
                    py,
                    "ValidationError",
                    &format!("validation error: {name} must be a positive number of seconds"),
                )
            })
    };
    Ok(core::TransportOptions {
        connect_timeout: seconds("connect_timeout", connect_timeout)?,
        read_timeout: seconds("timeout", timeout)?,
        max_retries: at_least(py, "max_retries", max_retries, 0)?,
        user_agent: format!("inferencekey-python/{}", env!("CARGO_PKG_VERSION")),
    })
}

/// A core client and the pid that built it: its connection pool belongs to that process's runtime,
/// so a forked child rebuilds it (from the same arguments) on first use.
struct PerProcess<T> {
    slot: Mutex<(u32, T)>,
}

impl<T: Clone> PerProcess<T> {
    fn new(value: T) -> Self {
        Self {
            slot: Mutex::new((std::process::id(), value)),
        }
    }

    fn get(&self, rebuild: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
        let pid = std::process::id();
        let mut slot = self
            .slot
            .lock()
            .map_err(|_| internal_error("a client lock was poisoned"))?;
        if slot.0 != pid {
            *slot = (pid, rebuild()?);
        }
        Ok(slot.1.clone())
    }

    fn replace(&self, value: T) -> PyResult<()> {
        let mut slot = self
            .slot
            .lock()
            .map_err(|_| internal_error("a client lock was poisoned"))?;
        *slot = (std::process::id(), value);
        Ok(())
    }
}

/// The constructor arguments of a client, kept to rebuild it in a forked child or after `close()`.
struct ClientArgs {
    base_url: Option<String>,
    credential: Option<String>,
    project: Option<String>,
    from_env: bool,
    options: core::TransportOptions,
}

/// A core client with what rebuilds it from its arguments (after `fork()` or `close()`).
struct Rebuildable<C> {
    args: ClientArgs,
    build: fn(&ClientArgs) -> core::Result<C>,
    client: PerProcess<C>,
}

impl<C: Clone> Rebuildable<C> {
    /// Build the client now, so configuration errors raise in the constructor.
    fn new(
        py: Python<'_>,
        args: ClientArgs,
        build: fn(&ClientArgs) -> core::Result<C>,
    ) -> PyResult<Self> {
        let client = build(&args).map_err(|err| to_pyerr(py, err))?;
        Ok(Self {
            args,
            build,
            client: PerProcess::new(client),
        })
    }

    fn get(&self, py: Python<'_>) -> PyResult<C> {
        self.client
            .get(|| (self.build)(&self.args).map_err(|err| to_pyerr(py, err)))
    }

    /// Drop the connection pool now (a later call opens a fresh one).
    fn reset(&self, py: Python<'_>) -> PyResult<()> {
        self.client
            .replace((self.build)(&self.args).map_err(|err| to_pyerr(py, err))?)
    }
}

/// Native control-plane client (wrapped by `inferencekey.ManagementClient`).
#[pyclass(module = "inferencekey._core", frozen)]
pub struct ManagementClient {
    client: Rebuildable<core::ManagementClient>,
}

impl ManagementClient {
    fn build(args: &ClientArgs) -> core::Result<core::ManagementClient> {
        let build = if args.from_env {
            core::ManagementClient::from_env
        } else {
            core::ManagementClient::new
        };
        build(
            args.base_url.as_deref(),
            args.credential.as_deref(),
            args.project.as_deref(),
            args.options.clone(),
        )
    }

    fn core(&self, py: Python<'_>) -> PyResult<core::ManagementClient> {
        self.client.get(py)
    }

    fn ensure_call(
        &self,
        py: Python<'_>,
        spec: &Bound<'_, PyAny>,
        on_drift: &str,
        project: Option<String>,
    ) -> PyResult<Call<core::EnsureOutcome>> {
        let spec = spec_from_py(spec)?;
        let on_drift: core::OnDrift = on_drift.parse().map_err(|err| to_pyerr(py, err))?;
        let client = self.core(py)?;
        Ok(Call::new(
            async move { client.ensure(&spec, on_drift, project.as_deref()).await },
            |py, outcome| {
                let plan = plan_to_py(py, &outcome.plan)?;
                let fields = (
                    outcome.project_slug,
                    outcome.workload_slug,
                    plan,
                    outcome.applied,
                );
                Ok(fields.into_pyobject(py)?.into_any())
            },
        ))
    }

    fn plan_call(
        &self,
        py: Python<'_>,
        spec: &Bound<'_, PyAny>,
        project: Option<String>,
    ) -> PyResult<Call<core::Plan>> {
        let spec = spec_from_py(spec)?;
        let client = self.core(py)?;
        Ok(Call::new(
            async move { client.plan(&spec, project.as_deref()).await },
            |py, plan| plan_to_py(py, &plan),
        ))
    }

    fn delete_call(
        &self,
        py: Python<'_>,
        workload_slug: String,
        project: Option<String>,
    ) -> PyResult<Call<bool>> {
        let client = self.core(py)?;
        Ok(Call::new(
            async move { client.delete(&workload_slug, project.as_deref()).await },
            |py, deleted| Ok(PyBool::new(py, deleted).to_owned().into_any()),
        ))
    }

    fn list_call(&self, py: Python<'_>, project: Option<String>) -> PyResult<Call<Vec<Workload>>> {
        let client = self.core(py)?;
        Ok(Call::new(
            async move { client.list(project.as_deref()).await },
            |py, workloads| {
                let list = PyList::empty(py);
                for workload in &workloads {
                    list.append(raw_to_py(py, &workload.raw)?)?;
                }
                Ok(list.into_any())
            },
        ))
    }
}

#[pymethods]
impl ManagementClient {
    #[new]
    #[pyo3(signature = (*, base_url, sdk_token, project, from_env, connect_timeout, timeout, max_retries))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        base_url: Option<String>,
        sdk_token: Option<String>,
        project: Option<String>,
        from_env: bool,
        connect_timeout: f64,
        timeout: f64,
        max_retries: i64,
    ) -> PyResult<Self> {
        let options = transport_options(py, connect_timeout, timeout, max_retries)?;
        let args = ClientArgs {
            base_url,
            credential: sdk_token,
            project,
            from_env,
            options,
        };
        Ok(Self {
            client: Rebuildable::new(py, args, Self::build)?,
        })
    }

    #[getter]
    fn base_url(&self, py: Python<'_>) -> PyResult<String> {
        Ok(self.core(py)?.base_url().to_owned())
    }

    #[getter]
    fn project(&self, py: Python<'_>) -> PyResult<Option<String>> {
        Ok(self.core(py)?.project().map(str::to_owned))
    }

    #[pyo3(signature = (spec, on_drift, project))]
    fn ensure<'py>(
        &self,
        py: Python<'py>,
        spec: &Bound<'py, PyAny>,
        on_drift: &str,
        project: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.ensure_call(py, spec, on_drift, project)?.wait(py)
    }

    #[pyo3(signature = (future, spec, on_drift, project))]
    fn ensure_async(
        &self,
        future: &Bound<'_, PyAny>,
        spec: &Bound<'_, PyAny>,
        on_drift: &str,
        project: Option<String>,
    ) -> PyResult<()> {
        self.ensure_call(future.py(), spec, on_drift, project)?
            .spawn(future)
    }

    #[pyo3(signature = (spec, project))]
    fn plan<'py>(
        &self,
        py: Python<'py>,
        spec: &Bound<'py, PyAny>,
        project: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.plan_call(py, spec, project)?.wait(py)
    }

    #[pyo3(signature = (future, spec, project))]
    fn plan_async(
        &self,
        future: &Bound<'_, PyAny>,
        spec: &Bound<'_, PyAny>,
        project: Option<String>,
    ) -> PyResult<()> {
        self.plan_call(future.py(), spec, project)?.spawn(future)
    }

    #[pyo3(signature = (workload_slug, project))]
    fn delete<'py>(
        &self,
        py: Python<'py>,
        workload_slug: String,
        project: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.delete_call(py, workload_slug, project)?.wait(py)
    }

    #[pyo3(signature = (future, workload_slug, project))]
    fn delete_async(
        &self,
        future: &Bound<'_, PyAny>,
        workload_slug: String,
        project: Option<String>,
    ) -> PyResult<()> {
        self.delete_call(future.py(), workload_slug, project)?
            .spawn(future)
    }

    #[pyo3(signature = (project))]
    fn list<'py>(&self, py: Python<'py>, project: Option<String>) -> PyResult<Bound<'py, PyAny>> {
        self.list_call(py, project)?.wait(py)
    }

    #[pyo3(signature = (future, project))]
    fn list_async(&self, future: &Bound<'_, PyAny>, project: Option<String>) -> PyResult<()> {
        self.list_call(future.py(), project)?.spawn(future)
    }

    #[pyo3(signature = (workload_slug, project, timeout))]
    fn watch_readiness(
        &self,
        py: Python<'_>,
        workload_slug: String,
        project: Option<String>,
        timeout: f64,
    ) -> PyResult<ReadinessWatch> {
        let timeout = Duration::try_from_secs_f64(timeout).map_err(|_| {
            local_error(
                py,
                "ValidationError",
                "validation error: timeout must be a non-negative number of seconds",
            )
        })?;
        let watch = self
            .core(py)?
            .watch_readiness(&workload_slug, project.as_deref(), timeout)
            .map_err(|err| to_pyerr(py, err))?;
        Ok(ReadinessWatch {
            watch: Arc::new(tokio::sync::Mutex::new(Some(watch))),
        })
    }

    /// Drop the connection pool now (a later call opens a fresh one).
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        self.client.reset(py)
    }
}

/// The readiness events of one workload, as an iterator of `(phase, message, elapsed_ms, step)`.
#[pyclass(module = "inferencekey._core", frozen)]
pub struct ReadinessWatch {
    watch: Arc<tokio::sync::Mutex<Option<core::ReadinessWatch>>>,
}

impl ReadinessWatch {
    /// The next event as `(phase, message, elapsed_ms, step)`, or None once the watch has finished.
    fn next_call(&self) -> Call<Option<core::ReadinessEvent>> {
        let watch = Arc::clone(&self.watch);
        Call::new(
            async move {
                let mut guard = watch.lock().await;
                match guard.as_mut() {
                    Some(watch) => {
                        let next = watch.next().await;
                        if !matches!(next, Ok(Some(_))) {
                            // Finished (ready, error or deadline): release the connection at once.
                            *guard = None;
                        }
                        next
                    }
                    None => Ok(None),
                }
            },
            |py, event| match event {
                Some(event) => {
                    let fields = (event.phase, event.message, event.elapsed_ms, event.step);
                    Ok(fields.into_pyobject(py)?.into_any())
                }
                None => Ok(py.None().into_bound(py)),
            },
        )
    }
}

#[pymethods]
impl ReadinessWatch {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let event = self.next_call().wait(py)?;
        if event.is_none() {
            return Err(PyStopIteration::new_err(()));
        }
        Ok(event)
    }

    /// Resolve `future` with the next event, or None once the watch has finished.
    fn next_async(&self, future: &Bound<'_, PyAny>) -> PyResult<()> {
        self.next_call().spawn(future)
    }
}

/// Native data-plane client (wrapped by `inferencekey.DataClient`).
#[pyclass(module = "inferencekey._core", frozen)]
pub struct DataClient {
    client: Rebuildable<core::DataClient>,
}

impl DataClient {
    fn build(args: &ClientArgs) -> core::Result<core::DataClient> {
        let build = if args.from_env {
            core::DataClient::from_env
        } else {
            core::DataClient::new
        };
        build(
            args.base_url.as_deref(),
            args.project.as_deref(),
            args.credential.as_deref(),
            args.options.clone(),
        )
    }

    fn core(&self, py: Python<'_>) -> PyResult<core::DataClient> {
        self.client.get(py)
    }
}

#[pymethods]
impl DataClient {
    #[new]
    #[pyo3(signature = (*, base_url, project, api_key, from_env, connect_timeout, timeout, max_retries))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        base_url: Option<String>,
        project: Option<String>,
        api_key: Option<String>,
        from_env: bool,
        connect_timeout: f64,
        timeout: f64,
        max_retries: i64,
    ) -> PyResult<Self> {
        let options = transport_options(py, connect_timeout, timeout, max_retries)?;
        let args = ClientArgs {
            base_url,
            credential: api_key,
            project,
            from_env,
            options,
        };
        Ok(Self {
            client: Rebuildable::new(py, args, Self::build)?,
        })
    }

    #[getter]
    fn base_url(&self, py: Python<'_>) -> PyResult<String> {
        Ok(self.core(py)?.base_url().to_owned())
    }

    #[getter]
    fn project(&self, py: Python<'_>) -> PyResult<String> {
        Ok(self.core(py)?.project().to_owned())
    }

    #[pyo3(signature = (workload_slug, api_key))]
    fn endpoint(
        slf: Bound<'_, Self>,
        workload_slug: String,
        api_key: Option<String>,
    ) -> PyResult<Endpoint> {
        let py = slf.py();
        let endpoint = slf
            .get()
            .core(py)?
            .endpoint(&workload_slug, api_key.as_deref())
            .map_err(|err| to_pyerr(py, err))?;
        Ok(Endpoint {
            client: slf.unbind(),
            workload_slug,
            api_key,
            endpoint: PerProcess::new(endpoint),
        })
    }

    /// Drop the connection pool now (a later call opens a fresh one).
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        self.client.reset(py)
    }
}

/// One workload's OpenAI-compatible endpoint, bound to one `ik_live_` key.
#[pyclass(module = "inferencekey._core", frozen)]
pub struct Endpoint {
    client: Py<DataClient>,
    workload_slug: String,
    api_key: Option<String>,
    endpoint: PerProcess<core::Endpoint>,
}

impl Endpoint {
    fn core(&self, py: Python<'_>) -> PyResult<core::Endpoint> {
        self.endpoint.get(|| {
            let client = self.client.get().core(py)?;
            client
                .endpoint(&self.workload_slug, self.api_key.as_deref())
                .map_err(|err| to_pyerr(py, err))
        })
    }
}

/// The chat request from the Python arguments (messages converted natively, forwarded as given).
fn chat_request(
    py: Python<'_>,
    prompt: Option<String>,
    messages: Option<&Bound<'_, PyAny>>,
    temperature: Option<f64>,
    max_tokens: Option<i64>,
) -> PyResult<core::ChatRequest> {
    let max_tokens = max_tokens
        .map(|n| at_least(py, "max_tokens", n, 1))
        .transpose()?;
    let messages = match messages {
        Some(obj) if !obj.is_none() => match py_to_value(obj, "messages")? {
            Value::Array(items) => Some(items),
            _ => {
                return Err(local_error(
                    py,
                    "ValidationError",
                    "validation error: messages must be a list",
                ));
            }
        },
        _ => None,
    };
    Ok(core::ChatRequest {
        prompt,
        messages,
        temperature,
        max_tokens,
    })
}

impl Endpoint {
    fn chat_call(
        &self,
        py: Python<'_>,
        prompt: Option<String>,
        messages: Option<&Bound<'_, PyAny>>,
        temperature: Option<f64>,
        max_tokens: Option<i64>,
    ) -> PyResult<Call<core::ChatCompletion>> {
        let request = chat_request(py, prompt, messages, temperature, max_tokens)?;
        let endpoint = self.core(py)?;
        Ok(Call::new(
            async move { endpoint.chat(&request).await },
            |py, completion| {
                let raw = raw_to_py(py, &completion.raw)?;
                let fields = (
                    completion.text,
                    completion.model,
                    completion.finish_reason,
                    raw,
                );
                Ok(fields.into_pyobject(py)?.into_any())
            },
        ))
    }

    fn chat_stream_call(
        &self,
        py: Python<'_>,
        prompt: Option<String>,
        messages: Option<&Bound<'_, PyAny>>,
        temperature: Option<f64>,
        max_tokens: Option<i64>,
    ) -> PyResult<Call<core::ChatStream>> {
        let request = chat_request(py, prompt, messages, temperature, max_tokens)?;
        let endpoint = self.core(py)?;
        Ok(Call::new(
            async move { endpoint.chat_stream(&request).await },
            |py, stream| {
                let stream = ChatStream {
                    stream: Arc::new(tokio::sync::Mutex::new(Some(stream))),
                };
                Ok(Bound::new(py, stream)?.into_any())
            },
        ))
    }

    fn embed_call(
        &self,
        py: Python<'_>,
        input: Vec<String>,
        base64: bool,
    ) -> PyResult<Call<core::Embeddings>> {
        let format = if base64 {
            core::EmbeddingFormat::Base64
        } else {
            core::EmbeddingFormat::Float
        };
        let endpoint = self.core(py)?;
        Ok(Call::new(
            async move { endpoint.embed(input, format).await },
            |py, embeddings| {
                let vectors = PyList::empty(py);
                for vector in &embeddings.vectors {
                    vectors.append(PyList::new(py, vector.iter().map(|x| f64::from(*x)))?)?;
                }
                let raw = raw_to_py(py, &embeddings.raw)?;
                Ok((vectors, embeddings.model, raw)
                    .into_pyobject(py)?
                    .into_any())
            },
        ))
    }

    fn rerank_call(
        &self,
        py: Python<'_>,
        query: String,
        documents: Vec<String>,
        top_n: Option<i64>,
    ) -> PyResult<Call<core::Rerank>> {
        let top_n = top_n.map(|n| at_least(py, "top_n", n, 1)).transpose()?;
        let endpoint = self.core(py)?;
        Ok(Call::new(
            async move { endpoint.rerank(&query, documents, top_n).await },
            |py, rerank| {
                let results: Vec<(usize, f64)> = rerank
                    .results
                    .iter()
                    .map(|r| (r.index, r.relevance_score))
                    .collect();
                let raw = raw_to_py(py, &rerank.raw)?;
                Ok((results, rerank.model, raw).into_pyobject(py)?.into_any())
            },
        ))
    }
}

#[pymethods]
impl Endpoint {
    #[getter]
    fn workload_slug(&self, py: Python<'_>) -> PyResult<String> {
        Ok(self.core(py)?.workload_slug().to_owned())
    }

    #[getter]
    fn project(&self, py: Python<'_>) -> PyResult<String> {
        Ok(self.core(py)?.project().to_owned())
    }

    #[getter]
    fn base_url(&self, py: Python<'_>) -> PyResult<String> {
        Ok(self.core(py)?.base_url().to_owned())
    }

    #[pyo3(signature = (prompt, messages, temperature, max_tokens))]
    fn chat<'py>(
        &self,
        py: Python<'py>,
        prompt: Option<String>,
        messages: Option<&Bound<'py, PyAny>>,
        temperature: Option<f64>,
        max_tokens: Option<i64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.chat_call(py, prompt, messages, temperature, max_tokens)?
            .wait(py)
    }

    #[pyo3(signature = (future, prompt, messages, temperature, max_tokens))]
    fn chat_async(
        &self,
        future: &Bound<'_, PyAny>,
        prompt: Option<String>,
        messages: Option<&Bound<'_, PyAny>>,
        temperature: Option<f64>,
        max_tokens: Option<i64>,
    ) -> PyResult<()> {
        self.chat_call(future.py(), prompt, messages, temperature, max_tokens)?
            .spawn(future)
    }

    #[pyo3(signature = (prompt, messages, temperature, max_tokens))]
    fn chat_stream<'py>(
        &self,
        py: Python<'py>,
        prompt: Option<String>,
        messages: Option<&Bound<'py, PyAny>>,
        temperature: Option<f64>,
        max_tokens: Option<i64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.chat_stream_call(py, prompt, messages, temperature, max_tokens)?
            .wait(py)
    }

    #[pyo3(signature = (future, prompt, messages, temperature, max_tokens))]
    fn chat_stream_async(
        &self,
        future: &Bound<'_, PyAny>,
        prompt: Option<String>,
        messages: Option<&Bound<'_, PyAny>>,
        temperature: Option<f64>,
        max_tokens: Option<i64>,
    ) -> PyResult<()> {
        self.chat_stream_call(future.py(), prompt, messages, temperature, max_tokens)?
            .spawn(future)
    }

    #[pyo3(signature = (input, base64))]
    fn embed<'py>(
        &self,
        py: Python<'py>,
        input: Vec<String>,
        base64: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.embed_call(py, input, base64)?.wait(py)
    }

    #[pyo3(signature = (future, input, base64))]
    fn embed_async(
        &self,
        future: &Bound<'_, PyAny>,
        input: Vec<String>,
        base64: bool,
    ) -> PyResult<()> {
        self.embed_call(future.py(), input, base64)?.spawn(future)
    }

    #[pyo3(signature = (query, documents, top_n))]
    fn rerank<'py>(
        &self,
        py: Python<'py>,
        query: String,
        documents: Vec<String>,
        top_n: Option<i64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.rerank_call(py, query, documents, top_n)?.wait(py)
    }

    #[pyo3(signature = (future, query, documents, top_n))]
    fn rerank_async(
        &self,
        future: &Bound<'_, PyAny>,
        query: String,
        documents: Vec<String>,
        top_n: Option<i64>,
    ) -> PyResult<()> {
        self.rerank_call(future.py(), query, documents, top_n)?
            .spawn(future)
    }
}

/// An open chat stream; `next_batch` hands Python every decoded chunk that is ready in one crossing.
#[pyclass(module = "inferencekey._core", frozen)]
pub struct ChatStream {
    stream: Arc<tokio::sync::Mutex<Option<core::ChatStream>>>,
}

impl ChatStream {
    fn next_batch_call(&self) -> Call<Vec<core::ChatChunk>> {
        let stream = Arc::clone(&self.stream);
        Call::new(
            async move {
                let mut guard = stream.lock().await;
                match guard.as_mut() {
                    Some(stream) => {
                        let batch = stream.next_batch(STREAM_BATCH).await;
                        if !matches!(&batch, Ok(chunks) if !chunks.is_empty()) {
                            // Finished or failed: drop the stream now so its connection is released.
                            *guard = None;
                        }
                        batch
                    }
                    None => Ok(Vec::new()),
                }
            },
            |py, chunks| {
                let list = PyList::empty(py);
                let mut json = JsonToPy::new(py);
                for chunk in &chunks {
                    let raw = json.dict(&chunk.data)?;
                    list.append((chunk.text.as_str(), chunk.finish_reason.as_deref(), raw))?;
                }
                Ok(list.into_any())
            },
        )
    }

    fn close_call(&self) -> Call<()> {
        let stream = Arc::clone(&self.stream);
        Call::new(
            async move {
                if let Some(mut open) = stream.lock().await.take() {
                    open.close();
                }
                Ok(())
            },
            |py, ()| Ok(py.None().into_bound(py)),
        )
    }
}

#[pymethods]
impl ChatStream {
    fn next_batch<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.next_batch_call().wait(py)
    }

    /// Resolve `future` with the chunks ready now (at least one), or [] once the stream has finished.
    fn next_batch_async(&self, future: &Bound<'_, PyAny>) -> PyResult<()> {
        self.next_batch_call().spawn(future)
    }

    /// Close the stream and its connection; later batches are empty.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        self.close_call().wait(py).map(drop)
    }

    /// Resolve `future` with None once the stream and its connection are closed.
    fn close_async(&self, future: &Bound<'_, PyAny>) -> PyResult<()> {
        self.close_call().spawn(future)
    }
}
