//! The engine alone (no store, no broker) reading one resource page by page, as the
//! engine-level tests drive it.

use std::sync::Arc;

use futures::StreamExt;
use serde_json::Value;
use tributary::budget::{Budget, BudgetOwner};
use tributary::engine::{
    Connection, ConnectionRuntime, EngineError, Observer, Page, ResourceRun, RunOptions,
};
use tributary::http::auth::DiscardTokens;
use tributary::spec::CompiledSpec;

/// A budget of this process alone, from the spec's `rate_limit`, for a connection `test`.
pub fn local_budget(spec: &CompiledSpec) -> Budget {
    Budget::local(
        &spec.spec.rate_limit,
        &BudgetOwner {
            provider: spec.name().to_string(),
            connection: "test".into(),
            app: None,
        },
    )
}

/// Every page of `resource` (refreshed tokens kept nowhere, engine events to `observer`):
/// the records read, how many pages, and the error that stopped the run if one did.
pub async fn read_resource(
    spec: &Arc<CompiledSpec>,
    connection: &Connection,
    resource: &str,
    options: RunOptions,
    observer: Observer,
) -> (Vec<Value>, usize, Option<EngineError>) {
    let (pages, error) = read_pages(spec, connection, resource, options, observer).await;
    let count = pages.len();
    let records = pages.into_iter().flat_map(|p| p.records).collect();
    (records, count, error)
}

/// Every page of `resource` as the engine yields it, and the error that stopped the run.
pub async fn read_pages(
    spec: &Arc<CompiledSpec>,
    connection: &Connection,
    resource: &str,
    options: RunOptions,
    observer: Observer,
) -> (Vec<Page>, Option<EngineError>) {
    let budget = local_budget(spec);
    let runtime =
        ConnectionRuntime::new(spec, connection, &options, Arc::new(DiscardTokens), budget)
            .unwrap();
    // As a worker does: the account's fields first, where the spec discovers them.
    let schema = match tributary::sync::discover::target_of(spec, resource) {
        Some(target) => ResourceRun::discovery(
            spec.clone(),
            target,
            connection,
            &runtime,
            options.clone(),
            tributary::engine::ignore_events(),
        )
        .unwrap()
        .discover_fields()
        .await
        .expect("the account's fields are discovered"),
        None => tributary::domain::Schema::default(),
    };
    let run = ResourceRun::new(
        spec.clone(),
        resource,
        connection,
        &runtime,
        options,
        observer,
    )
    .unwrap()
    .with_schema(&schema);
    let stream = run.pages();
    futures::pin_mut!(stream);
    let mut pages = Vec::new();
    while let Some(page) = stream.next().await {
        match page {
            Ok(p) => pages.push(p),
            Err(e) => return (pages, Some(e)),
        }
    }
    (pages, None)
}
