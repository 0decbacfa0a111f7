//! The control-plane classes: `ManagementClient`, `Ensured` and `ReadinessWatch`. Each operation is defined once:
//! it converts its arguments and returns a `Pending` call, which the sync surface runs with `wait()` and the async
//! surface with `start(future)`. No rule lives here: bounds, combinations and wording are the core's.

use std::sync::{Arc, Mutex};

use pyo3::exceptions::PyStopIteration;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict};

use inferencekey_core as core;

use crate::args;
use crate::clients::{transport_config, ClientArgs, Rebuildable};
use crate::errors::to_pyerr;
use crate::json::raw_to_py;
use crate::results;
use crate::runtime::{list_of, settle_idle, thread_driver, Call, Driver, Pending};
use crate::stream::{locked, Lent};

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
        let args = ClientArgs::from_python(
            py,
            base_url,
            (sdk_token, "sdk_token"),
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
            watch: Arc::new(Mutex::new(Lent::new(watch))),
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
    watch: Arc<Mutex<Lent<core::ReadinessWatch>>>,
    /// The driver of the thread that first iterated it (sync): its reader task runs there.
    home: std::sync::OnceLock<Arc<Driver>>,
}

/// Gives a lent watch back however its read ends: kept after an event, dropped at the end (ready, error or
/// deadline, which releases the connection at once) or with an interrupted or cancelled read.
struct WatchLoan {
    holder: Arc<Mutex<Lent<core::ReadinessWatch>>>,
    watch: Option<core::ReadinessWatch>,
}

impl Drop for WatchLoan {
    fn drop(&mut self) {
        if let Ok(mut holder) = self.holder.lock() {
            holder.give_back(self.watch.take());
        }
    }
}

impl ReadinessWatch {
    fn next_call(&self) -> PyResult<Call> {
        let mut loan = WatchLoan {
            holder: Arc::clone(&self.watch),
            watch: locked(&self.watch)?.lend()?,
        };
        Ok(Call::new(
            async move {
                let Some(watch) = loan.watch.as_mut() else {
                    return Ok(None);
                };
                let next = watch.next().await;
                if !matches!(next, Ok(Some(_))) {
                    drop(loan.watch.take());
                }
                next
            },
            |py, event| match event {
                Some(event) => results::readiness_event(py, event),
                None => Ok(py.None().into_bound(py)),
            },
        ))
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
        let event = self.next_call()?.wait_on(py, &home)?;
        if event.is_none(py) {
            return Err(PyStopIteration::new_err(()));
        }
        Ok(event)
    }

    /// The next event; resolves to a `ReadinessEvent`, or None once the watch has finished.
    fn next(&self) -> PyResult<Pending> {
        Ok(Pending::from(self.next_call()?))
    }
}
