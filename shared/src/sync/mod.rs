//! One job = one bounded slice of a sync run, as stages around a pure core:
//!
//! 1. `admit` (admit.rs): the connection, the checkpoint, stale or replayed jobs, the
//!    circuit breaker's verdict, the run started or resumed;
//! 2. `read` (read.rs): the engine's pages, and each page's stored fingerprints;
//! 3. `process` (process.rs, pure): records in; unified records, changes, dead letters
//!    and messages out; the deletion sweep's events on a full run's last page;
//! 4. `publish` then `commit` (deliver.rs): events acknowledged, then one transaction;
//! 5. `finish` (finish.rs): completed, continued, failed, parked or needs re-auth.
//!
//! A completed full run sweeps deletions; a failed or partial one never does.

mod admit;
mod ahead;
mod deliver;
pub mod discover;
mod effective;
mod fetch;
mod finish;
pub mod keepalive;
pub mod preview;
pub mod process;
mod read;
pub mod reconcile;
mod settings;
pub mod subscribe;
mod tokens;
pub mod worker;

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use chrono::Utc;
use tracing::Instrument;

use crate::breaker::Breaker;
use crate::budget::{Ledger, LedgerError, MemoryLedger};
use crate::bus::envelope::RunRef;
use crate::bus::{Job, Publisher};
use crate::domain::{RunCounts, RunMode};
use crate::spec::{load_layered, CompiledSpec};
use crate::store::{Store, StoreError, StoreLedger};
use crate::telemetry::{self, Labels};
use admit::{Admitted, Verdict};
use ahead::{Ahead, Processed, Window};
use deliver::{PageCommit, SliceBounds, SliceProgress};
use process::{sweep, PageContext};
use read::Unopened;
use tokio::sync::mpsc;

pub use crate::domain::LedgerChoice;
pub use settings::SyncSettings;
pub use tokens::StoreTokens;

