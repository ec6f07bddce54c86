//! `GET /healthz` on TRIBUTARY_HEALTH_ADDR, for probes, and `GET /metrics` (Prometheus text).

use axum::routing::get;
use axum::Router;

pub async fn serve(addr: &str) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("TRIBUTARY_HEALTH_ADDR {addr}: {e}"))?;
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/metrics",
            get(|| async { tributary::telemetry::prometheus::response() }),
        );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(())
}
