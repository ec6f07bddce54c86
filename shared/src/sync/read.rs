//! The read stage: the engine's pages for an admitted job, and the stored
//! fingerprints of each page's records.
//!
//! Builds the connection's runtime (HTTP client, authenticator with the store as its
//! token sink, the shared budget) and the resource run from the checkpoint (resume
//! point, incremental start). Touches the spec catalog, the engine and, for
//! fingerprints, the store.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;
use futures::StreamExt;
use tracing::Instrument;

use super::admit::Admitted;
use super::discover::{schema_for_slice, DiscoveryRun, SliceSchema};
use super::{StoreTokens, SyncError, Syncer};
use crate::budget::{Budget, BudgetOwner};
use crate::bus::Job;
use crate::changes;
use crate::domain::{RunMode, StoredFingerprint};
use crate::engine::{
    ignore_events, Connection, ConnectionRuntime, EngineError, Page, ResourceRun, RunOptions,
};
use crate::mapping::normalize::Tenancy;
use crate::spec::compile::{custom_object, CompiledResource, Plan};
use crate::spec::CompiledSpec;
use crate::store::ConnectionRecord;

/// What the pages of one slice are read with.
pub struct Reading {
    pub spec: Arc<CompiledSpec>,
    incremental: bool,
    /// The connection's discovered fields and custom object, for normalizing.
    pub tenancy: Tenancy,
}

/// The model name whose topic a custom object's records go to: `custom.<name lowercased>`.
pub fn object_topic(object: &str) -> String {
    format!("custom.{}", object.to_lowercase())
}

/// Why a slice's pages could not be opened.
pub enum Unopened {
    /// A reason to fail the run (bad spec or overrides, settings, credentials, a first
    /// discovery that failed), worded for the status event.
    Fail(String),
    /// The discovery before the pages met an error of the connection's (its credentials,
    /// its budget): handled as a page's error is.
    Engine(EngineError),
}

