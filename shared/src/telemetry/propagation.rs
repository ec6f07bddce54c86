//! W3C trace context (`traceparent`) between processes: the scheduler's enqueue span, the
//! job message, the worker's slice span and the events it publishes join one trace.

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

const TRACEPARENT: &str = "traceparent";

/// The `traceparent` of `span`; `None` when spans are not exported (no trace to join).
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier: HashMap<String, String> = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove(TRACEPARENT)
}

/// The `traceparent` of the span the caller is in.
pub fn traceparent_of_current_span() -> Option<String> {
    traceparent_of(&tracing::Span::current())
}

/// Make `span` a child of the remote span `traceparent` names. Call it before the span is
/// entered (an entered span has started its trace already). A malformed value is ignored:
/// the span then starts a trace of its own.
pub fn set_parent_from_traceparent(span: &tracing::Span, traceparent: &str) {
    let carrier = HashMap::from([(TRACEPARENT.to_string(), traceparent.to_string())]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    if !cx.span().span_context().is_valid() {
        tracing::debug!("ignoring a malformed traceparent");
        return;
    }
    if let Err(e) = span.set_parent(cx) {
        tracing::debug!("cannot join the job's trace: {e}");
    }
}

/// The trace id (32 hex digits) a `traceparent` names.
pub fn trace_id_of(traceparent: &str) -> Option<&str> {
    let mut parts = traceparent.split('-');
    let (_version, id) = (parts.next()?, parts.next()?);
    (id.len() == 32).then_some(id)
}
