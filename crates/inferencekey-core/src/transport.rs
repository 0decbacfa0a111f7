//! HTTP for one SDK client: a reqwest pool (rustls, HTTP/1.1 + 2, connect and idle-read timeouts, never a
//! total deadline), request headers, the retry policy of platform-wire sections 9-10, and transport errors.

use std::cell::RefCell;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::header::{
    HeaderMap, HeaderName, HeaderValue, ACCEPT, AUTHORIZATION, CONNECTION, CONTENT_LENGTH,
    CONTENT_TYPE, HOST, PROXY_AUTHORIZATION, RETRY_AFTER, TRANSFER_ENCODING, USER_AGENT,
};

use crate::config::{host_of, TransportOptions};
use crate::direct::{self, Direct, Fail};
use crate::error::{Error, ErrorKind, Result};
use crate::net::Verify;
use crate::token::Secret;

/// Path segments keep only RFC 3986 unreserved characters; everything else is percent-encoded.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// First retry delay before jitter; doubles per retry.
const BACKOFF_BASE: Duration = Duration::from_millis(500);
/// Longest computed backoff.
const BACKOFF_CAP: Duration = Duration::from_secs(8);
/// Longest `Retry-After` honoured (a server asking for more gets this).
const RETRY_AFTER_CAP: Duration = Duration::from_secs(60);
/// How long an idle pooled connection is kept.
const POOL_IDLE: Duration = Duration::from_secs(90);

/// The HTTP methods the SDK uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Method {
    Get,
    Post,
    Patch,
    Delete,
}

impl Method {
    fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Post => "POST",
            Self::Patch => "PATCH",
            Self::Delete => "DELETE",
        }
    }

    fn as_reqwest(self) -> reqwest::Method {
        match self {
            Self::Get => reqwest::Method::GET,
            Self::Post => reqwest::Method::POST,
            Self::Patch => reqwest::Method::PATCH,
            Self::Delete => reqwest::Method::DELETE,
        }
    }

    /// GET and DELETE may be repeated safely; POST and PATCH only when they provably did not arrive.
    fn is_idempotent(self) -> bool {
        matches!(self, Self::Get | Self::Delete)
    }
}

/// How one attempt failed, as far as the retry policy cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// No connection was made: the request never reached the server.
    Connect,
    /// The connection failed or timed out after the request may have been sent.
    Transport,
    /// A failure no retry can cure (a certificate the client does not trust, a refused client certificate).
    Permanent,
    /// The server answered with a non-2xx status.
    Status {
        status: u16,
        retry_after: Option<Duration>,
    },
}

/// A failed attempt: the error to report and what kind of failure it was.
#[derive(Debug)]
pub(crate) struct AttemptError {
    pub(crate) error: Error,
    pub(crate) failure: Failure,
}

/// The delay before retry number `retries_done + 1`, or `None` when the policy says not to retry.
/// `jitter` is a uniform draw in `[0, 1)`.
pub(crate) fn retry_delay(
    method: Method,
    failure: Failure,
    retries_done: u32,
    max_retries: u32,
    jitter: f64,
) -> Option<Duration> {
    if retries_done >= max_retries {
        return None;
    }
    let retry_after = match failure {
        Failure::Permanent => return None,
        Failure::Connect => None,
        Failure::Transport if method.is_idempotent() => None,
        Failure::Transport => return None,
        Failure::Status {
            status,
            retry_after,
        } => {
            let retryable = if method.is_idempotent() {
                matches!(status, 408 | 429 | 502 | 503 | 504)
            } else {
                // The server refused before doing anything and said when to come back.
                matches!(status, 429 | 503) && retry_after.is_some()
            };
            if !retryable {
                return None;
            }
            retry_after
        }
    };
    Some(match retry_after {
        Some(wait) => wait.min(RETRY_AFTER_CAP),
        None => backoff(retries_done, jitter),
    })
}

/// Exponential backoff with "equal jitter": half the step fixed, half random, so retries spread out.
pub(crate) fn backoff(retries_done: u32, jitter: f64) -> Duration {
    let step = BACKOFF_BASE
        .saturating_mul(1u32 << retries_done.min(16))
        .min(BACKOFF_CAP);
    step.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

/// A uniform draw in `[0, 1)`, from the standard library's randomly keyed hasher (no RNG dependency needed).
pub(crate) fn jitter() -> f64 {
    let bits = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// A `Retry-After` value: delay-seconds (integer or decimal), or an HTTP-date (IMF-fixdate,
/// `Sun, 06 Nov 1994 08:49:37 GMT`) as the time left until it (zero for a date in the past).
pub(crate) fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<f64>() {
        return Duration::try_from_secs_f64(seconds).ok();
    }
    let at = http_date_unix(value)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs_f64();
    Some(Duration::try_from_secs_f64((at as f64 - now).max(0.0)).unwrap_or_default())
}

/// The Unix time of an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the form RFC 9110 requires senders to use.
fn http_date_unix(value: &str) -> Option<i64> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (_, rest) = value.split_once(", ")?;
    let parts: Vec<&str> = rest.split(' ').collect();
    let [day, month, year, time, "GMT"] = parts.as_slice() else {
        return None;
    };
    let day: i64 = day.parse().ok()?;
    let month = MONTHS.iter().position(|m| m == month)? as i64 + 1;
    let year: i64 = year.parse().ok()?;
    let hms: Vec<i64> = time
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let [h, m, sec] = hms.as_slice() else {
        return None;
    };
    if !(1..=31).contains(&day) || *h > 23 || *m > 59 || *sec > 60 {
        return None;
    }
    // Days from the civil date (proleptic Gregorian), after Howard Hinnant's well-known algorithm.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + m * 60 + sec)
}

