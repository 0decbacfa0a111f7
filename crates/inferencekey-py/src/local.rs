//! `LocalPlatform`: the embedded local platform (crates/inferencekey-local) started in-process,
//! on its own runtime thread, for tests, demos and `inferencekey local`.

use std::path::PathBuf;
use std::sync::Mutex;

use pyo3::prelude::*;

use inferencekey_local::{Config, LocalPlatform as Platform, ReadyInfo};

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
    #[pyo3(signature = (*, port = None, project = None, seed = None, state_dir = None))]
    fn new(
        py: Python<'_>,
        port: Option<&Bound<'_, PyAny>>,
        project: Option<&Bound<'_, PyAny>>,
        seed: Option<&Bound<'_, PyAny>>,
        state_dir: Option<PathBuf>,
    ) -> PyResult<Self> {
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
