//! One job = one bounded slice of a sync run: read pages with the engine,
//! normalize, detect changes, publish events, wait for the broker, then store
//! fingerprints and the checkpoint. A completed full run sweeps deletions; a
//! failed or partial one never does.

pub mod keepalive;
mod tokens;
pub mod worker;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use futures::StreamExt;
use serde_json::Value;

use crate::budget::{Budget, BudgetOwner, BudgetSettings, Ledger, MemoryLedger};
use crate::bus::envelope::{event_id, ENVELOPE_VERSION};
use crate::bus::{
    ChangeEvent, DeadLetter, Job, JobReason, Op, OutMessage, Publisher, StatusEvent, Topics,
};
use crate::changes::{self, Change};
use crate::engine::{
    ignore_events, Connection, ConnectionRuntime, ErrorKind, ResourceRun, RunOptions,
};
use crate::mapping::normalize::{normalize, primary_key};
use crate::spec::{load_spec, CompiledSpec};
use crate::store::{
    ConnectionRecord, NewRun, RunCounts, RunMode, SliceCommit, Store, StoreError, StoreLedger,
    StoredFingerprint,
};

pub use tokens::StoreTokens;

/// How slices behave.
#[derive(Debug, Clone)]
pub struct SyncSettings {
    pub specs_dir: PathBuf,
    pub topics: Topics,
    pub slice_max_pages: u32,
    pub slice_max_duration: Duration,
    pub emit_remote_data: bool,
    pub tombstones: bool,
    pub engine: RunOptions,
    pub budgets: BudgetSettings,
    pub ledger: LedgerChoice,
    /// How long a connection's circuit stays open the first time (doubles per open in a row).
    pub breaker_open: Duration,
    pub breaker_max_open: Duration,
}

/// Where rate budgets are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LedgerChoice {
    /// The state store when it is PostgreSQL (shared by a fleet), memory on SQLite (one process).
    #[default]
    Auto,
    Store,
    Memory,
}

impl SyncSettings {
    /// Defaults for everything but where specs are and what topics are called.
    pub fn new(specs_dir: PathBuf, topics: Topics) -> Self {
        SyncSettings {
            specs_dir,
            topics,
            slice_max_pages: 50,
            slice_max_duration: Duration::from_secs(30),
            emit_remote_data: true,
            tombstones: false,
            engine: RunOptions {
                park_after: Duration::from_secs(30),
                ..RunOptions::default()
            },
            budgets: BudgetSettings::default(),
            ledger: LedgerChoice::Auto,
            breaker_open: Duration::from_secs(60),
            breaker_max_open: Duration::from_secs(600),
        }
    }
}