/// The `Authorization: Bearer` header for a credential, marked sensitive so it is never logged.
pub(crate) fn bearer(token: &Secret) -> Result<HeaderValue> {
    let mut value = HeaderValue::from_str(&format!("Bearer {}", token.expose())).map_err(|_| {
        Error::configuration(
            "configuration error: the token holds characters that cannot go in an HTTP header",
        )
    })?;
    value.set_sensitive(true);
    Ok(value)
}

/// One request, reusable across retries (the body is reference-counted bytes).
pub(crate) struct Request<'a> {
    pub(crate) method: Method,
    pub(crate) url: &'a str,
    pub(crate) auth: &'a HeaderValue,
    pub(crate) body: Option<Bytes>,
    pub(crate) event_stream: bool,
}

/// The connection pools of one SDK client: one for the multi-threaded I/O runtime, and one per `IoContext` (a
/// current-thread runtime that a caller's thread drives itself: the binding's blocking calls).
///
/// A pooled connection is served by a task of the runtime that opened it, so a connection opened by one runtime
/// must never be handed to another: a current-thread runtime runs its tasks only while a thread waits on it. Each
/// context therefore gets its own reqwest client, built on first use from the same recipe, and its connections
/// are driven by the waiting thread with no hand-off to another one.
#[derive(Debug)]
struct Pools {
    shared: reqwest::Client,
    recipe: TransportOptions,
    /// One client per context that has made requests, with that context's mark.
    local: Mutex<Vec<(Weak<ContextMark>, reqwest::Client)>>,
    /// The blocking connections of unary requests made in a blocking scope, where that path applies.
    direct: Option<Direct>,
}

/// The identity of an `IoContext` for `Pools::local`; dropped with the context, so its clients can be pruned.
#[derive(Debug)]
struct ContextMark;

/// A current-thread runtime's share of every client's connections: requests made while it is entered use
/// connections of their own, opened on (and only ever driven by) that runtime. The binding pairs one with each
/// runtime it drives from a caller's thread, and may hand both on to another thread later (a pool of them), which
/// keeps the connections warm.
#[derive(Clone, Debug)]
pub struct IoContext {
    mark: Arc<ContextMark>,
}

thread_local! {
    static ENTERED: RefCell<Option<Arc<ContextMark>>> = const { RefCell::new(None) };
}

impl IoContext {
    /// A new context, with no connection yet.
    pub fn new() -> Self {
        Self {
            mark: Arc::new(ContextMark),
        }
    }

    /// Make this the context of the requests this thread makes until the guard is dropped (the previous one is
    /// restored then).
    pub fn enter(&self) -> EnteredContext {
        let previous = ENTERED.with(|slot| slot.replace(Some(Arc::clone(&self.mark))));
        EnteredContext { previous }
    }
}

impl Default for IoContext {
    fn default() -> Self {
        Self::new()
    }
}

/// Restores the thread's previous context when dropped.
#[derive(Debug)]
pub struct EnteredContext {
    previous: Option<Arc<ContextMark>>,
}

impl Drop for EnteredContext {
    fn drop(&mut self) {
        let previous = self.previous.take();
        ENTERED.with(|slot| *slot.borrow_mut() = previous);
    }
}

impl Pools {
    /// The reqwest client for a request made now: the entered context's, or the shared one.
    fn client(&self) -> Result<reqwest::Client> {
        let Some(mark) = ENTERED.with(|slot| slot.borrow().clone()) else {
            return Ok(self.shared.clone());
        };
        let mut local = self
            .local
            .lock()
            .map_err(|_| Error::api("a connection pool lock was poisoned"))?;
        if let Some((_, client)) = local
            .iter()
            .find(|(owner, _)| std::ptr::eq(owner.as_ptr(), Arc::as_ptr(&mark)))
        {
            return Ok(client.clone());
        }
        // The clients of contexts that are gone go now.
        local.retain(|(owner, _)| owner.strong_count() > 0);
        let client = build_client(&self.recipe)?;
        local.push((Arc::downgrade(&mark), client.clone()));
        Ok(client)
    }
}

/// A reqwest client made to `options` (the connection settings; per-request ones are applied per request).
fn build_client(options: &TransportOptions) -> Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .user_agent(options.user_agent.as_str())
        .connect_timeout(options.connect_timeout)
        .pool_idle_timeout(POOL_IDLE)
        .tcp_nodelay(true);
    match &options.verify {
        Verify::Default => {}
        Verify::Bundle(path) => {
            builder = builder.tls_built_in_root_certs(false);
            for cert in crate::net::bundle_certificates(path)? {
                builder = builder.add_root_certificate(cert);
            }
        }
        Verify::Off => builder = builder.danger_accept_invalid_certs(true),
    }
    if let Some(cert) = &options.client_cert {
        builder = builder.identity(crate::net::identity(cert)?);
    }
    if let Some(proxy) = &options.proxy {
        let proxy = reqwest::Proxy::all(proxy.as_str())
            .map_err(|err| {
                Error::configuration(format!(
                    "configuration error: proxy {:?} is not a valid proxy URL: {err}",
                    crate::net::proxy_address(proxy)
                ))
            })?
            .no_proxy(reqwest::NoProxy::from_env());
        builder = builder.proxy(proxy);
    }
    builder.build().map_err(|err| {
        Error::configuration(format!(
            "configuration error: cannot build the HTTP client: {}",
            error_chain(&err)
        ))
    })
}