/// Infrastructure failures: the job is not done and must be delivered again.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("state store: {0}")]
    Store(#[from] StoreError),
    #[error("broker: {0}")]
    Bus(#[from] crate::bus::BusError),
    #[error("rate budget ledger: {0}")]
    Ledger(#[from] LedgerError),
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
    effective: effective::EffectiveSpecs,
    ledger: Arc<dyn Ledger>,
}

impl Syncer {
    pub fn new(store: Store, publisher: Publisher, settings: SyncSettings) -> Self {
        let ledger = ledger_for(&store, settings.ledger);
        Syncer {
            store,
            publisher,
            settings,
            specs: Mutex::new(HashMap::new()),
            effective: Default::default(),
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

    /// The circuit breaker's rules (the engine uses the same ones to decide when to park).
    fn breaker(&self) -> &Breaker {
        &self.settings.engine.breaker
    }

    fn bounds(&self) -> SliceBounds {
        SliceBounds {
            max_pages: self.settings.slice_max_pages,
            max_duration: self.settings.slice_max_duration,
        }
    }

    /// The compiled spec of a provider with the environment's overlay, loaded once per process.
    pub fn spec(&self, provider: &str) -> Result<Arc<CompiledSpec>, String> {
        let cached = |specs: &HashMap<String, Arc<CompiledSpec>>| specs.get(provider).cloned();
        if let Some(s) = cached(&self.specs.lock().unwrap_or_else(|p| p.into_inner())) {
            return Ok(s);
        }
        let spec = load_layered(
            &self.settings.specs_dir,
            self.settings.overrides_dir.as_deref(),
            provider,
        )
        .map_err(|e| e.to_string())?;
        self.specs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(provider.to_string(), spec.clone());
        Ok(spec)
    }

    /// Run one job's slice. `stop` asks the slice to end at the next page boundary
    /// (a draining worker): it checkpoints and enqueues its continuation.
    pub async fn run_job(&self, job: &Job, stop: &AtomicBool) -> Result<SliceOutcome, SyncError> {
        let span = tracing::info_span!(
            "slice",
            tenant = %job.tenant,
            connection = %job.connection,
            resource = %job.resource,
            sync_run = %job.run_id,
            slice = job.slice,
            mode = job.mode.as_str(),
        );
        // The scheduler's enqueue, this slice and the events it publishes join one trace.
        if let Some(parent) = &job.traceparent {
            telemetry::set_parent_from_traceparent(&span, parent);
        }
        let metrics = telemetry::metrics();
        metrics.jobs_in_flight(1);
        let outcome = match job.mode {
            RunMode::Fetch => self.fetch(job).instrument(span).await,
            _ => self.slice(job, stop).instrument(span).await,
        };
        metrics.jobs_in_flight(-1);
        outcome
    }

    /// The slice as two sides joined by a bounded channel: reading ahead (fetch, look up,
    /// process; ahead.rs) and delivering in page order (publish, commit, finish).
    async fn slice(&self, job: &Job, stop: &AtomicBool) -> Result<SliceOutcome, SyncError> {
        let admitted = match self.admit(job).await? {
            Verdict::Run(admitted) => *admitted,
            Verdict::Done(outcome) => return Ok(*outcome),
        };
        let (reading, pages) = match self.open_pages(job, &admitted).await? {
            Ok(opened) => opened,
            Err(Unopened::Fail(reason)) => return self.fail(&admitted.run, job, reason).await,
            Err(Unopened::Engine(e)) => return self.on_engine_error(&admitted, job, e).await,
        };
        let _timer = SliceTimer::start(&admitted);
        let step = PageStep {
            job,
            admitted: &admitted,
            reading: &reading,
            stop,
        };
        let window = Window::default();
        let (ahead, behind) = mpsc::channel(self.settings.pages_in_flight.max(1));
        let (_, outcome) = tokio::join!(
            self.read_ahead(step, pages, &window, ahead),
            self.deliver_pages(step, behind, &window)
        );
        outcome
    }

    /// What processing (and sweeping) a page of this slice needs besides the page.
    fn page_context<'a>(&'a self, step: PageStep<'a>, spec_file: &'a str) -> PageContext<'a> {
        let PageStep { job, reading, .. } = step;
        PageContext {
            run: &step.admitted.run,
            resource: reading.resource(&job.resource),
            tenancy: &reading.tenancy,
            plan: reading.plan(&job.resource),
            spec_file,
            topics: &self.settings.topics,
            emit_remote_data: self.settings.emit_remote_data,
            tombstones: self.settings.tombstones,
            now: Utc::now(),
        }
    }

    /// Deliver the pages read ahead, in order, until one ends the slice or an error.
    /// Returning drops `behind`, which tells the reader to stop.
    async fn deliver_pages(
        &self,
        step: PageStep<'_>,
        mut behind: mpsc::Receiver<Ahead>,
        window: &Window,
    ) -> Result<SliceOutcome, SyncError> {
        let PageStep { job, admitted, .. } = step;
        let mut progress = SliceProgress::new(&admitted.checkpoint, admitted.resuming);
        while let Some(item) = behind.recv().await {
            let page = match item {
                Ahead::Page(page) => *page,
                Ahead::Engine(e) => return self.on_engine_error(admitted, job, e).await,
                Ahead::Store(e) => return Err(e),
            };
            if progress.pages == 0 {
                self.close_breaker(&admitted.conn).await?;
            }
            let number = page.number;
            let outcome = self.deliver(step, &mut progress, page).await?;
            window.committed(number);
            if let Some(outcome) = outcome {
                return Ok(outcome);
            }
        }
        // A stream ends with its last page or an error; both returned above.
        let reason = "the page stream ended without a last page".to_string();
        self.fail(&admitted.run, job, reason).await
    }

    /// One processed page through (the sweep,) publish, commit and finish.
    async fn deliver(
        &self,
        step: PageStep<'_>,
        progress: &mut SliceProgress,
        page: Processed,
    ) -> Result<Option<SliceOutcome>, SyncError> {
        let PageStep {
            job,
            admitted,
            reading,
            stop,
        } = step;
        let Processed {
            mut outcome,
            next,
            delta_link,
            ..
        } = page;
        progress.add_page(outcome.max_updated);
        let last = next.is_none();
        let ends_slice = progress.ends(last, self.bounds(), stop);
        let mut gone_unseen = Vec::new();
        if last && job.mode == RunMode::Full {
            // The run read everything: what it did not see is gone at the provider.
            let unseen = self
                .store
                .unseen(&job.connection, &job.resource, &job.run_id)
                .await?;
            let spec_file = reading.spec.file.display().to_string();
            let ctx = self.page_context(step, &spec_file);
            let (messages, gone) = sweep(&ctx, unseen, &outcome);
            outcome.messages.extend(messages);
            gone_unseen = gone;
        }
        // Records the provider marked removed on this page, and those a full run's last page
        // found it never saw.
        let mut deleted = std::mem::take(&mut outcome.removed);
        deleted.extend(gone_unseen);
        if !deleted.is_empty() {
            let labels = labels(&admitted.run);
            telemetry::metrics().events_published(&labels, "deleted", deleted.len() as u64);
        }
        // Events first, acknowledged; only then the state that says they were sent.
        self.publish(&outcome.messages).await?;
        let commit = PageCommit {
            outcome,
            deleted,
            next: next.as_ref(),
            delta_link: delta_link.as_deref(),
            ends_slice,
        };
        self.commit(job, &admitted.checkpoint, progress, commit)
            .await?;
        self.finish(job, &admitted.run, last, ends_slice).await
    }
}

/// Where rate budgets live for this store and choice: the store (shared by the fleet) or
/// this process's memory.
pub fn ledger_for(store: &Store, choice: LedgerChoice) -> Arc<dyn Ledger> {
    let shared = match choice {
        LedgerChoice::Auto => store.is_postgres(),
        LedgerChoice::Store => true,
        LedgerChoice::Memory => false,
    };
    if shared {
        Arc::new(StoreLedger::new(store.clone()))
    } else {
        Arc::new(MemoryLedger::default())
    }
}

fn labels(run: &RunRef) -> Labels<'_> {
    Labels {
        provider: &run.provider,
        tenant: &run.tenant,
    }
}

fn record_page_metrics(run: &RunRef, outcome: &process::PageOutcome) {
    let (metrics, labels, counts) = (telemetry::metrics(), labels(run), &outcome.counts);
    metrics.records_read(&labels, counts.records as u64);
    metrics.events_published(&labels, "created", counts.created as u64);
    metrics.events_published(&labels, "updated", counts.updated as u64);
    metrics.dead_letters(&labels, counts.dead_lettered as u64);
}

/// Records how long an admitted slice took, however it ends.
struct SliceTimer<'a> {
    run: &'a RunRef,
    started: std::time::Instant,
}

impl<'a> SliceTimer<'a> {
    fn start(admitted: &'a Admitted) -> Self {
        SliceTimer {
            run: &admitted.run,
            started: std::time::Instant::now(),
        }
    }
}

impl Drop for SliceTimer<'_> {
    fn drop(&mut self) {
        telemetry::metrics().slice_duration(&labels(self.run), self.started.elapsed());
    }
}

/// What every page of a slice shares.
#[derive(Clone, Copy)]
struct PageStep<'a> {
    job: &'a Job,
    admitted: &'a Admitted,
    reading: &'a read::Reading,
    stop: &'a AtomicBool,
}
