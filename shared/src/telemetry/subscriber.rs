//! The process's tracing subscriber: the stderr logs both binaries always had (RUST_LOG or
//! the default filter), plus, when spans are exported, the OpenTelemetry layer.

use opentelemetry_sdk::trace::Tracer;
use tracing::Level;
use tracing_subscriber::filter::{EnvFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// Spans exported are Tributary's own (info and above), whatever RUST_LOG shows on stderr:
/// turning logs down must not turn traces off, and library internals stay out of traces.
fn exported() -> Targets {
    Targets::new()
        .with_target("tributary", Level::INFO)
        .with_target("tributary_worker", Level::INFO)
        .with_target("tributary_scheduler", Level::INFO)
}

/// lapin logs every message RabbitMQ returns, body and all (a tenant's record); the
/// publisher reports a returned event itself, naming its routing key and what to do.
const QUIET_RETURNS: &str = "lapin::returned_messages=off";

/// Install the subscriber; a second call (tests, a subscriber set by an embedder) keeps
/// the first one and returns false.
pub(super) fn install(default_filter: &str, tracer: Option<Tracer>) -> bool {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(default_filter))
        .add_directive(QUIET_RETURNS.parse().expect("a valid directive"));
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(filter);
    let spans = tracer.map(|t| {
        tracing_opentelemetry::layer()
            .with_tracer(t)
            .with_filter(exported())
    });
    tracing_subscriber::registry()
        .with(logs)
        .with(spans)
        .try_init()
        .is_ok()
}
