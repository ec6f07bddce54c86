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

#[derive(Debug, Clone)]
pub struct WorkerOptions {
    pub brokers: String,
    pub topics: Topics,
    pub session_timeout: Duration,
    pub concurrency: usize,
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
    let locks: ResourceLocks = Arc::default();
    let mut tasks = JoinSet::new();
    info!(group = %topics.consumer_group(), topic = %topics.jobs(), concurrency = options.concurrency, "worker started");
    loop {
        if stop.is_stopped() {
            break;
        }
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
        let (syncer, tracker, stop, locks, fatal) = (
            syncer.clone(),
            tracker.clone(),
            stop.clone(),
            locks.clone(),
            fatal.clone(),
        );
        tasks.spawn(async move {
            let _permit = permit;
            if !handle(&syncer, &payload, stop.flag(), &locks).await {
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

/// Run one job message; false when infrastructure kept failing (do not commit).
async fn handle(syncer: &Syncer, payload: &[u8], stop: &AtomicBool, locks: &ResourceLocks) -> bool {
    let job: Job = match serde_json::from_slice(payload) {
        Ok(j) => j,
        Err(e) => {
            error!("skipping a job message that is not a valid job: {e}");
            return true;
        }
    };
    if let Some(at) = job.not_before {
        let wait = (at - chrono::Utc::now()).to_std().unwrap_or(Duration::ZERO);
        tokio::time::sleep(wait.min(Duration::from_secs(300))).await;
    }
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
        match syncer.run_job(&job, stop).await {
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