/// The pool and settings of one SDK client; cloning shares the pool. The idle read timeout is applied here, per
/// read, rather than by the pool, so a copy with other settings (`with_overrides`) still shares the pool.
#[derive(Clone, Debug)]
pub(crate) struct Transport {
    pools: Arc<Pools>,
    base_url: Arc<str>,
    connect_timeout: Duration,
    read_timeout: Duration,
    max_retries: u32,
    /// Sent with every request (the client's `default_headers`, then a call's `extra_headers`).
    headers: Arc<HeaderMap>,
    /// The `host:port` of the proxy requests go through, if any (for messages).
    proxy: Option<Arc<str>>,
    /// Whether a client certificate is presented (for messages).
    client_cert: bool,
}

/// Why reading a response failed: the connection, or no data for the read timeout.
#[derive(Debug)]
pub(crate) enum ReadError {
    Http(reqwest::Error),
    Idle,
}

/// The idle read timeout of one response body: one timer, pushed back before each read. Pushing a registered timer
/// later is an atomic update in tokio (no lock on the timer wheel), where a new timer per read would register and
/// deregister one each time: on a long stream that showed as a few percent of the client's CPU.
pub(crate) struct IdleTimer {
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
    timeout: Duration,
}

impl IdleTimer {
    /// The next bytes of `response`, waiting at most the read timeout for them; `None` at the end.
    pub(crate) async fn next_chunk(
        &mut self,
        response: &mut reqwest::Response,
    ) -> std::result::Result<Option<Bytes>, ReadError> {
        let now = tokio::time::Instant::now();
        // A timeout too large for an Instant never fires: a year is as good as forever here.
        let deadline = now
            .checked_add(self.timeout)
            .unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 3600));
        self.sleep.as_mut().reset(deadline);
        tokio::select! {
            biased;
            read = response.chunk() => read.map_err(ReadError::Http),
            () = &mut self.sleep => Err(ReadError::Idle),
        }
    }
}

/// Settings one call or one client copy overrides (`None`: the client's own).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Overrides {
    /// The idle read timeout.
    pub read_timeout: Option<Duration>,
    /// Retries after the first attempt.
    pub max_retries: Option<u32>,
    /// Headers added to (or replacing) the client's own; never `Authorization` (refused when built).
    pub headers: Option<HeaderMap>,
}

impl Overrides {
    /// Overrides from the values a user passed: `timeout_s` a positive number of seconds, `max_retries` at least
    /// 0, `headers` name/value pairs that are valid HTTP and not `Authorization` (which must never replace or
    /// reveal the bound credential). Each failure is an `ErrorKind::Validation` naming the argument (`what` names
    /// the headers argument: `extra_headers` or `default_headers`).
    pub fn from_user(
        timeout_s: Option<f64>,
        max_retries: Option<i64>,
        headers: Option<Vec<(String, String)>>,
        what: &str,
    ) -> Result<Self> {
        Ok(Self {
            read_timeout: timeout_s
                .map(|s| crate::args::positive_seconds("timeout", s))
                .transpose()?,
            max_retries: max_retries
                .map(|n| crate::args::at_least("max_retries", n, 0))
                .transpose()?,
            headers: headers.map(|pairs| header_map(&pairs, what)).transpose()?,
        })
    }

    /// Whether nothing is overridden.
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }

    /// Lay these overrides over a client's settings: each one set replaces the client's, and headers are added to
    /// the client's (one of the same name replaced). The one rule for a call, a client copy and its rebuild.
    pub(crate) fn overlay(
        &self,
        read_timeout: &mut Duration,
        max_retries: &mut u32,
        headers: &mut HeaderMap,
    ) {
        if let Some(timeout) = self.read_timeout {
            *read_timeout = timeout;
        }
        if let Some(retries) = self.max_retries {
            *max_retries = retries;
        }
        for (name, value) in self.headers.iter().flatten() {
            headers.insert(name.clone(), value.clone());
        }
    }
}

/// Headers from name/value pairs, checked (see `Overrides::from_user`).
pub(crate) fn header_map(pairs: &[(String, String)], what: &str) -> Result<HeaderMap> {
    let mut map = HeaderMap::with_capacity(pairs.len());
    for (name, value) in pairs {
        let header = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            Error::validation(format_args!("{what}: {name:?} is not a valid header name"))
        })?;
        if header == AUTHORIZATION || header == PROXY_AUTHORIZATION {
            return Err(Error::validation(format_args!(
                "{what} must not set {name}: the client sends its own credential, which a header must never \
                 replace or reveal"
            )));
        }
        if crate::token::contains_secret(value).is_some() {
            return Err(Error::validation(format_args!(
                "{what}: the value of {name} holds a secret; credentials go in the client's token or key, never \
                 in headers"
            )));
        }
        let mut value = HeaderValue::from_str(value).map_err(|_| {
            Error::validation(format_args!(
                "{what}: the value of {name} is not a valid header value"
            ))
        })?;
        value.set_sensitive(false);
        map.insert(header, value);
    }
    Ok(map)
}

