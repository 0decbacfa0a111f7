//! The control plane: `ManagementClient` (credential checks, project resolution, list, plan, ensure with the
//! five OnDrift behaviours and create-race recovery, delete) and the readiness watch with reconnects and a deadline.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use reqwest::header::{HeaderValue, CONTENT_TYPE};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, timeout_at, Instant};

use crate::config::{
    non_blank, normalize_base_url, resolve_setting, Sources, TransportOptions, ENV_BASE_URL,
    ENV_PROJECT, ENV_SDK_TOKEN,
};
use crate::drift::{create_plan, diff, patch_body};
use crate::error::{is_inband_error, Error, ErrorKind, Result};
use crate::plan::{Plan, PlanAction};
use crate::quote::py_repr_str;
use crate::spec::{checked_project, checked_slug, WorkloadSpec};
use crate::sse::{EventRef, SseDecoder};
use crate::suggest::not_found_hint;
use crate::token::{redact, token_kind, Secret, TokenKind};
use crate::transport::{bearer, AttemptError, Failure, Method, Request, Transport};
use crate::wire::{decode_readiness, decode_workload_list, ReadinessPayload, Workload};

/// The documented message when no project can be resolved.
const NO_PROJECT: &str =
    "No project configured. Set INFERENCEKEY_PROJECT, pass project=, or set spec.project.";

/// How many create attempts a run of slug races may take before giving up.
const MAX_CREATE_ROUNDS: usize = 3;

/// Reconnect delays of the readiness watch; the last one repeats.
const WATCH_BACKOFF: [Duration; 4] = [
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(5),
];

/// Longest `Retry-After` the readiness watch honours.
const WATCH_RETRY_AFTER_CAP: Duration = Duration::from_secs(60);

/// Decoded readiness events one connection holds for the caller before its reader waits (a handful
/// make up a whole wait; the bound only matters against a server that floods).
const WATCH_QUEUE: usize = 32;

/// Longest wait for the project's list that adds a "did you mean" to a workload's 404: a hint is not worth more.
const HINT_WAIT: Duration = Duration::from_secs(5);

/// What `ensure` does when the live workload differs from the spec.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum OnDrift {
    /// PATCH the drifted fields (the default).
    #[default]
    Reconcile,
    /// Change nothing and fail with `ErrorKind::Drift`.
    Fail,
    /// Change nothing at all, not even a create; return the plan.
    DryRun,
    /// Change nothing; return the plan so the caller can warn.
    Warn,
    /// Change nothing, silently.
    Ignore,
}

impl OnDrift {
    /// Every mode, in the documented order (the order the error for an unknown mode lists them in).
    pub const ALL: [Self; 5] = [
        Self::Reconcile,
        Self::Fail,
        Self::DryRun,
        Self::Warn,
        Self::Ignore,
    ];

    /// The error for an `on_drift` value that is not one of the modes; `shown` is how the caller shows the value
    /// (the Python binding passes `repr(value)`, e.g. `'sometimes'` or `42`). Tokens in it are redacted:
    /// `validation error: on_drift must be one of reconcile, fail, dry_run, warn, ignore; got 'sometimes'`.
    pub fn unknown(shown: &str) -> Error {
        let accepted: Vec<&str> = Self::ALL.iter().map(|mode| mode.as_str()).collect();
        Error::validation(format_args!(
            "on_drift must be one of {}; got {shown}",
            accepted.join(", ")
        ))
    }

    /// The wire/Python spelling: `reconcile`, `fail`, `dry_run`, `warn`, `ignore`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reconcile => "reconcile",
            Self::Fail => "fail",
            Self::DryRun => "dry_run",
            Self::Warn => "warn",
            Self::Ignore => "ignore",
        }
    }
}

impl FromStr for OnDrift {
    type Err = Error;

    /// Parses exactly the spellings of `as_str`, as Python's `OnDrift(value)` does (no trimming, no case
    /// folding); anything else is [`OnDrift::unknown`] with the value quoted as Python's `repr` quotes it.
    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|mode| mode.as_str() == s)
            .ok_or_else(|| Self::unknown(&py_repr_str(s)))
    }
}

/// What `ensure` did.
#[derive(Clone, Debug, PartialEq)]
pub struct EnsureOutcome {
    /// The project the workload lives in (the one in the URL).
    pub project_slug: String,
    /// The canonical workload slug.
    pub workload_slug: String,
    /// The plan that was computed (create, update or noop).
    pub plan: Plan,
    /// True when the platform was changed (created or patched).
    pub applied: bool,
    /// Set when the caller must warn (`Warn` and the workload drifted): [`Plan::drift_warning`]. The Python
    /// surface emits it as a `DriftWarning` and logs it at WARNING.
    pub warning: Option<String>,
    /// Set when the caller must log a note at INFO (`DryRun`, whatever the plan):
    /// `ensure dry run for {project}/{slug}, nothing changed:` a newline, then [`Plan::render`].
    pub info: Option<String>,
}