/// Infrastructure failures: the job is not done and must be delivered again.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("state store: {0}")]
    Store(#[from] StoreError),
    #[error("broker: {0}")]
    Bus(#[from] crate::bus::BusError),
    #[error("{0}")]
    Ledger(String),
}

/// What a job came to.
#[derive(Debug, Clone, PartialEq)]
pub enum SliceOutcome {
    /// Nothing to do (a replayed or stale job, a paused connection).
    Skipped(String),
    /// The slice ended at its bound; the continuation job is enqueued.
    Continued(Job),
    Completed(RunCounts),
    /// The run failed (no deletes); the reason went out as a status event.
    Failed(String),
    /// Rate limited or behind an open circuit: this job (or its continuation) is
    /// enqueued again to start no earlier than its `not_before`.
    Parked(Job),
}

/// Runs slices. Shared by all the jobs a worker runs at once.
pub struct Syncer {
    store: Store,
    publisher: Publisher,
    settings: SyncSettings,
    specs: Mutex<HashMap<String, Arc<CompiledSpec>>>,
    ledger: Arc<dyn Ledger>,
}

fn now_text() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn parse_time(v: &Value) -> Option<DateTime<Utc>> {
    match v {
        Value::String(s) => DateTime::parse_from_rfc3339(s)
            .or_else(|_| DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z"))
            .map(|t| t.with_timezone(&Utc))
            .ok()
            .or_else(|| {
                chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S")
                    .ok()
                    .map(|n| n.and_utc())
            })
            .or_else(|| s.parse::<i64>().ok().and_then(epoch)),
        Value::Number(n) => n.as_i64().and_then(epoch),
        _ => None,
    }
}

/// Seconds or milliseconds since the epoch, told apart by size.
fn epoch(n: i64) -> Option<DateTime<Utc>> {
    if n > 100_000_000_000 {
        DateTime::from_timestamp_millis(n)
    } else {
        DateTime::from_timestamp(n, 0)
    }
}

impl Syncer {
    pub fn new(store: Store, publisher: Publisher, settings: SyncSettings) -> Self {
        let shared = match settings.ledger {
            LedgerChoice::Auto => store.is_postgres(),
            LedgerChoice::Store => true,
            LedgerChoice::Memory => false,
        };
        let ledger: Arc<dyn Ledger> = if shared {
            Arc::new(StoreLedger::new(store.clone()))
        } else {
            Arc::new(MemoryLedger::default())
        };
        Syncer {
            store,
            publisher,
            settings,
            specs: Mutex::new(HashMap::new()),
            ledger,
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn publisher(&self) -> &Publisher {
        &self.publisher
    }

    pub fn settings(&self) -> &SyncSettings {
        &self.settings
    }

    fn spec(&self, provider: &str) -> Result<Arc<CompiledSpec>, String> {
        if let Some(s) = self.specs.lock().expect("specs").get(provider) {
            return Ok(s.clone());
        }
        let path = self.settings.specs_dir.join(format!("{provider}.yaml"));
        let spec = load_spec(&path).map_err(|e| e.to_string())?;
        self.specs
            .lock()
            .expect("specs")
            .insert(provider.to_string(), spec.clone());
        Ok(spec)
    }

    fn status(
        &self,
        conn: &ConnectionRecord,
        job: &Job,
        kind: &str,
        counts: Option<RunCounts>,
        reason: Option<String>,
    ) -> OutMessage {
        self.status_at(conn, job, kind, counts, reason, None)
    }

    fn status_at(
        &self,
        conn: &ConnectionRecord,
        job: &Job,
        kind: &str,
        counts: Option<RunCounts>,
        reason: Option<String>,
        resume_at: Option<DateTime<Utc>>,
    ) -> OutMessage {
        let event = StatusEvent {
            resume_at: resume_at.map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true)),
            id: uuid::Uuid::now_v7().to_string(),
            event_type: kind.to_string(),
            tenant: conn.tenant.clone(),
            connection: conn.id.clone(),
            provider: conn.provider.clone(),
            resource: job.resource.clone(),
            sync_run: job.run_id.clone(),
            mode: job.mode.as_str().to_string(),
            counts,
            reason,
            occurred_at: now_text(),
            schema_version: ENVELOPE_VERSION,
        };
        OutMessage {
            topic: self.settings.topics.status(),
            key: format!("{}:{}", conn.tenant, conn.id),
            payload: Some(serde_json::to_vec(&event).expect("events serialize")),
            headers: vec![("tenant", conn.tenant.clone()), ("type", kind.to_string())],
        }
    }

    async fn fail(
        &self,
        conn: &ConnectionRecord,
        job: &Job,
        reason: String,
    ) -> Result<SliceOutcome, SyncError> {
        self.store
            .fail_run(&job.connection, &job.resource, &job.run_id, &reason)
            .await?;
        self.publisher
            .publish_all(&[self.status(conn, job, "run.failed", None, Some(reason.clone()))])
            .await?;
        Ok(SliceOutcome::Failed(reason))
    }

    /// Run one job's slice. `stop` asks the slice to end at the next page boundary
    /// (a draining worker): it checkpoints and enqueues its continuation.
    pub async fn run_job(&self, job: &Job, stop: &AtomicBool) -> Result<SliceOutcome, SyncError> {
        let conn = match self.store.connection(&job.connection).await {
            Ok(c) => c,
            Err(StoreError::NotFound { .. }) => {
                return Ok(SliceOutcome::Skipped(format!(
                    "connection `{}` does not exist",
                    job.connection
                )))
            }
            Err(e) => return Err(e.into()),
        };
        if conn.state == "paused" || conn.state == "needs_reauth" {
            return Ok(SliceOutcome::Skipped(format!(
                "connection `{}` is {}",
                conn.id, conn.state
            )));
        }
        if let Some(until) = conn.blocked_until {
            let now = Utc::now();
            // Open circuit (or a held budget): wait without using a worker slot. Once it
            // ends, one job claims the half-open probe; the others keep waiting.
            let hold = if until > now {
                Some(until)
            } else if conn.failure_streak > 0 {
                let probe_until = now + chrono::Duration::seconds(30);
                if self.store.claim_probe(&conn.id, until, probe_until).await? {
                    None
                } else {
                    Some(probe_until)
                }
            } else {
                None
            };
            if let Some(until) = hold {
                let mut again = job.clone();
                again.not_before = Some(until);
                again.attempt += 1;
                self.publisher
                    .enqueue(&self.settings.topics, &again)
                    .await?;
                return Ok(SliceOutcome::Parked(again));
            }
        }
        let cp = self
            .store
            .checkpoint(&job.connection, &job.resource)
            .await?;
        let resuming = cp.run_id.as_deref() == Some(job.run_id.as_str());
        if job.reason == JobReason::Continuation && !resuming {
            return Ok(SliceOutcome::Skipped(format!(
                "run {} is no longer in progress",
                job.run_id
            )));
        }
        if resuming && cp.slice != job.slice {
            return Ok(SliceOutcome::Skipped(format!(
                "slice {} of run {} is already done",
                job.slice, job.run_id
            )));
        }
        if !resuming {
            if self.store.run(&job.run_id).await.is_ok() {
                return Ok(SliceOutcome::Skipped(format!(
                    "run {} already ran",
                    job.run_id
                )));
            }
            if let Some(other) = &cp.run_id {
                self.store
                    .fail_run(
                        &job.connection,
                        &job.resource,
                        other,
                        &format!("superseded by run {}", job.run_id),
                    )
                    .await?;
            }
            self.store
                .start_run(&NewRun {
                    id: &job.run_id,
                    connection: &job.connection,
                    resource: &job.resource,
                    mode: job.mode.as_str(),
                    reason: job.reason.as_str(),
                })
                .await?;
            self.publisher
                .publish_all(&[self.status(&conn, job, "run.started", None, None)])
                .await?;
        }
        let spec = match self.spec(&conn.provider) {
            Ok(s) => s,
            Err(e) => {
                return self
                    .fail(
                        &conn,
                        job,
                        format!("provider spec `{}`: {e}", conn.provider),
                    )
                    .await
            }
        };
        let Some(resource) = spec.resource(&job.resource) else {
            return self
                .fail(
                    &conn,
                    job,
                    format!("{} has no resource `{}`", spec.file.display(), job.resource),
                )
                .await;
        };
        let mut options = self.settings.engine.clone();
        options.since = match job.mode {
            RunMode::Incremental => cp.since,
            RunMode::Full => None,
        };
        options.resume = if resuming {
            cp.page_state.clone()
        } else {
            None
        };
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
        let runtime = match ConnectionRuntime::new(&spec, &connection, &options, sink, budget) {
            Ok(r) => r,
            Err(e) => return self.fail(&conn, job, e).await,
        };
        let plan = match (&resource.incremental, options.since) {
            (Some(inc), Some(_)) => &inc.plan,
            _ => &resource.full,
        };
        let run = match ResourceRun::new(
            spec.clone(),
            &job.resource,
            &connection,
            &runtime,
            options,
            ignore_events(),
        ) {
            Ok(r) => r,
            Err(e) => return self.fail(&conn, job, e.to_string()).await,
        };
        let pages = run.pages();
        futures::pin_mut!(pages);
        let started = Instant::now();
        let mut run_max = if resuming { cp.run_max_updated } else { None };
        let mut pages_in_slice = 0u32;
        let model = resource.model;
        let model_topic = self.settings.topics.model(model.name);
        while let Some(page) = pages.next().await {
            let page = match page {
                Ok(p) => p,
                Err(e) if e.kind.needs_reauth() => {
                    // Stop this connection's jobs until new credentials arrive (PUT credentials).
                    let reason = e.to_string();
                    self.store
                        .set_connection_state(&conn.id, "needs_reauth", Some(&reason))
                        .await?;
                    self.publisher
                        .publish_all(&[self.status(
                            &conn,
                            job,
                            "connection.needs_reauth",
                            None,
                            Some(reason.clone()),
                        )])
                        .await?;
                    return self.fail(&conn, job, reason).await;
                }
                Err(e) => {
                    if let ErrorKind::RateLimited {
                        until,
                        reason,
                        throttled,
                    } = &*e.kind
                    {
                        return self.park(&conn, job, *until, reason, *throttled).await;
                    }
                    if let ErrorKind::Ledger(l) = &*e.kind {
                        return Err(SyncError::Ledger(l.to_string()));
                    }
                    if e.kind.is_transient() {
                        self.note_failure(&conn).await?;
                    }
                    return self.fail(&conn, job, e.to_string()).await;
                }
            };
            if pages_in_slice == 0
                && (conn.failure_streak > 0
                    || conn.blocked_until.is_some()
                    || conn.state == "rate_limited")
            {
                // The provider answered: the circuit closes.
                self.store.clear_breaker(&conn.id).await?;
            }
            pages_in_slice += 1;
            let mut counts = RunCounts {
                pages: 1,
                records: page.records.len() as i64,
                ..RunCounts::default()
            };
            let mut messages = Vec::new();
            let mut seen: Vec<StoredFingerprint> = Vec::new();
            let mut touched: Vec<String> = Vec::new();
            let mut normalized = Vec::new();
            for raw in page.records {
                if let Some(t) = plan
                    .records
                    .updated_at
                    .as_ref()
                    .and_then(|e| e.eval_json(&raw).ok().flatten())
                    .as_ref()
                    .and_then(parse_time)
                {
                    run_max = Some(run_max.map_or(t, |m| m.max(t)));
                }
                let id = primary_key(&raw, &plan.records.primary_key);
                let outcome = id
                    .clone()
                    .and_then(|id| normalize(resource, id, raw.clone()));
                match outcome {
                    Ok(rec) => normalized.push(rec),
                    Err(e) => {
                        counts.dead_lettered += 1;
                        if let Ok(id) = &id {
                            // The record exists at the provider: it must not be swept as deleted.
                            touched.push(id.clone());
                        }
                        let dl = DeadLetter {
                            tenant: conn.tenant.clone(),
                            connection: conn.id.clone(),
                            provider: conn.provider.clone(),
                            resource: job.resource.clone(),
                            spec: spec.file.display().to_string(),
                            sync_run: job.run_id.clone(),
                            page: page.number,
                            record_id: id.ok(),
                            error: e.to_string(),
                            raw,
                            occurred_at: now_text(),
                            schema_version: ENVELOPE_VERSION,
                        };
                        messages.push(OutMessage {
                            topic: self.settings.topics.dead_letters(),
                            key: format!("{}:{}", conn.tenant, conn.id),
                            payload: Some(serde_json::to_vec(&dl).expect("dead letters serialize")),
                            headers: vec![
                                ("tenant", conn.tenant.clone()),
                                ("type", "record.dead_lettered".into()),
                            ],
                        });
                    }
                }
            }
            let ids: Vec<String> = normalized.iter().map(|r| r.id.clone()).collect();
            let stored = changes::by_id(
                self.store
                    .fingerprints(&job.connection, &job.resource, &ids)
                    .await?,
            );
            for rec in normalized {
                let fp = changes::fingerprint(&rec.id, &rec.data, &rec.custom_fields);
                let change = changes::classify(&fp, stored.get(&rec.id));
                let (op, changed_fields) = match change {
                    Change::Unchanged => {
                        seen.push(fp);
                        continue;
                    }
                    Change::Created => (Op::Created, None),
                    Change::Updated { changed_fields } => (Op::Updated, Some(changed_fields)),
                };
                match op {
                    Op::Created => counts.created += 1,
                    _ => counts.updated += 1,
                }
                let mut data = rec.data;
                data.insert("custom_fields".into(), Value::Object(rec.custom_fields));
                let event = self.change_event(
                    &conn,
                    job,
                    model.name,
                    model.version,
                    &rec.id,
                    &fp.hash,
                    op,
                    Some(Value::Object(data)),
                    changed_fields,
                    self.settings.emit_remote_data.then_some(rec.remote_data),
                );
                messages.push(self.event_message(&conn, &model_topic, &event));
                seen.push(fp);
            }
            let last = page.next.is_none();
            let ends_slice = last
                || pages_in_slice >= self.settings.slice_max_pages
                || started.elapsed() >= self.settings.slice_max_duration
                || stop.load(Ordering::Relaxed);
            let mut deleted = Vec::new();
            if last && job.mode == RunMode::Full {
                // The run read everything: what it did not see is gone at the provider.
                let here: HashSet<&str> = seen
                    .iter()
                    .map(|f| f.record_id.as_str())
                    .chain(touched.iter().map(String::as_str))
                    .collect();
                for gone in self
                    .store
                    .unseen(&job.connection, &job.resource, &job.run_id)
                    .await?
                {
                    if here.contains(gone.record_id.as_str()) {
                        continue;
                    }
                    let event = self.change_event(
                        &conn,
                        job,
                        model.name,
                        model.version,
                        &gone.record_id,
                        &format!("deleted:{}", gone.hash),
                        Op::Deleted,
                        None,
                        None,
                        None,
                    );
                    messages.push(self.event_message(&conn, &model_topic, &event));
                    if self.settings.tombstones {
                        messages.push(OutMessage {
                            topic: model_topic.clone(),
                            key: format!("{}:{}", conn.tenant, gone.record_id),
                            payload: None,
                            headers: vec![
                                ("tenant", conn.tenant.clone()),
                                ("type", format!("{}.deleted", model.name)),
                            ],
                        });
                    }
                    deleted.push(gone.record_id);
                }
                counts.deleted = deleted.len() as i64;
            }
            // Events first, acknowledged; only then the state that says they were sent.
            self.publisher.publish_all(&messages).await?;
            if ends_slice {
                counts.slices = 1;
            }
            let finished_since = last.then(|| match (run_max, job.mode) {
                (Some(m), _) => Some(cp.since.map_or(m, |s| s.max(m))),
                (None, RunMode::Incremental) => cp.since,
                (None, RunMode::Full) => None,
            });
            self.store
                .commit_slice(&SliceCommit {
                    connection: &job.connection,
                    resource: &job.resource,
                    run_id: &job.run_id,
                    slice: if ends_slice && !last {
                        job.slice + 1
                    } else {
                        job.slice
                    },
                    seen: &seen,
                    touched: &touched,
                    deleted: &deleted,
                    next: page.next.as_ref(),
                    run_max_updated: run_max,
                    finished_since,
                    counts,
                })
                .await?;
            if last {
                let totals = self.store.run(&job.run_id).await?.counts;
                self.publisher
                    .publish_all(&[self.status(&conn, job, "run.completed", Some(totals), None)])
                    .await?;
                return Ok(SliceOutcome::Completed(totals));
            }
            if ends_slice {
                let next = job.continuation();
                self.publisher.enqueue(&self.settings.topics, &next).await?;
                return Ok(SliceOutcome::Continued(next));
            }
        }
        // A stream ends with its last page or an error; both returned above.
        self.fail(
            &conn,
            job,
            "the page stream ended without a last page".into(),
        )
        .await
    }

    /// The connection is rate limited until `until`: hand the run to a continuation that
    /// starts then (what this slice read is already committed), show the state, and free
    /// the worker slot.
    async fn park(
        &self,
        conn: &ConnectionRecord,
        job: &Job,
        until: DateTime<Utc>,
        reason: &str,
        throttled: bool,
    ) -> Result<SliceOutcome, SyncError> {
        let mut until = until;
        if throttled {
            // Opening the circuit: the longer the provider keeps throttling, the longer we stay away.
            let streak = self.store.record_failure(&conn.id).await?;
            until = until.max(self.circuit_open_until(streak - 1));
        }
        let message = format!(
            "{reason}; resuming at {}",
            until.to_rfc3339_opts(SecondsFormat::Secs, true)
        );
        self.store
            .block_connection(&conn.id, until, Some(("rate_limited", &message)))
            .await?;
        let mut next = job.continuation();
        next.not_before = Some(until);
        self.store
            .advance_slice(
                &job.connection,
                &job.resource,
                &job.run_id,
                job.slice,
                next.slice,
            )
            .await?;
        let status = self.status_at(
            conn,
            job,
            "connection.rate_limited",
            None,
            Some(message),
            Some(until),
        );
        self.publisher.publish_all(&[status]).await?;
        self.publisher.enqueue(&self.settings.topics, &next).await?;
        Ok(SliceOutcome::Parked(next))
    }

    /// When a circuit opened for the `reopened`-th time in a row (0 = first) closes again:
    /// the open time doubles each time, up to the maximum.
    fn circuit_open_until(&self, reopened: i64) -> DateTime<Utc> {
        let open = self
            .settings
            .breaker_open
            .saturating_mul(1u32 << reopened.clamp(0, 16) as u32)
            .min(self.settings.breaker_max_open);
        Utc::now() + chrono::Duration::from_std(open).unwrap_or_default()
    }

    /// A run failed on something that may pass (5xx, timeouts, throttle storms): count it,
    /// and after three in a row hold the connection's jobs (the circuit opens).
    async fn note_failure(&self, conn: &ConnectionRecord) -> Result<(), SyncError> {
        let streak = self.store.record_failure(&conn.id).await?;
        if streak >= 3 {
            let until = self.circuit_open_until(streak - 3);
            self.store.block_connection(&conn.id, until, None).await?;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn change_event(
        &self,
        conn: &ConnectionRecord,
        job: &Job,
        model: &str,
        model_version: u32,
        record_id: &str,
        content_hash: &str,
        op: Op,
        data: Option<Value>,
        changed_fields: Option<Vec<String>>,
        remote_data: Option<Value>,
    ) -> ChangeEvent {
        let t = now_text();
        ChangeEvent {
            id: event_id(&conn.tenant, &conn.id, model, record_id, content_hash),
            specversion: "1.0",
            source: format!("tributary://{}/{}", conn.tenant, conn.id),
            event_type: format!("{model}.{}", op.as_str()),
            subject: record_id.to_string(),
            time: t.clone(),
            op,
            tenant: conn.tenant.clone(),
            connection: conn.id.clone(),
            provider: conn.provider.clone(),
            model: model.to_string(),
            model_version,
            record_id: record_id.to_string(),
            data,
            changed_fields,
            remote_data,
            occurred_at: t,
            sync_run: job.run_id.clone(),
            schema_version: ENVELOPE_VERSION,
        }
    }

    fn event_message(
        &self,
        conn: &ConnectionRecord,
        topic: &str,
        event: &ChangeEvent,
    ) -> OutMessage {
        OutMessage {
            topic: topic.to_string(),
            key: format!("{}:{}", conn.tenant, event.record_id),
            payload: Some(serde_json::to_vec(event).expect("events serialize")),
            headers: vec![
                ("tenant", conn.tenant.clone()),
                ("type", event.event_type.clone()),
                ("ce_id", event.id.clone()),
                ("ce_specversion", "1.0".into()),
                ("ce_source", event.source.clone()),
                ("ce_type", event.event_type.clone()),
            ],
        }
    }
}
