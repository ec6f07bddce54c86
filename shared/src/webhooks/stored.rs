//! Where the intake takes stored deliveries from, a window at a time, and how it lets a
//! handled window go: the `<prefix>.webhooks` topic (its own consumer group, offsets
//! committed) or the `<prefix>.webhooks` quorum queue (acknowledged one by one). Until
//! then a crash gives the window back, to be read again.

use std::collections::BTreeMap;
use std::time::Duration;

use lapin::options::BasicAckOptions;
use rdkafka::consumer::Consumer;
use rdkafka::message::Message;
use tracing::{info, warn};

use super::RawDelivery;
use crate::bus::amqp::consume::{QueueConsumer, Received};
use crate::bus::amqp::JobQueues;
use crate::bus::kafka::{commit, jobs_consumer, ConsumerSettings, JobsConsumer};
use crate::bus::BusError;
use crate::sync::worker::{StopSignal, WorkerOptions};

/// At most this many deliveries are taken into one window.
const MAX_WINDOW_DELIVERIES: usize = 2000;

/// One stored delivery taken from the bus.
pub struct Taken {
    from: From,
    pub delivery: Result<RawDelivery, String>,
}

/// Where a taken delivery came from, to let it go.
enum From {
    Offset { partition: i32, offset: i64 },
    Queue(Box<Received>),
}

/// The stored deliveries' consumer, per bus.
pub enum StoredDeliveries {
    Kafka {
        consumer: JobsConsumer,
        topic: String,
    },
    Amqp(Box<QueueConsumer>),
}

impl StoredDeliveries {
    pub async fn open(options: &WorkerOptions) -> Result<StoredDeliveries, BusError> {
        let topics = &options.topics;
        if let Some(amqp) = &options.amqp_jobs {
            let queues = JobQueues::new(topics);
            let mut consumer = QueueConsumer::new(
                &amqp.url,
                queues.declares(amqp.delivery_limit),
                vec![queues.webhooks.clone()],
                MAX_WINDOW_DELIVERIES,
                "tributary-intake",
            );
            consumer.connect().await?;
            info!(queue = %queues.webhooks, "webhook intake started (RabbitMQ)");
            return Ok(StoredDeliveries::Amqp(Box::new(consumer)));
        }
        let settings = ConsumerSettings {
            brokers: options.brokers.clone(),
            group: format!("{}.webhooks", topics.consumer_group()),
            session_timeout: options.session_timeout,
            instance_id: options
                .instance_id
                .as_ref()
                .map(|id| format!("{id}.webhooks")),
        };
        let consumer = jobs_consumer(&settings, &topics.webhooks())?;
        info!(topic = %topics.webhooks(), "webhook intake started");
        Ok(StoredDeliveries::Kafka {
            consumer,
            topic: topics.webhooks(),
        })
    }

    /// The deliveries of one window: wait for the first, then take what arrives within
    /// the window after it. Empty when stopping.
    pub async fn take_window(&mut self, window: Duration, stop: &StopSignal) -> Vec<Taken> {
        let mut taken = Vec::new();
        let first = tokio::select! {
            t = self.take() => t,
            _ = stop.stopped() => return taken,
        };
        let deadline = tokio::time::Instant::now() + window;
        let mut next = Some(first);
        while let Some(one) = next.take() {
            taken.extend(one);
            if taken.len() >= MAX_WINDOW_DELIVERIES {
                break;
            }
            next = tokio::time::timeout_at(deadline, self.take()).await.ok();
        }
        taken
    }

    /// One delivery (None: the consumer reported an error, logged).
    async fn take(&mut self) -> Option<Taken> {
        let read = |bytes: &[u8]| {
            serde_json::from_slice(bytes).map_err(|e| format!("not a stored delivery: {e}"))
        };
        match self {
            StoredDeliveries::Kafka { consumer, .. } => match consumer.recv().await {
                Ok(m) => Some(Taken {
                    from: From::Offset {
                        partition: m.partition(),
                        offset: m.offset(),
                    },
                    delivery: read(m.payload().unwrap_or_default()),
                }),
                Err(e) => {
                    warn!("webhook intake: {e}");
                    None
                }
            },
            StoredDeliveries::Amqp(consumer) => {
                let received = consumer.next().await;
                Some(Taken {
                    delivery: read(&received.data),
                    from: From::Queue(Box::new(received)),
                })
            }
        }
    }

    /// Let a handled window go: commit past it, or acknowledge each of its deliveries.
    pub async fn release(&self, taken: Vec<Taken>) {
        let StoredDeliveries::Kafka { consumer, topic } = self else {
            for t in taken {
                if let From::Queue(r) = t.from {
                    if let Err(e) = r.acker.ack(BasicAckOptions::default()).await {
                        warn!("webhook delivery not acknowledged (it may be read again, harmlessly): {e}");
                    }
                }
            }
            return;
        };
        let mut next: BTreeMap<i32, i64> = BTreeMap::new();
        for t in &taken {
            if let From::Offset { partition, offset } = t.from {
                let at = next.entry(partition).or_default();
                *at = (*at).max(offset + 1);
            }
        }
        for (partition, offset) in next {
            if let Err(e) = commit(consumer, topic, partition, offset) {
                warn!(
                    partition,
                    offset,
                    "webhook offsets not committed (the window may be read again, harmlessly): {e}"
                );
            }
        }
    }

    pub async fn close(self) {
        match self {
            StoredDeliveries::Kafka { consumer, .. } => consumer.unsubscribe(),
            StoredDeliveries::Amqp(mut consumer) => consumer.close().await,
        }
    }
}
