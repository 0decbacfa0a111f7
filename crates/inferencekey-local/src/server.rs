//! The HTTP server: our own hyper accept loop (a `reset` fault drops a connection) and what every
//! request goes through: body limit, Host and Origin refusal, admin auth, request id, routing,
//! panics, journal.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Method, Request, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post, put};
use axum::Router;
use bytes::{Bytes, BytesMut};
use futures_util::FutureExt as _;
use http_body_util::BodyExt as _;
use hyper::body::{Body as _, Incoming};
use hyper::service::Service as _;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_rustls::TlsAcceptor;

use crate::app::{App, RequestCtx};
use crate::faults::{FaultTag, ResetConnection};
use crate::journal::{Outcome, TrackedBody};
use crate::reply::ApiError;
use crate::sync::lock;
use crate::{admin, control, data, host};

/// Request bodies above this are refused with 413.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// An oversized upload is read and discarded up to this size before the 413, so the client
/// finishes sending and sees the answer instead of a broken pipe.
const DRAIN_BYTES: u64 = 64 * 1024 * 1024;
const REQUEST_ID: &str = "x-request-id";
/// A TLS client that has not finished its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Every route of the platform and of the admin API.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route(
            "/api/projects/{project}/workloads",
            get(control::list).post(control::create),
        )
        .route(
            "/api/workloads/{id}",
            patch(control::patch).delete(control::delete),
        )
        .route(
            "/api/projects/{project}/workloads/{slug}/readiness-events",
            get(control::readiness),
        )
        .route(
            "/endpoint/{project}/{workload}/v1/chat/completions",
            post(data::chat),
        )
        .route(
            "/endpoint/{project}/{workload}/v1/embeddings",
            post(data::embeddings),
        )
        .route(
            "/endpoint/{project}/{workload}/v1/rerank",
            post(data::rerank),
        )
        .route("/_local/info", get(admin::info))
        .route("/_local/reset", post(admin::reset))
        .route(
            "/_local/engines",
            get(admin::get_engines).put(admin::put_engines),
        )
        .route("/_local/projects", post(admin::add_project))
        .route("/_local/tokens", post(admin::add_token))
        .route("/_local/defaults", put(admin::put_defaults))
        .route(
            "/_local/projects/{project}/workloads/{slug}/settings",
            put(admin::put_settings).get(admin::get_settings),
        )
        .route(
            "/_local/faults",
            post(admin::add_fault)
                .get(admin::list_faults)
                .delete(admin::clear_faults),
        )
        .route(
            "/_local/journal",
            get(admin::journal).delete(admin::clear_journal),
        )
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .with_state(app)
}

async fn no_route(method: Method, uri: Uri) -> Response {
    ApiError::not_found(format!("no route for {method} {}", uri.path())).into_response()
}

async fn wrong_method(method: Method, uri: Uri) -> Response {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
    .into_response()
}

/// Accepts connections on `listener` until `stop` fires (or its sender is dropped); with `tls`,
/// each one is a TLS connection first (ALPN picks HTTP/2 or HTTP/1.1).
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    router: Router,
    tls: Option<TlsAcceptor>,
    mut stop: oneshot::Receiver<()>,
) {
    let service = TowerToHyperService::new(router);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(serve_connection(
                        stream,
                        tls.clone(),
                        app.clone(),
                        service.clone(),
                    ));
                }
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    log::warn!("accept failed: {error}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
        }
    }
}

async fn serve_connection(
    stream: TcpStream,
    tls: Option<TlsAcceptor>,
    app: Arc<App>,
    service: TowerToHyperService<Router>,
) {
    // Stream chunks must leave at once, not wait for Nagle's algorithm.
    if let Err(error) = stream.set_nodelay(true) {
        log::debug!("cannot set TCP_NODELAY: {error}");
    }
    let Some(acceptor) = tls else {
        return serve_http(stream, app, service).await;
    };
    // A refused client (unknown CA, missing client certificate) ends here, before any HTTP.
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => serve_http(stream, app, service).await,
        Ok(Err(error)) => log::debug!("TLS handshake failed: {error}"),
        Err(_) => log::debug!("TLS handshake timed out"),
    }
}

/// HTTP/1.1 or HTTP/2 (told apart by the connection preface) on a plain or TLS stream.
async fn serve_http<S>(stream: S, app: Arc<App>, service: TowerToHyperService<Router>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let per_request =
        hyper::service::service_fn(move |request| handle(app.clone(), service.clone(), request));
    let connection = auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(stream), per_request)
        .await;
    if let Err(error) = connection {
        log::debug!("connection ended: {error}");
    }
}

/// Returned instead of a response to close the connection with nothing sent.
#[derive(Debug, thiserror::Error)]
#[error("connection closed on purpose (reset fault or client gone)")]
pub struct ConnectionClosed;

