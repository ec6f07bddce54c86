//! Kafka through rdkafka: topic names, topic creation, publishing that waits for
//! the broker's acknowledgements, and the jobs consumer (static group membership, and a
//! check for partitions nobody in the group consumes).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::future::join_all;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;
use rdkafka::{Offset, TopicPartitionList};
use tracing::Instrument;

use super::job::{job_message, Job};
use crate::telemetry::{traceparent_of, traceparent_of_current_span};

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("the broker did not acknowledge a message to `{topic}`: {message}")]
    NotAcknowledged { topic: String, message: String },
    #[error("cannot create topic `{topic}`: {message}")]
    CreateTopic { topic: String, message: String },
    #[error("rabbitmq at {url}: {message}")]
    Amqp { url: String, message: String },
    #[error("a message for `{topic}` needs Kafka, and this process has none (TRIBUTARY_EVENTS_BUS and TRIBUTARY_JOBS_BUS are both `rabbitmq`)")]
    NoKafka { topic: String },
}

/// Topic names, from a prefix and a template for the per-model topics.
#[derive(Debug, Clone)]
pub struct Topics {
    pub prefix: String,
    /// `{prefix}` and `{model}` are replaced, e.g. `{prefix}.{model}`.
    pub model_template: String,
}

impl Topics {
    pub fn new(prefix: &str) -> Self {
        Topics {
            prefix: prefix.to_string(),
            model_template: "{prefix}.{model}".into(),
        }
    }
    pub fn jobs(&self) -> String {
        format!("{}.jobs", self.prefix)
    }
    /// Jobs that go ahead of scheduled work (resyncs).
    pub fn urgent_jobs(&self) -> String {
        format!("{}.jobs.urgent", self.prefix)
    }
    pub fn status(&self) -> String {
        format!("{}.status", self.prefix)
    }
    pub fn dead_letters(&self) -> String {
        format!("{}.deadletter", self.prefix)
    }
    pub fn model(&self, model: &str) -> String {
        self.model_template
            .replace("{prefix}", &self.prefix)
            .replace("{model}", model)
    }
    /// Verified webhook deliveries, as received.
    pub fn webhooks(&self) -> String {
        format!("{}.webhooks", self.prefix)
    }
    /// Webhook items no connection claims, with the reason.
    pub fn webhooks_unrouted(&self) -> String {
        format!("{}.webhooks.unrouted", self.prefix)
    }
    pub fn consumer_group(&self) -> String {
        format!("{}.workers", self.prefix)
    }
    /// The topics of Tributary's own work (jobs, webhook deliveries); every other topic
    /// carries events for the host (changes, status, dead letters).
    pub fn work_topics(&self) -> [String; 4] {
        [
            self.jobs(),
            self.urgent_jobs(),
            self.webhooks(),
            self.webhooks_unrouted(),
        ]
    }

    pub fn is_events_topic(&self, topic: &str) -> bool {
        !self.work_topics().iter().any(|t| t == topic)
    }
}

/// A message to publish.
#[derive(Debug, Clone)]
pub struct OutMessage {
    pub topic: String,
    pub key: String,
    /// None publishes a tombstone (for compacted topics).
    pub payload: Option<Vec<u8>>,
    pub headers: Vec<(&'static str, String)>,
}

/// How long a message may wait for the broker's acknowledgement (five minutes).
const PUBLISH_TIMEOUT_MS: &str = "300000";

/// Publishes and waits for acknowledgements, each message to the bus of its role: Kafka,
/// or RabbitMQ for events (`with_amqp_events`) and for jobs and webhook deliveries
/// (`with_amqp_jobs`).
#[derive(Clone)]
pub struct Publisher {
    /// None: nothing goes to Kafka (both roles on RabbitMQ).
    producer: Option<FutureProducer>,
    brokers: String,
    /// Topics made (or found) by `ensure_topic`, so each is asked for once per process.
    made: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    /// Where events go instead of Kafka (`TRIBUTARY_EVENTS_BUS=rabbitmq`).
    amqp_events: Option<Arc<super::amqp::AmqpEvents>>,
    /// Where jobs and webhook deliveries go instead of Kafka (`TRIBUTARY_JOBS_BUS=rabbitmq`).
    amqp_jobs: Option<Arc<super::amqp::AmqpJobs>>,
    /// The topics that are not events (computed once: looked up for every message).
    work_topics: Arc<HashSet<String>>,
}

/// Which bus a message goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Kafka,
    AmqpEvents,
    AmqpJobs,
}

