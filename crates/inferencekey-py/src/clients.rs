//! The native client classes: `ManagementClient`, `DataClient`, `Endpoint`, `ReadinessWatch` and `ChatStream`.
//! Each operation is defined once: it converts its arguments and returns a `Pending` call, which the sync surface
//! runs with `wait()` and the async surface with `start(future)`. Results are built as the surface's registered
//! classes (`results`). No rule lives here: bounds, combinations and wording are the core's.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use pyo3::exceptions::PyStopIteration;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyString, PyTuple};

use inferencekey_core as core;

use crate::args;
use crate::batch::EmbedJob;
use crate::errors::{internal_error, to_pyerr};
use crate::json::raw_to_py;
use crate::results;
use crate::runtime::{
    existing_thread_driver, list_of, settle, settle_idle, thread_driver, wait_on, Call, Driver,
    Pending,
};

/// Most chunks handed over per crossing of the I/O boundary: enough to amortise it, small enough to stay
/// interactive.
const STREAM_BATCH: usize = 256;

/// The flavour named in the User-Agent.
const CLIENT: &str = "python";

/// A client's transport options from the Python keyword arguments of its constructor, checked by the core before
/// anything is built; `optional` is `[default_headers, verify, cert, proxy]`, each absent or None for the default.
fn client_options(
    py: Python<'_>,
    connect_timeout: &Bound<'_, PyAny>,
    timeout: &Bound<'_, PyAny>,
    max_retries: &Bound<'_, PyAny>,
    optional: [Option<&Bound<'_, PyAny>>; 4],
) -> PyResult<core::TransportOptions> {
    let [default_headers, verify, cert, proxy] = optional;
    let mut options = core::TransportOptions::from_user(
        args::number(connect_timeout, "connect_timeout")?,
        args::number(timeout, "timeout")?,
        args::int(max_retries, "max_retries")?,
        CLIENT,
    )
    .map_err(|err| to_pyerr(py, err))?;
    if let Some(pairs) = default_headers
        .map(|headers| args::opt_str_pairs(headers, "default_headers"))
        .transpose()?
        .flatten()
    {
        options = options
            .with_default_headers(&pairs)
            .map_err(|err| to_pyerr(py, err))?;
    }
    network_options(py, options, verify, cert, proxy)
}

/// The network settings of the Python keyword arguments (`verify`, `cert`, `proxy`; each None: the default), laid
/// over `options`.
fn network_options(
    py: Python<'_>,
    options: core::TransportOptions,
    verify: Option<&Bound<'_, PyAny>>,
    cert: Option<&Bound<'_, PyAny>>,
    proxy: Option<&Bound<'_, PyAny>>,
) -> PyResult<core::TransportOptions> {
    let verify = match verify {
        Some(verify) => args::verify(verify)?,
        None => core::net::Verify::Default,
    };
    let cert = cert.map(args::client_cert).transpose()?.flatten();
    let proxy = proxy
        .map(|p| args::opt_text(p, "proxy"))
        .transpose()?
        .flatten();
    options
        .with_network(verify, cert, proxy.as_deref())
        .map_err(|err| to_pyerr(py, err))
}

/// Overrides of a client's settings from the Python keyword arguments (`headers` named `what` in errors), checked
/// by the core; None when every one is None.
fn overrides(
    py: Python<'_>,
    timeout: &Bound<'_, PyAny>,
    max_retries: &Bound<'_, PyAny>,
    headers: &Bound<'_, PyAny>,
    what: &str,
) -> PyResult<Option<core::Overrides>> {
    if timeout.is_none() && max_retries.is_none() && headers.is_none() {
        return Ok(None);
    }
    core::Overrides::from_user(
        args::opt_number(timeout, "timeout")?,
        args::opt_int(max_retries, "max_retries")?,
        args::opt_str_pairs(headers, what)?,
        what,
    )
    .map(Some)
    .map_err(|err| to_pyerr(py, err))
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
#[derive(Clone)]
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

    /// A copy with `overrides` applied: `client` (built from this one's, sharing its pool) now, and arguments
    /// that rebuild the same settings later.
    fn with_overrides(&self, overrides: &core::Overrides, client: C) -> Self {
        let mut args = self.args.clone();
        args.options = args.options.with_overrides(overrides);
        Self {
            args,
            build: self.build,
            client: PerProcess::new(client),
        }
    }

    /// The copy of `with_options(timeout, max_retries, default_headers)`: the core client's copy (`copy`, sharing
    /// its pool) now, and arguments that rebuild the same settings later.
    fn with_options(
        &self,
        py: Python<'_>,
        timeout: &Bound<'_, PyAny>,
        max_retries: &Bound<'_, PyAny>,
        default_headers: &Bound<'_, PyAny>,
        copy: fn(&C, &core::Overrides) -> C,
    ) -> PyResult<Self> {
        let overrides = overrides(py, timeout, max_retries, default_headers, "default_headers")?
            .unwrap_or_default();
        let client = copy(&self.get(py)?, &overrides);
        Ok(self.with_overrides(&overrides, client))
    }
}

/// The transport options of `args` as the Python constructors take them.
fn transport_config<'py>(py: Python<'py>, args: &ClientArgs) -> PyResult<Bound<'py, PyDict>> {
    let config = PyDict::new(py);
    config.set_item("timeout", args.options.read_timeout.as_secs_f64())?;
    config.set_item(
        "connect_timeout",
        args.options.connect_timeout.as_secs_f64(),
    )?;
    config.set_item("max_retries", args.options.max_retries)?;
    let headers = PyDict::new(py);
    for (name, value) in &args.options.headers {
        headers.set_item(name.as_str(), value.to_str().unwrap_or_default())?;
    }
    config.set_item("default_headers", headers)?;
    match &args.options.verify {
        core::net::Verify::Default => config.set_item("verify", true)?,
        core::net::Verify::Off => config.set_item("verify", false)?,
        core::net::Verify::Bundle(path) => config.set_item("verify", path)?,
    }
    match &args.options.client_cert {
        None => config.set_item("cert", py.None())?,
        Some(core::net::ClientCert { cert, key: None }) => config.set_item("cert", cert)?,
        Some(core::net::ClientCert {
            cert,
            key: Some(key),
        }) => config.set_item("cert", (cert, key))?,
    }
    config.set_item("proxy", args.options.proxy.as_deref())?;
    Ok(config)
}

