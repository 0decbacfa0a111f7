//! What the native client classes share: their transport options from the constructors' keyword arguments, and a
//! core client kept per process and rebuilt from its arguments (after `fork()` or `close()`). The classes are by
//! domain: `management` (control plane), `data` (endpoints), `stream` (chat streams).

use std::sync::Mutex;

use pyo3::prelude::*;
use pyo3::types::PyDict;

use inferencekey_core as core;

use crate::args;
use crate::errors::{internal_error, to_pyerr};

/// The flavour named in the User-Agent.
pub(crate) const CLIENT: &str = "python";

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
pub(crate) fn network_options(
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
pub(crate) fn overrides(
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

/// A core client and the process generation that built it: its connection pool belongs to that process's runtime,
/// so a forked child rebuilds it (from the same arguments) on first use.
pub(crate) struct PerProcess<T> {
    slot: Mutex<(u64, T)>,
}

impl<T: Clone> PerProcess<T> {
    pub(crate) fn new(value: T) -> Self {
        Self {
            slot: Mutex::new((crate::fork::generation(), value)),
        }
    }

    pub(crate) fn get(&self, rebuild: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
        let generation = crate::fork::generation();
        let mut slot = self
            .slot
            .lock()
            .map_err(|_| internal_error("a client lock was poisoned"))?;
        if slot.0 != generation {
            *slot = (generation, rebuild()?);
        }
        Ok(slot.1.clone())
    }

    pub(crate) fn replace(&self, value: T) -> PyResult<()> {
        let mut slot = self
            .slot
            .lock()
            .map_err(|_| internal_error("a client lock was poisoned"))?;
        *slot = (crate::fork::generation(), value);
        Ok(())
    }
}

/// The constructor arguments of a client, kept to rebuild it in a forked child or after `close()`.
#[derive(Clone)]
pub(crate) struct ClientArgs {
    pub(crate) base_url: Option<String>,
    pub(crate) credential: Option<String>,
    pub(crate) project: Option<String>,
    pub(crate) from_env: bool,
    pub(crate) options: core::TransportOptions,
}

impl ClientArgs {
    /// The arguments of a client constructor, checked: `credential` is named `credential_name` in errors, `timing`
    /// is `[connect_timeout, timeout, max_retries]` and `optional` as for `client_options`.
    pub(crate) fn from_python(
        py: Python<'_>,
        base_url: &Bound<'_, PyAny>,
        (credential, credential_name): (&Bound<'_, PyAny>, &str),
        project: &Bound<'_, PyAny>,
        from_env: bool,
        [connect_timeout, timeout, max_retries]: [&Bound<'_, PyAny>; 3],
        optional: [Option<&Bound<'_, PyAny>>; 4],
    ) -> PyResult<Self> {
        let options = client_options(py, connect_timeout, timeout, max_retries, optional)?;
        Ok(Self {
            base_url: args::opt_text(base_url, "base_url")?,
            credential: args::opt_text(credential, credential_name)?,
            project: args::opt_text(project, "project")?,
            from_env,
            options,
        })
    }
}

/// A core client with what rebuilds it from its arguments (after `fork()` or `close()`).
pub(crate) struct Rebuildable<C> {
    pub(crate) args: ClientArgs,
    build: fn(&ClientArgs) -> core::Result<C>,
    client: PerProcess<C>,
}

impl<C: Clone> Rebuildable<C> {
    /// Build the client now, so configuration errors raise in the constructor.
    pub(crate) fn new(
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

    pub(crate) fn get(&self, py: Python<'_>) -> PyResult<C> {
        self.client
            .get(|| (self.build)(&self.args).map_err(|err| to_pyerr(py, err)))
    }

    /// Drop the connection pool now (a later call opens a fresh one).
    pub(crate) fn reset(&self, py: Python<'_>) -> PyResult<()> {
        self.client
            .replace((self.build)(&self.args).map_err(|err| to_pyerr(py, err))?)
    }

    /// A copy with `overrides` applied: `client` (built from this one's, sharing its pool) now, and arguments
    /// that rebuild the same settings later.
    pub(crate) fn with_overrides(&self, overrides: &core::Overrides, client: C) -> Self {
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
    pub(crate) fn with_options(
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
pub(crate) fn transport_config<'py>(
    py: Python<'py>,
    args: &ClientArgs,
) -> PyResult<Bound<'py, PyDict>> {
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
