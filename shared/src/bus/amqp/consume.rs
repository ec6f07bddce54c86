//! Consuming queues with manual acknowledgements: the first queue named goes first whenever
//! it has a message (urgent jobs before scheduled ones), at most `prefetch` unacknowledged
//! deliveries per queue, and a lost connection met by connecting again (with backoff),
//! re-declaring and consuming again. Deliveries not acknowledged on a lost connection go
//! back to their queue (the broker counts them in `x-delivery-count`). While the connection
//! is lost the process reports the broker not ready (`readiness`): with jobs on RabbitMQ
//! there is no Kafka probe to say it.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::Acker;
use lapin::{BasicProperties, Connection, Consumer};
use tracing::{info, warn};

use super::{Declare, Link};
use crate::bus::kafka::BusError;
use crate::readiness;

/// One delivered message, to acknowledge (or not) through its `acker`.
pub struct Received {
    pub queue: String,
    pub data: Vec<u8>,
    pub properties: BasicProperties,
    pub acker: Acker,
}

impl Received {
    /// How often the broker delivered this message before (quorum queues count returns).
    pub fn delivery_count(&self) -> u32 {
        let headers = self.properties.headers().as_ref();
        match headers.and_then(|h| h.inner().get("x-delivery-count")) {
            Some(AMQPValue::LongLongInt(n)) => (*n).max(0) as u32,
            Some(AMQPValue::LongInt(n)) => (*n).max(0) as u32,
            Some(AMQPValue::LongUInt(n)) => *n,
            Some(AMQPValue::ShortInt(n)) => (*n).max(0) as u32,
            _ => 0,
        }
    }
}

/// A reconnecting consumer of one or two queues (the first has priority).
pub struct QueueConsumer {
    link: Link,
    queues: Vec<String>,
    prefetch: u16,
    tag: String,
    open: Option<(Connection, Vec<Consumer>)>,
}

impl QueueConsumer {
    /// Nothing connects until the first `next` (or `connect`).
    pub fn new(
        url: &str,
        declares: Vec<Declare>,
        queues: Vec<String>,
        prefetch: usize,
        tag: &str,
    ) -> QueueConsumer {
        QueueConsumer {
            link: Link::new(url, declares),
            queues,
            prefetch: prefetch.clamp(1, u16::MAX as usize) as u16,
            tag: tag.to_string(),
            open: None,
        }
    }

    /// Connect, declare and start consuming (the first error is returned, for a process
    /// that should refuse to start on a wrong URL).
    pub async fn connect(&mut self) -> Result<(), BusError> {
        let (connection, channel) = self.link.connect().await?;
        channel
            .basic_qos(self.prefetch, BasicQosOptions::default())
            .await
            .map_err(|e| self.link.failed("set the prefetch", e))?;
        let mut consumers = Vec::new();
        for queue in &self.queues {
            let consumer = channel
                .basic_consume(
                    queue.as_str().into(),
                    format!("{}-{}", self.tag, uuid::Uuid::new_v4().simple()).into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(|e| self.link.failed(&format!("consume `{queue}`"), e))?;
            consumers.push(consumer);
        }
        self.open = Some((connection, consumers));
        Ok(())
    }

    /// The next delivery, the first queue's first. A lost connection is connected again,
    /// for as long as it takes.
    pub async fn next(&mut self) -> Received {
        let mut delays = reconnect_delays();
        loop {
            if self.open.is_none() {
                match self.connect().await {
                    Ok(()) => {
                        info!(queues = ?self.queues, "consuming");
                        readiness::set_ready(readiness::BROKER, true);
                    }
                    Err(e) => {
                        let wait = delays.next().unwrap_or(Duration::from_secs(5));
                        warn!(retry_in_ms = wait.as_millis() as u64, "{e}");
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                }
            }
            if let Some(received) = self.take().await {
                return received;
            }
            warn!(queues = ?self.queues, "the connection to RabbitMQ was lost: connecting again");
            // No jobs come while it is away: the process says so (`/readyz`).
            readiness::set_ready(readiness::BROKER, false);
            self.open = None;
        }
    }

    /// The next delivery of the open consumers; None when they ended.
    async fn take(&mut self) -> Option<Received> {
        let (_, consumers) = self.open.as_mut()?;
        let (first, rest) = consumers.split_first_mut()?;
        let second = async {
            match rest.first_mut() {
                Some(c) => (1, c.next().await),
                None => std::future::pending().await,
            }
        };
        let (index, next) = tokio::select! {
            biased;
            d = first.next() => (0, d),
            d = second => d,
        };
        let delivery = next?.ok()?;
        Some(Received {
            queue: self.queues[index].clone(),
            data: delivery.data,
            properties: delivery.properties,
            acker: delivery.acker,
        })
    }

    /// Close the connection: deliveries not acknowledged go back to their queues.
    pub async fn close(&mut self) {
        if let Some((connection, _)) = self.open.take() {
            let _ = connection.close(200, "stopping".into()).await;
        }
    }
}

fn reconnect_delays() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(250))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times()
        .build()
}