impl Transport {
    /// A pool for `base_url` (already normalized).
    pub(crate) fn new(base_url: String, options: &TransportOptions) -> Result<Self> {
        if options.verify == Verify::Off {
            crate::net::warn_verify_off();
        }
        // The proxy requests go through, named in connection errors (`proxy=`, or the environment's).
        let proxy = crate::net::proxy_for(&base_url, options.proxy.as_deref());
        let pools = Arc::new(Pools {
            shared: build_client(options)?,
            recipe: options.clone(),
            local: Mutex::new(Vec::new()),
            direct: Direct::for_base(&base_url, proxy.is_some(), &options.user_agent, POOL_IDLE),
        });
        Ok(Self {
            pools,
            base_url: base_url.into(),
            connect_timeout: options.connect_timeout,
            read_timeout: options.read_timeout,
            max_retries: options.max_retries,
            headers: Arc::new(options.headers.clone()),
            proxy: proxy.map(|p| crate::net::proxy_address(&p).to_owned().into()),
            client_cert: options.client_cert.is_some(),
        })
    }

    /// A copy with `overrides` applied that shares this one's pool; its headers are this one's with the
    /// overriding ones laid over them.
    pub(crate) fn with_overrides(&self, overrides: &Overrides) -> Self {
        let mut copy = self.clone();
        overrides.overlay(
            &mut copy.read_timeout,
            &mut copy.max_retries,
            Arc::make_mut(&mut copy.headers),
        );
        copy
    }

    /// The timer of the idle read timeout for the reads of one response body.
    pub(crate) fn idle_timer(&self) -> IdleTimer {
        IdleTimer {
            sleep: Box::pin(tokio::time::sleep(self.read_timeout)),
            timeout: self.read_timeout,
        }
    }

    /// The whole body of `response`, each read waiting at most the read timeout (one chunk is kept as it is).
    pub(crate) async fn read_all(
        &self,
        mut response: reqwest::Response,
    ) -> std::result::Result<Bytes, ReadError> {
        let mut timer = self.idle_timer();
        let Some(first) = timer.next_chunk(&mut response).await? else {
            return Ok(Bytes::new());
        };
        let Some(second) = timer.next_chunk(&mut response).await? else {
            return Ok(first);
        };
        let mut all = bytes::BytesMut::with_capacity(first.len() + second.len());
        all.extend_from_slice(&first);
        all.extend_from_slice(&second);
        while let Some(more) = timer.next_chunk(&mut response).await? {
            all.extend_from_slice(&more);
        }
        Ok(all.freeze())
    }

    /// The error for a failed read, saying what happened and to which host.
    pub(crate) fn read_error(&self, err: &ReadError, doing: &str) -> (Error, Failure) {
        match err {
            ReadError::Http(err) => self.transport_error(err, doing),
            ReadError::Idle => (self.idle_error(doing), Failure::Transport),
        }
    }

    fn idle_error(&self, doing: &str) -> Error {
        Error::new(
            ErrorKind::Timeout,
            format!(
                "timed out {doing} {}: no data for {} (read timeout)",
                self.host(),
                seconds(self.read_timeout)
            ),
        )
    }

    /// The normalized base URL.
    pub(crate) fn base_url(&self) -> &str {
        &self.base_url
    }

    fn host(&self) -> &str {
        host_of(&self.base_url)
    }

    /// `base_url` followed by each segment, percent-encoded.
    pub(crate) fn url(&self, segments: &[&str]) -> String {
        let mut url = String::with_capacity(self.base_url.len() + 64);
        url.push_str(&self.base_url);
        for segment in segments {
            url.push('/');
            url.extend(utf8_percent_encode(segment, SEGMENT));
        }
        url
    }

    /// Send with the retry policy; returns the first 2xx response (its body unread) or the last error.
    pub(crate) async fn send(&self, request: &Request<'_>) -> Result<reqwest::Response> {
        let mut retries_done = 0;
        loop {
            let failed = match self.attempt(request).await {
                Ok(response) => return Ok(response),
                Err(failed) => failed,
            };
            let delay = self.next_retry(request, failed, retries_done)?;
            tokio::time::sleep(delay).await;
            retries_done += 1;
        }
    }

    /// The wait before retrying a failed attempt, or its error when the policy says not to retry.
    fn next_retry(
        &self,
        request: &Request<'_>,
        failed: AttemptError,
        retries_done: u32,
    ) -> Result<Duration> {
        let AttemptError { error, failure } = failed;
        let Some(delay) = retry_delay(
            request.method,
            failure,
            retries_done,
            self.max_retries,
            jitter(),
        ) else {
            return Err(error);
        };
        log::debug!(
            "retrying {:?} {} in {} ms after: {}",
            request.method,
            request.url,
            delay.as_millis(),
            error.message
        );
        Ok(delay)
    }

