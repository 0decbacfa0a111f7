//! The shared state of one running platform (`App`: store, faults, journal, ready info) and the
//! per-request context the server hands to every route.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use serde_json::{Map, Value};

use crate::config::{Config, ReadyInfo};
use crate::error::LocalError;
use crate::faults::FaultSet;
use crate::journal::{Journal, SharedJournal};
use crate::real::Engines;
use crate::reply::ApiError;
use crate::rng::mix64;
use crate::state::Store;
use crate::sync::lock;

/// Separate the fault draws' and request ids' streams from the other seeded streams.
const FAULTS_STREAM: u64 = 0x6661_756c_7473_0001;
const REQUESTS_STREAM: u64 = 0x7265_7175_6573_7473;

/// Everything one platform instance shares between its connections. Instances share nothing,
/// so several can run in one process.
pub struct App {
    /// Projects, tokens, workloads, defaults.
    pub store: Mutex<Store>,
    /// Fault rules.
    pub faults: Mutex<FaultSet>,
    /// Request journal.
    pub journal: SharedJournal,
    /// The ready line.
    pub info: ReadyInfo,
    /// The seed of the synthetic engines, ids and draws: `--seed`, else 0.
    pub seed: u64,
    /// The port the platform listens on (the one a request's host must name).
    pub port: u16,
    /// `--allow-remote`: any host name is accepted.
    pub allow_remote: bool,
    /// Served over HTTPS (what the Host check's message and default port assume).
    pub https: bool,
    /// Real engines.
    pub engines: Engines,
    started: Instant,
    requests: AtomicU64,
}

impl App {
    /// A platform for `config`, reachable at `addr`.
    pub fn new(config: &Config, addr: std::net::SocketAddr) -> Result<Self, LocalError> {
        let store = Store::open(config)?;
        let seed = config.engine_seed();
        Ok(Self {
            info: ReadyInfo::new(addr, &config.project, store.ready()),
            store: Mutex::new(store),
            faults: Mutex::new(FaultSet::new(mix64(seed ^ FAULTS_STREAM))),
            journal: Arc::new(Mutex::new(Journal::default())),
            seed,
            port: addr.port(),
            allow_remote: config.allow_remote,
            https: config.tls.is_on(),
            engines: Engines::new(config.engines.clone(), config.state_dir.as_deref()),
            started: Instant::now(),
            requests: AtomicU64::new(0),
        })
    }

    /// A unique request id, `req_` + 16 hex.
    pub fn next_request_id(&self) -> String {
        let n = self.requests.fetch_add(1, Ordering::Relaxed);
        // XOR with a constant and mix64 are bijections, so distinct counters give distinct ids.
        format!("req_{:016x}", mix64(n ^ mix64(self.seed ^ REQUESTS_STREAM)))
    }

    /// Milliseconds since the platform started.
    pub fn uptime_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// `POST /_local/reset`: workloads, extra projects and tokens, faults, journal and
    /// defaults go; the ready-line tokens stay valid.
    pub fn reset(&self) {
        lock(&self.store).reset();
        lock(&self.faults).clear();
        lock(&self.journal).clear();
    }
}

/// What the server read from a request before routing it.
#[derive(Debug, Clone)]
pub struct RequestCtx {
    /// The `x-request-id` of the response.
    pub request_id: String,
    /// The body as JSON, or why it is not JSON.
    pub json: Result<Value, String>,
    /// Where the body stopped being JSON (line, column, what was wrong), for engines that
    /// report a parse error's position in their own words (llama-server).
    pub syntax_error: Option<(usize, usize, String)>,
}

impl RequestCtx {
    /// Reads `body`.
    pub fn new(request_id: String, body: &Bytes) -> Self {
        let mut syntax_error = None;
        let json = if body.is_empty() {
            Err("the request body is empty".to_string())
        } else {
            serde_json::from_slice(body).map_err(|e| {
                let text = e.to_string();
                let what = text
                    .rsplit_once(" at line ")
                    .map_or(text.as_str(), |(what, _)| what);
                syntax_error = Some((e.line(), e.column(), what.to_string()));
                format!("the request body is not valid JSON: {e}")
            })
        };
        Self {
            request_id,
            json,
            syntax_error,
        }
    }

    /// The body as a JSON object, or the message of a 400.
    pub fn object(&self) -> Result<&Map<String, Value>, String> {
        match &self.json {
            Ok(Value::Object(fields)) => Ok(fields),
            Ok(_) => Err("the request body must be a JSON object".to_string()),
            Err(message) => Err(message.clone()),
        }
    }

    /// [`RequestCtx::object`] with a platform 400.
    pub fn platform_object(&self) -> Result<&Map<String, Value>, ApiError> {
        self.object().map_err(ApiError::validation)
    }
}