/// Native control-plane client (wrapped by `inferencekey.ManagementClient` and its async twin).
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

/// What `ensure` did, for the surface to show: the ref, the plan, and the warning or note the core decided on.
#[pyclass(module = "inferencekey._core", frozen, get_all)]
pub struct Ensured {
    endpoint_ref: Py<PyAny>,
    plan: Py<PyAny>,
    applied: bool,
    warning: Option<String>,
    info: Option<String>,
}

#[pymethods]
impl ManagementClient {
    #[new]
    #[pyo3(signature = (*, base_url, sdk_token, project, from_env, connect_timeout, timeout, max_retries, default_headers=None, verify=None, cert=None, proxy=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        base_url: &Bound<'_, PyAny>,
        sdk_token: &Bound<'_, PyAny>,
        project: &Bound<'_, PyAny>,
        from_env: bool,
        connect_timeout: &Bound<'_, PyAny>,
        timeout: &Bound<'_, PyAny>,
        max_retries: &Bound<'_, PyAny>,
        default_headers: Option<&Bound<'_, PyAny>>,
        verify: Option<&Bound<'_, PyAny>>,
        cert: Option<&Bound<'_, PyAny>>,
        proxy: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let options = client_options(
            py,
            connect_timeout,
            timeout,
            max_retries,
            [default_headers, verify, cert, proxy],
        )?;
        let args = ClientArgs {
            base_url: args::opt_text(base_url, "base_url")?,
            credential: args::opt_text(sdk_token, "sdk_token")?,
            project: args::opt_text(project, "project")?,
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

    /// Provision or reconcile `spec`; resolves to an `Ensured`.
    #[pyo3(signature = (spec, on_drift, project))]
    fn ensure(
        &self,
        py: Python<'_>,
        spec: &Bound<'_, PyAny>,
        on_drift: &Bound<'_, PyAny>,
        project: &Bound<'_, PyAny>,
    ) -> PyResult<Pending> {
        let project = args::opt_text(project, "project")?;
        let on_drift = args::on_drift(on_drift)?;
        let spec = args::spec(spec)?;
        let client = self.core(py)?;
        Ok(Pending::from(Call::new(
            async move { client.ensure(&spec, on_drift, project.as_deref()).await },
            |py, outcome| {
                let ensured = Ensured {
                    endpoint_ref: results::endpoint_ref(
                        py,
                        &outcome.project_slug,
                        &outcome.workload_slug,
                    )?
                    .unbind(),
                    plan: results::plan(py, &outcome.plan)?.unbind(),
                    applied: outcome.applied,
                    warning: outcome.warning,
                    info: outcome.info,
                };
                Ok(Bound::new(py, ensured)?.into_any())
            },
        )))
    }

    /// What `ensure(spec)` would do; resolves to a `Plan`.
    #[pyo3(signature = (spec, project))]
    fn plan(
        &self,
        py: Python<'_>,
        spec: &Bound<'_, PyAny>,
        project: &Bound<'_, PyAny>,
    ) -> PyResult<Pending> {
        let project = args::opt_text(project, "project")?;
        let spec = args::spec(spec)?;
        let client = self.core(py)?;
        Ok(Pending::from(Call::new(
            async move { client.plan(&spec, project.as_deref()).await },
            |py, plan| results::plan(py, &plan),
        )))
    }

    /// Delete a workload; resolves to whether it existed.
    #[pyo3(signature = (workload_slug, project))]
    fn delete(
        &self,
        py: Python<'_>,
        workload_slug: &Bound<'_, PyAny>,
        project: &Bound<'_, PyAny>,
    ) -> PyResult<Pending> {
        let workload_slug = args::text(workload_slug, "workload_slug")?;
        let project = args::opt_text(project, "project")?;
        let client = self.core(py)?;
        Ok(Pending::from(Call::new(
            async move { client.delete(&workload_slug, project.as_deref()).await },
            |py, deleted| Ok(PyBool::new(py, deleted).to_owned().into_any()),
        )))
    }

    /// The project's workloads; resolves to a list of dicts.
    #[pyo3(signature = (project))]
    fn list(&self, py: Python<'_>, project: &Bound<'_, PyAny>) -> PyResult<Pending> {
        let project = args::opt_text(project, "project")?;
        let client = self.core(py)?;
        Ok(Pending::from(Call::new(
            async move { client.list(project.as_deref()).await },
            |py, workloads| {
                list_of(py, workloads, |py, workload| {
                    raw_to_py(py, &workload.raw).map(Bound::into_any)
                })
            },
        )))
    }

    /// Start watching a workload's readiness (the connection opens on the first event).
    #[pyo3(signature = (workload_slug, project, timeout))]
    fn watch_readiness(
        &self,
        py: Python<'_>,
        workload_slug: &Bound<'_, PyAny>,
        project: &Bound<'_, PyAny>,
        timeout: &Bound<'_, PyAny>,
    ) -> PyResult<ReadinessWatch> {
        let workload_slug = args::text(workload_slug, "workload_slug")?;
        let project = args::opt_text(project, "project")?;
        let timeout = core::readiness_timeout(args::number(timeout, "timeout")?)
            .map_err(|err| to_pyerr(py, err))?;
        let watch = self
            .core(py)?
            .watch_readiness(&workload_slug, project.as_deref(), timeout)
            .map_err(|err| to_pyerr(py, err))?;
        Ok(ReadinessWatch {
            watch: Arc::new(tokio::sync::Mutex::new(Some(watch))),
            home: std::sync::OnceLock::new(),
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
                core::ManagementClient::with_overrides,
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
        config.set_item("sdk_token", client.exposed_token())?;
        config.set_item("project", client.project())?;
        Ok(config)
    }
}

/// The readiness events of one workload: an iterator of `ReadinessEvent` (sync), or `next()` calls (async).
#[pyclass(module = "inferencekey._core", frozen)]
pub struct ReadinessWatch {
    watch: Arc<tokio::sync::Mutex<Option<core::ReadinessWatch>>>,
    /// The driver of the thread that first iterated it (sync): its reader task runs there.
    home: std::sync::OnceLock<Arc<Driver>>,
}

impl ReadinessWatch {
    fn next_call(&self) -> Call {
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
                Some(event) => results::readiness_event(py, event),
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

    fn __next__(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let home = match self.home.get() {
            Some(home) => Arc::clone(home),
            None => {
                let here = thread_driver()?;
                Arc::clone(self.home.get_or_init(|| here))
            }
        };
        let event = self.next_call().wait_on(py, &home)?;
        if event.is_none(py) {
            return Err(PyStopIteration::new_err(()));
        }
        Ok(event)
    }

    /// The next event; resolves to a `ReadinessEvent`, or None once the watch has finished.
    fn next(&self) -> Pending {
        Pending::from(self.next_call())
    }
}

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
        let options = client_options(
            py,
            connect_timeout,
            timeout,
            max_retries,
            [default_headers, verify, cert, proxy],
        )?;
        let args = ClientArgs {
            base_url: args::opt_text(base_url, "base_url")?,
            credential: args::opt_text(api_key, "api_key")?,
            project: args::opt_text(project, "project")?,
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
        Ok(Pending::from(Call::new(
            async move { endpoint.chat(&request).await },
            results::text_result,
        )))
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
        Ok(Pending::from(Call::new(
            async move { endpoint.chat_stream(&request).await },
            |py, stream| {
                let open = OpenStream {
                    stream: Mutex::new(Some(stream)),
                };
                Ok(Bound::new(py, open)?.into_any())
            },
        )))
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
        Ok(Pending::from(Call::new(
            async move {
                endpoint
                    .embed_with(texts, core::EmbeddingFormat::default(), &options)
                    .await
            },
            results::embed_result,
        )))
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
        Ok(Pending::from(Call::new(
            async move { endpoint.rerank(&query, documents, top_n).await },
            results::rerank_result,
        )))
    }
}

/// A chat stream whose response has begun, waiting to be taken by a `ChatStream`.
#[pyclass(module = "inferencekey._core", frozen)]
pub struct OpenStream {
    stream: Mutex<Option<core::ChatStream>>,
}

/// What a `ChatStream` holds: decoded chunks not yet handed out, and the core stream while it is open.
#[derive(Default)]
struct StreamState {
    buffered: VecDeque<core::ChatChunk>,
    /// The open stream; out of the state while a batch is being read.
    stream: Option<core::ChatStream>,
    /// A batch is being read: the stream is out of the state.
    reading: bool,
    /// Closed by the user: a batch that comes back is dropped, and with it the connection.
    closed: bool,
    /// The whole reply, kept when the stream ends cleanly (for `final_result` after iteration).
    reply: Option<core::StreamedReply>,
    /// The stream ended with an error (already raised to the reader).
    failed: bool,
}

impl StreamState {
    /// Put the stream back after a batch, unless the stream ended, failed or was closed meanwhile.
    fn returned(&mut self, stream: core::ChatStream, batch: &core::Result<Vec<core::ChatChunk>>) {
        self.reading = false;
        match batch {
            Ok(chunks) if !chunks.is_empty() => {
                if !self.closed {
                    self.stream = Some(stream);
                }
            }
            Ok(_) => self.reply = Some(stream.reply()),
            Err(_) => self.failed = true,
        }
    }
}

/// The chunks of one streamed chat completion: a native iterator of `TextChunk` (the base of `TextStream`),
/// and `next_batch()` calls for the async surface. Chunks are read from the connection in batches (everything
/// decoded so far) and each `TextChunk` is built only when handed out.
#[pyclass(module = "inferencekey._core", frozen, subclass)]
pub struct ChatStream {
    state: Arc<Mutex<StreamState>>,
    /// The driver of the thread that opened it, when that thread waits on its own (a sync stream): the task
    /// reading its body runs there, so every read drives that runtime, from whichever thread iterates.
    home: Option<Arc<Driver>>,
}

impl ChatStream {
    fn lock(&self) -> PyResult<std::sync::MutexGuard<'_, StreamState>> {
        lock_state(&self.state)
    }

    /// Take the open stream out of the state for reading; None once it has ended or was closed.
    fn take_for_reading(&self) -> PyResult<Option<core::ChatStream>> {
        let mut state = self.lock()?;
        take_from(&mut state)
    }
}

/// Take the open stream out of `state` for reading (see `ChatStream::take_for_reading`).
fn take_from(state: &mut StreamState) -> PyResult<Option<core::ChatStream>> {
    if state.reading {
        return Err(internal_error(
            "a stream was read from two places at once (use one reader per stream)",
        ));
    }
    let stream = state.stream.take();
    state.reading = stream.is_some();
    Ok(stream)
}

fn lock_state(state: &Mutex<StreamState>) -> PyResult<std::sync::MutexGuard<'_, StreamState>> {
    state
        .lock()
        .map_err(|_| internal_error("a stream lock was poisoned"))
}

#[pymethods]
impl ChatStream {
    #[new]
    fn new(open: &OpenStream) -> PyResult<Self> {
        let stream = open
            .stream
            .lock()
            .map_err(|_| internal_error("a stream lock was poisoned"))?
            .take()
            .ok_or_else(|| internal_error("this stream was already taken"))?;
        Ok(Self {
            state: Arc::new(Mutex::new(StreamState {
                stream: Some(stream),
                ..StreamState::default()
            })),
            home: existing_thread_driver(),
        })
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    /// The next chunk, reading the next batch when none is buffered; StopIteration at the end.
    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        loop {
            if let Some(chunk) = self.lock()?.buffered.pop_front() {
                return results::text_chunk(py, chunk);
            }
            let Some(mut stream) = self.take_for_reading()? else {
                return Err(PyStopIteration::new_err(()));
            };
            if let Some(batch) = stream.ready_batch(STREAM_BATCH) {
                // Decoded already, or the end already seen: nothing to wait for.
                let mut state = self.lock()?;
                state.returned(stream, &batch);
                state
                    .buffered
                    .extend(batch.map_err(|err| to_pyerr(py, err))?);
                continue;
            }
            let home = match &self.home {
                Some(home) => Arc::clone(home),
                None => thread_driver()?,
            };
            let batch = wait_on(py, &home, async move {
                let batch = stream.next_batch(STREAM_BATCH).await;
                Ok((stream, batch))
            });
            let (stream, batch) = match batch {
                Ok(read) => read,
                Err(interrupted) => {
                    // Ctrl+C while waiting: the stream was dropped with the wait, so it is over.
                    self.lock()?.reading = false;
                    return Err(interrupted);
                }
            };
            let mut state = self.lock()?;
            state.returned(stream, &batch);
            state
                .buffered
                .extend(batch.map_err(|err| to_pyerr(py, err))?);
        }
    }