    /// The whole 2xx body of `request` and its `x-request-id`, retries included; every failure after the 2xx
    /// answer carries the request id. Inside a blocking scope (a caller's thread waiting on this one request) or a
    /// loop scope (an event loop's thread) with a direct path, the request runs right here, on that thread;
    /// otherwise through the pool.
    pub(crate) async fn fetch(&self, request: &Request<'_>) -> Result<(Bytes, Option<String>)> {
        if let Some(opened) = self.open_here(request).await {
            return self.read_whole(opened?).await;
        }
        let response = self.send(request).await?;
        let request_id = request_id(&response);
        match self.read_all(response).await {
            Ok(bytes) => Ok((bytes, request_id)),
            Err(err) => Err(self
                .read_error(&err, "reading the response from")
                .0
                .with_request_id(request_id.as_deref())),
        }
    }

    /// The whole body of an answer opened on the direct path, read on this thread (asking the blocking scope, if
    /// any, about interruption), and its `x-request-id`; a failure carries the request id.
    pub(crate) async fn read_whole(
        &self,
        response: direct::Response,
    ) -> Result<(Bytes, Option<String>)> {
        let clock = response.body.clock(crate::direct::interrupt_check());
        match response.body.read_all(&clock).await {
            Ok(body) => Ok((body, response.request_id)),
            Err(fail) => Err(self
                .direct_failure(fail, "reading the response from")
                .error
                .with_request_id(response.request_id.as_deref())),
        }
    }

    /// Send `request` on the direct path when this thread serves it (inside a blocking or loop scope, with a
    /// direct path for it): the first 2xx answer, its body unread, retries included. `None` where the pool must
    /// send it.
    pub(crate) async fn open_here(
        &self,
        request: &Request<'_>,
    ) -> Option<Result<direct::Response>> {
        let mode = crate::direct::mode()?;
        let direct = self
            .pools
            .direct
            .as_ref()
            .filter(|direct| direct.serves(mode))?;
        Some(self.open_direct(direct, request, mode).await)
    }

    /// `send` on the direct path, on this thread: the first 2xx answer, its body unread.
    async fn open_direct(
        &self,
        direct: &Direct,
        request: &Request<'_>,
        mode: direct::Mode,
    ) -> Result<direct::Response> {
        let message = self.direct_message(direct, request);
        let mut retries_done = 0;
        loop {
            let started = Instant::now();
            let failed = match direct
                .open(&message, self.connect_timeout, self.read_timeout, mode)
                .await
            {
                Ok(response) => {
                    log::debug!(
                        "{:?} {} -> {} in {} ms",
                        request.method,
                        request.url,
                        response.status,
                        started.elapsed().as_millis()
                    );
                    if (200..300).contains(&response.status) {
                        return Ok(response);
                    }
                    self.direct_status_error(response).await
                }
                Err(fail) => self.direct_failure(fail, "reading the response from"),
            };
            let delay = self.next_retry(request, failed, retries_done)?;
            if !crate::direct::sleep(delay, mode).await {
                return Err(interrupted_error());
            }
            retries_done += 1;
        }
    }

    /// The error of an answer that is not 2xx, its body read for the message (as much as arrives in the read
    /// timeout), and whether to retry it.
    async fn direct_status_error(&self, response: direct::Response) -> AttemptError {
        let status = response.status;
        let clock = response.body.clock(crate::direct::interrupt_check());
        let body = match response.body.read_all(&clock).await {
            Ok(body) => body,
            Err(Fail::Interrupted) => {
                return AttemptError {
                    error: interrupted_error(),
                    failure: Failure::Permanent,
                }
            }
            Err(_) => Bytes::new(),
        };
        let retry_after = response.retry_after.as_deref().and_then(parse_retry_after);
        let mut error = Error::from_response(status, response.request_id, &body);
        error.retry_after = retry_after.map(|wait| wait.as_secs_f64());
        AttemptError {
            error,
            failure: Failure::Status {
                status,
                retry_after,
            },
        }
    }

    /// The bytes of `request` on the direct path, built once for all its attempts: the request line, the headers the
    /// pool would send (the client's and the call's, the credential, the body's type and length, `Host`,
    /// `User-Agent`, `Accept`), and the body.
    fn direct_message(&self, direct: &Direct, request: &Request<'_>) -> Vec<u8> {
        let body = request.body.as_deref().unwrap_or_default();
        let mut message = Vec::with_capacity(384 + body.len());
        message.extend_from_slice(request.method.as_str().as_bytes());
        message.push(b' ');
        message.extend_from_slice(direct.target(request.url).as_bytes());
        message.extend_from_slice(b" HTTP/1.1\r\n");
        let mut line = |name: &[u8], value: &[u8]| {
            message.extend_from_slice(name);
            message.extend_from_slice(b": ");
            message.extend_from_slice(value);
            message.extend_from_slice(b"\r\n");
        };
        let headers = &*self.headers;
        if !headers.contains_key(HOST) {
            line(b"host", direct.authority().as_bytes());
        }
        for (name, value) in headers {
            // The framing and the connection are the transport's own.
            if name != CONTENT_LENGTH && name != TRANSFER_ENCODING && name != CONNECTION {
                line(name.as_str().as_bytes(), value.as_bytes());
            }
        }
        line(b"authorization", request.auth.as_bytes());
        if request.body.is_some() {
            line(b"content-type", b"application/json");
        }
        if request.event_stream {
            line(b"accept", b"text/event-stream");
        } else if !headers.contains_key(ACCEPT) {
            line(b"accept", b"*/*");
        }
        if !headers.contains_key(USER_AGENT) {
            line(b"user-agent", direct.user_agent().as_bytes());
        }
        if request.body.is_some() {
            line(b"content-length", body.len().to_string().as_bytes());
        }
        message.extend_from_slice(b"\r\n");
        message.extend_from_slice(body);
        message
    }

