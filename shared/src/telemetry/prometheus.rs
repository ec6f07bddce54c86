//! `GET /metrics`: every instrument in the Prometheus text exposition format, rendered by
//! `opentelemetry-prometheus` from the same meter provider the OTLP exporter reads.

use opentelemetry_prometheus::PrometheusExporter;
use prometheus::{Encoder, Registry, TextEncoder};

use super::TelemetryError;

/// The Content-Type of the text format (version 0.0.4).
pub const CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

/// A metric reader that fills `registry` at each scrape. Instrumentation-scope labels are
/// left out: every series comes from Tributary's one meter.
pub(super) fn reader(registry: &Registry) -> Result<PrometheusExporter, TelemetryError> {
    opentelemetry_prometheus::exporter()
        .with_registry(registry.clone())
        .scope_info_enabled(false)
        .build()
        .map_err(|e| TelemetryError::Exporter(format!("the Prometheus reader: {e}")))
}

/// The current value of every instrument, as Prometheus text.
pub fn render() -> String {
    let families = super::meters().registry.gather();
    let mut out = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
        tracing::warn!("rendering /metrics failed: {e}");
    }
    String::from_utf8(out).unwrap_or_default()
}

/// The body of `GET /metrics` with its Content-Type; axum handlers can return it as is.
pub fn response() -> ([(&'static str, &'static str); 1], String) {
    ([("content-type", CONTENT_TYPE)], render())
}
