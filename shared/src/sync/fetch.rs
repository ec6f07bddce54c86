//! Fetch jobs (`mode: fetch`): records a webhook named, read by id (`webhooks.fetch`)
//! under the connection's auth and budgets, through the same process stage as any
//! sync page, so whichever of a webhook and a scheduled sync sees a change first
//! emits it, with the same deterministic event id, and the other emits nothing.
//!
//! A fetch takes no run's lock and moves no checkpoint; its commit stamps the records
//! it saw at a new sequence value, so a full run that started earlier does not sweep
//! them. A record a webhook said was deleted and the fetch does not find emits
//! `deleted` (a record it finds is not deleted, whatever the webhook said).

use std::collections::HashSet;
use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use indexmap::IndexMap;
use serde_json::Value;
use tracing::{info, warn};

use super::discover::{schema_for_slice, DiscoveryRun, SliceSchema};
use super::process::{process_page, record_ids, sweep, PageContext, PageOutcome};
use super::{SliceOutcome, SyncError, Syncer};
use crate::bus::envelope::RunRef;
use crate::bus::{Job, Publisher, Pushed};
use crate::domain::RunCounts;
use crate::engine::{
    ignore_events, Connection, ConnectionRuntime, ErrorKind, ResourceRun, RunOptions,
};
use crate::mapping::normalize::Tenancy;
use crate::spec::compile::custom_object;
use crate::spec::compile::Plan;
use crate::spec::CompiledSpec;
use crate::store::{FetchCommit, StoreError};

/// What reading one batch of ids needs.
struct FetchRun<'a> {
    job: &'a Job,
    run: RunRef,
    spec: std::sync::Arc<CompiledSpec>,
    connection: Connection,
    runtime: ConnectionRuntime,
    options: RunOptions,
    tenancy: Tenancy,
    schema: crate::domain::schema::Schema,
}

impl Syncer {
    /// Run a fetch job: every batch of its ids read, processed, published and committed.
    pub(super) async fn fetch(&self, job: &Job) -> Result<SliceOutcome, SyncError> {
        let fetch = match self.open_fetch(job).await? {
            Ok(f) => f,
            Err(outcome) => return Ok(outcome),
        };
        let batch = fetch
            .spec
            .webhooks
            .as_ref()
            .and_then(|w| w.fetch.get(&job.resource))
            .map_or(100, |f| f.batch_max);
        let mut counts = RunCounts::default();
        if !job.pushed.is_empty() {
            counts.add(&self.apply_pushed(&fetch).await?);
        }
        for ids in job.ids.chunks(batch) {
            match self.fetch_batch(&fetch, ids).await? {
                Ok(c) => counts.add(&c),
                Err(outcome) => return Ok(outcome),
            }
        }
        info!(connection = %job.connection, resource = %job.resource, ids = job.ids.len(),
              created = counts.created, updated = counts.updated, deleted = counts.deleted, "fetch done");
        Ok(SliceOutcome::Completed(counts))
    }

