//! Preview: a connection's first page of one resource read live and mapped with a spec
//! (its effective one, or one with proposed overrides), without publishing or storing
//! anything but a renewed token (the connection's credential, stored before use as always).
//! The page is read with the connection's stored discovered fields, or, where none were
//! ever discovered, with fields discovered live for the preview only.
//! The connection's runtime is the read stage's own (`Syncer::runtime_of`: HTTP client with
//! the host guard, authenticator with `StoreTokens`, the shared budget).

use std::sync::Arc;

use futures::StreamExt;
use serde::Serialize;
use serde_json::{Map, Value};

use super::discover::target_of;
use super::Syncer;
use crate::domain::Schema;
use crate::engine::{ignore_events, ResourceRun};
use crate::mapping::normalize::{normalize_for, primary_key, Tenancy};
use crate::spec::compile::custom_object;
use crate::spec::CompiledSpec;
use crate::store::{ConnectionRecord, Store, StoreError};

/// The first page, mapped.
#[derive(Debug, Clone, Serialize)]
pub struct Preview {
    pub resource: String,
    pub model: &'static str,
    /// Records on the first page (all are mapped and checked; `records` holds the first `limit`).
    pub page_records: usize,
    pub records: Vec<PreviewRecord>,
    /// Records of the page that do not map into a valid unified record, and why.
    pub violations: Vec<Violation>,
}

/// One mapped record.
#[derive(Debug, Clone, Serialize)]
pub struct PreviewRecord {
    pub id: String,
    pub data: Map<String, Value>,
    pub custom_fields: Map<String, Value>,
}

/// A record that does not map (schema violation, failed expression, no primary key).
#[derive(Debug, Clone, Serialize)]
pub struct Violation {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PreviewError {
    #[error("{spec} has no resource `{resource}`; it has: {known}")]
    UnknownResource {
        spec: String,
        resource: String,
        known: String,
    },
    /// The first page could not be read (settings, credentials, the provider's answer).
    #[error("reading the first page of `{resource}` failed: {message}")]
    Read { resource: String, message: String },
    #[error("state store: {0}")]
    Store(#[from] StoreError),
}

/// The connection's stored schema of the resource (its discovered fields), as slices read
/// with it; None when the resource discovers its fields and none was ever discovered.
async fn stored_schema(
    store: &Store,
    conn: &ConnectionRecord,
    spec: &CompiledSpec,
    resource: &str,
) -> Result<Option<Schema>, StoreError> {
    let Some(subject) = spec.schema_subject(resource) else {
        return Ok(Some(Schema::default()));
    };
    let stored = store.schema(&conn.id, &subject).await?;
    Ok(stored
        .filter(|s| s.discovered_at.is_some())
        .map(|s| s.schema))
}

impl Syncer {
    /// Read the first page of `resource` for `conn` with `spec` and map up to all its
    /// records; `limit` of them are returned, every violation is.
    pub async fn preview(
        &self,
        conn: &ConnectionRecord,
        spec: Arc<CompiledSpec>,
        resource: &str,
        limit: usize,
    ) -> Result<Preview, PreviewError> {
        let Some(compiled) = spec.resource(resource) else {
            return Err(PreviewError::UnknownResource {
                spec: spec.name().to_string(),
                resource: resource.to_string(),
                known: spec
                    .resources
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        let read_failed = |message: String| PreviewError::Read {
            resource: resource.to_string(),
            message,
        };
        let stored = stored_schema(&self.store, conn, &spec, resource).await?;
        let (schema, page) = self
            .first_page(conn, &spec, resource, stored)
            .await
            .map_err(read_failed)?;
        let tenancy = Tenancy::new(&schema, custom_object(resource));
        let plan = compiled.plan(false);
        let mut out = Preview {
            resource: resource.to_string(),
            model: compiled.model.name,
            page_records: page.len(),
            records: Vec::new(),
            violations: Vec::new(),
        };
        for raw in page {
            let id = match primary_key(&raw, &plan.records.primary_key) {
                Ok(id) => id,
                Err(e) => {
                    let message = e.to_string();
                    out.violations.push(Violation { id: None, message });
                    continue;
                }
            };
            match normalize_for(compiled, &tenancy, id.clone(), raw) {
                Ok(rec) if out.records.len() < limit => out.records.push(PreviewRecord {
                    id,
                    data: rec.data,
                    custom_fields: rec.custom_fields,
                }),
                Ok(_) => {}
                Err(rejected) => out.violations.push(Violation {
                    id: Some(id),
                    message: rejected.error.to_string(),
                }),
            }
        }
        Ok(out)
    }

    /// The schema read with and the records of the resource's first page (a full run's first
    /// request). Without a stored schema the fields are discovered live and not stored.
    async fn first_page(
        &self,
        conn: &ConnectionRecord,
        spec: &Arc<CompiledSpec>,
        resource: &str,
        stored: Option<Schema>,
    ) -> Result<(Schema, Vec<Value>), String> {
        let options = self.options_for(conn);
        let (_, connection, runtime, options) = self.runtime_of(spec.clone(), conn, options)?;
        let schema = match (stored, target_of(spec, resource)) {
            (Some(schema), _) => schema,
            (None, None) => Schema::default(),
            (None, Some(target)) => {
                let run = ResourceRun::discovery(
                    spec.clone(),
                    target,
                    &connection,
                    &runtime,
                    options.clone(),
                    ignore_events(),
                )
                .map_err(|e| e.to_string())?;
                let found = run.discover_fields().await;
                found.map_err(|e| format!("discovering its fields: {e}"))?
            }
        };
        let run = ResourceRun::new(
            spec.clone(),
            resource,
            &connection,
            &runtime,
            options,
            ignore_events(),
        )
        .map_err(|e| e.to_string())?
        .with_schema(&schema);
        let mut pages = Box::pin(run.pages());
        let records = match pages.next().await {
            Some(Ok(page)) => page.records,
            Some(Err(e)) => return Err(e.to_string()),
            None => Vec::new(),
        };
        Ok((schema, records))
    }
}