impl Publisher {
    pub fn new(brokers: &str) -> Result<Self, BusError> {
        Self::with_config(brokers, PUBLISH_TIMEOUT_MS)
    }

    /// A publisher whose messages give up after `timeout` without the broker's
    /// acknowledgement (the webhook receiver: its caller answers 503 instead of waiting).
    pub fn with_message_timeout(brokers: &str, timeout: Duration) -> Result<Self, BusError> {
        Self::with_config(brokers, &timeout.as_millis().max(1).to_string())
    }

    fn with_config(brokers: &str, message_timeout_ms: &str) -> Result<Self, BusError> {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            // A broker that stops answering for a while (a restart, a frozen process) must
            // not make messages expire: they wait in librdkafka and go out when it is back.
            // A slice whose publish does fail is retried whole, with the same event ids.
            .set("message.timeout.ms", message_timeout_ms)
            .create()?;
        Ok(Publisher {
            producer: Some(producer),
            ..Self::without_kafka()
        })
    }

    /// A publisher with no Kafka producer: every role must go to RabbitMQ
    /// (`with_amqp_events` and `with_amqp_jobs`).
    pub fn without_kafka() -> Self {
        Publisher {
            producer: None,
            brokers: String::new(),
            made: Default::default(),
            amqp_events: None,
            amqp_jobs: None,
            work_topics: Default::default(),
        }
    }

    /// Events (changes, status, dead letters) go to RabbitMQ from now on.
    pub fn with_amqp_events(mut self, events: super::amqp::AmqpEvents, topics: &Topics) -> Self {
        self.amqp_events = Some(Arc::new(events));
        self.work_topics = Arc::new(topics.work_topics().into_iter().collect());
        self
    }

    /// Jobs, urgent jobs and webhook deliveries go to RabbitMQ's queues from now on.
    pub fn with_amqp_jobs(mut self, jobs: super::amqp::AmqpJobs) -> Self {
        self.amqp_jobs = Some(Arc::new(jobs));
        self
    }

    fn route(&self, topic: &str) -> Route {
        if self.amqp_jobs.as_ref().is_some_and(|j| j.carries(topic)) {
            Route::AmqpJobs
        } else if self.amqp_events.is_some() && !self.work_topics.contains(topic) {
            Route::AmqpEvents
        } else {
            Route::Kafka
        }
    }

