//! OTLP over HTTP: the resource that names this process, the span exporter and the
//! metric exporter. Endpoints, headers, protocol (http/protobuf by default, or http/json),
//! compression and batching come from the standard `OTEL_*` variables, read by the SDK.

use opentelemetry::{Key, KeyValue};
use opentelemetry_otlp::{
    MetricExporter, Protocol, SpanExporter, WithExportConfig, WithHttpConfig,
};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;

use super::http_client::{export_timeout, BlockingHttp};
use super::settings::OtlpEncoding;
use super::TelemetryError;

/// `OTEL_SERVICE_NAME` / `OTEL_RESOURCE_ATTRIBUTES` when set, else `default_service_name`;
/// `service.version` is the crate's unless the environment names one.
pub(super) fn resource(default_service_name: &str) -> Resource {
    let detected = Resource::builder().build();
    let mut ours = Vec::new();
    let named = detected
        .get(&Key::new("service.name"))
        .is_some_and(|v| !v.as_str().starts_with("unknown_service"));
    if !named {
        ours.push(KeyValue::new(
            "service.name",
            default_service_name.to_string(),
        ));
    }
    if detected.get(&Key::new("service.version")).is_none() {
        ours.push(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
    }
    Resource::builder().with_attributes(ours).build()
}

fn http_client() -> Result<BlockingHttp, TelemetryError> {
    BlockingHttp::new(export_timeout()).map_err(TelemetryError::Exporter)
}

/// Said explicitly: with JSON support built in, the exporter's own default would be JSON.
fn protocol(encoding: OtlpEncoding) -> Protocol {
    match encoding {
        OtlpEncoding::Protobuf => Protocol::HttpBinary,
        OtlpEncoding::Json => Protocol::HttpJson,
    }
}

/// Spans batched (OTEL_BSP_* variables) and sent from the SDK's own thread.
pub(super) fn tracer_provider(
    resource: Resource,
    encoding: OtlpEncoding,
) -> Result<SdkTracerProvider, TelemetryError> {
    let exporter = SpanExporter::builder()
        .with_http()
        .with_protocol(protocol(encoding))
        .with_http_client(http_client()?)
        .build()
        .map_err(|e| TelemetryError::Exporter(format!("the OTLP span exporter: {e}")))?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

/// Metrics are read every OTEL_METRIC_EXPORT_INTERVAL milliseconds (60 s by default).
pub(super) fn metric_exporter(encoding: OtlpEncoding) -> Result<MetricExporter, TelemetryError> {
    MetricExporter::builder()
        .with_http()
        .with_protocol(protocol(encoding))
        .with_http_client(http_client()?)
        .build()
        .map_err(|e| TelemetryError::Exporter(format!("the OTLP metric exporter: {e}")))
}
