//! Probes on TRIBUTARY_HEALTH_ADDR: `GET /healthz` (liveness: the process runs; it stays
//! 200 through an outage of the store or the broker, which the worker waits out),
//! `GET /readyz` (readiness: 503 with a JSON body naming the unreachable dependency) and
//! `GET /metrics` (Prometheus text).

use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};

pub async fn serve(addr: &str) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("TRIBUTARY_HEALTH_ADDR {addr}: {e}"))?;
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route(
            "/metrics",
            get(|| async { tributary::telemetry::prometheus::response() }),
        );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(())
}

/// 200 when the store and the broker answer, else 503; the body says which is down.
pub async fn readyz() -> (StatusCode, Json<serde_json::Value>) {
    let (ready, body) = tributary::readiness::report();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}