    /// Whether the broker's metadata has the topic with partitions (a blocking call, off
    /// the runtime's threads).
    async fn topic_exists(&self, topic: &str) -> bool {
        let Some(producer) = self.producer.clone() else {
            return false;
        };
        let topic = topic.to_string();
        tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(Some(&topic), Duration::from_secs(10))
                .ok()
                .and_then(|m| {
                    m.topics()
                        .iter()
                        .find(|t| t.name() == topic)
                        .map(|t| t.error().is_none() && !t.partitions().is_empty())
                })
                .unwrap_or(false)
        })
        .await
        .unwrap_or(false)
    }

    /// Make a topic that appears at run time (a custom object's) if it does not exist yet.
    pub async fn ensure_topic(&self, topic: &str) -> Result<(), BusError> {
        if self.route(topic) != Route::Kafka {
            // One exchange for every event, queues declared at start: nothing to make.
            return Ok(());
        }
        if self.producer.is_none() {
            return Err(BusError::NoKafka {
                topic: topic.to_string(),
            });
        }
        let known = |made: &std::collections::HashSet<String>| made.contains(topic);
        if known(&self.made.lock().unwrap_or_else(|p| p.into_inner())) {
            return Ok(());
        }
        if !self.topic_exists(topic).await {
            ensure_topics(&self.brokers, &[(topic.to_string(), 3)]).await?;
        }
        self.made
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(topic.to_string());
        Ok(())
    }

    /// Send all messages at once (never one by one) and wait until the broker has
    /// acknowledged every one of them; any failure fails the whole batch. Each topic's
    /// messages go in a `send <topic>` span (messaging semantic conventions) whose trace
    /// context each message carries as its `traceparent` header (unless it has one).
    pub async fn publish_all(&self, messages: &[OutMessage]) -> Result<(), BusError> {
        let routed = |route| -> Vec<&OutMessage> {
            (messages.iter())
                .filter(|m| self.route(&m.topic) == route)
                .collect()
        };
        let (to_events, to_jobs) = (routed(Route::AmqpEvents), routed(Route::AmqpJobs));
        let events = async {
            match (&self.amqp_events, to_events.is_empty()) {
                (Some(events), false) => events.publish(&to_events).await,
                _ => Ok(()),
            }
        };
        let jobs = async {
            match (&self.amqp_jobs, to_jobs.is_empty()) {
                (Some(jobs), false) => jobs.publish(&to_jobs).await,
                _ => Ok(()),
            }
        };
        let to_kafka = routed(Route::Kafka);
        let (events, jobs, kafka) = tokio::join!(events, jobs, self.publish_to_kafka(&to_kafka));
        events.and(jobs).and(kafka)
    }

    async fn publish_to_kafka(&self, messages: &[&OutMessage]) -> Result<(), BusError> {
        let Some(producer) = &self.producer else {
            return match messages.first() {
                Some(m) => Err(BusError::NoKafka {
                    topic: m.topic.clone(),
                }),
                None => Ok(()),
            };
        };
        let mut batches: Vec<(&str, Vec<&OutMessage>)> = Vec::new();
        for m in messages.iter().copied() {
            match batches.iter_mut().find(|(t, _)| *t == m.topic) {
                Some((_, batch)) => batch.push(m),
                None => batches.push((&m.topic, vec![m])),
            }
        }
        let sends = batches.iter().map(|(topic, batch)| {
            let span = send_span(topic, batch.len());
            let traceparent = traceparent_of(&span);
            send_batch(producer, batch, traceparent).instrument(span)
        });
        join_all(sends).await.into_iter().collect()
    }

    /// Publish a job (a continuation, a parked run coming back) to the jobs topic. It
    /// carries the enqueuing span's trace context, so the next slice joins the same trace.
    pub async fn enqueue(&self, topics: &Topics, job: &Job) -> Result<(), BusError> {
        let mut job = job.clone();
        if let Some(tp) = traceparent_of_current_span() {
            job.traceparent = Some(tp);
        }
        self.publish_all(&[job_message(&topics.jobs(), &job)]).await
    }
}

/// Send one topic's messages at once and wait until the broker acknowledged each.
async fn send_batch(
    producer: &FutureProducer,
    batch: &[&OutMessage],
    traceparent: Option<String>,
) -> Result<(), BusError> {
    let sends = batch.iter().map(|m| {
        let mut headers = OwnedHeaders::new();
        for (k, v) in &m.headers {
            headers = headers.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            });
        }
        if let Some(tp) = traceparent.as_deref() {
            if !m.headers.iter().any(|(k, _)| *k == "traceparent") {
                headers = headers.insert(Header {
                    key: "traceparent",
                    value: Some(tp.as_bytes()),
                });
            }
        }
        let mut record: FutureRecord<'_, str, [u8]> = FutureRecord::to(&m.topic)
            .key(m.key.as_str())
            .headers(headers);
        if let Some(p) = &m.payload {
            record = record.payload(p.as_slice());
        }
        producer.send(record, Duration::from_secs(30))
    });
    for (result, m) in join_all(sends).await.into_iter().zip(batch) {
        if let Err((e, _)) = result {
            let span = tracing::Span::current();
            span.record("error.type", "not_acknowledged");
            span.record("otel.status_code", "ERROR");
            return Err(BusError::NotAcknowledged {
                topic: m.topic.clone(),
                message: e.to_string(),
            });
        }
    }
    Ok(())
}

