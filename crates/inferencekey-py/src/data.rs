//! The data-plane classes: `DataClient` and `Endpoint`. Each operation converts its arguments and returns a
//! `Pending` call (the sync surface `wait()`s it, the async one `start(future)`s it); results are built as the
//! surface's registered classes (`results`). No rule lives here: bounds, combinations and wording are the core's.

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple};

use inferencekey_core as core;

use crate::args;
use crate::batch::EmbedJob;
use crate::clients::{overrides, transport_config, ClientArgs, PerProcess, Rebuildable};
use crate::errors::{internal_error, to_pyerr};
use crate::results;
use crate::runtime::{settle_idle, Call, Pending};
use crate::stream::OpenStream;

/// Native data-plane client (wrapped by `inferencekey.DataClient` and its async twin).
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
    #[pyo3(signature = (*, base_url, project, api_key, from_env, connect_timeout, timeout, max_retries, default_headers=None, verify=None, cert=None, proxy=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        base_url: &Bound<'_, PyAny>,
        project: &Bound<'_, PyAny>,
        api_key: &Bound<'_, PyAny>,
        from_env: bool,
        connect_timeout: &Bound<'_, PyAny>,
        timeout: &Bound<'_, PyAny>,
        max_retries: &Bound<'_, PyAny>,
        default_headers: Option<&Bound<'_, PyAny>>,
        verify: Option<&Bound<'_, PyAny>>,
        cert: Option<&Bound<'_, PyAny>>,
        proxy: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let args = ClientArgs::from_python(
            py,
            base_url,
            (api_key, "api_key"),
            project,
            from_env,
            [connect_timeout, timeout, max_retries],
            [default_headers, verify, cert, proxy],
        )?;
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
        workload_slug: &Bound<'_, PyAny>,
        api_key: &Bound<'_, PyAny>,
    ) -> PyResult<Endpoint> {
        let py = slf.py();
        let workload_slug = args::text(workload_slug, "workload_slug")?;
        let api_key = args::opt_text(api_key, "api_key")?;
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

    /// A copy with other settings (each None: this client's) that shares this client's connection pool.
    #[pyo3(signature = (timeout, max_retries, default_headers))]
    fn with_options(
        &self,
        py: Python<'_>,
        timeout: &Bound<'_, PyAny>,
        max_retries: &Bound<'_, PyAny>,
        default_headers: &Bound<'_, PyAny>,
    ) -> PyResult<Self> {
        Ok(Self {
            client: self.client.with_options(
                py,
                timeout,
                max_retries,
                default_headers,
                core::DataClient::with_overrides,
            )?,
        })
    }

    /// Drop the connection pool now (a later call opens a fresh one).
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        self.client.reset(py)?;
        // Pools this thread (or a thread that exited) used close their connections when their runtime runs.
        py.detach(settle_idle);
        Ok(())
    }

    /// The constructor arguments that rebuild this client elsewhere, credentials included (for pickling).
    fn config<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let client = self.core(py)?;
        let config = transport_config(py, &self.client.args)?;
        config.set_item("base_url", client.base_url())?;
        config.set_item("project", client.project())?;
        config.set_item("api_key", client.exposed_api_key())?;
        Ok(config)
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
    /// The core endpoint for one call: this one, or a copy sharing its pool with the call's overrides, when the
    /// `call` tuple (`extra_headers`, `timeout`, `max_retries`) sets any.
    fn for_call(
        &self,
        py: Python<'_>,
        call: Option<&Bound<'_, PyTuple>>,
    ) -> PyResult<core::Endpoint> {
        let endpoint = self.core(py)?;
        let Some(call) = call else {
            return Ok(endpoint);
        };
        if call.len() != 3 {
            return Err(internal_error(
                "the call options tuple has the wrong length",
            ));
        }
        let (headers, timeout, max_retries) =
            (call.get_item(0)?, call.get_item(1)?, call.get_item(2)?);
        Ok(
            match overrides(py, &timeout, &max_retries, &headers, "extra_headers")? {
                Some(overrides) => endpoint.with_overrides(&overrides),
                None => endpoint,
            },
        )
    }

    fn core(&self, py: Python<'_>) -> PyResult<core::Endpoint> {
        self.endpoint.get(|| {
            let client = self.client.get().core(py)?;
            client
                .endpoint(&self.workload_slug, self.api_key.as_deref())
                .map_err(|err| to_pyerr(py, err))
        })
    }
}