impl EnsureOutcome {
    /// The outcome of `ensure` under `on_drift`, with what it shows decided here, once, for every caller.
    fn new(
        project_slug: String,
        workload_slug: String,
        plan: Plan,
        applied: bool,
        on_drift: OnDrift,
    ) -> Self {
        let warning = (on_drift == OnDrift::Warn && plan.action == PlanAction::Update)
            .then(|| plan.drift_warning());
        let info = (on_drift == OnDrift::DryRun).then(|| {
            redact(&format!(
                "ensure dry run for {project_slug}/{workload_slug}, nothing changed:\n{}",
                plan.render()
            ))
        });
        Self {
            project_slug,
            workload_slug,
            plan,
            applied,
            warning,
            info,
        }
    }
}

/// One readiness progress update.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadinessEvent {
    /// `scheduling`, `provisioning`, `bootstrapping`, `ready`, `error` (or a newer phase, kept as sent).
    pub phase: String,
    /// What the platform is doing (`""` when the server sent none).
    pub message: String,
    /// Milliseconds since the watch started, on the SDK's monotonic clock.
    pub elapsed_ms: u64,
    /// The bootstrap step, when the server names one.
    pub step: Option<String>,
}

/// Control-plane client, holding one `ik_sdk_` token and one connection pool. Cloning shares both.
#[derive(Clone)]
pub struct ManagementClient {
    inner: Arc<ControlInner>,
}

struct ControlInner {
    transport: Transport,
    token: Secret,
    auth: HeaderValue,
    project: Option<String>,
}

impl fmt::Debug for ManagementClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManagementClient")
            .field("base_url", &self.inner.transport.base_url())
            .field("project", &self.inner.project)
            .field("sdk_token", &self.inner.token)
            .finish()
    }
}

impl ManagementClient {
    /// A copy with `overrides` applied (read timeout, retries, headers) that shares this client's connection
    /// pool.
    pub fn with_overrides(&self, overrides: &crate::transport::Overrides) -> Self {
        let inner = &self.inner;
        Self {
            inner: Arc::new(ControlInner {
                transport: inner.transport.with_overrides(overrides),
                token: inner.token.clone(),
                auth: inner.auth.clone(),
                project: inner.project.clone(),
            }),
        }
    }

    /// A client from explicit values only (`base_url` `None` means the default). A missing or blank token is a
    /// `ConfigurationError`; an `ik_live_` key is `PermissionDenied [wrong_credential_type]`. Nothing is sent.
    pub fn new(
        base_url: Option<&str>,
        sdk_token: Option<&str>,
        project: Option<&str>,
        options: TransportOptions,
    ) -> Result<Self> {
        Self::build(Sources::Explicit, base_url, sdk_token, project, &options)
    }

    /// Like `new`, each value resolved explicit > `INFERENCEKEY_BASE_URL` / `INFERENCEKEY_SDK_TOKEN` /
    /// `INFERENCEKEY_PROJECT` > default.
    pub fn from_env(
        base_url: Option<&str>,
        sdk_token: Option<&str>,
        project: Option<&str>,
        options: TransportOptions,
    ) -> Result<Self> {
        Self::build(
            Sources::ExplicitThenEnv,
            base_url,
            sdk_token,
            project,
            &options,
        )
    }

    fn build(
        sources: Sources,
        base_url: Option<&str>,
        token: Option<&str>,
        project: Option<&str>,
        options: &TransportOptions,
    ) -> Result<Self> {
        let base_url = sources.get(base_url, ENV_BASE_URL);
        let token = sources.get(token, ENV_SDK_TOKEN);
        let project = sources.get(project, ENV_PROJECT);
        let Some(token) = token else {
            return Err(Error::configuration(
                "configuration error: no sdk_token: pass sdk_token= or set INFERENCEKEY_SDK_TOKEN",
            ));
        };
        if token_kind(&token) == TokenKind::Live {
            return Err(Error::permission_denied(
                "wrong_credential_type",
                format_args!(
                    "{} is a data key; the management plane requires an ik_sdk_ token",
                    redact(&token)
                ),
            ));
        }
        let token = Secret::new(token);
        let auth = bearer(&token)?;
        let transport = Transport::new(normalize_base_url(base_url)?, options)?;
        Ok(Self {
            inner: Arc::new(ControlInner {
                transport,
                token,
                auth,
                project,
            }),
        })
    }

    /// The normalized base URL.
    pub fn base_url(&self) -> &str {
        self.inner.transport.base_url()
    }

    /// The client's own project, if it has one.
    pub fn project(&self) -> Option<&str> {
        self.inner.project.as_deref()
    }

    /// The `ik_sdk_` token itself, for handing this client's configuration to another process (a pickled client
    /// for a worker). Never log or show it.
    pub fn exposed_token(&self) -> &str {
        self.inner.token.expose()
    }

    /// `explicit` > `spec_project` > the client's project > `INFERENCEKEY_PROJECT` now; else ConfigurationError.
    fn resolve_project(
        &self,
        explicit: Option<&str>,
        spec_project: Option<&str>,
    ) -> Result<String> {
        non_blank(explicit)
            .or_else(|| non_blank(spec_project))
            .or_else(|| self.inner.project.clone())
            .or_else(|| resolve_setting(None, ENV_PROJECT))
            .ok_or_else(|| Error::configuration(NO_PROJECT))
            .and_then(checked_project)
    }

    fn request<'a>(&'a self, method: Method, url: &'a str, body: Option<Bytes>) -> Request<'a> {
        Request {
            method,
            url,
            auth: &self.inner.auth,
            body,
            event_stream: false,
        }
    }

