//! Jobs, urgent jobs and webhook deliveries on RabbitMQ quorum queues, for deployments
//! without Kafka (`TRIBUTARY_JOBS_BUS=rabbitmq`).
//!
//! The queues (all durable quorum queues, declared by every side that connects):
//! - `<prefix>.jobs` and `<prefix>.jobs.urgent` (consumed first): a job is acknowledged
//!   only after its slice is committed. Both have a delivery limit
//!   (`TRIBUTARY_AMQP_DELIVERY_LIMIT`): a job returned more often than that (its worker died
//!   on it every time) is dead-lettered to `<prefix>.jobs.dead` by the broker, at least once.
//! - `<prefix>.jobs.dead`: jobs that will not run, each with its reason where a worker gave
//!   up on it (`x-tributary-reason`: not a job, panicked every time), or the broker's
//!   `x-death` record.
//! - `<prefix>.jobs.delay.<n>s` and `<prefix>.jobs.urgent.delay.<n>s` for n in `DELAY_STEPS`:
//!   a job that must wait (its not-before time, its tenant's turn) waits in its lane's delay
//!   queue; the queue's message TTL dead-letters it back to its lane (`<prefix>.jobs`, or
//!   `<prefix>.jobs.urgent`: a parked resync keeps its place ahead of the backlog) when the
//!   step is over. Every message of one delay queue has the same
//!   TTL, so the one at the head always expires first; a long wait takes several steps,
//!   each shorter than the rest of the wait. No broker plugin is needed.
//! - `<prefix>.webhooks` (verified deliveries) and `<prefix>.webhooks.unrouted`.
//!
//! Messages are persistent JSON, `message_id` = the job id, published through the default
//! exchange (routing key = queue name) as `mandatory`, each batch confirmed before it
//! returns, as events are.

use std::time::Duration;

use chrono::{DateTime, Utc};
use lapin::options::QueueDeclareOptions;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::BasicProperties;

use super::{Declare, Link, Outgoing};
use crate::bus::kafka::{BusError, OutMessage, Topics};

/// How long the delay queues hold a job, in seconds: each four times the one before.
pub const DELAY_STEPS: [u64; 8] = [1, 4, 16, 64, 256, 1024, 4096, 16384];

/// The header a worker puts on a job it dead-letters: why it will not run.
pub const REASON_HEADER: &str = "x-tributary-reason";

/// The queue names of a topic prefix.
#[derive(Debug, Clone)]
pub struct JobQueues {
    pub jobs: String,
    pub urgent: String,
    pub dead: String,
    pub webhooks: String,
    pub unrouted: String,
}

impl JobQueues {
    pub fn new(topics: &Topics) -> JobQueues {
        JobQueues {
            jobs: topics.jobs(),
            urgent: topics.urgent_jobs(),
            dead: format!("{}.jobs.dead", topics.prefix),
            webhooks: topics.webhooks(),
            unrouted: topics.webhooks_unrouted(),
        }
    }

    /// The delay queue of one step for jobs of `lane` (`jobs` or `urgent`; any other
    /// queue's messages wait with the jobs).
    pub fn delay(&self, lane: &str, seconds: u64) -> String {
        let lane = if lane == self.urgent {
            &self.urgent
        } else {
            &self.jobs
        };
        format!("{lane}.delay.{seconds}s")
    }

    /// The queue a jobs or webhooks topic's messages go to (named alike).
    fn of_topic(&self, topic: &str) -> Option<&str> {
        [&self.jobs, &self.urgent, &self.webhooks, &self.unrouted]
            .into_iter()
            .find(|q| q.as_str() == topic)
            .map(String::as_str)
    }

    /// Every queue's name, in declaration order.
    pub fn names(&self) -> Vec<String> {
        self.declares(1)
            .into_iter()
            .filter_map(|d| match d {
                Declare::Queue(name, _) => Some(name),
                Declare::TopicExchange(_) => None,
            })
            .collect()
    }