    /// The error of a failed direct exchange, worded as the pool's (`reading`: what a failed read was doing,
    /// "reading the response from" or "reading the stream from"), and what kind of failure it was.
    pub(crate) fn direct_failure(&self, fail: Fail, reading: &str) -> AttemptError {
        let host = self.host();
        let doing = |sending: bool| {
            if sending {
                "sending the request to"
            } else {
                reading
            }
        };
        let (error, failure) = match fail {
            Fail::Connect(err) => (
                Error::new(
                    ErrorKind::Connection,
                    format!("could not connect to {host}: tcp connect error: {err}"),
                ),
                Failure::Connect,
            ),
            Fail::ConnectTimeout => (
                Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "timed out connecting to {host} after {}",
                        seconds(self.connect_timeout)
                    ),
                ),
                Failure::Connect,
            ),
            Fail::Idle { sending } => (self.idle_error(doing(sending)), Failure::Transport),
            Fail::Io { error, sending } => (
                Error::new(
                    ErrorKind::Connection,
                    format!("connection failed while {} {host}: {error}", doing(sending)),
                ),
                Failure::Transport,
            ),
            Fail::Malformed(what) => (
                Error::new(
                    ErrorKind::Connection,
                    format!("connection failed while {reading} {host}: {what}"),
                ),
                Failure::Transport,
            ),
            Fail::Interrupted => (interrupted_error(), Failure::Permanent),
        };
        AttemptError { error, failure }
    }

    /// One attempt: a 2xx response, or the mapped error (a non-2xx body is read for the error).
    pub(crate) async fn attempt(
        &self,
        request: &Request<'_>,
    ) -> std::result::Result<reqwest::Response, AttemptError> {
        // The pool's requests run on a runtime, never on an event loop's thread.
        crate::direct::to_pool().await;
        let started = Instant::now();
        let client = self.pools.client().map_err(|error| AttemptError {
            error,
            failure: Failure::Permanent,
        })?;
        let mut builder = client.request(request.method.as_reqwest(), request.url);
        if !self.headers.is_empty() {
            builder = builder.headers((*self.headers).clone());
        }
        builder = builder.header(AUTHORIZATION, request.auth.clone());
        if let Some(body) = &request.body {
            builder = builder
                .header(CONTENT_TYPE, "application/json")
                .body(body.clone());
        }
        if request.event_stream {
            builder = builder.header(ACCEPT, "text/event-stream");
        }
        // The read timeout covers the wait for the response head, as it covers each later read.
        let response = match tokio::time::timeout(self.read_timeout, builder.send()).await {
            Ok(sent) => sent.map_err(|err| {
                let (error, failure) = self.transport_error(&err, "sending the request to");
                AttemptError { error, failure }
            })?,
            Err(_) => {
                return Err(AttemptError {
                    error: self.idle_error("sending the request to"),
                    failure: Failure::Transport,
                })
            }
        };
        let status = response.status().as_u16();
        log::debug!(
            "{:?} {} -> {} in {} ms",
            request.method,
            request.url,
            status,
            started.elapsed().as_millis()
        );
        if response.status().is_success() {
            return Ok(response);
        }
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let request_id = request_id(&response);
        // An unreadable error body still leaves the status to report.
        let body = self.read_all(response).await.unwrap_or_default();
        let mut error = Error::from_response(status, request_id, &body);
        error.retry_after = retry_after.map(|wait| wait.as_secs_f64());
        Err(AttemptError {
            error,
            failure: Failure::Status {
                status,
                retry_after,
            },
        })
    }

    /// Read the whole body of a 2xx response and decode it; every failure after the 2xx (the read, or `decode`
    /// refusing the body) carries the response's `x-request-id`.
    pub(crate) async fn read_body<T>(
        &self,
        response: reqwest::Response,
        decode: impl FnOnce(Bytes) -> Result<T>,
    ) -> Result<T> {
        let request_id = request_id(&response);
        let decoded = match self.read_all(response).await {
            Ok(bytes) => decode(bytes),
            Err(err) => Err(self.read_error(&err, "reading the response from").0),
        };
        decoded.map_err(|err| err.with_request_id(request_id.as_deref()))
    }

    /// The error for a reqwest failure, saying what happened and to which host.
    pub(crate) fn transport_error(&self, err: &reqwest::Error, doing: &str) -> (Error, Failure) {
        let host = self.host();
        let detail = error_chain(err);
        // A certificate problem is not transient: it is never retried, and says what to do.
        if let Some(tls) = crate::net::describe_tls_failure(err, host) {
            return (Error::new(ErrorKind::Connection, tls), Failure::Permanent);
        }
        if err.is_connect() {
            if let Some(proxy) = &self.proxy {
                let error = Error::new(
                    ErrorKind::Connection,
                    format!("could not connect to {host} through the proxy {proxy}: {detail}"),
                );
                return (error, Failure::Connect);
            }
            let error = if err.is_timeout() {
                Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "timed out connecting to {host} after {}",
                        seconds(self.connect_timeout)
                    ),
                )
            } else {
                Error::new(
                    ErrorKind::Connection,
                    format!("could not connect to {host}: {detail}"),
                )
            };
            (error, Failure::Connect)
        } else if err.is_timeout() {
            let error = Error::new(
                ErrorKind::Timeout,
                format!(
                    "timed out {doing} {host}: no data for {} (read timeout)",
                    seconds(self.read_timeout)
                ),
            );
            (error, Failure::Transport)
        } else {
            // Under TLS 1.3 a server that refuses a missing client certificate often just closes the connection
            // after the handshake, its alert lost: say what that can mean when no certificate was given.
            let hint = if self.base_url.starts_with("https://")
                && !self.client_cert
                && closed_by_the_server(&detail)
            {
                " (if the server requires a client certificate, pass it with cert=\"client.pem\")"
            } else {
                ""
            };
            (
                Error::new(
                    ErrorKind::Connection,
                    format!("connection failed while {doing} {host}: {detail}{hint}"),
                ),
                Failure::Transport,
            )
        }
    }
}