    /// Every workload of the project (C1), odd items skipped.
    pub async fn list(&self, project: Option<&str>) -> Result<Vec<Workload>> {
        let project = self.resolve_project(project, None)?;
        self.list_in(&project).await
    }

    async fn list_in(&self, project: &str) -> Result<Vec<Workload>> {
        let transport = &self.inner.transport;
        let url = transport.url(&["api", "projects", project, "workloads"]);
        let response = transport
            .send(&self.request(Method::Get, &url, None))
            .await?;
        transport
            .read_body(response, |body| decode_workload_list(&body))
            .await
    }

    async fn find(&self, project: &str, slug: &str) -> Result<Option<Workload>> {
        Ok(self
            .list_in(project)
            .await?
            .into_iter()
            .find(|w| w.slug == slug))
    }

    /// The plan `ensure` would follow, computed without changing anything.
    pub async fn plan(&self, spec: &WorkloadSpec, project: Option<&str>) -> Result<Plan> {
        spec.validate()?;
        let slug = checked_slug(&spec.slug)?;
        let project = self.resolve_project(project, spec.project.as_deref())?;
        Ok(match self.find(&project, &slug).await? {
            Some(live) => diff(spec, &live, &project),
            None => create_plan(spec, &project),
        })
    }

    /// Make the platform match `spec`: create when absent (except `DryRun`), then act on drift per `on_drift`.
    /// A create answered with another slug (a concurrent create won) deletes the duplicate and continues with
    /// the existing workload.
    pub async fn ensure(
        &self,
        spec: &WorkloadSpec,
        on_drift: OnDrift,
        project: Option<&str>,
    ) -> Result<EnsureOutcome> {
        spec.validate()?;
        let slug = checked_slug(&spec.slug)?;
        let project = self.resolve_project(project, spec.project.as_deref())?;
        let outcome = |plan: Plan, applied: bool| {
            EnsureOutcome::new(project.clone(), slug.clone(), plan, applied, on_drift)
        };
        let mut stored_slug = String::new();
        for _ in 0..MAX_CREATE_ROUNDS {
            if let Some(live) = self.find(&project, &slug).await? {
                let plan = diff(spec, &live, &project);
                let applied = self.act_on_drift(spec, &plan, on_drift).await?;
                return Ok(outcome(plan, applied));
            }
            let mut plan = create_plan(spec, &project);
            if on_drift == OnDrift::DryRun {
                return Ok(outcome(plan, false));
            }
            let created = self.create(&project, spec).await?;
            if created.slug == slug {
                plan.workload_id = Some(created.id);
                return Ok(outcome(plan, true));
            }
            log::info!(
                "workload {slug:?} was created concurrently (ours came back as {:?}); deleting the duplicate",
                created.slug
            );
            self.delete_id(&created.id).await?;
            stored_slug = created.slug;
        }
        Err(Error::api(format!(
            "workload {slug:?} could not be created: the platform stored it as {stored_slug:?} {MAX_CREATE_ROUNDS} times"
        )))
    }

    /// Apply `on_drift` to an existing workload's plan; true when a PATCH was sent.
    async fn act_on_drift(
        &self,
        spec: &WorkloadSpec,
        plan: &Plan,
        on_drift: OnDrift,
    ) -> Result<bool> {
        if plan.action != PlanAction::Update {
            return Ok(false);
        }
        match on_drift {
            OnDrift::Reconcile => {
                let id = plan.workload_id.as_deref().unwrap_or_default();
                self.patch(id, &patch_body(spec, plan)).await?;
                Ok(true)
            }
            OnDrift::Fail => Err(Error::drift(plan.clone())),
            OnDrift::DryRun | OnDrift::Warn | OnDrift::Ignore => Ok(false),
        }
    }

    async fn create(&self, project: &str, spec: &WorkloadSpec) -> Result<Workload> {
        let transport = &self.inner.transport;
        let url = transport.url(&["api", "projects", project, "workloads"]);
        let body = Bytes::from(spec.create_body().to_string());
        let response = transport
            .send(&self.request(Method::Post, &url, Some(body)))
            .await?;
        transport
            .read_body(response, |body| Workload::from_body(&body))
            .await
    }

    async fn patch(&self, id: &str, body: &serde_json::Value) -> Result<()> {
        let transport = &self.inner.transport;
        let url = transport.url(&["api", "workloads", id]);
        let body = Bytes::from(body.to_string());
        let response = transport
            .send(&self.request(Method::Patch, &url, Some(body)))
            .await?;
        // The answer is the updated workload; reading it returns the connection to the pool.
        transport.read_body(response, |_| Ok(())).await
    }