    /// The next batch when it is known without waiting (chunks already read, or the end already seen), else None:
    /// the async surface then awaits `next_batch()`, so a stream's end costs no round trip through the runtime.
    fn batch_now(&self, py: Python<'_>) -> PyResult<Option<ChunkBatch>> {
        let mut state = self.lock()?;
        if !state.buffered.is_empty() {
            return Ok(Some(ChunkBatch::from(std::mem::take(&mut state.buffered))));
        }
        if state.reading {
            return Ok(None);
        }
        let Some(mut stream) = state.stream.take() else {
            return Ok(Some(ChunkBatch::from(VecDeque::new())));
        };
        let Some(batch) = stream.ready_batch(STREAM_BATCH) else {
            state.stream = Some(stream);
            return Ok(None);
        };
        state.returned(stream, &batch);
        let chunks = batch.map_err(|err| to_pyerr(py, err))?;
        Ok(Some(ChunkBatch::from(VecDeque::from(chunks))))
    }

    /// The next batch of chunks; resolves to a `ChunkBatch` (an iterator of `TextChunk`), empty at the end.
    fn next_batch(&self) -> PyResult<Pending> {
        let buffered = std::mem::take(&mut self.lock()?.buffered);
        let stream = if buffered.is_empty() {
            self.take_for_reading()?
        } else {
            None
        };
        let state = Arc::clone(&self.state);
        Ok(Pending::from(Call::new(
            async move {
                let Some(mut stream) = stream else {
                    return Ok(buffered);
                };
                let batch = stream.next_batch(STREAM_BATCH).await;
                if let Ok(mut state) = state.lock() {
                    state.returned(stream, &batch);
                }
                batch.map(VecDeque::from)
            },
            |py, chunks| Ok(Bound::new(py, ChunkBatch::from(chunks))?.into_any()),
        )))
    }

