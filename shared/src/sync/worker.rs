//! The jobs consumer loop: many jobs at once (bounded), urgent jobs (resyncs) before
//! scheduled ones, a job's offset committed only after its slice is published and
//! checkpointed, and a drain on stop (slices checkpoint, offsets commit, the consumer
//! leaves the group).
//!
//! Faults are survived, not exited or frozen: a slice that cannot reach the state store or
//! the broker is retried with backoff for as long as it takes (its offset stays
//! uncommitted meanwhile, the process reports not-ready); a job that panics fails its run
//! with a `run.failed` status event naming the panic, and its offset is settled so the
//! partition's commits go on.

use std::collections::{BTreeSet, HashMap};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use futures::FutureExt;
use rdkafka::consumer::Consumer;
use rdkafka::Message;
use tokio::sync::{Mutex, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tracing::{error, info, warn};

use super::{SliceOutcome, SyncError, Syncer};
use crate::bus::kafka::{
    commit, jobs_consumer, unowned_partitions, BusError, ConsumerSettings, JobsConsumer,
    OffsetTracker,
};
use crate::bus::{Job, Topics};
use crate::readiness::{self, BROKER, STORE};

/// One async lock per (connection, resource): two slices of one resource never overlap.
type ResourceLocks = Arc<Mutex<HashMap<String, Arc<Mutex<()>>>>>;

/// How often the jobs topics' consumer lag is measured for metrics.
const LAG_EVERY: Duration = Duration::from_secs(15);

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
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
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
    /// This process's static group membership id (`group.instance.id`); None joins as a
    /// dynamic member. See `ConsumerSettings::instance_id`.
    pub instance_id: Option<String>,
}

/// A stable id for this worker process in the consumer group (`TRIBUTARY_WORKER_INSTANCE_ID=auto`):
/// the host name and the process id.
pub fn default_instance_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".into());
    format!("{host}-{}", std::process::id())
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            brokers: "127.0.0.1:9092".into(),
            topics: Topics::new("tributary"),
            session_timeout: Duration::from_secs(10),
            concurrency: 8,
            tenant_concurrency: None,
            instance_id: None,
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

    pub(crate) async fn stopped(&self) {
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
}

/// Backoff of a slice that cannot reach the store or the broker: from half a second,
/// doubling, at most this long between attempts (so a fleet resumes within seconds of
/// the dependency's return).
const RETRY_MAX_DELAY: Duration = Duration::from_secs(5);

/// How often the consumer checks for jobs-topic partitions nobody in the group consumes.
const UNOWNED_CHECK_EVERY: Duration = Duration::from_secs(15);

pub(crate) fn retry_delays() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(RETRY_MAX_DELAY)
        .with_jitter()
        .without_max_times()
        .build()
}

/// What one job's task needs, shared by all of them.
#[derive(Clone)]
struct TaskContext {
    syncer: Arc<Syncer>,
    tracker: OffsetTracker,
    stop: StopSignal,
    locks: ResourceLocks,
    slots: Arc<Semaphore>,
    tenants: TenantSlots,
}

/// One consumed job message, with where it came from.
struct Delivery {
    consumer: Arc<JobsConsumer>,
    topic: String,
    partition: i32,
    offset: i64,
    /// None: the message is not a valid job (skipped, its offset settled).
    job: Option<Job>,
}