    /// C4; true when deleted, false when it was already gone (404).
    async fn delete_id(&self, id: &str) -> Result<bool> {
        let transport = &self.inner.transport;
        let url = transport.url(&["api", "workloads", id]);
        match transport
            .send(&self.request(Method::Delete, &url, None))
            .await
        {
            Ok(response) => transport.read_body(response, |_| Ok(true)).await,
            Err(err) if err.status == Some(404) => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// Delete the workload with this slug: true when it existed and was removed, false when it was not there.
    pub async fn delete(&self, workload_slug: &str, project: Option<&str>) -> Result<bool> {
        let slug = checked_slug(workload_slug)?;
        let project = self.resolve_project(project, None)?;
        match self.find(&project, &slug).await? {
            Some(live) => self.delete_id(&live.id).await,
            None => Ok(false),
        }
    }

    /// Start watching a workload's readiness (C5); the connection opens on the first `next()`. The `timeout`
    /// runs from now and bounds everything, connects and backoff included.
    pub fn watch_readiness(
        &self,
        workload_slug: &str,
        project: Option<&str>,
        timeout: Duration,
    ) -> Result<ReadinessWatch> {
        let slug = checked_slug(workload_slug)?;
        let project = self.resolve_project(project, None)?;
        let transport = self.inner.transport.clone();
        let url = transport.url(&[
            "api",
            "projects",
            &project,
            "workloads",
            &slug,
            "readiness-events",
        ]);
        let started = Instant::now();
        Ok(ReadinessWatch {
            transport,
            auth: self.inner.auth.clone(),
            url,
            project,
            slug,
            started,
            deadline: started
                .checked_add(timeout)
                .unwrap_or_else(|| started + Duration::from_secs(86_400 * 365)),
            timeout,
            connection: None,
            failures: 0,
            backoff_from: None,
            retry_after: None,
            fresh_connection: false,
            request_id: None,
            last: None,
            state: WatchState::Running,
        })
    }
}

#[derive(Debug)]
enum WatchState {
    Running,
    /// `ready` was yielded.
    Done,
    /// An `error` phase was yielded; the next call raises this.
    Failing(Error),
}

/// The readiness events of one workload: reconnects (1, 2, 4, 5, 5 ... s) when the stream ends without a
/// terminal phase or on transient failures, and fails with `WaitTimeout` at the deadline.
pub struct ReadinessWatch {
    transport: Transport,
    auth: HeaderValue,
    url: String,
    project: String,
    slug: String,
    started: Instant,
    deadline: Instant,
    timeout: Duration,
    connection: Option<Connection>,
    /// Consecutive connections that failed or ended without events (indexes `WATCH_BACKOFF`).
    failures: usize,
    /// When the previous connection ended or failed: the next connect waits its backoff from then.
    backoff_from: Option<Instant>,
    /// A server-requested wait for the next connect.
    retry_after: Option<Duration>,
    /// The next event is the snapshot a new connection starts with.
    fresh_connection: bool,
    /// The `x-request-id` of the current (or last) event stream, for the error of an `error` phase.
    request_id: Option<String>,
    last: Option<ReadinessPayload>,
    state: WatchState,
}

impl fmt::Debug for ReadinessWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadinessWatch")
            .field("url", &self.url)
            .field("timeout", &self.timeout)
            .field("last_phase", &self.last.as_ref().map(|p| p.phase.as_str()))
            .field("state", &self.state)
            .finish()
    }
}

impl ReadinessWatch {
    /// The next event; `Ok(None)` after `ready`. An `error` phase is yielded, then the next call returns an
    /// `Api` error with the server's message. Permanent HTTP errors (401, 403, 404, ...) are returned at once.
    pub async fn next(&mut self) -> Result<Option<ReadinessEvent>> {
        loop {
            match std::mem::replace(&mut self.state, WatchState::Running) {
                WatchState::Running => {}
                WatchState::Done => {
                    self.state = WatchState::Done;
                    return Ok(None);
                }
                WatchState::Failing(err) => {
                    self.state = WatchState::Done;
                    return Err(err);
                }
            }
            let Some(connection) = self.connection.as_mut() else {
                self.connect().await?;
                continue;
            };
            let arrival = timeout_at(self.deadline, connection.arrivals.recv())
                .await
                .map_err(|_| self.wait_timeout())?;
            match arrival {
                Some(Arrival::Event(payload, arrived)) => {
                    // The connection delivered: the next reconnect starts from the shortest delay.
                    self.failures = 0;
                    let resync = std::mem::replace(&mut self.fresh_connection, false);
                    if resync && self.last.as_ref() == Some(&payload) {
                        // The snapshot after a reconnect repeats what the caller has already seen.
                        continue;
                    }
                    return Ok(Some(self.emit(payload, arrived)));
                }
                Some(Arrival::Ended(failure, ended)) => {
                    match failure {
                        Some(error) => log::debug!(
                            "readiness stream of {:?}: {}; reconnecting",
                            self.slug,
                            error.message
                        ),
                        None => log::debug!(
                            "readiness stream of {:?} ended before a terminal phase; reconnecting",
                            self.slug
                        ),
                    }
                    self.connection = None;
                    self.backoff_from = Some(ended);
                }
                Some(Arrival::Failed(err)) => {
                    self.connection = None;
                    self.state = WatchState::Done;
                    return Err(err.with_request_id(self.request_id.as_deref()));
                }
                // The reader is gone without a word (it cannot be, short of a panic): reconnect.
                None => {
                    self.connection = None;
                    self.backoff_from = Some(Instant::now());
                }
            }
        }
    }