    /// Every queue, with its arguments.
    pub fn declares(&self, delivery_limit: u32) -> Vec<Declare> {
        let dead_letter_to = |queue: &str| {
            vec![
                ("x-dead-letter-exchange", text("")),
                ("x-dead-letter-routing-key", text(queue)),
                // The broker re-publishes a dead letter until its target confirms it.
                ("x-dead-letter-strategy", text("at-least-once")),
                ("x-overflow", text("reject-publish")),
            ]
        };
        let limited = |queue: &str| {
            let mut args = quorum();
            args.push((
                "x-delivery-limit",
                AMQPValue::LongInt(delivery_limit as i32),
            ));
            args.extend(dead_letter_to(&self.dead));
            Declare::Queue(queue.to_string(), args)
        };
        let mut declares = vec![
            limited(&self.jobs),
            limited(&self.urgent),
            Declare::Queue(self.dead.clone(), quorum()),
            Declare::Queue(self.webhooks.clone(), quorum()),
            Declare::Queue(self.unrouted.clone(), quorum()),
        ];
        for lane in [&self.jobs, &self.urgent] {
            for step in DELAY_STEPS {
                let mut args = quorum();
                args.push(("x-message-ttl", AMQPValue::LongLongInt(step as i64 * 1000)));
                args.extend(dead_letter_to(lane));
                declares.push(Declare::Queue(self.delay(lane, step), args));
            }
        }
        declares
    }
}

fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(s.into())
}

fn quorum() -> Vec<(&'static str, AMQPValue)> {
    vec![("x-queue-type", text("quorum"))]
}

/// The delay step for a wait: the longest step not beyond it; none under a second (a
/// worker waits that out itself).
pub fn delay_step(wait: Duration) -> Option<u64> {
    DELAY_STEPS
        .iter()
        .rev()
        .copied()
        .find(|s| Duration::from_secs(*s) <= wait)
}

/// Publishes jobs and webhook deliveries to their queues and waits for the confirms.
pub struct AmqpJobs {
    queues: JobQueues,
    link: Link,
}

impl AmqpJobs {
    /// Connect and declare every queue (a wrong URL, refused credentials or a queue that
    /// exists with other arguments fail here).
    pub async fn connect(
        url: &str,
        topics: &Topics,
        delivery_limit: u32,
    ) -> Result<AmqpJobs, BusError> {
        let queues = JobQueues::new(topics);
        let jobs = AmqpJobs {
            link: Link::new(url, queues.declares(delivery_limit)),
            queues,
        };
        jobs.link.channel().await?;
        Ok(jobs)
    }

    pub fn queues(&self) -> &JobQueues {
        &self.queues
    }

    /// Whether this topic's messages go to a queue here.
    pub fn carries(&self, topic: &str) -> bool {
        self.queues.of_topic(topic).is_some()
    }

    /// Publish messages of the jobs and webhooks topics to their queues (a job whose
    /// not-before time is a second or more away to a delay queue), confirmed as a batch.
    pub async fn publish(&self, messages: &[&OutMessage]) -> Result<(), BusError> {
        let now = Utc::now();
        let sends = messages
            .iter()
            .filter_map(|m| {
                let payload = m.payload.as_deref()?;
                let queue = self.queues.of_topic(&m.topic)?;
                let key = match wait_of(m, now).and_then(delay_step) {
                    Some(step) => self.queues.delay(queue, step),
                    None => queue.to_string(),
                };
                Some(Outgoing {
                    exchange: "",
                    key,
                    payload,
                    properties: properties(m),
                })
            })
            .collect();
        self.send(sends).await
    }

    /// Put a job delivered from `queue` back to wait `wait` (at least the shortest step)
    /// before it comes to that queue again, with its properties.
    pub async fn delay(
        &self,
        queue: &str,
        payload: &[u8],
        properties: &BasicProperties,
        wait: Duration,
    ) -> Result<(), BusError> {
        let step = delay_step(wait).unwrap_or(DELAY_STEPS[0]);
        self.send(vec![Outgoing {
            exchange: "",
            key: self.queues.delay(queue, step),
            payload,
            properties: properties.clone(),
        }])
        .await
    }

    /// Messages ready (not delivered) in each queue, as the broker counts them: a
    /// passive declare of each, which fails (and drops the link) if one is gone.
    pub async fn depths(&self) -> Result<Vec<(String, u32)>, BusError> {
        let channel = self.link.channel().await?;
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        let mut depths = Vec::new();
        for name in self.queues.names() {
            let counted = channel
                .queue_declare(name.as_str().into(), passive, FieldTable::default())
                .await;
            match counted {
                Ok(queue) => depths.push((name, queue.message_count())),
                Err(e) => {
                    self.link.reset().await;
                    return Err(self
                        .link
                        .failed(&format!("count the messages of `{name}`"), e));
                }
            }
        }
        Ok(depths)
    }