/// Consume jobs until `stop`, then drain.
pub async fn consume(
    syncer: Arc<Syncer>,
    options: WorkerOptions,
    stop: StopSignal,
) -> Result<(), WorkerError> {
    // Each consumer its own member id (brokers may key static members by id alone).
    let settings = |group: String, suffix: &str| ConsumerSettings {
        brokers: options.brokers.clone(),
        group,
        session_timeout: options.session_timeout,
        instance_id: options
            .instance_id
            .as_ref()
            .map(|id| format!("{id}{suffix}")),
    };
    let topics = &options.topics;
    let scheduled = Arc::new(jobs_consumer(
        &settings(topics.consumer_group(), ""),
        &topics.jobs(),
    )?);
    let urgent_group = format!("{}.urgent", topics.consumer_group());
    let urgent = Arc::new(jobs_consumer(
        &settings(urgent_group.clone(), ".urgent"),
        &topics.urgent_jobs(),
    )?);
    let helpers = Helpers::start(&scheduled, &urgent, topics, urgent_group);
    let ctx = TaskContext {
        syncer,
        tracker: OffsetTracker::default(),
        stop: stop.clone(),
        locks: Arc::default(),
        slots: Arc::new(Semaphore::new(options.concurrency.max(1))),
        tenants: TenantSlots {
            per_tenant: options
                .tenant_concurrency
                .unwrap_or(options.concurrency.div_ceil(2))
                .max(1),
            map: Arc::default(),
        },
    };
    let held = Arc::new(Semaphore::new(MAX_HELD_JOBS));
    let mut tasks = JoinSet::new();
    info!(group = %topics.consumer_group(), topic = %topics.jobs(), concurrency = options.concurrency, instance = ?options.instance_id, "worker started");
    loop {
        if stop.is_stopped() {
            break;
        }
        let in_memory = tokio::select! {
            p = held.clone().acquire_owned() => p.expect("semaphore is never closed"),
            _ = stop.stopped() => break,
        };
        let permit = tokio::select! {
            p = ctx.slots.clone().acquire_owned() => p.expect("semaphore is never closed"),
            _ = stop.stopped() => break,
        };
        // Urgent jobs (resyncs) first whenever one is waiting.
        let (consumer, message) = tokio::select! {
            biased;
            _ = stop.stopped() => break,
            m = urgent.recv() => (urgent.clone(), m),
            m = scheduled.recv() => (scheduled.clone(), m),
        };
        reap(&mut tasks);
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
        let job: Option<Job> = match serde_json::from_slice(message.payload().unwrap_or_default()) {
            Ok(j) => Some(j),
            Err(e) => {
                error!(
                    partition,
                    offset, "skipping a job message that is not a valid job: {e}"
                );
                None
            }
        };
        drop(message);
        ctx.tracker.started(&topic, partition, offset);
        let delivery = Delivery {
            consumer,
            topic,
            partition,
            offset,
            job,
        };
        tasks.spawn(run_task(ctx.clone(), delivery, in_memory, permit));
    }
    info!(in_flight = ctx.tracker.in_flight(), "draining");
    while let Some(done) = tasks.join_next().await {
        if let Err(e) = done {
            // Panics are caught inside the task; only a cancelled task gets here.
            warn!("a job task ended abnormally: {e}");
        }
    }
    helpers.stop().await;
    scheduled.unsubscribe();
    urgent.unsubscribe();
    drop(scheduled);
    drop(urgent);
    info!("worker stopped");
    Ok(())
}