    /// Read the rest of the stream and resolve to the whole reply as a `TextResult` (text, model, finish reason,
    /// usage and tool calls), the chunks already handed out included. Chunks read but not yet handed out are
    /// part of the reply and are not handed out afterwards.
    fn read_to_end(&self, py: Python<'_>) -> PyResult<Pending> {
        let (stream, done) = {
            let mut state = self.lock()?;
            // A stream that ended cleanly keeps its reply, even once closed.
            let refused = if state.failed {
                Some(core::Unfinished::Failed)
            } else if state.closed && state.reply.is_none() {
                Some(core::Unfinished::Closed)
            } else {
                None
            };
            if let Some(why) = refused {
                return Err(to_pyerr(py, core::no_final_result(why)));
            }
            state.buffered.clear();
            (take_from(&mut state)?, state.reply.clone())
        };
        let state = Arc::clone(&self.state);
        Ok(Pending::from(Call::new(
            async move {
                let Some(mut stream) = stream else {
                    return done.ok_or_else(|| core::no_final_result(core::Unfinished::Closed));
                };
                let reply = stream.final_result().await;
                if let Ok(mut state) = state.lock() {
                    state.reading = false;
                    match &reply {
                        Ok(reply) => state.reply = Some(reply.clone()),
                        Err(_) => state.failed = true,
                    }
                }
                reply
            },
            results::streamed_text_result,
        )))
    }

