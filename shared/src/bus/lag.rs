//! Consumer lag of the jobs topics for the `tributary_consumer_lag` gauge: for each
//! partition a worker holds, the broker's high watermark minus the group's committed
//! offset (jobs waiting plus jobs running). Each worker reports the partitions it holds,
//! so the sum over workers is the group's lag.

use std::sync::{Arc, Weak};
use std::time::Duration;

use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::Offset;

use super::kafka::JobsConsumer;
use crate::telemetry::metrics;

const BROKER_TIMEOUT: Duration = Duration::from_secs(5);

/// Report the lag of `consumers`' partitions every `every`, until `stop` fires (its sender
/// is dropped) or the consumers are dropped. The reporter holds the consumers weakly
/// between rounds, so it never keeps one in its group; a round in progress when `stop`
/// fires finishes first, so once the returned task has ended the reporter holds none (the
/// caller may then close them while their broker is still there).
pub fn spawn_lag_reporter(
    consumers: &[Arc<JobsConsumer>],
    every: Duration,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) -> tokio::task::JoinHandle<()> {
    let consumers: Vec<Weak<JobsConsumer>> = consumers.iter().map(Arc::downgrade).collect();
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = &mut stop => return,
            }
            let weak = consumers.clone();
            // The broker calls block; they run off the async threads.
            let round = tokio::task::spawn_blocking(move || {
                let mut all = Vec::new();
                for c in &weak {
                    let consumer = c.upgrade()?;
                    match partition_lags(&consumer) {
                        Ok(lags) => all.extend(lags),
                        Err(e) => tracing::debug!("consumer lag not measured this round: {e}"),
                    }
                }
                Some(all)
            })
            .await;
            match round {
                Ok(Some(lags)) => metrics().consumer_lags(lags),
                Ok(None) | Err(_) => return,
            }
        }
    })
}

/// (topic, partition, lag) of every partition assigned to `consumer`.
pub fn partition_lags(consumer: &JobsConsumer) -> Result<Vec<(String, i32, i64)>, KafkaError> {
    let assignment = consumer.assignment()?;
    if assignment.count() == 0 {
        return Ok(Vec::new());
    }
    let committed = consumer.committed_offsets(assignment, BROKER_TIMEOUT)?;
    let mut lags = Vec::new();
    for p in committed.elements() {
        let (low, high) = consumer.fetch_watermarks(p.topic(), p.partition(), BROKER_TIMEOUT)?;
        // Nothing committed yet: the group reads from the earliest message.
        let from = match p.offset() {
            Offset::Offset(o) => o,
            _ => low,
        };
        lags.push((p.topic().to_string(), p.partition(), (high - from).max(0)));
    }
    Ok(lags)
}
