//! Jobs from RabbitMQ's quorum queues (`TRIBUTARY_JOBS_BUS=rabbitmq`): urgent jobs first,
//! `prefetch` = the worker's concurrency per queue, a job acknowledged only once settled.
//!
//! Unacknowledged deliveries count against the prefetch, so a job that must wait is not
//! held here as it is with Kafka: it goes to a delay queue (confirmed) and is acknowledged,
//! and comes back when the wait is over. That covers a not-before time, a tenant using its
//! share of the worker, and a (connection, resource) whose claim another worker holds
//! (any worker may take any job here, so one job per resource in flight is a claim in the
//! store, not a partition's owner). A job that panics is returned to its queue until its
//! last delivery, then dead-lettered with the panic as its reason; a message that is not a
//! job is dead-lettered at once.

use std::sync::Arc;
use std::time::Duration;

use lapin::options::{BasicAckOptions, BasicNackOptions, BasicRejectOptions};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::{Delivery, Settle, WorkerError, WorkerOptions};
use crate::bus::amqp::consume::{QueueConsumer, Received};
use crate::bus::amqp::{AmqpJobSettings, AmqpJobs, JobQueues};
use crate::bus::Job;
use crate::store::Store;
use crate::telemetry::metrics;

/// The jobs queues' consumer, and the publisher that delays and dead-letters deliveries.
pub(super) struct AmqpJobsIn {
    consumer: QueueConsumer,
    jobs: Arc<AmqpJobs>,
    limit: u32,
    depths: JoinHandle<()>,
}

/// One delivery, to acknowledge, return, delay or dead-letter.
pub(super) struct AmqpSettle {
    received: Received,
    jobs: Arc<AmqpJobs>,
    limit: u32,
}

impl AmqpJobsIn {
    pub(super) async fn open(
        options: &WorkerOptions,
        amqp: &AmqpJobSettings,
    ) -> Result<AmqpJobsIn, WorkerError> {
        let jobs =
            Arc::new(AmqpJobs::connect(&amqp.url, &options.topics, amqp.delivery_limit).await?);
        let queues: &JobQueues = jobs.queues();
        let mut consumer = QueueConsumer::new(
            &amqp.url,
            queues.declares(amqp.delivery_limit),
            vec![queues.urgent.clone(), queues.jobs.clone()],
            options.concurrency,
            "tributary-worker",
        );
        consumer.connect().await?;
        info!(queue = %queues.jobs, urgent = %queues.urgent, concurrency = options.concurrency, "worker started (jobs on RabbitMQ)");
        Ok(AmqpJobsIn {
            consumer,
            depths: spawn_depth_reporter(jobs.clone()),
            jobs,
            limit: amqp.delivery_limit,
        })
    }

    /// The next delivery (urgent first); the consumer connects again when RabbitMQ went away.
    pub(super) async fn next(&mut self) -> Delivery {
        let received = self.consumer.next().await;
        let job = serde_json::from_slice::<Job>(&received.data)
            .map_err(|e| format!("not a valid job: {e}"));
        let settle = Settle::Amqp(Box::new(AmqpSettle {
            received,
            jobs: self.jobs.clone(),
            limit: self.limit,
        }));
        Delivery { settle, job }
    }

    /// After the drain: deliveries never started go back to their queues.
    pub(super) async fn close(mut self) {
        self.depths.abort();
        self.consumer.close().await;
    }
}

/// How often the queues' depths are read for `tributary_queue_depth`.
const DEPTH_EVERY: Duration = Duration::from_secs(5);

/// Read every queue's depth for metrics, now and every `DEPTH_EVERY`, until aborted. The
/// broker's figures are global: every worker reports the same ones.
fn spawn_depth_reporter(jobs: Arc<AmqpJobs>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(DEPTH_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            match jobs.depths().await {
                Ok(depths) => {
                    for (queue, ready) in depths {
                        metrics().queue_depth(&queue, ready);
                    }
                }
                Err(e) => debug!("queue depths not measured this round: {e}"),
            }
        }
    })
}