    /// Dead-letter a delivered job to `<prefix>.jobs.dead` with the reason it will not run.
    pub async fn bury(
        &self,
        payload: &[u8],
        properties: &BasicProperties,
        reason: &str,
    ) -> Result<(), BusError> {
        let mut headers = properties.headers().clone().unwrap_or_default();
        headers.insert(REASON_HEADER.into(), text(reason));
        self.send(vec![Outgoing {
            exchange: "",
            key: self.queues.dead.clone(),
            payload,
            properties: properties.clone().with_headers(headers),
        }])
        .await
    }

    async fn send(&self, sends: Vec<Outgoing<'_>>) -> Result<(), BusError> {
        let unroutable = "the queue does not exist (deleted while Tributary ran?): restart \
                          the worker to declare it again";
        self.link.publish_confirmed(sends, true, unroutable).await
    }
}

/// How long a job message must wait (its `not_before` header), if at all.
fn wait_of(m: &OutMessage, now: DateTime<Utc>) -> Option<Duration> {
    let (_, at) = m.headers.iter().find(|(k, _)| *k == "not_before")?;
    let at: DateTime<Utc> = at.parse().ok()?;
    (at - now).to_std().ok()
}

/// Persistent JSON, the job id as message id, the headers (and the message key, the
/// tenant, as `key`).
fn properties(m: &OutMessage) -> BasicProperties {
    let mut headers = FieldTable::default();
    for (k, v) in &m.headers {
        headers.insert((*k).into(), text(v));
    }
    headers.insert("key".into(), text(&m.key));
    let mut props = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type(ShortString::from("application/json"))
        .with_app_id(ShortString::from("tributary"))
        .with_headers(headers);
    if let Some((_, id)) = m.headers.iter().find(|(k, _)| *k == "job_id") {
        props = props.with_message_id(ShortString::from(id.as_str()));
    }
    props
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_takes_the_longest_step_within_it() {
        assert_eq!(delay_step(Duration::from_millis(900)), None);
        assert_eq!(delay_step(Duration::from_secs(1)), Some(1));
        assert_eq!(delay_step(Duration::from_secs(15)), Some(4));
        assert_eq!(delay_step(Duration::from_secs(70)), Some(64));
        assert_eq!(delay_step(Duration::from_secs(100_000)), Some(16384));
    }

    #[test]
    fn queues_are_named_after_the_topics() {
        let q = JobQueues::new(&Topics::new("t"));
        assert_eq!(
            (q.jobs.as_str(), q.urgent.as_str(), q.dead.as_str()),
            ("t.jobs", "t.jobs.urgent", "t.jobs.dead")
        );
        assert_eq!(q.delay(&q.jobs, 4), "t.jobs.delay.4s");
        assert_eq!(q.delay(&q.urgent, 4), "t.jobs.urgent.delay.4s");
        assert_eq!(q.delay(&q.webhooks, 1), "t.jobs.delay.1s");
        // Each lane's delay queues dead-letter back to that lane.
        let back_to = |name: &str| {
            q.declares(5).into_iter().find_map(|d| match d {
                Declare::Queue(n, args) if n == name => args
                    .into_iter()
                    .find(|(k, _)| *k == "x-dead-letter-routing-key")
                    .map(|(_, v)| v),
                _ => None,
            })
        };
        assert_eq!(
            back_to("t.jobs.urgent.delay.16s"),
            Some(text("t.jobs.urgent"))
        );
        assert_eq!(back_to("t.jobs.delay.16s"), Some(text("t.jobs")));
        assert_eq!(q.of_topic("t.webhooks"), Some("t.webhooks"));
        assert_eq!(q.of_topic("t.crm.contact"), None);
    }

    #[test]
    fn a_job_due_later_waits_as_long_as_its_not_before_says() {
        let now = Utc::now();
        let m = OutMessage {
            topic: "t.jobs".into(),
            key: "acme".into(),
            payload: Some(b"{}".to_vec()),
            headers: vec![(
                "not_before",
                (now + chrono::Duration::seconds(20)).to_rfc3339(),
            )],
        };
        let wait = wait_of(&m, now).unwrap();
        assert!(wait > Duration::from_secs(19) && wait <= Duration::from_secs(20));
        assert_eq!(delay_step(wait), Some(16));
    }
}
