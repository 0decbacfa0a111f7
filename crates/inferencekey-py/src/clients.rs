//! The native client classes: `ManagementClient`, `ReadinessWatch`, `DataClient`, `Endpoint`, `ChatStream`.
//! Each method converts its arguments, runs one core call through `runtime::wait`, and converts the result.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::exceptions::PyStopIteration;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyTuple};
use serde_json::Value;

use inferencekey_core as core;

use crate::convert::{plan_to_py, py_to_value, raw_to_py, spec_from_py, JsonToPy};
use crate::errors::{internal_error, local_error, to_pyerr};
use crate::runtime::wait;

/// Most chunks handed to Python per crossing: enough to amortise the crossing, small enough to stay interactive.
const STREAM_BATCH: usize = 256;

/// Transport options from the Python keyword arguments, checked before anything is built.
fn transport_options(
    py: Python<'_>,
    connect_timeout: f64,
    timeout: f64,
    max_retries: u32,
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
        max_retries,
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
        max_retries: u32,
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
    ) -> PyResult<Bound<'py, PyTuple>> {
        let spec = spec_from_py(spec)?;
        let on_drift: core::OnDrift = on_drift.parse().map_err(|err| to_pyerr(py, err))?;
        let client = self.core(py)?;
        let outcome = wait(py, async move {
            client.ensure(&spec, on_drift, project.as_deref()).await
        })?;
        let plan = plan_to_py(py, &outcome.plan)?;
        (
            outcome.project_slug,
            outcome.workload_slug,
            plan,
            outcome.applied,
        )
            .into_pyobject(py)
    }

    #[pyo3(signature = (spec, project))]
    fn plan<'py>(
        &self,
        py: Python<'py>,
        spec: &Bound<'py, PyAny>,
        project: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let spec = spec_from_py(spec)?;
        let client = self.core(py)?;
        let plan = wait(
            py,
            async move { client.plan(&spec, project.as_deref()).await },
        )?;
        plan_to_py(py, &plan)
    }

    #[pyo3(signature = (workload_slug, project))]
    fn delete(
        &self,
        py: Python<'_>,
        workload_slug: String,
        project: Option<String>,
    ) -> PyResult<bool> {
        let client = self.core(py)?;
        wait(py, async move {
            client.delete(&workload_slug, project.as_deref()).await
        })
    }

    #[pyo3(signature = (project))]
    fn list<'py>(&self, py: Python<'py>, project: Option<String>) -> PyResult<Bound<'py, PyList>> {
        let client = self.core(py)?;
        let workloads = wait(py, async move { client.list(project.as_deref()).await })?;
        let list = PyList::empty(py);
        for workload in &workloads {
            list.append(raw_to_py(py, &workload.raw)?)?;
        }
        Ok(list)
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

#[pymethods]
impl ReadinessWatch {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let watch = Arc::clone(&self.watch);
        let event = wait(py, async move {
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
        })?;
        match event {
            Some(event) => {
                (event.phase, event.message, event.elapsed_ms, event.step).into_pyobject(py)
            }
            None => Err(PyStopIteration::new_err(())),
        }
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
        max_retries: u32,
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
    prompt: Option<String>,
    messages: Option<&Bound<'_, PyAny>>,
    temperature: Option<f64>,
    max_tokens: Option<u64>,
) -> PyResult<core::ChatRequest> {
    let messages = match messages {
        Some(obj) if !obj.is_none() => match py_to_value(obj, "messages")? {
            Value::Array(items) => Some(items),
            _ => {
                return Err(local_error(
                    obj.py(),
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
        max_tokens: Option<u64>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let request = chat_request(prompt, messages, temperature, max_tokens)?;
        let endpoint = self.core(py)?;
        let completion = wait(py, async move { endpoint.chat(&request).await })?;
        let raw = raw_to_py(py, &completion.raw)?;
        (
            completion.text,
            completion.model,
            completion.finish_reason,
            raw,
        )
            .into_pyobject(py)
    }

    #[pyo3(signature = (prompt, messages, temperature, max_tokens))]
    fn chat_stream(
        &self,
        py: Python<'_>,
        prompt: Option<String>,
        messages: Option<&Bound<'_, PyAny>>,
        temperature: Option<f64>,
        max_tokens: Option<u64>,
    ) -> PyResult<ChatStream> {
        let request = chat_request(prompt, messages, temperature, max_tokens)?;
        let endpoint = self.core(py)?;
        let stream = wait(py, async move { endpoint.chat_stream(&request).await })?;
        Ok(ChatStream {
            stream: Arc::new(tokio::sync::Mutex::new(Some(stream))),
        })
    }

    #[pyo3(signature = (input, base64))]
    fn embed<'py>(
        &self,
        py: Python<'py>,
        input: Vec<String>,
        base64: bool,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let format = if base64 {
            core::EmbeddingFormat::Base64
        } else {
            core::EmbeddingFormat::Float
        };
        let endpoint = self.core(py)?;
        let embeddings = wait(py, async move { endpoint.embed(input, format).await })?;
        let vectors = PyList::empty(py);
        for vector in &embeddings.vectors {
            vectors.append(PyList::new(py, vector.iter().map(|x| f64::from(*x)))?)?;
        }
        let raw = raw_to_py(py, &embeddings.raw)?;
        (vectors, embeddings.model, raw).into_pyobject(py)
    }

    #[pyo3(signature = (query, documents, top_n))]
    fn rerank<'py>(
        &self,
        py: Python<'py>,
        query: String,
        documents: Vec<String>,
        top_n: Option<u32>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let endpoint = self.core(py)?;
        let rerank = wait(py, async move {
            endpoint.rerank(&query, documents, top_n).await
        })?;
        let results: Vec<(usize, f64)> = rerank
            .results
            .iter()
            .map(|r| (r.index, r.relevance_score))
            .collect();
        let raw = raw_to_py(py, &rerank.raw)?;
        (results, rerank.model, raw).into_pyobject(py)
    }
}

/// An open chat stream; `next_batch` hands Python every decoded chunk that is ready in one crossing.
#[pyclass(module = "inferencekey._core", frozen)]
pub struct ChatStream {
    stream: Arc<tokio::sync::Mutex<Option<core::ChatStream>>>,
}

#[pymethods]
impl ChatStream {
    fn next_batch<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let stream = Arc::clone(&self.stream);
        let chunks = wait(py, async move {
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
        })?;
        let list = PyList::empty(py);
        let mut json = JsonToPy::new(py);
        for chunk in &chunks {
            let raw = json.dict(&chunk.data)?;
            list.append((chunk.text.as_str(), chunk.finish_reason.as_deref(), raw))?;
        }
        Ok(list)
    }

    /// Close the stream and its connection; later batches are empty.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let stream = Arc::clone(&self.stream);
        wait(py, async move {
            if let Some(mut open) = stream.lock().await.take() {
                open.close();
            }
            Ok(())
        })
    }
}