    /// The event for `payload`, stamped with when it `arrived`, not with when the caller asked for it.
    fn emit(&mut self, payload: ReadinessPayload, arrived: Instant) -> ReadinessEvent {
        let elapsed = arrived.saturating_duration_since(self.started);
        let elapsed_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        match payload.phase.as_str() {
            "ready" => {
                self.state = WatchState::Done;
                self.connection = None;
            }
            "error" => {
                let message = if payload.message.is_empty() {
                    "no message from the platform"
                } else {
                    &payload.message
                };
                self.state = WatchState::Failing(
                    Error::api(format!("workload {:?} failed: {message}", self.slug))
                        .with_request_id(self.request_id.as_deref()),
                );
                self.connection = None;
            }
            _ => {}
        }
        let event = ReadinessEvent {
            phase: payload.phase.clone(),
            message: payload.message.clone(),
            elapsed_ms,
            step: payload.step.clone(),
        };
        self.last = Some(payload);
        event
    }

    fn wait_timeout(&self) -> Error {
        let last = match &self.last {
            Some(payload) => format!("last phase: {}", payload.phase),
            None => "no phase reported".to_owned(),
        };
        Error::new(
            ErrorKind::WaitTimeout,
            format!(
                "workload {:?} not ready after {:.1} s ({last})",
                self.slug,
                self.timeout.as_secs_f64()
            ),
        )
    }

    /// Waits out the backoff counted from `from` (when the previous connection ended or failed, however late
    /// the caller noticed), never past the deadline.
    async fn back_off(&mut self, from: Instant) -> Result<()> {
        let delay = reconnect_delay(self.failures, self.retry_after.take());
        self.failures += 1;
        let at = from.checked_add(delay).unwrap_or(self.deadline);
        timeout_at(self.deadline, sleep_until(at))
            .await
            .map_err(|_| self.wait_timeout())
    }

    async fn connect(&mut self) -> Result<()> {
        loop {
            if let Some(from) = self.backoff_from.take() {
                self.back_off(from).await?;
            }
            let request = Request {
                method: Method::Get,
                url: &self.url,
                auth: &self.auth,
                body: None,
                event_stream: true,
            };
            let attempt = timeout_at(self.deadline, self.transport.attempt(&request)).await;
            match attempt {
                Err(_) => return Err(self.wait_timeout()),
                Ok(Ok(response)) => {
                    self.request_id = crate::transport::request_id(&response);
                    if let Some(kind) = non_sse_content_type(&response) {
                        return Err(Error::api(format!(
                            "readiness of workload {:?}: expected an event stream, got content-type {kind:?}",
                            self.slug
                        ))
                        .with_request_id(self.request_id.as_deref()));
                    }
                    self.connection = Some(Connection::open(response, self.transport.clone()));
                    self.fresh_connection = true;
                    return Ok(());
                }
                Ok(Err(AttemptError { error, failure })) => {
                    let transient = match failure {
                        Failure::Connect | Failure::Transport => true,
                        Failure::Permanent => false,
                        Failure::Status {
                            status,
                            retry_after,
                        } => {
                            self.retry_after = retry_after;
                            matches!(status, 429 | 502 | 503 | 504)
                        }
                    };
                    if !transient {
                        if error.status == Some(404) {
                            return Err(self.with_slug_hint(error).await);
                        }
                        return Err(error);
                    }
                    log::debug!(
                        "readiness stream of {:?}: {}; reconnecting",
                        self.slug,
                        error.message
                    );
                    self.backoff_from = Some(Instant::now());
                }
            }
        }
    }
}

impl ReadinessWatch {
    /// The 404 of this workload with a hint naming the project's similar slugs (none when the workload is listed:
    /// the 404 is then about something else). Costs one request (a single
    /// attempt, no retries, at most `HINT_WAIT` and never past the deadline); when it fails, `error` is returned
    /// unchanged, so the hint can never replace the 404.
    async fn with_slug_hint(&self, error: Error) -> Error {
        let until = self.deadline.min(Instant::now() + HINT_WAIT);
        let listed = timeout_at(until, list_once(&self.transport, &self.auth, &self.project)).await;
        match listed {
            Ok(Ok(workloads)) => {
                let slugs = workloads.iter().map(|w| w.slug.as_str());
                match not_found_hint(&self.project, &self.slug, slugs) {
                    Some(hint) => error.with_hint(&hint),
                    None => error,
                }
            }
            Ok(Err(failed)) => {
                log::debug!("no slug hint for {:?}: {}", self.slug, failed.message);
                error
            }
            Err(_) => {
                log::debug!("no slug hint for {:?}: the list took too long", self.slug);
                error
            }
        }
    }
}

/// The workloads of `project` in one attempt: the error path that uses it must not retry or wait.
async fn list_once(
    transport: &Transport,
    auth: &HeaderValue,
    project: &str,
) -> Result<Vec<Workload>> {
    let url = transport.url(&["api", "projects", project, "workloads"]);
    let request = Request {
        method: Method::Get,
        url: &url,
        auth,
        body: None,
        event_stream: false,
    };
    let response = transport
        .attempt(&request)
        .await
        .map_err(|failed| failed.error)?;
    transport
        .read_body(response, |body| decode_workload_list(&body))
        .await
}

/// The wait before the next connect after `failures` consecutive failed connections: the server's
/// `Retry-After` when it sent one (capped), else the backoff step.
fn reconnect_delay(failures: usize, retry_after: Option<Duration>) -> Duration {
    match retry_after {
        Some(wait) => wait.min(WATCH_RETRY_AFTER_CAP),
        None => WATCH_BACKOFF[failures.min(WATCH_BACKOFF.len() - 1)],
    }
}