/// The tasks beside the loop that read the consumers: the lag reporter (metrics) and the
/// unowned-partition watch.
struct Helpers {
    stops: Vec<tokio::sync::oneshot::Sender<()>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Helpers {
    fn start(
        scheduled: &Arc<JobsConsumer>,
        urgent: &Arc<JobsConsumer>,
        topics: &Topics,
        urgent_group: String,
    ) -> Helpers {
        let (stop_lag, lag_stopped) = tokio::sync::oneshot::channel::<()>();
        let consumers = [scheduled.clone(), urgent.clone()];
        let lag = crate::bus::lag::spawn_lag_reporter(&consumers, LAG_EVERY, lag_stopped);
        let (stop_watch, watch_stopped) = tokio::sync::oneshot::channel::<()>();
        let watched = vec![
            (scheduled.clone(), topics.consumer_group(), topics.jobs()),
            (urgent.clone(), urgent_group, topics.urgent_jobs()),
        ];
        let watch = tokio::spawn(watch_unowned(watched, watch_stopped));
        Helpers {
            stops: vec![stop_lag, stop_watch],
            tasks: vec![lag, watch],
        }
    }

    /// The helpers hold the consumers too: they end here (after any broker call in
    /// progress), so the loop closes the consumers while the broker is still there. A
    /// consumer closed later, by a task the runtime drops after its broker is gone, waits
    /// forever for its leave-group answer.
    async fn stop(self) {
        drop(self.stops);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Collect finished tasks. A panic is caught inside each task (so its job is failed and
/// its offset settled); a JoinError here would be a bug in the task wrapper itself.
fn reap(tasks: &mut JoinSet<()>) {
    while let Some(done) = tasks.try_join_next() {
        if let Err(e) = done {
            error!("a job task ended abnormally: {e}");
        }
    }
}

/// One job's task: wait for its not-before time and its tenant's turn (without a slot),
/// run it, then settle its offset. Returns early (offset uncommitted: the job comes back)
/// only when the worker stops first.
async fn run_task(
    ctx: TaskContext,
    delivery: Delivery,
    in_memory: OwnedSemaphorePermit,
    permit: OwnedSemaphorePermit,
) {
    let _in_memory = in_memory;
    let mut permit = Some(permit);
    let mut tenant_permit = None;
    if let Some(job) = &delivery.job {
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
                _ = ctx.stop.stopped() => return,
            }
        }
        let tenant = ctx.tenants.of(&job.tenant);
        tenant_permit = tenant.clone().try_acquire_owned().ok();
        if tenant_permit.is_none() {
            // The tenant already uses its share of this worker: let other tenants' jobs
            // have the slot meanwhile.
            drop(permit.take());
            tenant_permit = tokio::select! {
                p = tenant.acquire_owned() => Some(p.expect("semaphore is never closed")),
                _ = ctx.stop.stopped() => return,
            };
        }
        if permit.is_none() {
            permit = tokio::select! {
                p = ctx.slots.clone().acquire_owned() => Some(p.expect("semaphore is never closed")),
                _ = ctx.stop.stopped() => return,
            };
        }
    }
    let _permits = (permit, tenant_permit);
    if let Some(job) = &delivery.job {
        if !handle(&ctx, job).await {
            // Stopped while the store or the broker was unreachable: leave the offset
            // uncommitted so the job is delivered again.
            return;
        }
    }
    let next = ctx
        .tracker
        .finished(&delivery.topic, delivery.partition, delivery.offset);
    commit_settled(delivery.consumer, delivery.topic, delivery.partition, next).await;
}

/// Commit a partition's settled offset off the async runtime (a synchronous commit waits
/// for the broker, which may be away), retrying a few times; a commit that still fails
/// only means the job may be delivered again, where it is skipped as already done.
async fn commit_settled(consumer: Arc<JobsConsumer>, topic: String, partition: i32, next: i64) {
    let mut delays = retry_delays().take(4);
    loop {
        let (c, t) = (consumer.clone(), topic.clone());
        let result = tokio::task::spawn_blocking(move || commit(&c, &t, partition, next)).await;
        let error = match result {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        match delays.next() {
            Some(wait) => tokio::time::sleep(wait).await,
            None => {
                warn!(
                    partition,
                    offset = next,
                    "commit failed (the job may run again, harmlessly): {error}"
                );
                return;
            }
        }
    }
}

/// Run one job under its (connection, resource) lock, catching a panic: true when the job
/// is settled (done, failed, skipped, or failed because it panicked), false when the worker
/// stopped before it could be (do not commit).
async fn handle(ctx: &TaskContext, job: &Job) -> bool {
    // A fetch by id never waits for a run of its resource (a long full run holds the
    // lock for its whole slice): its commit is ordered by the resource's sequence instead.
    let key = match job.mode {
        crate::domain::RunMode::Fetch => job.job_id.clone(),
        _ => format!("{}/{}", job.connection, job.resource),
    };
    let lock = {
        let mut map = ctx.locks.lock().await;
        if map.len() >= MAX_HELD_JOBS {
            // Forget the resources no job of this worker holds or waits for.
            map.retain(|_, l| Arc::strong_count(l) > 1);
        }
        map.entry(key).or_default().clone()
    };
    let _guard = lock.lock().await;
    match AssertUnwindSafe(run_until_settled(&ctx.syncer, job, &ctx.stop))
        .catch_unwind()
        .await
    {
        Ok(settled) => settled,
        Err(panic) => {
            let reason = format!(
                "the worker panicked running this job ({}; connection {}, resource {}, run {}, slice {}); this is a bug, please report it",
                panic_message(panic.as_ref()),
                job.connection,
                job.resource,
                job.run_id,
                job.slice
            );
            error!(job = %job.job_id, "{reason}");
            fail_panicked(&ctx.syncer, job, &reason, &ctx.stop).await
        }
    }
}

/// The text a panic carried (`panic!("...")` and `expect` give a string).
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// Run the slice, retrying with backoff for as long as the store or the broker cannot be
/// reached (the job is not done, and nothing it did is lost: a retry resumes from the
/// checkpoint and publishes under the same event ids). False only when stopping.
async fn run_until_settled(syncer: &Syncer, job: &Job, stop: &StopSignal) -> bool {
    let mut delays = retry_delays();
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        match syncer.run_job(job, stop.flag()).await {
            Ok(outcome) => {
                readiness::set_ready(STORE, true);
                if !matches!(outcome, SliceOutcome::Skipped(_)) {
                    readiness::set_ready(BROKER, true);
                }
                if attempt > 1 {
                    info!(job = %job.job_id, attempt, "slice went through after its dependencies came back");
                }
                log_outcome(job, &outcome);
                return true;
            }
            Err(e) => {
                let component = unreachable_component(&e);
                readiness::set_ready(component, false);
                if stop.is_stopped() {
                    warn!(job = %job.job_id, "stopping while the {component} is unreachable: the job stays uncommitted and runs again: {e}");
                    return false;
                }
                let wait = delays.next().unwrap_or(RETRY_MAX_DELAY);
                warn!(job = %job.job_id, attempt, retry_in_ms = wait.as_millis() as u64, "slice could not reach the {component}, retrying: {e}");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.stopped() => return false,
                }
            }
        }
    }
}

/// Which dependency a slice error says is unreachable.
fn unreachable_component(e: &SyncError) -> &'static str {
    match e {
        SyncError::Bus(_) => BROKER,
        // Rate budgets live in the store on a fleet.
        SyncError::Store(_) | SyncError::Ledger(_) => STORE,
    }
}

