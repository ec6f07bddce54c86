//! Logs, traces and metrics for both binaries.
//!
//! `init` installs the stderr logs (RUST_LOG) and, when an OTLP endpoint is set
//! (`OTEL_EXPORTER_OTLP_ENDPOINT`, or the per-signal `..._TRACES_ENDPOINT` /
//! `..._METRICS_ENDPOINT`), exports spans and metrics over OTLP/HTTP. One meter provider
//! feeds both the OTLP exporter and the Prometheus text of `GET /metrics`
//! ([`prometheus::render`]). The instruments are typed methods of [`metrics()`]; the
//! trace context crosses Kafka as a W3C `traceparent` ([`propagation`]).

mod export;
mod http_client;
mod instruments;
pub mod prometheus;
pub mod propagation;
mod settings;
mod subscriber;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use opentelemetry::metrics::MeterProvider;
use opentelemetry::trace::TracerProvider;
use opentelemetry_otlp::MetricExporter;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;

pub use instruments::{Labels, Metrics, OwnedLabels};
pub use propagation::{
    set_parent_from_traceparent, trace_id_of, traceparent_of, traceparent_of_current_span,
};
pub use settings::{OtlpEncoding, TelemetrySettings};

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("{var}: {message}")]
    Setting { var: &'static str, message: String },
    #[error("cannot start telemetry: {0} (check the OTEL_EXPORTER_OTLP_* variables)")]
    Exporter(String),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

/// The meter provider of the process, its Prometheus registry and the instruments.
struct Meters {
    provider: SdkMeterProvider,
    registry: ::prometheus::Registry,
    metrics: Metrics,
}

static METERS: OnceLock<Meters> = OnceLock::new();

static EXPORTING_SPANS: AtomicBool = AtomicBool::new(false);

/// Whether spans leave this process: code that would open a span only to carry its trace
/// context (one per job in a tick of 100,000) skips it otherwise.
pub fn exporting_spans() -> bool {
    EXPORTING_SPANS.load(Ordering::Relaxed)
}

fn build_meters(otlp: Option<MetricExporter>, resource: Resource) -> Meters {
    let registry = ::prometheus::Registry::new();
    let mut builder = SdkMeterProvider::builder().with_resource(resource);
    match prometheus::reader(&registry) {
        Ok(reader) => builder = builder.with_reader(reader),
        Err(e) => tracing::warn!("/metrics stays empty: {e}"),
    }
    if let Some(exporter) = otlp {
        builder = builder.with_periodic_exporter(exporter);
    }
    let provider = builder.build();
    let metrics = Metrics::new(&provider.meter("tributary"));
    Meters {
        provider,
        registry,
        metrics,
    }
}

/// The process's meters; without `init` (library tests, embedders) only `/metrics` sees them.
fn meters() -> &'static Meters {
    METERS.get_or_init(|| build_meters(None, Resource::builder().build()))
}

/// Every instrument Tributary records.
pub fn metrics() -> &'static Metrics {
    &meters().metrics
}

/// Flushes and stops the exporters when dropped: keep it alive until the process ends, so
/// a short run still exports everything it recorded.
#[must_use = "dropping the guard stops the exporters"]
pub struct TelemetryGuard {
    tracer_provider: Option<SdkTracerProvider>,
    meter_provider: Option<SdkMeterProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(p) = self.tracer_provider.take() {
            if let Err(e) = p.shutdown() {
                eprintln!("warning: exporting the last spans failed: {e}");
            }
        }
        if let Some(p) = self.meter_provider.take() {
            if let Err(e) = p.shutdown() {
                eprintln!("warning: exporting the last metrics failed: {e}");
            }
        }
    }
}

/// Install logs, traces and metrics for this process. `default_service_name` is
/// `service.name` unless OTEL_SERVICE_NAME (or OTEL_RESOURCE_ATTRIBUTES) names one;
/// `default_filter` is the log filter unless RUST_LOG is set. Settings in
/// TRIBUTARY_CONFIG_FILE count as environment variables here too.
pub fn init(
    default_service_name: &str,
    default_filter: &str,
) -> Result<TelemetryGuard, TelemetryError> {
    crate::config::load_config_file()?;
    let settings = TelemetrySettings::from_env(default_service_name)?;
    let resource = export::resource(&settings.default_service_name);
    let tracer_provider = if settings.export_traces {
        Some(export::tracer_provider(
            resource.clone(),
            settings.traces_encoding,
        )?)
    } else {
        None
    };
    let otlp_metrics = if settings.export_metrics {
        Some(export::metric_exporter(settings.metrics_encoding)?)
    } else {
        None
    };
    let exporting_metrics = otlp_metrics.is_some();
    let mut fresh = Some((otlp_metrics, resource));
    let meters = METERS.get_or_init(|| {
        let (otlp, resource) = fresh.take().expect("taken once");
        build_meters(otlp, resource)
    });
    meters.metrics.set_tenant_label(settings.tenant_label);
    let installed = subscriber::install(
        default_filter,
        tracer_provider.as_ref().map(|p| p.tracer("tributary")),
    );
    EXPORTING_SPANS.store(installed && tracer_provider.is_some(), Ordering::Relaxed);
    if fresh.is_some() && exporting_metrics {
        tracing::warn!("metrics were recorded before telemetry::init: they are not exported over OTLP, only served on /metrics");
    }
    Ok(TelemetryGuard {
        tracer_provider,
        meter_provider: (exporting_metrics && fresh.is_none()).then(|| meters.provider.clone()),
    })
}

#[cfg(test)]
mod tests;