async fn handle(
    app: Arc<App>,
    router: TowerToHyperService<Router>,
    request: Request<Incoming>,
) -> Result<Response<TrackedBody>, ConnectionClosed> {
    let started = Instant::now();
    let request_id = app.next_request_id();
    let (mut parts, body) = request.into_parts();
    let path = parts.uri.path().to_string();
    let admin = path == "/_local" || path.starts_with("/_local/");
    let (bytes, too_large) = match read_body(body, &parts.headers).await {
        BodyRead::Complete(bytes) => (bytes, false),
        BodyRead::TooLarge => (Bytes::new(), true),
        // The client went away mid-upload: nobody to answer.
        BodyRead::Gone => return Err(ConnectionClosed),
    };
    let seq = (!admin).then(|| {
        lock(&app.journal).begin(
            parts.method.as_str(),
            &path,
            parts.uri.query(),
            &parts.headers,
            &bytes,
            app.uptime_ms(),
        )
    });
    let mut panicked = false;
    let host_refused = if app.allow_remote {
        None
    } else {
        host::refusal(&parts, app.port, app.https)
    };
    let response = if let Some(message) = host_refused {
        ApiError::forbidden("host_forbidden", message).into_response()
    } else if parts.headers.contains_key(header::ORIGIN) {
        ApiError::forbidden(
            "origin_forbidden",
            "requests carrying an Origin header are refused: the local platform is not for browsers",
        )
        .into_response()
    } else if too_large {
        let mut response = ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request bodies are limited to {MAX_BODY_BYTES} bytes"),
        )
        .into_response();
        // The rest of the upload is never read, so this connection cannot carry another request.
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        response
    } else if admin && !admin::authorized(&app, &parts.headers) {
        ApiError::unauthorized().into_response()
    } else {
        parts
            .extensions
            .insert(Arc::new(RequestCtx::new(request_id.clone(), &bytes)));
        let routed = Request::from_parts(parts, Body::from(bytes));
        match AssertUnwindSafe(router.call(routed)).catch_unwind().await {
            Ok(Ok(response)) => response,
            Ok(Err(never)) => match never {},
            Err(_) => {
                panicked = true;
                log::error!("a request handler panicked; answered 500");
                ApiError::internal("internal error in the local platform").into_response()
            }
        }
    };
    finish(&app, seq, started, response, &request_id, panicked)
}

/// A request body, read.
enum BodyRead {
    Complete(Bytes),
    TooLarge,
    Gone,
}

async fn read_body(mut body: Incoming, headers: &HeaderMap) -> BodyRead {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > DRAIN_BYTES) {
        return BodyRead::TooLarge;
    }
    let mut kept = BytesMut::new();
    let mut total: u64 = 0;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return BodyRead::Gone;
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        total += data.len() as u64;
        if total > DRAIN_BYTES {
            return BodyRead::TooLarge;
        }
        if total <= MAX_BODY_BYTES as u64 {
            kept.extend_from_slice(&data);
        }
    }
    if total > MAX_BODY_BYTES as u64 {
        BodyRead::TooLarge
    } else {
        BodyRead::Complete(kept.freeze())
    }
}

/// Adds the request id, records the response in the journal and arms body tracking; a response
/// marked for reset becomes a closed connection.
fn finish(
    app: &Arc<App>,
    seq: Option<u64>,
    started: Instant,
    mut response: Response,
    request_id: &str,
    panicked: bool,
) -> Result<Response<TrackedBody>, ConnectionClosed> {
    if !response.headers().contains_key(REQUEST_ID) {
        if let Ok(value) = HeaderValue::from_str(request_id) {
            response.headers_mut().insert(REQUEST_ID, value);
        }
    }
    let reset = response.extensions().get::<ResetConnection>().is_some();
    let fault = response.extensions().get::<FaultTag>().map(|t| t.0.clone());
    let elapsed = || u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let Some(seq) = seq else {
        return if reset {
            Err(ConnectionClosed)
        } else {
            Ok(response.map(TrackedBody::plain))
        };
    };
    let mut journal = lock(&app.journal);
    if reset {
        journal.respond(seq, None, fault);
        journal.finish(seq, Outcome::Reset, 0, elapsed());
        return Err(ConnectionClosed);
    }
    journal.respond(seq, Some(response.status().as_u16()), fault);
    match response.body().size_hint().exact() {
        // A complete body: recorded now, before the client can see it.
        Some(length) => {
            let outcome = if panicked {
                Outcome::Error
            } else {
                Outcome::Ok
            };
            journal.finish(seq, outcome, length, elapsed());
            Ok(response.map(TrackedBody::plain))
        }
        None => {
            drop(journal);
            let journal = app.journal.clone();
            Ok(response.map(|body| TrackedBody::tracked(body, journal, seq, started)))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::config::Config;

    /// A handler panic is answered with a JSON 500, journaled as an error, and the server
    /// keeps serving on the same connection pool.
    #[tokio::test]
    async fn a_panicking_handler_becomes_a_500() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Arc::new(App::new(&Config::default(), addr).unwrap());
        let router = router(app.clone()).route(
            "/boom",
            get(|| async {
                if std::hint::black_box(true) {
                    panic!("handler bug");
                }
                "unreachable"
            }),
        );
        let (_stop, stop_rx) = oneshot::channel();
        tokio::spawn(serve(listener, app.clone(), router, None, stop_rx));
        let client = reqwest::Client::new();
        let url = format!("http://{addr}");
        for _ in 0..2 {
            let response = client.get(format!("{url}/boom")).send().await.unwrap();
            assert_eq!(response.status(), 500);
            assert!(response.headers().contains_key(REQUEST_ID));
            let body: serde_json::Value =
                serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
            assert_eq!(body["error"]["code"], "internal_error");
        }
        let info = client
            .get(format!("{url}/_local/info"))
            .bearer_auth(&app.info.admin_token)
            .send()
            .await
            .unwrap();
        assert_eq!(info.status(), 200);
        let entries = lock(&app.journal).entries();
        assert_eq!(entries.len(), 2);
        assert!(entries
            .iter()
            .all(|e| e.outcome == Outcome::Error && e.status == Some(500)));
    }
}