    /// The connection, its effective spec, runtime and schema; or why the job ends here.
    async fn open_fetch<'a>(
        &self,
        job: &'a Job,
    ) -> Result<Result<FetchRun<'a>, SliceOutcome>, SyncError> {
        let skip = |reason: String| Ok(Err(SliceOutcome::Skipped(reason)));
        let conn = match self.store.connection(&job.connection).await {
            Ok(c) => c,
            Err(StoreError::NotFound { .. }) => {
                return skip(format!("connection `{}` does not exist", job.connection))
            }
            Err(e) => return Err(e.into()),
        };
        if conn.state.is_halted() {
            return skip(format!("connection `{}` is {}", conn.id, conn.state));
        }
        if !conn.resources.iter().any(|r| r == &job.resource) {
            return skip(format!(
                "connection `{}` does not sync `{}`",
                conn.id, job.resource
            ));
        }
        let spec = match self.effective_spec(&conn).await? {
            Ok(spec) => spec,
            Err(reason) => return Ok(Err(SliceOutcome::Failed(reason))),
        };
        let mut options = self.settings.engine.clone();
        options.tenant = conn.tenant.clone();
        let (spec, connection, runtime, options) = match self.runtime_of(spec, &conn, options) {
            Ok(parts) => parts,
            Err(reason) => return Ok(Err(SliceOutcome::Failed(reason))),
        };
        let run = RunRef::of(job, &conn.provider);
        let with = DiscoveryRun {
            spec: &spec,
            connection: &connection,
            runtime: &runtime,
            options: &options,
            max_age: self.settings.discovery_max_age.map(Duration::from_secs),
        };
        let schema = match schema_for_slice(self.desk(), &run, &with, &job.resource, false).await? {
            SliceSchema::Ready(schema) => schema,
            SliceSchema::Fail(reason) => return Ok(Err(SliceOutcome::Failed(reason))),
            SliceSchema::Engine(e) => return Ok(Err(SliceOutcome::Failed(e.to_string()))),
        };
        let object = custom_object(&job.resource);
        Ok(Ok(FetchRun {
            job,
            run,
            tenancy: Tenancy::new(&schema, object),
            schema,
            spec,
            connection,
            runtime,
            options,
        }))
    }

    /// One request's worth of ids: read, processed, published, committed.
    async fn fetch_batch(
        &self,
        f: &FetchRun<'_>,
        ids: &[String],
    ) -> Result<Result<RunCounts, SliceOutcome>, SyncError> {
        let job = f.job;
        let run = match ResourceRun::fetch(
            f.spec.clone(),
            &job.resource,
            ids.to_vec(),
            &f.connection,
            &f.runtime,
            f.options.clone(),
            ignore_events(),
        ) {
            Ok(run) => run.with_schema(&f.schema),
            Err(e) => return Ok(Err(SliceOutcome::Failed(e.to_string()))),
        };
        let mut records = Vec::new();
        let mut pages = run.pages().boxed();
        while let Some(page) = pages.next().await {
            match page {
                Ok(page) => records.extend(page.records),
                Err(e) => {
                    let message = e.to_string();
                    return Ok(Err(self.fetch_failed(job, *e.kind, message).await?));
                }
            }
        }
        let resource = f
            .spec
            .resource(&job.resource)
            .expect("checked by the runtime");
        let plan = &f.spec.webhooks.as_ref().expect("a fetch plan").fetch[&job.resource].plan;
        let found = record_ids(plan, &records);
        let stored = self.stored_fingerprints(job, &found).await?;
        let spec_file = f.spec.file.display().to_string();
        let ctx = self.fetch_context(f, resource, plan, &spec_file);
        let mut outcome = process_page(&ctx, 1, records, &stored);
        let deleted = self
            .confirmed_deletes(&ctx, job, ids, &found, &mut outcome)
            .await?;
        self.publish_and_commit(job, &mut outcome, deleted).await?;
        Ok(Ok(outcome.counts))
    }

    /// The records webhooks pushed, through the same process stage as a page read (a
    /// version older than the published one is stale and emits nothing); the deletions
    /// the pushes announced emit `deleted` for the records that were published.
    async fn apply_pushed(&self, f: &FetchRun<'_>) -> Result<RunCounts, SyncError> {
        let job = f.job;
        let resource = (f.spec.resource(&job.resource)).expect("checked by the runtime");
        let plan = match f
            .spec
            .webhooks
            .as_ref()
            .and_then(|w| w.fetch.get(&job.resource))
        {
            Some(fetch) => &fetch.plan,
            None => &resource.full,
        };
        let (records, removed) = latest_pushed(plan, &job.pushed);
        let mut ids = record_ids(plan, &records);
        ids.extend(removed.iter().cloned());
        let stored = self.stored_fingerprints(job, &ids).await?;
        let spec_file = f.spec.file.display().to_string();
        let ctx = self.fetch_context(f, resource, plan, &spec_file);
        let mut outcome = process_page(&ctx, 1, records, &stored);
        let known: Vec<_> = (removed.iter())
            .filter_map(|id| stored.get(id).cloned())
            .collect();
        let (messages, deleted) = sweep(&ctx, known, &outcome);
        outcome.messages.extend(messages);
        self.publish_and_commit(job, &mut outcome, deleted).await?;
        if outcome.stale > 0 {
            info!(connection = %job.connection, resource = %job.resource, stale = outcome.stale,
                  "pushed records older than what was published were left alone");
        }
        Ok(outcome.counts)
    }

    /// How a fetch's records are processed: like a page of the resource read with `plan`.
    fn fetch_context<'a>(
        &'a self,
        f: &'a FetchRun<'_>,
        resource: &'a crate::spec::compile::CompiledResource,
        plan: &'a Plan,
        spec_file: &'a str,
    ) -> PageContext<'a> {
        PageContext {
            run: &f.run,
            resource,
            tenancy: &f.tenancy,
            plan,
            spec_file,
            topics: &self.settings.topics,
            emit_remote_data: self.settings.emit_remote_data,
            tombstones: self.settings.tombstones,
            now: Utc::now(),
        }
    }

    /// Publish the outcome's events, then commit what it saw and forget what it (and
    /// `deleted`) deleted; the deletions are added to its counts.
    async fn publish_and_commit(
        &self,
        job: &Job,
        outcome: &mut PageOutcome,
        deleted: Vec<String>,
    ) -> Result<(), SyncError> {
        self.publish(&outcome.messages).await?;
        let (written, touched) = outcome.take_for_commit();
        let mut forget = std::mem::take(&mut outcome.removed);
        forget.extend(deleted);
        self.store
            .commit_fetch(&FetchCommit {
                connection: &job.connection,
                resource: &job.resource,
                fetch_id: &job.run_id,
                written: &written,
                touched: &touched,
                deleted: &forget,
            })
            .await?;
        outcome.counts.deleted += forget.len() as i64;
        Ok(())
    }

    /// The ids a webhook said were deleted that the provider no longer has and that were
    /// published before: their `deleted` events join the outcome's messages.
    async fn confirmed_deletes(
        &self,
        ctx: &PageContext<'_>,
        job: &Job,
        asked: &[String],
        found: &[String],
        outcome: &mut PageOutcome,
    ) -> Result<Vec<String>, SyncError> {
        let found: HashSet<&str> = found.iter().map(String::as_str).collect();
        let said: HashSet<&str> = job.deleted_ids.iter().map(String::as_str).collect();
        let gone: Vec<String> = asked
            .iter()
            .filter(|id| said.contains(id.as_str()) && !found.contains(id.as_str()))
            .cloned()
            .collect();
        if gone.is_empty() {
            return Ok(Vec::new());
        }
        let known = self
            .store
            .fingerprints(&job.connection, &job.resource, &gone)
            .await?;
        let (messages, deleted) = sweep(ctx, known, outcome);
        outcome.messages.extend(messages);
        Ok(deleted)
    }

    /// A fetch the provider refused or throttled: a throttled one comes back later, a
    /// failed one is left to the next scheduled sync (which reconciles).
    async fn fetch_failed(
        &self,
        job: &Job,
        kind: ErrorKind,
        message: String,
    ) -> Result<SliceOutcome, SyncError> {
        if let ErrorKind::RateLimited { until, .. } = kind {
            let mut again = job.clone();
            again.attempt += 1;
            again.not_before = Some(until);
            enqueue_urgent(&self.publisher, &self.settings.topics, &again).await?;
            return Ok(SliceOutcome::Parked(again));
        }
        warn!(connection = %job.connection, resource = %job.resource, "fetch failed: {message}");
        Ok(SliceOutcome::Failed(message))
    }
}