/// What the reader of one readiness connection hands over, in order.
#[derive(Debug)]
enum Arrival {
    /// A decoded event and the instant the bytes that completed it arrived.
    Event(ReadinessPayload, Instant),
    /// The body ended: cleanly (`None`) or with this failure, at this instant.
    Ended(Option<Error>, Instant),
    /// The server reported an error on the stream (an `{"error": ...}` frame, `event: error`), or broke the
    /// protocol (an event past the size cap): a reconnect would meet the same, so the watch fails at once.
    Failed(Error),
}

/// One open readiness connection, read by its own task so that each event is stamped when it arrives, however
/// late the caller asks for it. Dropping it closes the connection.
struct Connection {
    arrivals: mpsc::Receiver<Arrival>,
    reader: JoinHandle<()>,
}

impl Connection {
    fn open(response: reqwest::Response, transport: Transport) -> Self {
        // Each read waits at most the read timeout; the first failure ends the stream.
        let timer = transport.idle_timer();
        let state = Some((response, transport, timer));
        let chunks = futures_util::stream::unfold(state, |open| async move {
            let (mut response, transport, mut timer) = open?;
            match timer.next_chunk(&mut response).await {
                Ok(Some(bytes)) => Some((Ok(bytes), Some((response, transport, timer)))),
                Ok(None) => None,
                Err(err) => {
                    let error = transport
                        .read_error(&err, "reading readiness events from")
                        .0;
                    Some((Err(error), None))
                }
            }
        });
        let (sender, arrivals) = mpsc::channel(WATCH_QUEUE);
        Self {
            arrivals,
            reader: tokio::spawn(read_arrivals(chunks, sender)),
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Decodes a readiness body as it comes and hands over each event with the instant it arrived, then the end.
async fn read_arrivals(chunks: impl Stream<Item = Result<Bytes>>, sender: mpsc::Sender<Arrival>) {
    let mut chunks = std::pin::pin!(chunks);
    let mut decoder = SseDecoder::new();
    loop {
        let read = chunks.next().await;
        let arrived = Instant::now();
        let mut decoded = Vec::new();
        let ended = match read {
            Some(Ok(bytes)) => {
                decoder.feed_with(&bytes, |event| push_arrival(&mut decoded, event, arrived));
                if decoder.overflowed() {
                    decoded.push(Arrival::Failed(Error::event_too_large(
                        "the readiness endpoint",
                    )));
                }
                None
            }
            Some(Err(error)) => Some(Some(error)),
            None => {
                decoder.finish_with(|event| push_arrival(&mut decoded, event, arrived));
                Some(None)
            }
        };
        for arrival in decoded {
            let failed = matches!(arrival, Arrival::Failed(_));
            if sender.send(arrival).await.is_err() || failed {
                return;
            }
        }
        if let Some(failure) = ended {
            let _ = sender.send(Arrival::Ended(failure, arrived)).await;
            return;
        }
    }
}

/// One readiness event as what the watch makes of it: a phase, a reported error, or nothing (logged).
fn push_arrival(arrivals: &mut Vec<Arrival>, event: EventRef<'_>, arrived: Instant) {
    if let Some(error) = readiness_error(event) {
        arrivals.push(Arrival::Failed(error));
        return;
    }
    match decode_readiness(event.data) {
        Some(payload) => arrivals.push(Arrival::Event(payload, arrived)),
        None => log::debug!(
            "ignored a readiness event without a phase: {}",
            redact(&String::from_utf8_lossy(event.data))
        ),
    }
}

/// The error a readiness event reports: `event: error`, or a JSON object with a non-null `error`, in any of the
/// platform's error shapes. Its message is the server's.
fn readiness_error(event: EventRef<'_>) -> Option<Error> {
    let body: Option<Value> = serde_json::from_slice(event.data).ok();
    // The platform's nested shape, an engine's flat `{"object": "error"}`, or an `event: error`.
    if !(event.event == b"error" || body.as_ref().is_some_and(is_inband_error)) {
        return None;
    }
    let body =
        body.unwrap_or_else(|| Value::String(String::from_utf8_lossy(event.data).into_owned()));
    Some(Error::reported("the readiness stream", body))
}

/// The content type of a response when it is present and not `text/event-stream`.
fn non_sse_content_type(response: &reqwest::Response) -> Option<String> {
    let value = response.headers().get(CONTENT_TYPE)?.to_str().ok()?;
    let mime = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    (mime != "text/event-stream").then_some(mime)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    const SDK: &str = "ik_sdk_a1b2c3d4_0123456789abcdef";

    fn options() -> TransportOptions {
        TransportOptions::default()
    }

    #[test]
    fn on_drift_parsing() {
        for (text, value) in [
            ("reconcile", OnDrift::Reconcile),
            ("fail", OnDrift::Fail),
            ("dry_run", OnDrift::DryRun),
            ("warn", OnDrift::Warn),
            ("ignore", OnDrift::Ignore),
        ] {
            assert_eq!(text.parse::<OnDrift>().unwrap(), value);
            assert_eq!(value.as_str().parse::<OnDrift>().unwrap(), value);
        }
        assert_eq!(
            OnDrift::ALL.map(OnDrift::as_str),
            ["reconcile", "fail", "dry_run", "warn", "ignore"]
        );
        assert_eq!(OnDrift::default(), OnDrift::Reconcile);
    }

    #[test]
    fn unknown_on_drift_wording_is_pythons() {
        // What Python's `OnDrift(value)` refuses is refused here too, and shown as `repr(value)` shows it.
        for (text, shown) in [
            ("sometimes", "'sometimes'"),
            ("dry-run", "'dry-run'"),
            ("IGNORE", "'IGNORE'"),
            (" warn", "' warn'"),
            ("", "''"),
            ("it's", "\"it's\""),
            ("a\nb", "'a\\nb'"),
        ] {
            let err = text.parse::<OnDrift>().unwrap_err();
            assert_eq!(err.kind, ErrorKind::Validation);
            assert_eq!(err.status, None);
            assert_eq!(
                err.message,
                format!(
                    "validation error: on_drift must be one of reconcile, fail, dry_run, warn, ignore; got {shown}"
                )
            );
        }
        // A value that is not a string: the binding passes its repr.
        assert_eq!(
            OnDrift::unknown("42").message,
            "validation error: on_drift must be one of reconcile, fail, dry_run, warn, ignore; got 42"
        );
        let token = "ik_sdk_a1b2c3d4_0123456789abcdef";
        let message = token.parse::<OnDrift>().unwrap_err().message;
        assert!(!message.contains("0123456789abcdef"), "{message}");
        assert!(
            message.ends_with("got 'ik_sdk_a1b2c3d4\u{2026}'"),
            "{message}"
        );
    }

    fn drifted_plan(action: PlanAction) -> Plan {
        Plan {
            action,
            project: "acme".into(),
            workload_slug: "support-bot".into(),
            workload_id: Some("wl_1".into()),
            changes: match action {
                PlanAction::Noop => vec![],
                PlanAction::Update | PlanAction::Create => vec![crate::plan::FieldChange {
                    field: "command".into(),
                    live: None,
                    desired: serde_json::json!("serve"),
                }],
            },
        }
    }

    fn outcome(action: PlanAction, on_drift: OnDrift) -> EnsureOutcome {
        EnsureOutcome::new(
            "acme".into(),
            "support-bot".into(),
            drifted_plan(action),
            false,
            on_drift,
        )
    }

    #[test]
    fn ensure_outcome_says_what_to_show() {
        let warned = outcome(PlanAction::Update, OnDrift::Warn);
        assert_eq!(
            warned.warning.as_deref(),
            Some(
                "workload 'support-bot' drifted from spec: command (on_drift=warn: not changed)\n\
                 ~ update support-bot in project acme\n  ~ command: (unset) -> \"serve\""
            )
        );
        assert_eq!(warned.info, None);
        for action in [PlanAction::Create, PlanAction::Update, PlanAction::Noop] {
            let dry = outcome(action, OnDrift::DryRun);
            assert_eq!(dry.warning, None);
            assert_eq!(
                dry.info,
                Some(format!(
                    "ensure dry run for acme/support-bot, nothing changed:\n{}",
                    drifted_plan(action).render()
                ))
            );
        }
        assert_eq!(
            outcome(PlanAction::Create, OnDrift::DryRun).info.as_deref(),
            Some("ensure dry run for acme/support-bot, nothing changed:\n+ create support-bot in project acme\n  + command: \"serve\"")
        );
        // Warn shows nothing when nothing drifted; the other modes never show anything.
        for action in [PlanAction::Create, PlanAction::Noop] {
            let quiet = outcome(action, OnDrift::Warn);
            assert_eq!((quiet.warning, quiet.info), (None, None));
        }
        for on_drift in [OnDrift::Reconcile, OnDrift::Fail, OnDrift::Ignore] {
            for action in [PlanAction::Create, PlanAction::Update, PlanAction::Noop] {
                let quiet = outcome(action, on_drift);
                assert_eq!((quiet.warning, quiet.info), (None, None), "{on_drift:?}");
            }
        }
    }

    #[test]
    fn blank_or_missing_token_is_a_configuration_error() {
        for token in [None, Some(""), Some("  \n")] {
            let err = ManagementClient::new(Some("http://127.0.0.1:1"), token, None, options())
                .unwrap_err();
            assert_eq!(err.kind, ErrorKind::Configuration);
            assert_eq!(
                err.message,
                "configuration error: no sdk_token: pass sdk_token= or set INFERENCEKEY_SDK_TOKEN"
            );
            assert_eq!(err.status, None);
        }
    }

    #[test]
    fn live_key_is_the_wrong_credential() {
        let key = "ik_live_proj1234_ffffffffffffffff";
        let err = ManagementClient::new(None, Some(key), None, options()).unwrap_err();
        assert_eq!(err.kind, ErrorKind::PermissionDenied);
        assert_eq!(err.code.as_deref(), Some("wrong_credential_type"));
        assert_eq!(
            err.message,
            "permission denied [wrong_credential_type]: ik_live_proj1234\u{2026} is a data key; the management plane requires an ik_sdk_ token"
        );
    }

    #[test]
    fn new_uses_explicit_values_only() {
        let client = ManagementClient::new(None, Some(SDK), Some("  "), options()).unwrap();
        assert_eq!(client.base_url(), crate::DEFAULT_BASE_URL);
        assert_eq!(client.project(), None);
        let client = ManagementClient::new(
            Some("http://127.0.0.1:9/"),
            Some(SDK),
            Some(" acme "),
            options(),
        )
        .unwrap();
        assert_eq!(client.base_url(), "http://127.0.0.1:9");
        assert_eq!(client.project(), Some("acme"));
        let err =
            ManagementClient::new(Some("localhost:9"), Some(SDK), None, options()).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Configuration);
    }

    #[test]
    fn debug_redacts_the_token() {
        let client = ManagementClient::new(None, Some(SDK), None, options()).unwrap();
        let shown = format!("{client:?}");
        assert!(!shown.contains("0123456789abcdef"), "{shown}");
        assert!(shown.contains("ik_sdk_a1b2c3d4\u{2026}"));
    }

    #[test]
    fn project_resolution_order() {
        let client = ManagementClient::new(None, Some(SDK), Some("client"), options()).unwrap();
        assert_eq!(
            client.resolve_project(Some("arg"), Some("spec")).unwrap(),
            "arg"
        );
        assert_eq!(
            client.resolve_project(Some(" "), Some("spec")).unwrap(),
            "spec"
        );
        assert_eq!(client.resolve_project(None, None).unwrap(), "client");
    }

    #[test]
    fn watch_checks_slug_before_anything() {
        let client = ManagementClient::new(None, Some(SDK), Some("p"), options()).unwrap();
        let err = client
            .watch_readiness("--", None, Duration::from_secs(1))
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Validation);
    }

    #[test]
    fn reconnect_delays_follow_the_backoff_unless_the_server_says_otherwise() {
        let secs = Duration::from_secs;
        let steps: Vec<Duration> = (0..6).map(|n| reconnect_delay(n, None)).collect();
        assert_eq!(
            steps,
            [secs(1), secs(2), secs(4), secs(5), secs(5), secs(5)]
        );
        // Retry-After replaces the step, even a zero one, and is capped.
        assert_eq!(reconnect_delay(2, Some(Duration::ZERO)), Duration::ZERO);
        assert_eq!(reconnect_delay(0, Some(secs(3))), secs(3));
        assert_eq!(reconnect_delay(0, Some(secs(3600))), WATCH_RETRY_AFTER_CAP);
    }

    #[tokio::test]
    async fn events_are_stamped_when_they_arrive_not_when_they_are_asked_for() {
        // The body, fed by hand through a one-slot queue: a send completes only once the reader took
        // the chunk before, so two sends after a chunk mean the reader is done with it.
        let (feed, body) = mpsc::channel::<Result<Bytes>>(1);
        let chunks = futures_util::stream::unfold(body, |mut body| async move {
            body.recv().await.map(|chunk| (chunk, body))
        });
        let (sender, mut arrivals) = mpsc::channel(WATCH_QUEUE);
        let reader = tokio::spawn(read_arrivals(chunks, sender));
        let chunk = |text: &'static str| Ok(Bytes::from_static(text.as_bytes()));
        feed.send(chunk("data: {\"phase\": \"scheduling\"}\n\n"))
            .await
            .unwrap();
        feed.send(chunk(": keep-alive\n")).await.unwrap();
        feed.send(chunk(": keep-alive\n")).await.unwrap();
        let read_by = Instant::now();
        // The caller asks only now, late: the event still carries the instant it came.
        let Some(Arrival::Event(payload, arrived)) = arrivals.recv().await else {
            panic!("no event");
        };
        assert_eq!(payload.phase, "scheduling");
        assert!(arrived <= read_by);
        // Then the end, after everything that came before it.
        drop(feed);
        let Some(Arrival::Ended(None, ended)) = arrivals.recv().await else {
            panic!("no clean end");
        };
        assert!(ended >= arrived);
        reader.await.unwrap();
    }

    #[tokio::test]
    async fn a_failed_read_ends_the_connection_with_its_error() {
        let chunks = futures_util::stream::iter([
            Ok(Bytes::from_static(
                b"data: {\"phase\": \"provisioning\"}\n\n",
            )),
            Err(Error::api("connection reset")),
        ]);
        let (sender, mut arrivals) = mpsc::channel(WATCH_QUEUE);
        read_arrivals(chunks, sender).await;
        assert!(
            matches!(arrivals.recv().await, Some(Arrival::Event(p, _)) if p.phase == "provisioning")
        );
        assert!(
            matches!(arrivals.recv().await, Some(Arrival::Ended(Some(e), _)) if e.message.contains("connection reset"))
        );
        assert!(arrivals.recv().await.is_none());
    }

    #[test]
    fn elapsed_ms_is_the_arrival_since_the_wait_started() {
        let client = ManagementClient::new(None, Some(SDK), Some("p"), options()).unwrap();
        let mut watch = client
            .watch_readiness("bot", None, Duration::from_secs(60))
            .unwrap();
        let payload = |phase: &str| ReadinessPayload {
            phase: phase.to_owned(),
            message: String::new(),
            step: None,
        };
        let at = |ms| watch.started + Duration::from_millis(ms);
        let (first, second) = (at(40), at(1234));
        assert_eq!(watch.emit(payload("provisioning"), first).elapsed_ms, 40);
        assert_eq!(watch.emit(payload("ready"), second).elapsed_ms, 1234);
    }
}
