//! Jobs from Kafka: two consumers in the group (urgent jobs first), a job's offset
//! committed once it is settled and never past a job of its partition still running
//! (`OffsetTracker`), the lag reporter and the watch for partitions nobody consumes.
//! A job waiting (for its not-before time, its tenant's turn) is held in memory.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::Consumer;
use rdkafka::Message;
use tracing::{error, info, warn};

use super::{retry_delays, Delivery, Settle, StopSignal, WorkerError, WorkerOptions};
use crate::bus::kafka::{
    commit, jobs_consumer, unowned_partitions, ConsumerSettings, JobsConsumer, OffsetTracker,
};
use crate::bus::{Job, Topics};
use crate::readiness;

/// How often the jobs topics' consumer lag is measured for metrics.
const LAG_EVERY: Duration = Duration::from_secs(15);

/// How often the consumer checks for jobs-topic partitions nobody in the group consumes.
const UNOWNED_CHECK_EVERY: Duration = Duration::from_secs(15);

/// The jobs topics' consumers and what runs beside them.
pub(super) struct KafkaJobs {
    scheduled: Arc<JobsConsumer>,
    urgent: Arc<JobsConsumer>,
    tracker: OffsetTracker,
    helpers: Helpers,
}

/// Where one job came from: committed past once settled.
pub(super) struct KafkaSettle {
    consumer: Arc<JobsConsumer>,
    tracker: OffsetTracker,
    topic: String,
    partition: i32,
    offset: i64,
}

impl KafkaJobs {
    pub(super) fn open(options: &WorkerOptions) -> Result<KafkaJobs, WorkerError> {
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
        info!(group = %topics.consumer_group(), topic = %topics.jobs(), concurrency = options.concurrency, instance = ?options.instance_id, "worker started");
        Ok(KafkaJobs {
            scheduled,
            urgent,
            tracker: OffsetTracker::default(),
            helpers,
        })
    }

    /// The next job message (urgent ones first whenever one is waiting); None on stop.
    pub(super) async fn next(&mut self, stop: &StopSignal) -> Option<Delivery> {
        loop {
            let (consumer, message) = tokio::select! {
                biased;
                _ = stop.stopped() => return None,
                m = self.urgent.recv() => (self.urgent.clone(), m),
                m = self.scheduled.recv() => (self.scheduled.clone(), m),
            };
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
            let job = serde_json::from_slice::<Job>(message.payload().unwrap_or_default())
                .map_err(|e| format!("not a valid job: {e}"));
            if let Err(e) = &job {
                error!(partition, offset, "skipping a job message that is {e}");
            }
            drop(message);
            self.tracker.started(&topic, partition, offset);
            let settle = Settle::Kafka(KafkaSettle {
                consumer,
                tracker: self.tracker.clone(),
                topic,
                partition,
                offset,
            });
            return Some(Delivery { settle, job });
        }
    }

    /// After the drain: the helpers end, then the consumers leave the group.
    pub(super) async fn close(self) {
        self.helpers.stop().await;
        self.scheduled.unsubscribe();
        self.urgent.unsubscribe();
    }
}

impl KafkaSettle {
    /// The job is settled: commit as far as its partition's finished jobs allow.
    pub(super) async fn done(self) {
        let next = self
            .tracker
            .finished(&self.topic, self.partition, self.offset);
        commit_settled(self.consumer, self.topic, self.partition, next).await;
    }
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