/// The chat parameters beyond the reference's four, in the order the Python surface passes them (a tuple, each
/// `None` when not given). `chat_option_names()` hands the surface this order.
pub const CHAT_OPTION_NAMES: [&str; 12] = [
    "stop",
    "top_p",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "logprobs",
    "top_logprobs",
    "tools",
    "tool_choice",
    "response_format",
    "stream_options",
    "extra_body",
];

/// The chat options of the tuple the surface passed; None when every one is None (the common path).
fn chat_options(given: &Bound<'_, PyTuple>) -> PyResult<Option<core::ChatOptions>> {
    if given.len() != CHAT_OPTION_NAMES.len() {
        return Err(internal_error(
            "the chat options tuple has the wrong length",
        ));
    }
    let item = |i: usize| given.get_item(i);
    if (0..CHAT_OPTION_NAMES.len()).all(|i| item(i).is_ok_and(|value| value.is_none())) {
        return Ok(None);
    }
    let json = |i: usize| -> PyResult<Option<serde_json::Value>> {
        args::json(Some(&item(i)?), CHAT_OPTION_NAMES[i])
    };
    let number = |i: usize| args::opt_number(&item(i)?, CHAT_OPTION_NAMES[i]);
    let int = |i: usize| args::opt_int(&item(i)?, CHAT_OPTION_NAMES[i]);
    Ok(Some(core::ChatOptions {
        stop: json(0)?,
        top_p: number(1)?,
        seed: int(2)?,
        presence_penalty: number(3)?,
        frequency_penalty: number(4)?,
        logprobs: args::opt_bool(&item(5)?, CHAT_OPTION_NAMES[5])?,
        top_logprobs: int(6)?,
        tools: json(7)?,
        tool_choice: json(8)?,
        response_format: json(9)?,
        stream_options: json(10)?,
        extra_body: json(11)?,
    }))
}

