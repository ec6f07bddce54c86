//! What the environment asks of telemetry: the standard `OTEL_*` variables (read here only
//! to decide what to switch on; the SDK and the exporters read the rest themselves) and
//! Tributary's own `TRIBUTARY_METRICS_TENANT_LABEL`.

use super::TelemetryError;

/// How OTLP messages are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpEncoding {
    /// `http/protobuf`, the specification's default.
    Protobuf,
    /// `http/json`.
    Json,
}

/// Telemetry switches for one process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetrySettings {
    /// `service.name` when neither `OTEL_SERVICE_NAME` nor `OTEL_RESOURCE_ATTRIBUTES` names one.
    pub default_service_name: String,
    /// Spans go to an OTLP endpoint.
    pub export_traces: bool,
    /// Metrics go to an OTLP endpoint (they are always served on `/metrics`).
    pub export_metrics: bool,
    /// The signal's own `OTEL_EXPORTER_OTLP_<SIGNAL>_PROTOCOL`, else the generic one.
    pub traces_encoding: OtlpEncoding,
    pub metrics_encoding: OtlpEncoding,
    /// Metrics carry a `tenant` attribute (one series per tenant: turn off for many tenants).
    pub tenant_label: bool,
}

impl TelemetrySettings {
    pub fn from_env(default_service_name: &str) -> Result<Self, TelemetryError> {
        Self::from_lookup(default_service_name, |name| std::env::var(name).ok())
    }

    /// From any source of variables (tests use a map).
    pub fn from_lookup(
        default_service_name: &str,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, TelemetryError> {
        let var = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let is_off = |name: &str| var(name).is_some_and(|v| v.trim().eq_ignore_ascii_case("none"));
        let encoding = |name: &'static str| match var(name).as_deref().map(str::trim) {
            None => Ok(None),
            Some("http/protobuf") => Ok(Some(OtlpEncoding::Protobuf)),
            Some("http/json") => Ok(Some(OtlpEncoding::Json)),
            Some(other) => Err(TelemetryError::Setting {
                var: name,
                message: format!(
                    "`{other}` is not supported: use http/protobuf (the default) or http/json, \
                     and point the endpoint at the collector's OTLP/HTTP port (usually 4318)"
                ),
            }),
        };
        let generic = encoding("OTEL_EXPORTER_OTLP_PROTOCOL")?;
        let traces_encoding = encoding("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")?
            .or(generic)
            .unwrap_or(OtlpEncoding::Protobuf);
        let metrics_encoding = encoding("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL")?
            .or(generic)
            .unwrap_or(OtlpEncoding::Protobuf);
        let disabled = var("OTEL_SDK_DISABLED").is_some_and(|v| v.trim() == "true");
        let endpoint = var("OTEL_EXPORTER_OTLP_ENDPOINT").is_some();
        let signal = |own_endpoint: &str, exporter: &str| {
            !disabled && (endpoint || var(own_endpoint).is_some()) && !is_off(exporter)
        };
        let tenant_label = match var("TRIBUTARY_METRICS_TENANT_LABEL")
            .map(|v| v.trim().to_ascii_lowercase())
            .as_deref()
        {
            None | Some("1" | "true" | "yes" | "on") => true,
            Some("0" | "false" | "no" | "off") => false,
            Some(other) => {
                return Err(TelemetryError::Setting {
                    var: "TRIBUTARY_METRICS_TENANT_LABEL",
                    message: format!("`{other}` is not a boolean (use true or false)"),
                })
            }
        };
        Ok(TelemetrySettings {
            default_service_name: default_service_name.to_string(),
            export_traces: signal("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_TRACES_EXPORTER"),
            export_metrics: signal(
                "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
                "OTEL_METRICS_EXPORTER",
            ),
            traces_encoding,
            metrics_encoding,
            tenant_label,
        })
    }
}
