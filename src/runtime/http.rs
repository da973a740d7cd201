//! HTTP endpoints: `/metrics` (Prometheus text), `/healthz` (the process serves), `/readyz` (the
//! caches are synced and the controller is running).

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use tokio::net::TcpListener;

use crate::runtime::metrics::Metrics;

/// Readiness: a leader is ready once its caches are synced; a standby replica (waiting for the
/// leader lease) is ready to take over, so it is ready too.
#[derive(Clone, Default)]
pub struct Health {
    synced: Arc<AtomicBool>,
    standby: Arc<AtomicBool>,
}

impl Health {
    pub(crate) fn set_ready(&self, synced: bool) {
        self.synced.store(synced, Ordering::Relaxed);
    }

    pub(crate) fn set_standby(&self, standby: bool) {
        self.standby.store(standby, Ordering::Relaxed);
    }

    pub(crate) fn is_ready(&self) -> bool {
        self.synced.load(Ordering::Relaxed) || self.standby.load(Ordering::Relaxed)
    }
}

/// Binds the listener now (so that a taken port fails at start-up) and returns the server future
/// with the bound address.
pub async fn metrics_server(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
) -> std::io::Result<(SocketAddr, impl Future<Output = std::io::Result<()>>)> {
    let app = Router::new()
        .route(
            "/metrics",
            get(|State(m): State<Arc<Metrics>>| async move {
                (
                    [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
                    m.encode(),
                )
            }),
        )
        .with_state(metrics);
    serve(addr, app).await
}

pub async fn health_server(
    addr: SocketAddr,
    health: Health,
) -> std::io::Result<(SocketAddr, impl Future<Output = std::io::Result<()>>)> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(h): State<Health>| async move {
                if h.is_ready() {
                    (StatusCode::OK, "ok").into_response()
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "caches not synced").into_response()
                }
            }),
        )
        .with_state(health);
    serve(addr, app).await
}

async fn serve(
    addr: SocketAddr,
    app: Router,
) -> std::io::Result<(SocketAddr, impl Future<Output = std::io::Result<()>>)> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    Ok((bound, async move { axum::serve(listener, app).await }))
}