/// The pages of one slice, in order.
pub struct Pages(BoxStream<'static, Result<Page, EngineError>>);

impl Pages {
    /// The next page, or None once the stream has ended (after its last page or an error).
    pub async fn next(&mut self) -> Option<Result<Page, EngineError>> {
        self.0.next().instrument(tracing::info_span!("read")).await
    }
}

impl Reading {
    pub fn resource(&self, name: &str) -> &CompiledResource {
        self.spec
            .resource(name)
            .expect("the resource was checked when the reader opened")
    }

    /// The plan the pages are read with.
    pub fn plan(&self, resource: &str) -> &Plan {
        self.resource(resource).plan(self.incremental)
    }
}

impl Syncer {
    /// Open the job's pages (after the discovery stage, where the resource has one), read
    /// with the connection's effective spec (effective.rs: its stored overrides on top). The
    /// outer error is infrastructure; the inner one a reason to fail the run (bad spec or
    /// overrides, settings or credentials, a first discovery that failed), worded for the
    /// status event.
    pub(super) async fn open_pages(
        &self,
        job: &Job,
        admitted: &Admitted,
    ) -> Result<Result<(Reading, Pages), Unopened>, SyncError> {
        let options = self.run_options(job, admitted);
        let spec = match self.effective_spec(&admitted.conn).await? {
            Ok(spec) => spec,
            Err(reason) => return Ok(Err(Unopened::Fail(reason))),
        };
        let (spec, connection, runtime, options) =
            match self.runtime_with(spec, &admitted.conn, &job.resource, options) {
                Ok(parts) => parts,
                Err(reason) => return Ok(Err(Unopened::Fail(reason))),
            };
        let desk = self.desk();
        let with = DiscoveryRun {
            spec: &spec,
            connection: &connection,
            runtime: &runtime,
            options: &options,
            max_age: self.settings.discovery_max_age.map(Duration::from_secs),
        };
        let starting = !admitted.resuming;
        let schema =
            match schema_for_slice(desk, &admitted.run, &with, &job.resource, starting).await? {
                SliceSchema::Ready(schema) => schema,
                SliceSchema::Fail(reason) => return Ok(Err(Unopened::Fail(reason))),
                SliceSchema::Engine(e) => return Ok(Err(Unopened::Engine(e))),
            };
        let object = custom_object(&job.resource);
        if let Some(object) = object {
            self.publisher
                .ensure_topic(&self.settings.topics.model(&object_topic(object)))
                .await?;
        }
        let run = match ResourceRun::new(
            spec.clone(),
            &job.resource,
            &connection,
            &runtime,
            options,
            ignore_events(),
        ) {
            Ok(run) => run.with_schema(&schema),
            Err(e) => return Ok(Err(Unopened::Fail(e.to_string()))),
        };
        let incremental = run.reads_incremental();
        let reading = Reading {
            spec,
            incremental,
            tenancy: Tenancy::new(&schema, object),
        };
        Ok(Ok((reading, Pages(run.pages().boxed()))))
    }

    /// The provider's spec, the engine's view of the connection, its runtime (HTTP client,
    /// authenticator storing renewed tokens, the shared budget) and the run's options.
    pub(super) fn connection_runtime(
        &self,
        conn: &ConnectionRecord,
        resource: &str,
        options: RunOptions,
    ) -> Result<(Arc<CompiledSpec>, Connection, ConnectionRuntime, RunOptions), String> {
        let spec = self
            .spec(&conn.provider)
            .map_err(|e| format!("provider spec `{}`: {e}", conn.provider))?;
        self.runtime_with(spec, conn, resource, options)
    }

    /// [`Self::connection_runtime`] with this spec (a connection's effective one).
    fn runtime_with(
        &self,
        spec: Arc<CompiledSpec>,
        conn: &ConnectionRecord,
        resource: &str,
        options: RunOptions,
    ) -> Result<(Arc<CompiledSpec>, Connection, ConnectionRuntime, RunOptions), String> {
        if spec.resource(resource).is_none() {
            return Err(format!(
                "{} has no resource `{resource}`",
                spec.file.display(),
            ));
        }
        self.runtime_of(spec, conn, options)
    }

    /// The connection's runtime on this spec, for any of its requests.
    pub(super) fn runtime_of(
        &self,
        spec: Arc<CompiledSpec>,
        conn: &ConnectionRecord,
        options: RunOptions,
    ) -> Result<(Arc<CompiledSpec>, Connection, ConnectionRuntime, RunOptions), String> {
        let connection = Connection {
            config: conn.config.clone(),
            credentials: conn.credentials.clone(),
        };
        let sink = Arc::new(StoreTokens::new(self.store.clone(), conn.id.clone()));
        let budget = Budget::new(
            &spec.spec.rate_limit,
            &BudgetOwner {
                provider: conn.provider.clone(),
                connection: conn.id.clone(),
                app: conn.credentials.app_identity(),
            },
            self.ledger.clone(),
            self.settings.budgets.clone(),
        );
        let runtime = ConnectionRuntime::new(&spec, &connection, &options, sink, budget)?;
        Ok((spec, connection, runtime, options))
    }

    /// Where the pages start: the checkpoint's page state when resuming, changes since
    /// the last completed run's high-water mark for an incremental run.
    fn run_options(&self, job: &Job, admitted: &Admitted) -> RunOptions {
        let cp = &admitted.checkpoint;
        let mut options = self.settings.engine.clone();
        options.tenant = admitted.conn.tenant.clone();
        options.since = match job.mode {
            RunMode::Incremental => cp.since,
            RunMode::Full | RunMode::Fetch => None,
        };
        options.delta_link = match job.mode {
            RunMode::Incremental => cp.delta_link.clone(),
            RunMode::Full | RunMode::Fetch => None,
        };
        // A delta-tracked resource's first incremental run (no link yet) is its first round.
        options.incremental = job.mode == RunMode::Incremental;
        options.resume = admitted.resuming.then(|| cp.page_state.clone()).flatten();
        options
    }

    /// The stored fingerprints of these records.
    pub(super) async fn stored_fingerprints(
        &self,
        job: &Job,
        ids: &[String],
    ) -> Result<HashMap<String, StoredFingerprint>, SyncError> {
        let stored = self
            .store
            .fingerprints(&job.connection, &job.resource, ids)
            .await?;
        Ok(changes::by_id(stored))
    }
}
