//! The HTTP API shared by `telemetry-collector` and `telemetry-gateway`: response bodies
//! (with their OpenAPI schemas), the error envelope, query-parameter validation, the
//! bearer-token check and the server's protective layers.
//!
//! Errors follow the Prometheus HTTP API: a JSON body
//! `{"status":"error","errorType":"bad_data","error":"...","param":"limit"}` with 400 for
//! bad input, 404 for an unknown GPU or path, 401 for a missing or wrong token, 503 when a
//! needed downstream is unavailable. Bad input never gets a 500.

pub mod params;
pub mod types;

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;

pub use self::types::*;

/// The API in the `--help` of the collector and the gateway.
pub const HELP_API: &str = "HTTP API: spec/openapi.json, also served at /openapi.json \
(the gateway's is the same). The latest samples of a GPU: \
GET /api/v1/gpus/<id>/telemetry?order=desc&limit=5 (the default order is oldest first, \
order=asc; next_cursor continues in the order asked). Times are RFC 3339 date-time \
(2026-11-29T09:00:00Z).";

/// Longest request a client may take, end to end.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Most requests served at once; more wait.
pub const CONCURRENT_REQUESTS_MAX: usize = 512;
/// Largest request body (the API has no bodies).
pub const REQUEST_BODY_BYTES_MAX: usize = 4096;
/// Most client connections open at once; further ones wait in the listen backlog.
pub const CONNECTIONS_MAX: usize = 1024;
/// Longest time a client may take to send a request's headers (slow clients are cut off).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for open connections to finish at shutdown.
pub const SHUTDOWN_WAIT: Duration = Duration::from_secs(10);

/// An error answer.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// JSON body.
    pub body: ErrorBody,
}

impl ApiError {
    fn new(
        status: StatusCode,
        error_type: &str,
        error: impl Into<String>,
        param: Option<&str>,
    ) -> ApiError {
        ApiError {
            status,
            body: ErrorBody {
                status: "error".into(),
                error_type: error_type.into(),
                error: error.into(),
                param: param.map(String::from),
            },
        }
    }

    /// 400 `bad_data` about one parameter.
    pub fn bad(param: &str, error: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_data", error, Some(param))
    }

    /// 404 `not_found`.
    pub fn not_found(error: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", error, None)
    }

    /// 401 `unauthorized`, without detail.
    pub fn unauthorized() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid bearer token is required",
            None,
        )
    }

    /// 503 `unavailable`.
    pub fn unavailable(error: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", error, None)
    }

    /// 500 `internal` (storage failures, never bad input).
    pub fn internal(error: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", error, None)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body)).into_response()
    }
}

/// A JSON answer from bytes already serialised.
pub fn json_bytes(status: StatusCode, bytes: Vec<u8>) -> Response {
    let content_type = HeaderValue::from_static("application/json");
    (status, [(header::CONTENT_TYPE, content_type)], bytes).into_response()
}

/// The answer for paths the API does not have.
pub async fn not_found_fallback() -> ApiError {
    ApiError::not_found("no such path")
}

/// Wraps `router` in the layers every server of the API uses: a request timeout (408), a
/// body size limit (413), a bound on concurrent requests, the token check (if a token is
/// set), and JSON 404s for unknown paths.
pub fn protect(router: Router, token: Option<String>) -> Router {
    use tower_http::limit::RequestBodyLimitLayer;
    use tower_http::timeout::TimeoutLayer;
    let router = match token {
        Some(token) => router.layer(axum::middleware::from_fn_with_state(token, require_token)),
        None => router,
    };
    router
        .fallback(not_found_fallback)
        .layer(RequestBodyLimitLayer::new(REQUEST_BODY_BYTES_MAX))
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .layer(tower::limit::ConcurrencyLimitLayer::new(CONCURRENT_REQUESTS_MAX))
}

/// Serves `router` on `listener` until `shutdown` resolves, then stops accepting and waits
/// (at most [`SHUTDOWN_WAIT`]) for open connections to finish. HTTP/1.1 through hyper, with
/// at most [`CONNECTIONS_MAX`] connections and a [`HEADER_READ_TIMEOUT`] per request.
///
/// # Errors
/// None so far: accept errors (out of file descriptors, say) are logged and retried.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(CONNECTIONS_MAX));
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = std::sync::Arc::clone(&slots).acquire_owned() => slot.expect("never closed"),
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    log::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _ = connection.await;
            drop(slot);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(SHUTDOWN_WAIT) => {
            log::warn!("connections still open at shutdown; closing them");
        }
    }
    Ok(())
}

/// Requires `Authorization: Bearer <token>` on every path but `/health` and the
/// dashboard's files (which hold no data); compares in constant time and never logs the
/// token.
async fn require_token(State(token): State<String>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if path == "/health" || crate::dashboard::is_dashboard_path(path) {
        return next.run(request).await;
    }
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(given) if constant_time_eq(given.as_bytes(), token.as_bytes()) => {
            next.run(request).await
        }
        _ => ApiError::unauthorized().into_response(),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Warns loudly when an API would listen beyond loopback without a token.
pub fn warn_if_exposed(addr: std::net::SocketAddr, token: Option<&str>) {
    if !addr.ip().is_loopback() && token.is_none() {
        log::warn!(
            "HTTP API on {addr} without --http-token: \
             anyone who can reach it can read all telemetry"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }
}