/// Whether a transport failure's text says the server closed the connection under the client. hyper names the
/// same event by when it noticed it: before the request went out (`channel closed`, `canceled`), while writing it
/// (`broken pipe`, `connection reset`), or while waiting for the answer (`connection closed`, or rustls's missing
/// `close_notify`).
fn closed_by_the_server(detail: &str) -> bool {
    // OS errors are capitalised ("Broken pipe"), hyper's are not.
    let detail = detail.to_lowercase();
    [
        "connection closed",
        "channel closed",
        "broken pipe",
        "connection reset",
        "canceled",
        // rustls, when the socket ends without the TLS close.
        "close_notify",
        "unexpected eof",
    ]
    .iter()
    .any(|sign| detail.contains(sign))
}

/// The error of a request its blocking scope interrupted (the caller reports its own reason).
fn interrupted_error() -> Error {
    Error::new(ErrorKind::Connection, "the request was interrupted")
}

/// The `x-request-id` header of a response.
pub(crate) fn request_id(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// A duration for messages: `10 s`, `0.5 s`.
fn seconds(duration: Duration) -> String {
    format!("{} s", duration.as_secs_f64())
}

/// The error and its causes, innermost last, skipping the URL-bearing wrapper text reqwest repeats.
fn error_chain(err: &reqwest::Error) -> String {
    let mut parts = Vec::new();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !parts.contains(&text) {
            parts.push(text);
        }
        source = cause.source();
    }
    if parts.is_empty() {
        err.to_string()
    } else {
        parts.join(": ")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn every_way_hyper_reports_a_closed_connection_counts_as_closed() {
        for detail in [
            "client error (SendRequest): channel closed",
            "client error (SendRequest): connection closed before message completed",
            "client error (SendRequest): operation was canceled: connection closed",
            "error writing a body to connection: Broken pipe (os error 32)",
            "Connection reset by peer (os error 104)",
            "peer closed connection without sending TLS close_notify",
        ] {
            assert!(closed_by_the_server(detail), "{detail}");
        }
        assert!(!closed_by_the_server(
            "client error (Connect): tcp connect error: Connection refused"
        ));
    }

    fn status(status: u16, retry_after: Option<u64>) -> Failure {
        Failure::Status {
            status,
            retry_after: retry_after.map(Duration::from_secs),
        }
    }

    #[test]
    fn idempotent_methods_retry_transient_failures() {
        for method in [Method::Get, Method::Delete] {
            for failure in [
                Failure::Connect,
                Failure::Transport,
                status(408, None),
                status(429, None),
                status(502, None),
                status(503, None),
                status(504, None),
            ] {
                assert!(
                    retry_delay(method, failure, 0, 2, 0.0).is_some(),
                    "{method:?} {failure:?}"
                );
            }
            for code in [400, 401, 403, 404, 409, 422, 500, 501] {
                assert_eq!(
                    retry_delay(method, status(code, Some(1)), 0, 2, 0.0),
                    None,
                    "{code}"
                );
            }
        }
    }

    #[test]
    fn post_retries_only_when_it_provably_did_not_land() {
        for method in [Method::Post, Method::Patch] {
            assert!(retry_delay(method, Failure::Connect, 0, 2, 0.0).is_some());
            assert_eq!(retry_delay(method, Failure::Transport, 0, 2, 0.0), None);
            assert_eq!(retry_delay(method, status(500, None), 0, 2, 0.0), None);
            assert_eq!(retry_delay(method, status(502, Some(1)), 0, 2, 0.0), None);
            assert_eq!(retry_delay(method, status(504, None), 0, 2, 0.0), None);
            assert_eq!(retry_delay(method, status(429, None), 0, 2, 0.0), None);
            assert_eq!(retry_delay(method, status(503, None), 0, 2, 0.0), None);
            assert_eq!(
                retry_delay(method, status(429, Some(3)), 0, 2, 0.0),
                Some(Duration::from_secs(3))
            );
            assert_eq!(
                retry_delay(method, status(503, Some(0)), 0, 2, 0.0),
                Some(Duration::ZERO)
            );
        }
    }

    #[test]
    fn max_retries_bounds_attempts() {
        assert!(retry_delay(Method::Get, Failure::Connect, 1, 2, 0.5).is_some());
        assert_eq!(retry_delay(Method::Get, Failure::Connect, 2, 2, 0.5), None);
        assert_eq!(retry_delay(Method::Get, Failure::Connect, 0, 0, 0.5), None);
    }

    #[test]
    fn retry_after_honoured_and_capped() {
        assert_eq!(
            retry_delay(Method::Get, status(503, Some(7)), 0, 2, 0.9),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            retry_delay(Method::Get, status(429, Some(3600)), 0, 2, 0.9),
            Some(Duration::from_secs(60))
        );
    }

    #[test]
    fn backoff_grows_with_jitter_and_cap() {
        assert_eq!(backoff(0, 0.0), Duration::from_millis(250));
        assert_eq!(backoff(0, 1.0), Duration::from_millis(500));
        assert_eq!(backoff(1, 1.0), Duration::from_secs(1));
        assert_eq!(backoff(3, 1.0), Duration::from_secs(4));
        assert_eq!(backoff(4, 1.0), Duration::from_secs(8));
        assert_eq!(backoff(30, 1.0), Duration::from_secs(8));
        assert_eq!(backoff(30, 0.0), Duration::from_secs(4));
        let d = backoff(2, 0.5);
        assert!(d >= Duration::from_millis(1000) && d <= Duration::from_millis(2000));
    }

    #[test]
    fn jitter_in_unit_interval() {
        for _ in 0..1000 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j));
        }
    }

    #[test]
    fn retry_after_parsing() {
        assert_eq!(parse_retry_after("5"), Some(Duration::from_secs(5)));
        assert_eq!(
            parse_retry_after(" 1.5 "),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("-1"), None);
    }

    #[test]
    fn retry_after_takes_seconds_and_http_dates() {
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after(" 0.5 "), Some(Duration::from_millis(500)));
        assert_eq!(
            http_date_unix("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(http_date_unix("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(
            http_date_unix("Tue, 29 Feb 2028 12:00:00 GMT"),
            Some(1_835_438_400)
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO)
        );
        let later = std::time::SystemTime::now() + Duration::from_secs(100);
        let secs = later
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let days = secs.div_euclid(86_400);
        // Back from days to a date, to write the header the way a server would.
        let (z, rem) = (days + 719_468, secs.rem_euclid(86_400));
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = yoe + era * 400 + i64::from(m <= 2);
        let months = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        let header = format!(
            "Mon, {d:02} {} {y} {:02}:{:02}:{:02} GMT",
            months[(m - 1) as usize],
            rem / 3600,
            rem % 3600 / 60,
            rem % 60
        );
        let wait = parse_retry_after(&header).unwrap();
        assert!(
            wait > Duration::from_secs(90) && wait <= Duration::from_secs(100),
            "{header}: {wait:?}"
        );
        for bad in [
            "soon",
            "",
            "Sun, 06 Nov 1994 08:49:37",
            "Sun, 32 Nov 1994 08:49:37 GMT",
            "-1",
        ] {
            assert_eq!(parse_retry_after(bad), None, "{bad}");
        }
    }

    #[test]
    fn url_segments_are_percent_encoded() {
        let transport =
            Transport::new("http://127.0.0.1:9".into(), &TransportOptions::default()).unwrap();
        assert_eq!(
            transport.url(&["api", "projects", "a b/c?d#e%", "workloads"]),
            "http://127.0.0.1:9/api/projects/a%20b%2Fc%3Fd%23e%25/workloads"
        );
        assert_eq!(
            transport.url(&["x", "é~._-"]),
            "http://127.0.0.1:9/x/%C3%A9~._-"
        );
    }

    #[test]
    fn bearer_is_sensitive_and_checked() {
        let value = bearer(&Secret::new("ik_sdk_a_b".into())).unwrap();
        assert!(value.is_sensitive());
        assert_eq!(value.to_str().unwrap(), "Bearer ik_sdk_a_b");
        assert_eq!(
            bearer(&Secret::new("bad\ntoken".into())).unwrap_err().kind,
            ErrorKind::Configuration
        );
    }

    #[tokio::test]
    async fn connection_refused_is_a_connection_error_naming_the_host() {
        // Bind then drop a listener so the port is (almost certainly) closed.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let options = TransportOptions {
            max_retries: 1,
            ..TransportOptions::default()
        };
        let transport = Transport::new(format!("http://127.0.0.1:{port}"), &options).unwrap();
        let auth = bearer(&Secret::new("ik_sdk_a1b2c3d4_secret".into())).unwrap();
        let url = transport.url(&["api"]);
        let request = Request {
            method: Method::Post,
            url: &url,
            auth: &auth,
            body: None,
            event_stream: false,
        };
        let err = transport.send(&request).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Connection, "{err:?}");
        assert!(
            err.message.contains(&format!("127.0.0.1:{port}")),
            "{}",
            err.message
        );
        assert!(
            err.message.starts_with("could not connect to"),
            "{}",
            err.message
        );
    }
}
