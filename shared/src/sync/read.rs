//! The read stage: the engine's pages for an admitted job, and the stored
//! fingerprints of each page's records.
//!
//! Builds the connection's runtime (HTTP client, authenticator with the store as its
//! token sink, the shared budget) and the resource run from the checkpoint (resume
//! point, incremental start). Touches the spec catalog, the engine and, for
//! fingerprints, the store.

use std::collections::HashMap;
use std::sync::Arc;

use futures::stream::BoxStream;
use futures::StreamExt;
use tracing::Instrument;

use super::admit::Admitted;
use super::{StoreTokens, SyncError, Syncer};
use crate::budget::{Budget, BudgetOwner};
use crate::bus::Job;
use crate::changes;
use crate::domain::{RunMode, StoredFingerprint};
use crate::engine::{
    ignore_events, Connection, ConnectionRuntime, EngineError, Page, ResourceRun, RunOptions,
};
use crate::spec::compile::{CompiledResource, Plan};
use crate::spec::CompiledSpec;

/// What the pages of one slice are read with.
pub struct Reading {
    pub spec: Arc<CompiledSpec>,
    incremental: bool,
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
    /// Open the job's pages, read with the connection's effective spec (effective.rs). An
    /// error is a reason to fail the run (bad settings or credentials), already worded for
    /// the status event.
    pub(super) fn open_pages(
        &self,
        job: &Job,
        admitted: &Admitted,
        spec: Arc<CompiledSpec>,
    ) -> Result<(Reading, Pages), String> {
        let conn = &admitted.conn;
        if spec.resource(&job.resource).is_none() {
            return Err(format!(
                "{} has no resource `{}`",
                spec.file.display(),
                job.resource
            ));
        }
        let options = self.run_options(job, admitted);
        let incremental = options.since.is_some();
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
        let run = ResourceRun::new(
            spec.clone(),
            &job.resource,
            &connection,
            &runtime,
            options,
            ignore_events(),
        )
        .map_err(|e| e.to_string())?;
        Ok((Reading { spec, incremental }, Pages(run.pages().boxed())))
    }

    /// Where the pages start: the checkpoint's page state when resuming, changes since
    /// the last completed run's high-water mark for an incremental run.
    fn run_options(&self, job: &Job, admitted: &Admitted) -> RunOptions {
        let cp = &admitted.checkpoint;
        let mut options = self.settings.engine.clone();
        options.tenant = admitted.conn.tenant.clone();
        options.since = match job.mode {
            RunMode::Incremental => cp.since,
            RunMode::Full => None,
        };
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
