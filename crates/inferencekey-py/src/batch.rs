//! `EmbedJob`: the native side of batch embedding. The surface's driver cuts the inputs into numbered batches,
//! submits them while the core's adaptive limit allows, and collects each finished batch (`next_done`), putting
//! the vectors in input order; the requests themselves run on the I/O runtime, never on Python threads.

use std::sync::Arc;

use pyo3::prelude::*;

use inferencekey_core as core;

use crate::errors::to_pyerr;
use crate::results::Vectors;
use crate::runtime::{runtime, Call, Pending};

/// A batch embedding job on one endpoint; dropping it cancels every request in flight.
#[pyclass(module = "inferencekey._core", frozen)]
pub struct EmbedJob {
    job: Arc<core::EmbedJob>,
}

impl EmbedJob {
    pub fn new(endpoint: &core::Endpoint, options: core::BatchOptions) -> Self {
        Self {
            job: Arc::new(core::EmbedJob::new(endpoint, options)),
        }
    }
}

/// One finished batch: its number, and its vectors or the exception that failed it for good.
#[pyclass(module = "inferencekey._core", frozen, get_all)]
pub struct DoneBatch {
    batch: u64,
    vectors: Option<Py<Vectors>>,
    error: Option<Py<PyAny>>,
}

#[pymethods]
impl EmbedJob {
    /// How many more batches may be submitted now.
    fn capacity(&self) -> usize {
        self.job.capacity()
    }

    /// Batches submitted and not yet collected.
    fn in_flight(&self) -> usize {
        self.job.in_flight()
    }

    /// The current concurrency limit (it adapts to 429/503 answers).
    fn concurrency(&self) -> usize {
        self.job.concurrency()
    }

    /// Start embedding `texts` as batch number `batch`.
    fn submit(&self, batch: u64, texts: Vec<String>) -> PyResult<()> {
        self.job.submit(runtime()?.handle(), batch, texts);
        Ok(())
    }

    /// The next finished batch; resolves to a `DoneBatch`, or None when no batch is in flight.
    fn next_done(&self) -> Pending {
        let job = Arc::clone(&self.job);
        Pending::from(Call::new(
            async move { Ok(job.next_done().await) },
            |py, done| {
                let Some(done) = done else {
                    return Ok(py.None().into_bound(py));
                };
                let (vectors, error) = match done.result {
                    Ok(vectors) => (Some(Py::new(py, Vectors::from(vectors))?), None),
                    Err(err) => (None, Some(to_pyerr(py, err).into_value(py).into_any())),
                };
                let done = DoneBatch {
                    batch: done.batch,
                    vectors,
                    error,
                };
                Ok(Bound::new(py, done)?.into_any())
            },
        ))
    }

    /// Cancel every request in flight.
    fn abort(&self) {
        self.job.abort();
    }
}
