//! The jobs consumer loop: many jobs at once (bounded), urgent jobs (resyncs) before
//! scheduled ones, a job's offset committed only after its slice is published and
//! checkpointed, and a drain on stop (slices checkpoint, offsets commit, the consumer
//! leaves the group).
//!
//! Faults are survived, not exited or frozen: a slice that cannot reach the state store or
//! the broker is retried with backoff for as long as it takes (its offset stays
//! uncommitted meanwhile, the process reports not-ready); a job that panics fails its run
//! with a `run.failed` status event naming the panic, and its offset is settled so the
//! partition's commits go on (on RabbitMQ: it is delivered again up to the delivery limit,
//! then failed and dead-lettered).
//!
//! The loop and a job's task are the same whatever the bus; where jobs come from and how a
//! delivery is settled is per bus: `kafka.rs` (offsets) and `amqp.rs` (acknowledgements,
//! delay queues, claims).

mod amqp;
mod kafka;

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use futures::FutureExt;
use tokio::sync::{Mutex, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tracing::{error, info, warn};

use super::{SliceOutcome, SyncError, Syncer};
use crate::bus::amqp::AmqpJobSettings;
use crate::bus::kafka::BusError;
use crate::bus::{Job, Topics};
use crate::readiness::{self, BROKER, STORE};

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
    /// Jobs from RabbitMQ's queues instead of Kafka's topics (`TRIBUTARY_JOBS_BUS=rabbitmq`).
    pub amqp_jobs: Option<AmqpJobSettings>,
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
            amqp_jobs: None,
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
    stop: StopSignal,
    locks: ResourceLocks,
    slots: Arc<Semaphore>,
    tenants: TenantSlots,
    /// Jobs on RabbitMQ: how long a claim on a resource lasts (None: no claims, Kafka's
    /// partitions keep a tenant's jobs on one worker).
    claim_ttl: Option<Duration>,
}

/// One consumed job message, and how to settle it with its bus.
struct Delivery {
    settle: Settle,
    /// Err: the message is not a valid job (why).
    job: Result<Job, String>,
}

/// How a delivery is settled, per bus.
enum Settle {
    Kafka(kafka::KafkaSettle),
    Amqp(Box<amqp::AmqpSettle>),
}

impl Settle {
    /// The job is done (or failed, or skipped): commit its offset, or acknowledge it.
    async fn done(self) {
        match self {
            Settle::Kafka(k) => k.done().await,
            Settle::Amqp(a) => a.ack().await,
        }
    }

    /// The worker stops before the job could be settled: it must come again. (Kafka: the
    /// offset stays uncommitted; RabbitMQ: back to its queue.)
    async fn abandon(self) {
        if let Settle::Amqp(a) = self {
            a.requeue().await;
        }
    }

    /// A job that must wait: RabbitMQ takes it back to bring it again after `wait`
    /// (None); Kafka's jobs wait here (the settle handed back).
    async fn wait_at_broker(self, wait: Duration) -> Option<Settle> {
        match self {
            Settle::Amqp(a) => {
                a.delay(wait).await;
                None
            }
            kafka => Some(kafka),
        }
    }

    /// Whether a job that panicked is delivered again (RabbitMQ, before its last delivery)
    /// rather than failed at once (Kafka).
    fn may_retry(&self) -> bool {
        match self {
            Settle::Kafka(_) => false,
            Settle::Amqp(a) => a.may_retry(),
        }
    }

    async fn retry(self) {
        match self {
            Settle::Kafka(k) => k.done().await,
            Settle::Amqp(a) => a.requeue().await,
        }
    }

    /// The job will not run: skipped past (Kafka) or dead-lettered with the reason.
    async fn give_up(self, reason: &str) {
        match self {
            Settle::Kafka(k) => k.done().await,
            Settle::Amqp(a) => a.bury(reason).await,
        }
    }
}

/// Where jobs come from.
enum JobSource {
    Kafka(kafka::KafkaJobs),
    Amqp(Box<amqp::AmqpJobsIn>),
}

impl JobSource {
    async fn open(options: &WorkerOptions) -> Result<JobSource, WorkerError> {
        Ok(match &options.amqp_jobs {
            Some(amqp) => JobSource::Amqp(Box::new(amqp::AmqpJobsIn::open(options, amqp).await?)),
            None => JobSource::Kafka(kafka::KafkaJobs::open(options)?),
        })
    }

    /// The next delivery; None when stopping.
    async fn next(&mut self, stop: &StopSignal) -> Option<Delivery> {
        match self {
            JobSource::Kafka(k) => k.next(stop).await,
            JobSource::Amqp(a) => tokio::select! {
                biased;
                _ = stop.stopped() => None,
                d = a.next() => Some(d),
            },
        }
    }

    async fn close(self) {
        match self {
            JobSource::Kafka(k) => k.close().await,
            JobSource::Amqp(a) => (*a).close().await,
        }
    }
}

/// Consume jobs until `stop`, then drain.
pub async fn consume(
    syncer: Arc<Syncer>,
    options: WorkerOptions,
    stop: StopSignal,
) -> Result<(), WorkerError> {
    let mut source = JobSource::open(&options).await?;
    let ctx = TaskContext {
        syncer,
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
        claim_ttl: options.amqp_jobs.as_ref().map(|a| a.claim_ttl),
    };
    let held = Arc::new(Semaphore::new(MAX_HELD_JOBS));
    let mut tasks = JoinSet::new();
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
        let Some(delivery) = source.next(&stop).await else {
            break;
        };
        reap(&mut tasks);
        tasks.spawn(run_task(ctx.clone(), delivery, in_memory, permit));
    }
    info!(in_flight = tasks.len(), "draining");
    while let Some(done) = tasks.join_next().await {
        if let Err(e) = done {
            // Panics are caught inside the task; only a cancelled task gets here.
            warn!("a job task ended abnormally: {e}");
        }
    }
    source.close().await;
    info!("worker stopped");
    Ok(())
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