    /// Close the stream and its connection; iteration ends. Idempotent.
    fn close(&self) -> PyResult<()> {
        let stream = {
            let mut state = self.lock()?;
            state.closed = true;
            state.buffered.clear();
            state.stream.take()
        };
        if let Some(mut stream) = stream {
            stream.close();
            if let Some(home) = &self.home {
                settle(home);
            }
        }
        Ok(())
    }
}

impl Drop for ChatStream {
    fn drop(&mut self) {
        // Collected while open: the reading task is aborted with the core stream; on a thread's own runtime it
        // ends (and its connection closes) only when that runtime runs, so let it run now.
        let open = self
            .state
            .lock()
            .map(|mut state| state.stream.take())
            .ok()
            .flatten();
        if let (Some(stream), Some(home)) = (open, &self.home) {
            drop(stream);
            settle(home);
        }
    }
}

/// Chunks read in one batch, handed out one `TextChunk` at a time (built on the way out).
#[pyclass(module = "inferencekey._core", frozen)]
pub struct ChunkBatch {
    chunks: Mutex<VecDeque<core::ChatChunk>>,
}

impl From<VecDeque<core::ChatChunk>> for ChunkBatch {
    fn from(chunks: VecDeque<core::ChatChunk>) -> Self {
        Self {
            chunks: Mutex::new(chunks),
        }
    }
}

#[pymethods]
impl ChunkBatch {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let chunk = self
            .chunks
            .lock()
            .map_err(|_| internal_error("a batch lock was poisoned"))?
            .pop_front();
        match chunk {
            Some(chunk) => results::text_chunk(py, chunk),
            None => Err(PyStopIteration::new_err(())),
        }
    }

    fn __len__(&self) -> PyResult<usize> {
        Ok(self
            .chunks
            .lock()
            .map_err(|_| internal_error("a batch lock was poisoned"))?
            .len())
    }
}
