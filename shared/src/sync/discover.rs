//! The discovery stage: a connection's schema of the resource a slice reads (the tenant's
//! fields, custom ones among them), discovered before the first sync, again on the spec's
//! cadence or when someone asks, and otherwise read from the store.
//!
//! A good discovery replaces the stored schema (and, when it differs, publishes
//! `connection.schema_changed` with what changed); a failed one keeps the last good schema,
//! records the error for the connection's status and publishes
//! `connection.discovery_failed`. Only a first discovery that fails stops a run: without
//! any schema the resource's request cannot name its fields. Used by the slice and by the
//! control API's on-demand discovery.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::SyncError;
use crate::bus::envelope::{RunRef, SchemaNews, StatusKind};
use crate::bus::{Publisher, StatusEvent, Topics};
use crate::domain::{Schema, SchemaChange};
use crate::engine::{
    ignore_events, Connection, ConnectionRuntime, CustomObject, DiscoveryTarget, EngineError,
    ErrorKind, ResourceRun, RunOptions,
};
use crate::spec::compile::{custom_object, CompiledSpec};
use crate::store::{Store, StoredSchema};

/// Where discoveries are stored and announced.
#[derive(Clone, Copy)]
pub struct SchemaDesk<'a> {
    pub store: &'a Store,
    pub publisher: &'a Publisher,
    pub topics: &'a Topics,
}

/// What one discovery came to.
#[derive(Debug)]
pub enum Discovered {
    /// The schema in use now, and what changed (empty on a first discovery or no change).
    Good {
        schema: Schema,
        change: SchemaChange,
    },
    /// The discovery failed; the last good schema, if any, stays in use.
    Failed { kept: Option<Schema>, error: String },
    /// The request could not be made for a reason of the connection's, not the discovery's
    /// (its credentials need renewing, its budget is spent, the ledger is unreachable):
    /// nothing is recorded, and the slice handles the error as a page's.
    Interrupted(EngineError),
}

/// Errors that say something about the connection rather than about the discovery.
fn interrupts(error: &EngineError) -> bool {
    error.kind.needs_reauth()
        || matches!(
            *error.kind,
            ErrorKind::RateLimited { .. } | ErrorKind::Ledger(_)
        )
}

/// Pure: whether a subject's schema must be discovered (again) now.
pub fn due(stored: Option<&StoredSchema>, every: Duration, now: DateTime<Utc>) -> bool {
    let Some(s) = stored else { return true };
    if s.requested || s.discovered_at.is_none() {
        return true;
    }
    let every = chrono::Duration::from_std(every).unwrap_or(chrono::Duration::MAX);
    s.checked_at.is_none_or(|t| now - t >= every)
}

/// The discovery that lists a resource's fields.
pub fn target_of(spec: &CompiledSpec, resource: &str) -> Option<DiscoveryTarget> {
    match custom_object(resource) {
        Some(object) => spec
            .custom_objects
            .as_ref()
            .map(|_| DiscoveryTarget::ObjectFields(object.to_string())),
        None => spec
            .resource(resource)?
            .discovery
            .clone()
            .map(DiscoveryTarget::Named),
    }
}

/// Everything a discovery request needs: the spec, the connection, its runtime, and the
/// deployment's ceiling on a schema's age.
pub struct DiscoveryRun<'a> {
    pub spec: &'a std::sync::Arc<CompiledSpec>,
    pub connection: &'a Connection,
    pub runtime: &'a ConnectionRuntime,
    pub options: &'a RunOptions,
    pub max_age: Option<Duration>,
}

/// Discover a resource's schema now, store it and announce what changed.
pub async fn rediscover(
    desk: SchemaDesk<'_>,
    run: &RunRef,
    with: &DiscoveryRun<'_>,
    resource: &str,
) -> Result<Discovered, SyncError> {
    let (Some(target), Some(subject)) = (
        target_of(with.spec, resource),
        with.spec.schema_subject(resource),
    ) else {
        return Ok(Discovered::Good {
            schema: Schema::default(),
            change: SchemaChange::default(),
        });
    };
    let stored = desk.store.schema(&run.connection, &subject).await?;
    let now = Utc::now();
    match read_fields(with, target).await {
        Err(error) if interrupts(&error) => Ok(Discovered::Interrupted(error)),
        Ok(schema) => {
            desk.store
                .save_schema(&run.connection, &subject, &schema, now)
                .await?;
            let change = match stored.as_ref().filter(|s| s.discovered_at.is_some()) {
                Some(before) => before.schema.diff(&schema),
                None => SchemaChange::default(),
            };
            if !change.is_empty() {
                tracing::info!(subject, change = %change.summary(), "schema changed");
                announce(
                    desk,
                    run,
                    StatusKind::SchemaChanged,
                    &subject,
                    &change,
                    None,
                )
                .await?;
            }
            Ok(Discovered::Good { schema, change })
        }
        Err(error) => {
            let error = error.to_string();
            tracing::warn!(subject, %error, "discovery failed; the last good schema stays");
            desk.store
                .schema_failed(&run.connection, &subject, &error, now)
                .await?;
            let none = SchemaChange::default();
            announce(
                desk,
                run,
                StatusKind::DiscoveryFailed,
                &subject,
                &none,
                Some(&error),
            )
            .await?;
            let kept = stored
                .filter(|s| s.discovered_at.is_some())
                .map(|s| s.schema);
            Ok(Discovered::Failed { kept, error })
        }
    }
}