/// One job's task: wait for its not-before time and its tenant's turn (without a slot, or
/// at the broker), run it, then settle it. Returns early (unsettled: the job comes back)
/// only when the worker stops first.
async fn run_task(
    ctx: TaskContext,
    delivery: Delivery,
    in_memory: OwnedSemaphorePermit,
    permit: OwnedSemaphorePermit,
) {
    let _in_memory = in_memory;
    let Delivery { settle, job } = delivery;
    let job = match job {
        Ok(job) => job,
        Err(reason) => return settle.give_up(&reason).await,
    };
    let Some((settle, permits)) = take_turn(&ctx, &job, settle, permit).await else {
        return;
    };
    let claim = match ctx.claim_ttl {
        Some(ttl) if job.mode != crate::domain::RunMode::Fetch => {
            match amqp::Claim::take(ctx.syncer.store(), &job, ttl).await {
                Ok(Some(claim)) => Some(claim),
                Ok(None) => {
                    let _ = settle.wait_at_broker(BUSY_RESOURCE_WAIT).await;
                    return;
                }
                Err(e) => {
                    warn!(job = %job.job_id, "cannot claim the job's resource ({e}): trying again later");
                    readiness::set_ready(STORE, false);
                    let _ = settle.wait_at_broker(BUSY_RESOURCE_WAIT).await;
                    return;
                }
            }
        }
        _ => None,
    };
    let ran = handle(&ctx, &job).await;
    drop(permits);
    if let Some(claim) = claim {
        claim.release().await;
    }
    match ran {
        Ran::Settled => settle.done().await,
        Ran::Stopped => settle.abandon().await,
        Ran::Panicked(_) if settle.may_retry() => settle.retry().await,
        Ran::Panicked(reason) => {
            if fail_panicked(&ctx.syncer, &job, &reason, &ctx.stop).await {
                settle.give_up(&reason).await
            } else {
                settle.abandon().await
            }
        }
    }
}

/// How long a job whose resource another worker's job holds waits (at the broker).
const BUSY_RESOURCE_WAIT: Duration = Duration::from_secs(1);

/// Wait for the job's not-before time and its tenant's turn, then hold a slot and the
/// tenant's permit. A bus that keeps waiting jobs (RabbitMQ) gets the job back instead,
/// to bring it again later: None then, or when the worker stops first.
async fn take_turn(
    ctx: &TaskContext,
    job: &Job,
    settle: Settle,
    permit: OwnedSemaphorePermit,
) -> Option<(Settle, (OwnedSemaphorePermit, OwnedSemaphorePermit))> {
    let mut permit = Some(permit);
    let until = job
        .not_before
        .and_then(|at| (at - chrono::Utc::now()).to_std().ok())
        .unwrap_or_default();
    let settle = match until >= PARK_AT_BROKER {
        true => settle.wait_at_broker(until).await?,
        false => settle,
    };
    // Wait without a slot (and without the tenant's turn): a parked job never keeps
    // other jobs waiting.
    if until > HOLD_THRESHOLD {
        drop(permit.take());
        tokio::select! {
            _ = tokio::time::sleep(until) => {}
            // Stopping: the job comes back.
            _ = ctx.stop.stopped() => { settle.abandon().await; return None }
        }
    }
    let tenant = ctx.tenants.of(&job.tenant);
    let mut tenant_permit = tenant.clone().try_acquire_owned().ok();
    let settle = match tenant_permit {
        Some(_) => settle,
        None => {
            // At the broker, its deliveries would not hold the prefetch that other
            // tenants' jobs need.
            let settle = settle.wait_at_broker(BUSY_RESOURCE_WAIT).await?;
            // The tenant already uses its share of this worker: let other tenants' jobs
            // have the slot meanwhile.
            drop(permit.take());
            tenant_permit = tokio::select! {
                p = tenant.acquire_owned() => Some(p.expect("semaphore is never closed")),
                _ = ctx.stop.stopped() => { settle.abandon().await; return None }
            };
            settle
        }
    };
    if permit.is_none() {
        permit = tokio::select! {
            p = ctx.slots.clone().acquire_owned() => Some(p.expect("semaphore is never closed")),
            _ = ctx.stop.stopped() => { settle.abandon().await; return None }
        };
    }
    Some((settle, (permit?, tenant_permit?)))
}

/// Waits this long or longer are spent in a delay queue when the bus has them.
const PARK_AT_BROKER: Duration = Duration::from_secs(1);

/// How a job's run ended for the worker.
enum Ran {
    /// Done, failed, skipped: settle it.
    Settled,
    /// The worker stopped first (the store or the broker unreachable): it must come again.
    Stopped,
    /// It panicked (the reason says where).
    Panicked(String),
}

/// Run one job under its (connection, resource) lock, catching a panic.
async fn handle(ctx: &TaskContext, job: &Job) -> Ran {
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
        Ok(true) => Ran::Settled,
        Ok(false) => Ran::Stopped,
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
            Ran::Panicked(reason)
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