/// A producer span for one topic's messages (OpenTelemetry messaging conventions).
fn send_span(topic: &str, count: usize) -> tracing::Span {
    let span = tracing::info_span!(
        "kafka.send",
        otel.name = %format!("send {topic}"),
        otel.kind = "producer",
        otel.status_code = tracing::field::Empty,
        messaging.system = "kafka",
        messaging.operation.type = "send",
        messaging.operation.name = "send",
        messaging.destination.name = topic,
        messaging.batch.message_count = tracing::field::Empty,
        error.type = tracing::field::Empty,
    );
    if count != 1 {
        span.record("messaging.batch.message_count", count);
    }
    span
}

/// Create topics that do not exist yet.
pub async fn ensure_topics(brokers: &str, topics: &[(String, i32)]) -> Result<(), BusError> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(name, partitions)| NewTopic::new(name, *partitions, TopicReplication::Fixed(1)))
        .collect();
    let results = admin
        .create_topics(
            &new,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await?;
    for r in results {
        if let Err((topic, code)) = r {
            if code != RDKafkaErrorCode::TopicAlreadyExists {
                return Err(BusError::CreateTopic {
                    topic,
                    message: code.to_string(),
                });
            }
        }
    }
    Ok(())
}

/// Every topic the pipeline uses (jobs, urgent jobs, status, dead letters, one per model)
/// with its number of partitions.
pub fn pipeline_topics(topics: &Topics, jobs_partitions: i32) -> Vec<(String, i32)> {
    let mut wanted = vec![
        (topics.jobs(), jobs_partitions),
        (topics.urgent_jobs(), jobs_partitions),
        (topics.status(), 1),
        (topics.dead_letters(), 1),
        (topics.webhooks(), jobs_partitions),
        (topics.webhooks_unrouted(), 1),
    ];
    // Custom objects' topics are made when a connection first syncs one.
    wanted.extend(
        crate::mapping::models::model_names()
            .filter(|m| !crate::mapping::models::has_object_topics(m))
            .map(|m| (topics.model(m), 3)),
    );
    wanted
}

/// Create every topic the pipeline uses (`pipeline_topics`).
pub async fn ensure_pipeline_topics(
    brokers: &str,
    topics: &Topics,
    jobs_partitions: i32,
) -> Result<(), BusError> {
    ensure_topics(brokers, &pipeline_topics(topics, jobs_partitions)).await
}

/// Settings of the jobs consumer.
#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    pub brokers: String,
    pub group: String,
    pub session_timeout: Duration,
    /// Static group membership (`group.instance.id`): one stable id per worker process, so a
    /// consumer that lost the broker for a while rejoins as itself and gets its partitions
    /// back instead of leaving some behind with a member the broker never expires. (tansu
    /// 0.6.0 rebalances a static member out of its group every session timeout: off there.)
    pub instance_id: Option<String>,
}

/// Logs the partitions a worker gets and gives up, so ops (and tests) can see when a
/// group has settled.
pub struct RebalanceLog;

impl ClientContext for RebalanceLog {}

