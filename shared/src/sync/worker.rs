//! The jobs consumer loop: many jobs at once (bounded), urgent jobs (resyncs) before
//! scheduled ones, a job's offset committed only after its slice is published and
//! checkpointed, and a drain on stop (slices checkpoint, offsets commit, the consumer
//! leaves the group).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::Consumer;
use rdkafka::Message;
use tokio::sync::{Mutex, Notify, Semaphore};
use tokio::task::JoinSet;
use tracing::{error, info, warn};

use super::{SliceOutcome, Syncer};
use crate::bus::kafka::{commit, jobs_consumer, BusError, ConsumerSettings, OffsetTracker};
use crate::bus::{Job, Topics};

/// One async lock per (connection, resource): two slices of one resource never overlap.
type ResourceLocks = Arc<Mutex<HashMap<String, Arc<Mutex<()>>>>>;

/// Jobs a worker keeps in memory without a slot (waiting for their not-before time or
/// for their tenant's turn) before it stops taking more from the broker.
const MAX_HELD_JOBS: usize = 10_000;

/// Not-before times closer than this are not worth giving the slot back for.
const HOLD_THRESHOLD: Duration = Duration::from_millis(20);

/// How many slots one tenant may use at once, so a tenant with a backlog leaves room for
/// the others on the same worker.
#[derive(Clone)]
struct TenantSlots {
    per_tenant: usize,
    map: Arc<std::sync::Mutex<HashMap<String, Arc<Semaphore>>>>,
}

impl TenantSlots {
    fn of(&self, tenant: &str) -> Arc<Semaphore> {
        let mut map = self.map.lock().expect("tenant slots");
        if map.len() >= MAX_HELD_JOBS {
            // A long-lived worker sees many tenants: forget those with no job here now.
            map.retain(|_, s| Arc::strong_count(s) > 1);
        }
        map.entry(tenant.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_tenant)))
            .clone()
    }
}

#[derive(Debug, Clone)]
pub struct WorkerOptions {
    pub brokers: String,
    pub topics: Topics,
    pub session_timeout: Duration,
    pub concurrency: usize,
    /// Slots one tenant may use at once (default: half of `concurrency`, at least 1).
    pub tenant_concurrency: Option<usize>,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            brokers: "127.0.0.1:9092".into(),
            topics: Topics::new("tributary"),
            session_timeout: Duration::from_secs(10),
            concurrency: 8,
            tenant_concurrency: None,
        }
    }
}

/// Asks a worker loop to stop taking jobs and drain.
#[derive(Debug, Default, Clone)]
pub struct StopSignal {
    flag: Arc<AtomicBool>,
    notify: Arc<Notify>,
}

impl StopSignal {
    pub fn stop(&self) {
        self.flag.store(true, Ordering::Relaxed);
        self.notify.notify_waiters();
    }

    pub fn is_stopped(&self) -> bool {
        self.flag.load(Ordering::Relaxed)
    }

    pub fn flag(&self) -> &AtomicBool {
        &self.flag
    }