impl AmqpSettle {
    pub(super) async fn ack(self) {
        if let Err(e) = self.received.acker.ack(BasicAckOptions::default()).await {
            // The connection went away: the broker delivers the job again, and the replay
            // is skipped as done (or resumes from the checkpoint, under the same ids).
            warn!("job not acknowledged (it will be delivered again, harmlessly): {e}");
        }
    }

    /// Back to its queue now (counted as a delivery).
    pub(super) async fn requeue(self) {
        let requeue = BasicNackOptions {
            requeue: true,
            ..BasicNackOptions::default()
        };
        if let Err(e) = self.received.acker.nack(requeue).await {
            warn!("job not returned (the broker returns it when the connection closes): {e}");
        }
    }

    /// Wait in a delay queue, then come back; returned to its queue if that fails.
    pub(super) async fn delay(self, wait: Duration) {
        let (data, props) = (&self.received.data, &self.received.properties);
        match self
            .jobs
            .delay(&self.received.queue, data, props, wait)
            .await
        {
            Ok(()) => self.ack().await,
            Err(e) => {
                warn!("cannot delay the job ({e}): returning it to its queue");
                self.requeue().await;
            }
        }
    }

    /// Whether another delivery of this job may still come after this one.
    pub(super) fn may_retry(&self) -> bool {
        self.received.delivery_count() + 1 < self.limit
    }

    /// Dead-letter it to `<prefix>.jobs.dead` with the reason; if that cannot be published,
    /// rejected so the broker dead-letters it itself (with `x-death`, without the reason).
    pub(super) async fn bury(self, reason: &str) {
        let (data, props) = (&self.received.data, &self.received.properties);
        let queue = &self.received.queue;
        warn!(%queue, %reason, "job dead-lettered to {}", self.jobs.queues().dead);
        match self.jobs.bury(data, props, reason).await {
            Ok(()) => self.ack().await,
            Err(e) => {
                warn!("cannot dead-letter the job with its reason ({e}): rejecting it");
                let reject = BasicRejectOptions { requeue: false };
                let _ = self.received.acker.reject(reject).await;
            }
        }
    }
}

/// How long a job waits here for its resource's claim before it waits at the broker.
const CLAIM_PATIENCE: Duration = Duration::from_secs(2);
const CLAIM_POLL: Duration = Duration::from_millis(25);

/// A worker's hold on one (connection, resource) while its job runs: renewed every third
/// of its time to live, given back when dropped.
pub(super) struct Claim {
    renew: tokio::task::JoinHandle<()>,
    release: Option<(Store, String, String, String)>,
}

impl Claim {
    /// Claim the job's resource for this delivery, waiting up to `CLAIM_PATIENCE` for
    /// another holder to let go (a run's continuation arrives while the slice before it
    /// is still giving its claim back); None while another job still holds it.
    pub(super) async fn take(
        store: &Store,
        job: &Job,
        ttl: Duration,
    ) -> Result<Option<Claim>, crate::store::StoreError> {
        let holder = format!("{}:{}", job.job_id, uuid::Uuid::new_v4().simple());
        let (conn, res) = (job.connection.clone(), job.resource.clone());
        let patience = tokio::time::Instant::now() + CLAIM_PATIENCE;
        while !store.claim_resource(&conn, &res, &holder, ttl).await? {
            if tokio::time::Instant::now() >= patience {
                return Ok(None);
            }
            tokio::time::sleep(CLAIM_POLL).await;
        }
        let (s, c, r, h) = (store.clone(), conn.clone(), res.clone(), holder.clone());
        let renew = tokio::spawn(async move {
            let mut every = tokio::time::interval(ttl / 3);
            every.tick().await;
            loop {
                every.tick().await;
                if let Err(e) = s.claim_resource(&c, &r, &h, ttl).await {
                    warn!(connection = %c, resource = %r, "cannot renew the claim: {e}");
                }
            }
        });
        Ok(Some(Claim {
            renew,
            release: Some((store.clone(), conn, res, holder)),
        }))
    }

    pub(super) async fn release(mut self) {
        self.renew.abort();
        if let Some((store, conn, res, holder)) = self.release.take() {
            if let Err(e) = store.release_resource(&conn, &res, &holder).await {
                warn!(connection = %conn, resource = %res, "claim not released (it expires): {e}");
            }
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.renew.abort();
    }
}
