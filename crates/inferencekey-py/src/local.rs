//! `LocalPlatform`: the embedded local platform (crates/inferencekey-local) started in-process,
//! on its own runtime thread, for tests, demos and `inferencekey local`.

use std::path::PathBuf;
use std::sync::Mutex;

use pyo3::prelude::*;

use inferencekey_local::pki::{self, LeafKind};
use inferencekey_local::{Config, LocalPlatform as Platform, ReadyInfo, Tls};

use crate::args;
use crate::errors::{internal_error, to_pyerr};

/// A running local platform; `stop()` (or garbage collection) shuts it down.
#[pyclass(module = "inferencekey._core", frozen)]
pub struct LocalPlatform {
    info: ReadyInfo,
    platform: Mutex<Option<Platform>>,
}

#[pymethods]
impl LocalPlatform {
    // `seed=None` (the default): random tokens (those of `state_dir` when it has some), synthetic
    // engines seeded with 0; `seed=N`: everything derives from N.
    #[new]
    //
    // `tls`: None or False (plain HTTP), True (HTTPS with a generated CA), or, for tests of the SDK's refusals,
    // "expired" / "wrong-host" (a leaf clients must refuse). `tls_client_ca`: a CA whose client certificates
    // are required.
    #[pyo3(signature = (*, port = None, project = None, seed = None, state_dir = None, tls = None, tls_client_ca = None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        port: Option<&Bound<'_, PyAny>>,
        project: Option<&Bound<'_, PyAny>>,
        seed: Option<&Bound<'_, PyAny>>,
        state_dir: Option<PathBuf>,
        tls: Option<&Bound<'_, PyAny>>,
        tls_client_ca: Option<PathBuf>,
    ) -> PyResult<Self> {
        let tls = match tls {
            None => Tls::Off,
            Some(tls) => tls_mode(tls)?,
        };
        let port: u16 = match port {
            Some(port) => args::int_in(port, "port", 0, u16::MAX.into())?,
            None => 0,
        };
        let project = project.map(|p| args::text(p, "project")).transpose()?;
        let seed: Option<u64> = seed
            .map(|s| args::int_in(s, "seed", 0, u64::MAX.into()))
            .transpose()?;
        let defaults = Config::default();
        let config = Config {
            port,
            project: project.unwrap_or(defaults.project.clone()),
            seed,
            state_dir,
            tls,
            tls_client_ca,
            ..defaults
        };
        let platform = py
            .detach(move || Platform::start(config))
            .map_err(|err| to_pyerr(py, inferencekey_core::local_platform_failed(err)))?;
        Ok(Self {
            info: platform.info().clone(),
            platform: Mutex::new(Some(platform)),
        })
    }

    #[getter]
    fn url(&self) -> &str {
        &self.info.url
    }

    #[getter]
    fn project(&self) -> &str {
        &self.info.project
    }

    #[getter]
    fn sdk_token(&self) -> &str {
        &self.info.sdk_token
    }

    #[getter]
    fn api_key(&self) -> &str {
        &self.info.api_key
    }

    #[getter]
    fn admin_token(&self) -> &str {
        &self.info.admin_token
    }

    /// The CA bundle (PEM) to trust when the platform serves HTTPS with a CA it generated; None otherwise.
    #[getter]
    fn ca_path(&self) -> Option<&str> {
        self.info.ca_path.as_deref()
    }

    #[getter]
    fn ready_text(&self) -> String {
        self.info.ready_text()
    }

    /// Stop serving and release the port; idempotent.
    fn stop(&self, py: Python<'_>) -> PyResult<()> {
        let running = self
            .platform
            .lock()
            .map_err(|_| internal_error("the local platform lock was poisoned"))?
            .take();
        if let Some(platform) = running {
            py.detach(move || platform.stop());
        }
        Ok(())
    }
}

/// The TLS mode of `LocalPlatform(tls=...)`.
fn tls_mode(tls: &Bound<'_, PyAny>) -> PyResult<Tls> {
    if tls.is_none() {
        return Ok(Tls::Off);
    }
    if let Ok(on) = tls.cast::<pyo3::types::PyBool>() {
        return Ok(if on.is_true() {
            Tls::generate()
        } else {
            Tls::Off
        });
    }
    let leaf = match args::text(tls, "tls")?.as_str() {
        "expired" => LeafKind::Expired,
        "wrong-host" => LeafKind::WrongHost,
        other => {
            return Err(to_pyerr(
                tls.py(),
                inferencekey_core::Error::validation(format_args!(
                    "tls must be True, False, \"expired\" or \"wrong-host\"; got {other:?}"
                )),
            ))
        }
    };
    Ok(Tls::Generate { leaf })
}

/// Test hook: a fresh client CA and a client certificate it signs, written into `directory` as `client-ca.pem`,
/// `client.pem` and `client.key`; returns their paths (for mutual TLS tests against `tls_client_ca=`).
#[pyfunction]
pub fn _local_client_certificate(
    py: Python<'_>,
    directory: PathBuf,
) -> PyResult<(PathBuf, PathBuf, PathBuf)> {
    let certs = pki::generate_client("inferencekey test client", pki::DEFAULT_VALIDITY)
        .map_err(|err| to_pyerr(py, inferencekey_core::local_platform_failed(err)))?;
    let files = [
        ("client-ca.pem", certs.ca_pem.as_str()),
        ("client.pem", certs.cert_pem.as_str()),
        ("client.key", certs.key_pem.as_str()),
    ];
    let mut paths = Vec::with_capacity(files.len());
    for (name, pem) in files {
        let path = directory.join(name);
        std::fs::write(&path, pem).map_err(|err| {
            to_pyerr(
                py,
                inferencekey_core::local_platform_failed(format!(
                    "cannot write {}: {err}",
                    path.display()
                )),
            )
        })?;
        paths.push(path);
    }
    match <[PathBuf; 3]>::try_from(paths) {
        Ok([ca, cert, key]) => Ok((ca, cert, key)),
        Err(_) => Err(internal_error("three certificate files expected")),
    }
}