/// `CHAT_OPTION_NAMES`, for the surface (which passes the options in this order) and its test.
#[pyfunction]
pub fn chat_option_names(py: Python<'_>) -> PyResult<Bound<'_, PyTuple>> {
    PyTuple::new(py, CHAT_OPTION_NAMES)
}

/// The chat request from the Python arguments, every rule checked by the core before any request. `options` is
/// None on the common path (no option given), which converts nothing more.
fn chat_request(
    py: Python<'_>,
    prompt: &Bound<'_, PyAny>,
    messages: Option<&Bound<'_, PyAny>>,
    temperature: &Bound<'_, PyAny>,
    max_tokens: &Bound<'_, PyAny>,
    options: Option<&Bound<'_, PyTuple>>,
    stream: bool,
) -> PyResult<core::ChatRequest> {
    let prompt = args::opt_text(prompt, "prompt")?;
    let messages = args::json(messages, "messages")?;
    let temperature = args::opt_number(temperature, "temperature")?;
    let max_tokens = args::opt_int(max_tokens, "max_tokens")?;
    let options = match options {
        Some(tuple) => chat_options(tuple)?,
        None => None,
    };
    let request = core::ChatRequest::from_user(prompt, messages, temperature, max_tokens)
        .map_err(|err| to_pyerr(py, err))?;
    match options {
        Some(options) => request
            .with_options(options, stream)
            .map_err(|err| to_pyerr(py, err)),
        None => Ok(request),
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

    /// The bound `ik_live_` key itself, for handing the endpoint to another OpenAI-compatible client.
    #[getter]
    fn api_key(&self, py: Python<'_>) -> PyResult<String> {
        Ok(self.core(py)?.exposed_api_key().to_owned())
    }

    /// The arguments that rebuild this endpoint elsewhere: its client's constructor arguments, the workload slug
    /// and the endpoint's key (for pickling).
    fn config<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let endpoint = self.core(py)?;
        let config = self.client.get().config(py)?;
        config.set_item("workload_slug", endpoint.workload_slug())?;
        config.set_item("endpoint_api_key", endpoint.exposed_api_key())?;
        Ok(config)
    }

    /// A chat completion; resolves to a `TextResult`. `options`, when given, is the tuple of the other chat
    /// parameters in `CHAT_OPTION_NAMES` order (each None when not given); `call`, this call's
    /// `(extra_headers, timeout, max_retries)`.
    #[pyo3(signature = (prompt, messages, temperature, max_tokens, options=None, call=None))]
    #[allow(clippy::too_many_arguments)]
    fn chat(
        &self,
        py: Python<'_>,
        prompt: &Bound<'_, PyAny>,
        messages: Option<&Bound<'_, PyAny>>,
        temperature: &Bound<'_, PyAny>,
        max_tokens: &Bound<'_, PyAny>,
        options: Option<&Bound<'_, PyTuple>>,
        call: Option<&Bound<'_, PyTuple>>,
    ) -> PyResult<Pending> {
        let request = chat_request(
            py,
            prompt,
            messages,
            temperature,
            max_tokens,
            options,
            false,
        )?;
        let endpoint = self.for_call(py, call)?;
        Ok(Pending::from(
            Call::unary(
                async move { endpoint.chat(&request).await },
                results::text_result,
            )
            .on_loop(true),
        ))
    }

    /// A streamed chat completion; resolves to an `OpenStream` once the response has begun. `options` as for
    /// `chat`.
    #[pyo3(signature = (prompt, messages, temperature, max_tokens, options=None, call=None))]
    #[allow(clippy::too_many_arguments)]
    fn chat_stream(
        &self,
        py: Python<'_>,
        prompt: &Bound<'_, PyAny>,
        messages: Option<&Bound<'_, PyAny>>,
        temperature: &Bound<'_, PyAny>,
        max_tokens: &Bound<'_, PyAny>,
        options: Option<&Bound<'_, PyTuple>>,
        call: Option<&Bound<'_, PyTuple>>,
    ) -> PyResult<Pending> {
        let request = chat_request(py, prompt, messages, temperature, max_tokens, options, true)?;
        let endpoint = self.for_call(py, call)?;
        Ok(Pending::from(
            Call::unary(
                async move { endpoint.chat_stream(&request).await },
                |py, stream| Ok(Bound::new(py, OpenStream::from(stream))?.into_any()),
            )
            .on_loop(true),
        ))
    }

    /// Embeddings of `input` (a string or a list of strings); resolves to an `EmbedResult`.
    #[pyo3(signature = (input, dimensions=None, extra_body=None))]
    fn embed(
        &self,
        py: Python<'_>,
        input: &Bound<'_, PyAny>,
        dimensions: Option<&Bound<'_, PyAny>>,
        extra_body: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Pending> {
        let texts = args::texts(input, "input")?;
        let dimensions = dimensions
            .map(|d| args::opt_int(d, "dimensions"))
            .transpose()?
            .flatten();
        let extra_body = args::json(extra_body, "extra_body")?;
        let options = core::EmbedOptions::from_user(dimensions, extra_body)
            .map_err(|err| to_pyerr(py, err))?;
        let endpoint = self.core(py)?;
        Ok(Pending::from(
            Call::unary(
                async move {
                    endpoint
                        .embed_with(texts, core::EmbeddingFormat::default(), &options)
                        .await
                },
                results::embed_result,
            )
            .on_loop(true),
        ))
    }

    /// A batch embedding job on this endpoint (`batch_size` inputs per request, at most `max_concurrency` in flight),
    /// after the core's checks of every `embed_many` argument it can judge before reading `inputs`.
    #[pyo3(signature = (batch_size, max_concurrency, output, inputs))]
    fn embed_job(
        &self,
        py: Python<'_>,
        batch_size: &Bound<'_, PyAny>,
        max_concurrency: &Bound<'_, PyAny>,
        output: &Bound<'_, PyAny>,
        inputs: &Bound<'_, PyAny>,
    ) -> PyResult<EmbedJob> {
        let options = core::BatchOptions::from_user(
            args::int(batch_size, "batch_size")?,
            args::int(max_concurrency, "max_concurrency")?,
        )
        .map_err(|err| to_pyerr(py, err))?;
        core::EmbedOutput::from_user(&args::text(output, "output")?)
            .map_err(|err| to_pyerr(py, err))?;
        if inputs.is_instance_of::<PyString>() {
            return Err(to_pyerr(py, core::one_string_inputs()));
        }
        Ok(EmbedJob::new(&self.core(py)?, options))
    }

    /// Rerank `documents` against `query`; resolves to a `RerankResult`.
    #[pyo3(signature = (query, documents, top_n))]
    fn rerank(
        &self,
        py: Python<'_>,
        query: &Bound<'_, PyAny>,
        documents: &Bound<'_, PyAny>,
        top_n: &Bound<'_, PyAny>,
    ) -> PyResult<Pending> {
        let query = args::text(query, "query")?;
        let documents = args::text_list(documents, "documents")?;
        let top_n = args::opt_int(top_n, "top_n")?
            .map(core::checked_top_n)
            .transpose()
            .map_err(|err| to_pyerr(py, err))?;
        let endpoint = self.core(py)?;
        Ok(Pending::from(
            Call::unary(
                async move { endpoint.rerank(&query, documents, top_n).await },
                results::rerank_result,
            )
            .on_loop(true),
        ))
    }
}