async fn enqueue_urgent(
    publisher: &Publisher,
    topics: &crate::bus::Topics,
    job: &Job,
) -> Result<(), SyncError> {
    let message = crate::bus::job::job_message(&topics.urgent_jobs(), job);
    publisher.publish_all(&[message]).await?;
    Ok(())
}

/// One version per record of what was pushed: the last in delivery order, unless an
/// earlier push carries a newer provider updated-at (deliveries arrive out of order).
/// Returns the records to process and the ids announced deleted.
fn latest_pushed(plan: &Plan, pushed: &[Pushed]) -> (Vec<Value>, Vec<String>) {
    let updated = |record: &Value| {
        let expr = plan.records.updated_at.as_ref()?;
        crate::domain::time::parse_provider(&expr.eval_json(record).ok()??)
    };
    let mut latest: IndexMap<&str, &Pushed> = IndexMap::new();
    for p in pushed {
        let keep_earlier = match (latest.get(p.id.as_str()), &p.record) {
            (
                Some(Pushed {
                    record: Some(old), ..
                }),
                Some(new),
            ) => {
                matches!((updated(old), updated(new)), (Some(o), Some(n)) if n < o)
            }
            _ => false,
        };
        if !keep_earlier {
            latest.insert(&p.id, p);
        }
    }
    let mut records = Vec::new();
    let mut removed = Vec::new();
    for (id, p) in latest {
        match &p.record {
            Some(record) => records.push(record.clone()),
            None => removed.push(id.to_string()),
        }
    }
    (records, removed)
}