/// One discovery request's pages, read into a schema.
async fn read_fields(
    with: &DiscoveryRun<'_>,
    target: DiscoveryTarget,
) -> Result<Schema, EngineError> {
    let run = ResourceRun::discovery(
        with.spec.clone(),
        target,
        with.connection,
        with.runtime,
        with.options.clone(),
        ignore_events(),
    )?;
    let at = run.name().to_string();
    let schema = run.discover_fields().await?;
    if schema.fields.is_empty() {
        return Err(EngineError {
            spec: with.spec.file.clone(),
            resource: at.clone(),
            page: 1,
            kind: Box::new(ErrorKind::Config(format!(
                "`{at}` listed no fields; check its `records.path` and `field`"
            ))),
        });
    }
    Ok(schema)
}

async fn announce(
    desk: SchemaDesk<'_>,
    run: &RunRef,
    kind: StatusKind,
    subject: &str,
    change: &SchemaChange,
    reason: Option<&str>,
) -> Result<(), SyncError> {
    let mut event = StatusEvent::new(run, kind, Utc::now()).with_schema(SchemaNews {
        subject: subject.to_string(),
        change: change.clone(),
    });
    if let Some(reason) = reason {
        event = event.with_reason(reason);
    }
    desk.publisher
        .publish_all(&[event.to_message(desk.topics)])
        .await?;
    Ok(())
}

/// What a slice reads with, or why it cannot start.
pub enum SliceSchema {
    Ready(Schema),
    /// A reason to fail the run: no schema was ever discovered and discovery fails now.
    Fail(String),
    /// An error of the connection's (credentials, budget), handled as a page's would be.
    Engine(EngineError),
}

/// The schema a slice reads with: discovered now when due (only where a run starts, so
/// every page of a run uses one schema), else the stored one.
pub async fn schema_for_slice(
    desk: SchemaDesk<'_>,
    run: &RunRef,
    with: &DiscoveryRun<'_>,
    resource: &str,
    starting: bool,
) -> Result<SliceSchema, SyncError> {
    let Some(subject) = with.spec.schema_subject(resource) else {
        return Ok(SliceSchema::Ready(Schema::default()));
    };
    let every = with
        .spec
        .discovery_of(resource)
        .map_or(Duration::MAX, |d| d.every)
        .min(with.max_age.unwrap_or(Duration::MAX));
    let stored = desk.store.schema(&run.connection, &subject).await?;
    let usable = stored.as_ref().filter(|s| s.discovered_at.is_some());
    if let Some(s) = usable {
        if !(starting && due(stored.as_ref(), every, Utc::now())) {
            return Ok(SliceSchema::Ready(s.schema.clone()));
        }
    }
    Ok(match rediscover(desk, run, with, resource).await? {
        Discovered::Good { schema, .. } => SliceSchema::Ready(schema),
        Discovered::Failed {
            kept: Some(schema), ..
        } => SliceSchema::Ready(schema),
        Discovered::Failed { kept: None, error } => SliceSchema::Fail(format!(
            "discovering the fields of `{resource}` ({subject}) failed and no earlier schema exists: {error}"
        )),
        Discovered::Interrupted(error) => SliceSchema::Engine(error),
    })
}

/// One subject's discovery, asked for through the control API.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DiscoveryReport {
    pub subject: String,
    /// The connection's resources that read this subject's fields.
    pub resources: Vec<String>,
    /// Discovered now (false: it failed, and the last good schema stays).
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The schema in use now (the one found, or the last good one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema: Option<Schema>,
    pub change: SchemaChange,
}