fn log_outcome(job: &Job, outcome: &SliceOutcome) {
    match outcome {
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
}

/// A job panicked: mark its run failed (which also releases its lease and ends the run's
/// checkpoint, so its continuations are skipped) and say so on the status topic, retrying
/// while the store or the broker is unreachable. False only when stopping first (the job
/// is delivered again, and fails the same way elsewhere).
async fn fail_panicked(syncer: &Syncer, job: &Job, reason: &str, stop: &StopSignal) -> bool {
    let mut delays = retry_delays();
    loop {
        match syncer.fail_panicked(job, reason).await {
            Ok(()) => return true,
            Err(e) => {
                readiness::set_ready(unreachable_component(&e), false);
                warn!(job = %job.job_id, "cannot record the panicked job's failure yet, retrying: {e}");
                tokio::select! {
                    _ = tokio::time::sleep(delays.next().unwrap_or(RETRY_MAX_DELAY)) => {}
                    _ = stop.stopped() => return false,
                }
            }
        }
    }
}

/// Every little while, look for jobs-topic partitions that have jobs waiting and no
/// consumer in the group; when one stays so across two checks (a rebalance in progress
/// leaves partitions unowned for a moment), warn, report them for readiness and metrics,
/// and rejoin the group so that a new rebalance hands them out.
/// It ends when `stop` fires (its sender dropped), after any check in progress, so that
/// it no longer holds the consumers once its task has ended.
async fn watch_unowned(
    consumers: Vec<(Arc<JobsConsumer>, String, String)>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let mut before: HashMap<String, BTreeSet<i32>> = HashMap::new();
    let mut every = tokio::time::interval(UNOWNED_CHECK_EVERY);
    every.tick().await;
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = &mut stop => return,
        }
        for (consumer, group, topic) in &consumers {
            let (c, g, t) = (consumer.clone(), group.clone(), topic.clone());
            let found = tokio::task::spawn_blocking(move || {
                unowned_partitions(&c, &g, &t, Duration::from_secs(10))
            })
            .await;
            let now: BTreeSet<i32> = match found {
                Ok(Ok(p)) => p.into_iter().collect(),
                Ok(Err(e)) => {
                    tracing::debug!(%topic, "cannot check the group's assignment: {e}");
                    continue;
                }
                Err(_) => continue,
            };
            let stuck: Vec<i32> = now
                .intersection(before.get(topic).unwrap_or(&BTreeSet::new()))
                .copied()
                .collect();
            readiness::set_unowned_partitions(topic, &stuck);
            if stuck.is_empty() {
                before.insert(topic.clone(), now);
                continue;
            }
            warn!(%topic, %group, partitions = ?stuck, "jobs wait on partitions that no worker in the group consumes: rejoining the group to rebalance");
            // Leaving and joining again starts a new rebalance among the members that answer
            // (a broker that kept lost members hands their partitions out again). Jobs this
            // worker runs meanwhile finish; their offsets may not commit, and a redelivery is
            // skipped as already done or replays under the same event ids.
            let (c, t) = (consumer.clone(), topic.clone());
            let rejoined = tokio::task::spawn_blocking(move || {
                c.unsubscribe();
                c.subscribe(&[&t])
            })
            .await;
            if let Ok(Err(e)) = rejoined {
                warn!(%topic, "cannot rejoin the group: {e}");
            }
            before.remove(topic);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_future_is_caught_with_its_message() {
        let missing = std::hint::black_box(None::<u32>);
        let caught = AssertUnwindSafe(async move { missing.expect("the value was checked") })
            .catch_unwind()
            .await
            .unwrap_err();
        assert_eq!(panic_message(caught.as_ref()), "the value was checked");
        let formatted =
            std::panic::catch_unwind(|| panic!("page {} of {}", 3, "contacts")).unwrap_err();
        assert_eq!(panic_message(formatted.as_ref()), "page 3 of contacts");
    }

    #[test]
    fn retries_back_off_up_to_the_ceiling_and_never_give_up() {
        let delays: Vec<Duration> = retry_delays().take(50).collect();
        assert_eq!(delays.len(), 50, "no attempt limit");
        assert!(delays[0] >= Duration::from_millis(500));
        assert!(
            delays.iter().all(|d| *d <= RETRY_MAX_DELAY * 2),
            "{delays:?}"
        );
        assert!(delays[49] >= RETRY_MAX_DELAY, "{delays:?}");
    }

    #[test]
    fn a_stable_instance_id_per_process() {
        let id = default_instance_id();
        assert_eq!(id, default_instance_id());
        assert!(id.ends_with(&format!("-{}", std::process::id())), "{id}");
    }
}