impl ConsumerContext for RebalanceLog {
    fn post_rebalance(&self, _: &rdkafka::consumer::BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let list = |tpl: &rdkafka::TopicPartitionList| {
            tpl.elements()
                .iter()
                .map(|e| format!("{}/{}", e.topic(), e.partition()))
                .collect::<Vec<_>>()
                .join(",")
        };
        match rebalance {
            Rebalance::Assign(tpl) => {
                tracing::info!(partitions = %list(tpl), count = tpl.count(), "partitions assigned")
            }
            Rebalance::Revoke(tpl) => {
                tracing::info!(partitions = %list(tpl), count = tpl.count(), "partitions revoked")
            }
            Rebalance::Error(e) => tracing::warn!("rebalance failed: {e}"),
        }
    }
}

/// The jobs consumer type.
pub type JobsConsumer = StreamConsumer<RebalanceLog>;

pub fn jobs_consumer(settings: &ConsumerSettings, topic: &str) -> Result<JobsConsumer, BusError> {
    let mut config = ClientConfig::new();
    if let Some(id) = &settings.instance_id {
        config.set("group.instance.id", id);
    }
    let consumer: JobsConsumer = config
        .set("bootstrap.servers", &settings.brokers)
        .set("group.id", &settings.group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set(
            "session.timeout.ms",
            settings.session_timeout.as_millis().to_string(),
        )
        .set(
            "heartbeat.interval.ms",
            (settings.session_timeout.as_millis() / 3)
                .max(100)
                .to_string(),
        )
        .set("max.poll.interval.ms", "600000")
        .create_with_context(RebalanceLog)?;
    consumer.subscribe(&[topic])?;
    Ok(consumer)
}

/// Which offsets may be committed while several jobs of one partition run at once:
/// a partition's committed offset never passes a job that has not finished.
#[derive(Debug, Default, Clone)]
pub struct OffsetTracker {
    inner: Arc<Mutex<HashMap<(String, i32), PartitionOffsets>>>,
}

#[derive(Debug, Default)]
struct PartitionOffsets {
    in_flight: BTreeSet<i64>,
    /// Highest finished offset + 1.
    done_up_to: i64,
}

impl OffsetTracker {
    pub fn started(&self, topic: &str, partition: i32, offset: i64) {
        let mut map = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        map.entry((topic.to_string(), partition))
            .or_default()
            .in_flight
            .insert(offset);
    }

    /// Mark a job finished; returns the offset now safe to commit for its partition.
    pub fn finished(&self, topic: &str, partition: i32, offset: i64) -> i64 {
        let mut map = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let p = map.entry((topic.to_string(), partition)).or_default();
        p.in_flight.remove(&offset);
        p.done_up_to = p.done_up_to.max(offset + 1);
        match p.in_flight.first() {
            Some(lowest) => *lowest,
            None => p.done_up_to,
        }
    }

    pub fn in_flight(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .map(|p| p.in_flight.len())
            .sum()
    }
}

/// Commit `offset` (the next one to read) for a partition, synchronously.
pub fn commit(
    consumer: &JobsConsumer,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Result<(), BusError> {
    let mut list = TopicPartitionList::new();
    list.add_partition_offset(topic, partition, Offset::Offset(offset))?;
    consumer.commit(&list, CommitMode::Sync)?;
    Ok(())
}

/// Asks the broker for its metadata, to tell whether it answers (readiness).
pub struct BrokerProbe {
    client: BaseConsumer,
}

impl BrokerProbe {
    pub fn new(brokers: &str) -> Result<Self, BusError> {
        let client: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .create()?;
        Ok(BrokerProbe { client })
    }

    /// Whether the broker answered within `timeout` (blocks: call off the async runtime).
    pub fn reachable(&self, timeout: Duration) -> bool {
        self.client.fetch_metadata(None, timeout).is_ok()
    }
}

/// Partitions of `topic` that have jobs waiting (committed offset of `group` behind the end
/// of the partition) while no member of the group is assigned them. A group that settled
/// has none; one that keeps some (tansu after a frozen broker, a member the broker never
/// expired) leaves those jobs waiting forever, so it is worth saying. Blocks: call off the
/// async runtime.
pub fn unowned_partitions(
    consumer: &JobsConsumer,
    group: &str,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<i32>, BusError> {
    let groups = consumer.fetch_group_list(Some(group), timeout)?;
    let mut owned: HashSet<i32> = HashSet::new();
    for member in groups.groups().iter().flat_map(|g| g.members()) {
        if let Some(bytes) = member.assignment() {
            owned.extend(
                assigned_partitions(bytes)
                    .into_iter()
                    .filter(|(t, _)| t == topic)
                    .map(|(_, p)| p),
            );
        }
    }
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .filter(|p| !owned.contains(p))
        .collect();
    if partitions.is_empty() {
        return Ok(Vec::new());
    }
    let mut list = TopicPartitionList::new();
    for p in &partitions {
        list.add_partition(topic, *p);
    }
    let committed = consumer.committed_offsets(list, timeout)?;
    let mut waiting = Vec::new();
    for p in partitions {
        let (low, high) = consumer.fetch_watermarks(topic, p, timeout)?;
        let at = match committed.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => o,
            _ => low,
        };
        if high > at {
            waiting.push(p);
        }
    }
    Ok(waiting)
}

/// The (topic, partition) pairs of a consumer-protocol assignment (the bytes a group
/// member was given: version i16, then [topic string, [partition i32]], then user data).
/// Bytes it cannot read give nothing.
fn assigned_partitions(bytes: &[u8]) -> Vec<(String, i32)> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, tail) = (b.get(..n)?, b.get(n..)?);
        *b = tail;
        Some(head)
    }
    fn i16_(b: &mut &[u8]) -> Option<i16> {
        Some(i16::from_be_bytes(take(b, 2)?.try_into().ok()?))
    }
    fn i32_(b: &mut &[u8]) -> Option<i32> {
        Some(i32::from_be_bytes(take(b, 4)?.try_into().ok()?))
    }
    let mut b = bytes;
    let mut out = Vec::new();
    let read = (|| -> Option<()> {
        i16_(&mut b)?;
        for _ in 0..i32_(&mut b)?.max(0) {
            let len = usize::try_from(i16_(&mut b)?).ok()?;
            let topic = String::from_utf8_lossy(take(&mut b, len)?).into_owned();
            for _ in 0..i32_(&mut b)?.max(0) {
                out.push((topic.clone(), i32_(&mut b)?));
            }
        }
        Some(())
    })();
    if read.is_none() {
        return Vec::new();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_never_pass_an_unfinished_job() {
        let t = OffsetTracker::default();
        for o in [10, 11, 12] {
            t.started("jobs", 0, o);
        }
        assert_eq!(t.finished("jobs", 0, 12), 10, "10 still runs");
        assert_eq!(t.finished("jobs", 0, 10), 11, "11 still runs");
        assert_eq!(t.finished("jobs", 0, 11), 13);
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn reads_a_member_assignment() {
        let mut b = vec![0, 1]; // version
        b.extend(1i32.to_be_bytes()); // one topic
        b.extend(6i16.to_be_bytes());
        b.extend(b"t.jobs");
        b.extend(2i32.to_be_bytes());
        b.extend(0i32.to_be_bytes());
        b.extend(4i32.to_be_bytes());
        b.extend((-1i32).to_be_bytes()); // no user data
        assert_eq!(
            assigned_partitions(&b),
            vec![("t.jobs".to_string(), 0), ("t.jobs".to_string(), 4)]
        );
        assert!(assigned_partitions(&b[..9]).is_empty(), "cut short");
        assert!(assigned_partitions(&[]).is_empty());
    }

    #[test]
    fn topic_names_follow_the_template() {
        let mut t = Topics::new("tributary");
        assert_eq!(t.model("crm.contact"), "tributary.crm.contact");
        t.model_template = "{prefix}-events-{model}".into();
        assert_eq!(t.model("hris.employee"), "tributary-events-hris.employee");
        assert_eq!(t.jobs(), "tributary.jobs");
    }
}
