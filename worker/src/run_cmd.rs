//! `tributary-worker run`: a stateless worker in the jobs consumer group. Runs
//! many jobs at once, commits a job's offset only after its slice is published
//! and checkpointed, and drains on SIGTERM (slices checkpoint, offsets commit,
//! the consumer leaves the group, exit 0).

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rdkafka::consumer::Consumer;
use rdkafka::Message;
use tokio::sync::{Mutex, Notify, Semaphore};
use tokio::task::JoinSet;
use tracing::{error, info, warn};
use tributary::bus::kafka::{
    commit, ensure_topics, jobs_consumer, ConsumerSettings, OffsetTracker,
};
use tributary::bus::{Job, Publisher, Topics};
use tributary::config::Settings;
use tributary::engine::RunOptions;
use tributary::mapping::models::model_names;
use tributary::store::Store;
use tributary::sync::{SliceOutcome, SyncSettings, Syncer};

pub async fn run() -> ExitCode {
    match serve().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// One async lock per (connection, resource): two slices of one resource never overlap.
type ResourceLocks = Arc<Mutex<HashMap<String, Arc<Mutex<()>>>>>;

async fn serve() -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    let cipher = settings.cipher()?;
    let store = Store::connect(&settings.database_url, cipher)
        .await
        .with_context(|| {
            format!(
                "TRIBUTARY_DATABASE_URL {}",
                redact_url(&settings.database_url)
            )
        })?;
    let mut topics = Topics::new(&settings.topic_prefix);
    topics.model_template = settings.topic_template.clone();
    let mut wanted = vec![
        (topics.jobs(), settings.jobs_partitions),
        (topics.status(), 1),
        (topics.dead_letters(), 1),
    ];
    wanted.extend(model_names().map(|m| (topics.model(m), 3)));
    ensure_topics(&settings.kafka_brokers, &wanted)
        .await
        .with_context(|| format!("TRIBUTARY_KAFKA_BROKERS {}", settings.kafka_brokers))?;
    let publisher = Publisher::new(&settings.kafka_brokers)?;
    let syncer = Arc::new(Syncer::new(
        store,
        publisher,
        SyncSettings {
            specs_dir: settings.specs_dir.clone(),
            topics: topics.clone(),
            slice_max_pages: settings.slice_max_pages,
            slice_max_duration: settings.slice_max_duration,
            emit_remote_data: settings.emit_remote_data,
            tombstones: settings.tombstones,
            engine: RunOptions {
                allow_private_hosts: settings.allow_private_hosts,
                max_wait: settings.max_wait,
                ..RunOptions::default()
            },
        },
    ));
    let consumer = Arc::new(jobs_consumer(
        &ConsumerSettings {
            brokers: settings.kafka_brokers.clone(),
            group: topics.consumer_group(),
            session_timeout: settings.session_timeout,
        },
        &topics.jobs(),
    )?);
    if let Some(addr) = &settings.health_addr {
        crate::health::serve(addr).await?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = Arc::new(Notify::new());
    watch_signals(stop.clone(), stopping.clone())?;
    let fatal = Arc::new(AtomicBool::new(false));
    let tracker = OffsetTracker::default();
    let slots = Arc::new(Semaphore::new(settings.worker_concurrency.max(1)));
    let locks: ResourceLocks = Arc::default();
    let mut tasks = JoinSet::new();
    info!(group = %topics.consumer_group(), topic = %topics.jobs(), concurrency = settings.worker_concurrency, "worker started");
    eprintln!(
        "worker consuming {} as {}",
        topics.jobs(),
        topics.consumer_group()
    );
    loop {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p.expect("semaphore is never closed"),
            _ = stopping.notified() => break,
        };
        let message = tokio::select! {
            m = consumer.recv() => m,
            _ = stopping.notified() => break,
        };
        // Reap finished tasks so the set does not grow.
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
        tracker.started(&topic, partition, offset);
        let (syncer, consumer, tracker, stop, locks, fatal, stopping) = (
            syncer.clone(),
            consumer.clone(),
            tracker.clone(),
            stop.clone(),
            locks.clone(),
            fatal.clone(),
            stopping.clone(),
        );
        tasks.spawn(async move {
            let _permit = permit;
            let done = handle(&syncer, &payload, &stop, &locks).await;
            if !done {
                // The store or the broker is unreachable: leave the offset uncommitted so the
                // job is delivered again, and stop taking work (a restart or another replica
                // picks it up).
                fatal.store(true, Ordering::Relaxed);
                stop.store(true, Ordering::Relaxed);
                stopping.notify_waiters();
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
    eprintln!("draining {} job(s)", tracker.in_flight());
    while tasks.join_next().await.is_some() {}
    consumer.unsubscribe();
    drop(consumer);
    info!("worker stopped");
    eprintln!("worker stopped");
    if fatal.load(Ordering::Relaxed) {
        anyhow::bail!("stopped after a job could not reach the state store or the broker (see the log); its offset was not committed");
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

fn watch_signals(stop: Arc<AtomicBool>, stopping: Arc<Notify>) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        info!("signal received: finishing current slices");
        stop.store(true, Ordering::Relaxed);
        stopping.notify_waiters();
        // A second notification covers a loop that was between awaits.
        tokio::time::sleep(Duration::from_millis(50)).await;
        stopping.notify_waiters();
    });
    Ok(())
}

/// A database URL without its password, for messages.
fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}