impl super::Syncer {
    /// Discover every schema a connection's resources read, now (on demand). A subject
    /// several resources share is discovered once.
    pub async fn discover_connection(
        &self,
        conn: &crate::store::ConnectionRecord,
    ) -> Result<Result<Vec<DiscoveryReport>, String>, SyncError> {
        let spec = match self.spec(&conn.provider) {
            Ok(spec) => spec,
            Err(e) => return Ok(Err(format!("provider spec `{}`: {e}", conn.provider))),
        };
        let mut reports: Vec<DiscoveryReport> = Vec::new();
        for resource in &conn.resources {
            let Some(subject) = spec.schema_subject(resource) else {
                continue;
            };
            if let Some(r) = reports.iter_mut().find(|r| r.subject == subject) {
                r.resources.push(resource.clone());
                continue;
            }
            let options = self.options_for(conn);
            let (spec, connection, runtime, options) =
                match self.connection_runtime(conn, resource, options) {
                    Ok(parts) => parts,
                    Err(reason) => return Ok(Err(reason)),
                };
            let with = DiscoveryRun {
                spec: &spec,
                connection: &connection,
                runtime: &runtime,
                options: &options,
                max_age: None,
            };
            let run = RunRef {
                tenant: conn.tenant.clone(),
                connection: conn.id.clone(),
                provider: conn.provider.clone(),
                resource: resource.clone(),
                sync_run: String::new(),
                mode: crate::domain::RunMode::Full,
            };
            let report = match rediscover(self.desk(), &run, &with, resource).await? {
                Discovered::Good { schema, change } => DiscoveryReport {
                    subject,
                    resources: vec![resource.clone()],
                    ok: true,
                    error: None,
                    schema: Some(schema),
                    change,
                },
                Discovered::Failed { kept, error } => DiscoveryReport {
                    subject,
                    resources: vec![resource.clone()],
                    ok: false,
                    error: Some(error),
                    schema: kept,
                    change: SchemaChange::default(),
                },
                Discovered::Interrupted(error) => DiscoveryReport {
                    subject: subject.clone(),
                    resources: vec![resource.clone()],
                    ok: false,
                    error: Some(error.to_string()),
                    schema: desk_schema(self, &conn.id, &subject).await?,
                    change: SchemaChange::default(),
                },
            };
            reports.push(report);
        }
        Ok(Ok(reports))
    }

    /// The connection's custom objects, as its spec's `custom_objects.list` reads them
    /// (`Ok(None)` when the spec has none); the inner error is worded for people.
    pub async fn custom_objects(
        &self,
        conn: &crate::store::ConnectionRecord,
    ) -> Result<Option<Vec<CustomObject>>, String> {
        let spec = self
            .spec(&conn.provider)
            .map_err(|e| format!("provider spec `{}`: {e}", conn.provider))?;
        if spec.custom_objects.is_none() {
            return Ok(None);
        }
        let (spec, connection, runtime, options) =
            self.runtime_of(spec, conn, self.options_for(conn))?;
        let run = ResourceRun::discovery(
            spec,
            DiscoveryTarget::ObjectList,
            &connection,
            &runtime,
            options,
            ignore_events(),
        )
        .map_err(|e| e.to_string())?;
        run.list_objects()
            .await
            .map(Some)
            .map_err(|e| e.to_string())
    }

    pub(super) fn desk(&self) -> SchemaDesk<'_> {
        SchemaDesk {
            store: &self.store,
            publisher: &self.publisher,
            topics: &self.settings.topics,
        }
    }

    /// The engine's options for a request of this connection outside a run.
    pub(super) fn options_for(&self, conn: &crate::store::ConnectionRecord) -> RunOptions {
        let mut options = self.settings.engine.clone();
        options.tenant = conn.tenant.clone();
        options
    }
}

/// The stored good schema of a subject, if any.
async fn desk_schema(
    syncer: &super::Syncer,
    connection: &str,
    subject: &str,
) -> Result<Option<Schema>, SyncError> {
    Ok(syncer
        .store
        .schema(connection, subject)
        .await?
        .filter(|s| s.discovered_at.is_some())
        .map(|s| s.schema))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(discovered: Option<&str>, checked: &str, requested: bool) -> StoredSchema {
        let t = |s: &str| crate::domain::time::parse_stamp(s);
        StoredSchema {
            subject: "contact_fields".into(),
            schema: Schema::default(),
            discovered_at: discovered.and_then(t),
            checked_at: t(checked),
            error: None,
            requested,
        }
    }

    #[test]
    fn discovery_is_due_first_on_cadence_on_request_and_until_one_succeeds() {
        let now = crate::domain::time::parse_stamp("2026-12-02T12:00:00Z").unwrap();
        let day = Duration::from_secs(86_400);
        assert!(due(None, day, now));
        let fresh = stored(Some("2026-12-02T11:00:00Z"), "2026-12-02T11:00:00Z", false);
        assert!(!due(Some(&fresh), day, now));
        assert!(due(Some(&fresh), Duration::from_secs(3_000), now));
        let asked = stored(Some("2026-12-02T11:00:00Z"), "2026-12-02T11:00:00Z", true);
        assert!(due(Some(&asked), day, now));
        let never_good = stored(None, "2026-12-02T11:59:00Z", false);
        assert!(due(Some(&never_good), day, now));
        // A failed attempt after a good one waits for the cadence like a good one.
        let failed_lately = stored(Some("2026-12-01T00:00:00Z"), "2026-12-02T11:59:00Z", false);
        assert!(!due(Some(&failed_lately), day, now));
    }
}
