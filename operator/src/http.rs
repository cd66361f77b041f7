//! The operator's HTTP endpoints: `/metrics` (OpenMetrics text), `/healthz`
//! (the process is alive) and `/readyz` (startup finished).
//!
//! Readiness deliberately does not mean "is the leader": a standby replica that
//! reported not-ready would stall every rolling update of the operator, since the
//! new pod can only lead once the old one is gone.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;

use crate::metrics::{Metrics, OPENMETRICS_CONTENT_TYPE};

/// Whether the operator finished starting up (API client built, leader election entered).
#[derive(Debug, Default)]
pub struct Readiness(AtomicBool);

impl Readiness {
    /// Marks the process ready (or not).
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Release);
    }

    /// True once startup finished.
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// What the handlers need.
#[derive(Clone)]
pub struct ServerState {
    /// Metrics rendered on `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Answer of `/readyz`.
    pub readiness: Arc<Readiness>,
}

/// The endpoints, ready to serve.
pub fn router(state: ServerState) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz_handler))
        .with_state(state)
}

/// Serves [`router`] on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    state: ServerState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown).await
}

async fn metrics_handler(State(state): State<ServerState>) -> Response {
    match state.metrics.encode() {
        Ok(text) => ([(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)], text).into_response(),
        Err(error) => {
            tracing::error!(%error, "cannot encode metrics");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

async fn readyz_handler(State(state): State<ServerState>) -> Response {
    if state.readiness.is_ready() {
        "ok".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting").into_response()
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    /// A bare HTTP/1.1 GET, on a blocking thread so the server keeps the runtime.
    async fn get_path(address: std::net::SocketAddr, path: &str) -> String {
        let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        tokio::task::spawn_blocking(move || {
            let mut stream = std::net::TcpStream::connect(address).expect("connects");
            stream.write_all(request.as_bytes()).expect("writes");
            let mut response = String::new();
            stream.read_to_string(&mut response).expect("reads");
            response
        })
        .await
        .expect("request thread finishes")
    }

    #[tokio::test]
    async fn serves_health_readiness_and_metrics() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let address = listener.local_addr().expect("has address");
        let metrics = Arc::new(Metrics::new());
        metrics.record_write("Secret", crate::metrics::WriteVerb::Apply);
        let readiness = Arc::new(Readiness::default());
        let state = ServerState { metrics, readiness: readiness.clone() };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, state, async {
            let _ = stopped.await;
        }));

        let health = get_path(address, "/healthz").await;
        assert!(health.starts_with("HTTP/1.1 200"), "{health}");

        let not_ready = get_path(address, "/readyz").await;
        assert!(not_ready.starts_with("HTTP/1.1 503"), "{not_ready}");
        readiness.set(true);
        let ready = get_path(address, "/readyz").await;
        assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");

        let metrics_text = get_path(address, "/metrics").await;
        assert!(metrics_text.starts_with("HTTP/1.1 200"), "{metrics_text}");
        assert!(metrics_text.contains("application/openmetrics-text"), "{metrics_text}");
        assert!(metrics_text.contains("nestor_api_writes_total{kind=\"Secret\",verb=\"apply\"} 1"));

        let missing = get_path(address, "/nope").await;
        assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");

        stop.send(()).expect("server still running");
        server.await.expect("joins").expect("serves without error");
    }
}