    async fn stopped(&self) {
        loop {
            let notified = self.notify.notified();
            if self.is_stopped() {
                return;
            }
            notified.await;
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("{0}")]
    Bus(#[from] BusError),
    #[error("stopped after a job could not reach the state store or the broker (see the log); its offset was not committed")]
    Infrastructure,
}

/// Consume jobs until `stop`, then drain.
pub async fn consume(
    syncer: Arc<Syncer>,
    options: WorkerOptions,
    stop: StopSignal,
) -> Result<(), WorkerError> {
    let settings = |group: String| ConsumerSettings {
        brokers: options.brokers.clone(),
        group,
        session_timeout: options.session_timeout,
    };
    let topics = &options.topics;
    let scheduled = Arc::new(jobs_consumer(
        &settings(topics.consumer_group()),
        &topics.jobs(),
    )?);
    let urgent = Arc::new(jobs_consumer(
        &settings(format!("{}.urgent", topics.consumer_group())),
        &topics.urgent_jobs(),
    )?);
    let fatal = Arc::new(AtomicBool::new(false));
    let tracker = OffsetTracker::default();
    let slots = Arc::new(Semaphore::new(options.concurrency.max(1)));
    let held = Arc::new(Semaphore::new(MAX_HELD_JOBS));
    let tenants = TenantSlots {
        per_tenant: options
            .tenant_concurrency
            .unwrap_or(options.concurrency.div_ceil(2))
            .max(1),
        map: Arc::default(),
    };
    let locks: ResourceLocks = Arc::default();
    let mut tasks = JoinSet::new();
    info!(group = %topics.consumer_group(), topic = %topics.jobs(), concurrency = options.concurrency, "worker started");
    loop {
        if stop.is_stopped() {
            break;
        }
        let in_memory = tokio::select! {
            p = held.clone().acquire_owned() => p.expect("semaphore is never closed"),
            _ = stop.stopped() => break,
        };
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p.expect("semaphore is never closed"),
            _ = stop.stopped() => break,
        };
        // Urgent jobs (resyncs) first whenever one is waiting.
        let (consumer, message) = tokio::select! {
            biased;
            _ = stop.stopped() => break,
            m = urgent.recv() => (urgent.clone(), m),
            m = scheduled.recv() => (scheduled.clone(), m),
        };
        while tasks.try_join_next().is_some() {}
        let message = match message {
            Ok(m) => m,
            Err(e) => {
                warn!("consumer: {e}");
                continue;
            }
        };
        let (topic, partition, offset) = (
            message.topic().to_string(),
            message.partition(),
            message.offset(),
        );
        let payload = message.payload().map(<[u8]>::to_vec).unwrap_or_default();
        drop(message);
        tracker.started(&topic, partition, offset);
        let job: Option<Job> = match serde_json::from_slice(&payload) {
            Ok(j) => Some(j),
            Err(e) => {
                error!(
                    partition,
                    offset, "skipping a job message that is not a valid job: {e}"
                );
                None
            }
        };
        let (syncer, tracker, stop, locks, fatal, slots, tenants) = (
            syncer.clone(),
            tracker.clone(),
            stop.clone(),
            locks.clone(),
            fatal.clone(),
            slots.clone(),
            tenants.clone(),
        );
        tasks.spawn(async move {
            let _in_memory = in_memory;
            let mut permit = Some(permit);
            let mut tenant_permit = None;
            if let Some(job) = &job {
                let until = job
                    .not_before
                    .and_then(|at| (at - chrono::Utc::now()).to_std().ok())
                    .unwrap_or_default();
                // Wait without a slot (and without the tenant's turn): a parked job never
                // keeps other jobs waiting.
                if until > HOLD_THRESHOLD {
                    drop(permit.take());
                    tokio::select! {
                        _ = tokio::time::sleep(until) => {}
                        // Stopping: the offset stays uncommitted and the job comes back.
                        _ = stop.stopped() => return,
                    }
                }
                let tenant = tenants.of(&job.tenant);
                tenant_permit = tenant.clone().try_acquire_owned().ok();
                if tenant_permit.is_none() {
                    // The tenant already uses its share of this worker: let other tenants' jobs
                    // have the slot meanwhile.
                    drop(permit.take());
                    tenant_permit = tokio::select! {
                        p = tenant.acquire_owned() => Some(p.expect("semaphore is never closed")),
                        _ = stop.stopped() => return,
                    };
                }
                if permit.is_none() {
                    permit = tokio::select! {
                        p = slots.acquire_owned() => Some(p.expect("semaphore is never closed")),
                        _ = stop.stopped() => return,
                    };
                }
            }
            let _permits = (permit, tenant_permit);
            if !handle(&syncer, job.as_ref(), stop.flag(), &locks).await {
                // The store or the broker is unreachable: leave the offset uncommitted so the
                // job is delivered again, and stop taking work.
                fatal.store(true, Ordering::Relaxed);
                stop.stop();
                return;
            }
            let next = tracker.finished(&topic, partition, offset);
            if let Err(e) = commit(&consumer, &topic, partition, next) {
                warn!(
                    partition,
                    offset = next,
                    "commit failed (the job may run again, harmlessly): {e}"
                );
            }
        });
    }
    info!(in_flight = tracker.in_flight(), "draining");
    while tasks.join_next().await.is_some() {}
    scheduled.unsubscribe();
    urgent.unsubscribe();
    drop(scheduled);
    drop(urgent);
    info!("worker stopped");
    if fatal.load(Ordering::Relaxed) {
        return Err(WorkerError::Infrastructure);
    }
    Ok(())
}

/// Run one job; false when infrastructure kept failing (do not commit).
async fn handle(
    syncer: &Syncer,
    job: Option<&Job>,
    stop: &AtomicBool,
    locks: &ResourceLocks,
) -> bool {
    let Some(job) = job else {
        return true;
    };
    let lock = {
        let mut map = locks.lock().await;
        map.entry(format!("{}/{}", job.connection, job.resource))
            .or_default()
            .clone()
    };
    let _guard = lock.lock().await;
    let mut attempt = 0;
    loop {
        attempt += 1;
        match syncer.run_job(job, stop).await {
            Ok(outcome) => {
                match &outcome {
                    SliceOutcome::Completed(c) => {
                        info!(job = %job.job_id, created = c.created, updated = c.updated, deleted = c.deleted, dead_lettered = c.dead_lettered, "run completed")
                    }
                    SliceOutcome::Continued(next) => {
                        info!(job = %job.job_id, next = %next.job_id, "slice done, continuation enqueued")
                    }
                    SliceOutcome::Failed(reason) => warn!(job = %job.job_id, %reason, "run failed"),
                    SliceOutcome::Skipped(reason) => info!(job = %job.job_id, %reason, "skipped"),
                    SliceOutcome::Parked(next) => {
                        info!(job = %job.job_id, next = %next.job_id, not_before = ?next.not_before, "parked: rate limited")
                    }
                }
                return true;
            }
            Err(e) if attempt < 4 => {
                warn!(job = %job.job_id, attempt, "slice failed, retrying: {e}");
                tokio::time::sleep(Duration::from_millis(500 * 2u64.pow(attempt))).await;
            }
            Err(e) => {
                error!(job = %job.job_id, "slice failed {attempt} times: {e}");
                return false;
            }
        }
    }
}
