//! RabbitMQ (AMQP 0-9-1, through lapin) as Tributary's second bus, chosen per role:
//! change, status and dead-letter events (`events.rs`, `TRIBUTARY_EVENTS_BUS=rabbitmq`) and
//! jobs, urgent jobs and webhook deliveries on quorum queues (`jobs.rs` publishing,
//! `consume.rs` consuming; `TRIBUTARY_JOBS_BUS=rabbitmq`).
//!
//! Every side keeps one connection and one confirm-mode channel (`Link`), re-opened after
//! a failure with the same declarations (`Declare`), so a restarted broker is met by
//! re-declaring what the side needs and trying again.

pub mod consume;
pub mod events;
pub mod jobs;

use futures::future::join_all;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use tokio::sync::Mutex;

use super::kafka::{BusError, Topics};

pub use events::AmqpEvents;
pub use jobs::{AmqpJobs, JobQueues};

/// Where RabbitMQ is and how events are published to it.
#[derive(Debug, Clone)]
pub struct AmqpSettings {
    /// `amqp://user:password@host:5672/vhost` (`amqps://` for TLS).
    pub url: String,
    /// Unroutable events are errors (true) or dropped by the broker (false).
    pub mandatory: bool,
}

/// Jobs on RabbitMQ (`TRIBUTARY_JOBS_BUS=rabbitmq`): where, and the limits.
#[derive(Clone)]
pub struct AmqpJobSettings {
    pub url: String,
    /// Deliveries of one job before the broker dead-letters it
    /// (`TRIBUTARY_AMQP_DELIVERY_LIMIT`).
    pub delivery_limit: u32,
    /// How long a worker's claim on a (connection, resource) lasts unless renewed
    /// (`TRIBUTARY_RESOURCE_CLAIM_SECONDS`).
    pub claim_ttl: std::time::Duration,
}

/// Never shows the password.
impl std::fmt::Debug for AmqpJobSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpJobSettings")
            .field("url", &redact(&self.url))
            .field("delivery_limit", &self.delivery_limit)
            .field("claim_ttl", &self.claim_ttl)
            .finish()
    }
}

/// The events exchange of a topic prefix.
pub fn events_exchange(topics: &Topics) -> String {
    format!("{}.events", topics.prefix)
}

/// How long a batch waits for its confirms: a connection that dies quietly must not hold
/// a page forever (past the wait it fails and is published again, with the same ids).
const CONFIRM_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// One message to publish: where to, and what.
pub struct Outgoing<'a> {
    /// `""` is the default exchange (routing key = queue name).
    pub exchange: &'a str,
    pub key: String,
    pub payload: &'a [u8],
    pub properties: BasicProperties,
}

/// Something a side declares each time it connects (declarations are idempotent: the
/// broker keeps what exists as long as the arguments match).
#[derive(Debug, Clone)]
pub enum Declare {
    /// A durable topic exchange.
    TopicExchange(String),
    /// A durable queue with these arguments (`x-queue-type` and the rest).
    Queue(String, Vec<(&'static str, AMQPValue)>),
}

/// One connection and its confirm-mode channel, opened on first use and again after a
/// failure (`reset`), with the side's declarations made each time.
pub struct Link {
    url: String,
    declares: Vec<Declare>,
    open: Mutex<Option<(Connection, Channel)>>,
}

impl Link {
    pub fn new(url: &str, declares: Vec<Declare>) -> Link {
        Link {
            url: url.to_string(),
            declares,
            open: Mutex::new(None),
        }
    }

    /// The open channel, connecting and declaring first if there is none.
    pub async fn channel(&self) -> Result<Channel, BusError> {
        let mut open = self.open.lock().await;
        if let Some((connection, channel)) = open.as_ref() {
            if connection.status().connected() && channel.status().connected() {
                return Ok(channel.clone());
            }
        }
        let (connection, channel) = self.connect().await?;
        *open = Some((connection, channel.clone()));
        Ok(channel)
    }

    /// A new connection with a confirm-mode channel on which every declaration is made.
    pub async fn connect(&self) -> Result<(Connection, Channel), BusError> {
        let connection = Connection::connect(&self.url, ConnectionProperties::default())
            .await
            .map_err(|e| self.failed("connect", e))?;
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| self.failed("open a channel", e))?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| self.failed("enable publisher confirms", e))?;
        for declare in &self.declares {
            declare_one(&channel, declare)
                .await
                .map_err(|e| self.failed(&declare.describe(), e))?;
        }
        Ok((connection, channel))
    }

    /// Publish every message, then wait for every confirm; any nack, returned message
    /// (`mandatory`: nothing to route it to; `unroutable` says what to do) or lost
    /// connection fails the whole batch and drops the connection.
    pub async fn publish_confirmed(
        &self,
        sends: Vec<Outgoing<'_>>,
        mandatory: bool,
        unroutable: &str,
    ) -> Result<(), BusError> {
        let result = self.try_publish(sends, mandatory, unroutable).await;
        if result.is_err() {
            self.reset().await;
        }
        result
    }

    async fn try_publish(
        &self,
        sends: Vec<Outgoing<'_>>,
        mandatory: bool,
        unroutable: &str,
    ) -> Result<(), BusError> {
        let channel = self.channel().await?;
        let options = BasicPublishOptions {
            mandatory,
            ..BasicPublishOptions::default()
        };
        let mut pending = Vec::with_capacity(sends.len());
        for send in sends {
            let at = Destination(send.exchange.to_string(), send.key);
            let confirm = channel
                .basic_publish(
                    send.exchange.into(),
                    at.1.as_str().into(),
                    options,
                    send.payload,
                    send.properties,
                )
                .await
                .map_err(|e| self.failed(&format!("publish to {at}"), e))?;
            pending.push((at, confirm));
        }
        let (destinations, confirms): (Vec<Destination>, Vec<_>) = pending.into_iter().unzip();
        let Ok(confirmed) = tokio::time::timeout(CONFIRM_WAIT, join_all(confirms)).await else {
            let why = format!("no confirm within {} s", CONFIRM_WAIT.as_secs());
            return Err(refused(destinations.first(), &why));
        };
        for (at, confirmed) in destinations.iter().zip(confirmed) {
            let confirmation = confirmed.map_err(|e| self.failed(&format!("confirm {at}"), e))?;
            if confirmation.is_nack() {
                return Err(refused(Some(at), "the broker refused it (nack)"));
            }
            if let Some(returned) = confirmation.take_message() {
                let why = format!(
                    "nothing to route it to ({} {}): {unroutable}",
                    returned.reply_code, returned.reply_text
                );
                return Err(refused(Some(at), &why));
            }
        }
        Ok(())
    }

    /// Drop the connection: the next use connects again.
    pub async fn reset(&self) {
        *self.open.lock().await = None;
    }

    /// An error naming the URL (its password hidden) and what could not be done.
    pub fn failed(&self, what: &str, e: lapin::Error) -> BusError {
        BusError::Amqp {
            url: redact(&self.url),
            message: format!("cannot {what}: {e}"),
        }
    }
}

/// An exchange and a routing key, as errors name them.
struct Destination(String, String);

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.as_str() {
            "" => write!(f, "{} (a queue)", self.1),
            exchange => write!(f, "{exchange} (routing key `{}`)", self.1),
        }
    }
}

fn refused(at: Option<&Destination>, why: &str) -> BusError {
    BusError::NotAcknowledged {
        topic: at.map(ToString::to_string).unwrap_or_default(),
        message: why.to_string(),
    }
}

impl Declare {
    fn describe(&self) -> String {
        match self {
            Declare::TopicExchange(name) => format!("declare exchange `{name}`"),
            Declare::Queue(name, _) => format!(
                "declare queue `{name}` (a queue made earlier with other arguments must be \
                 deleted first, once it is empty)"
            ),
        }
    }
}

async fn declare_one(channel: &Channel, declare: &Declare) -> lapin::Result<()> {
    match declare {
        Declare::TopicExchange(name) => {
            let durable = ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            };
            channel
                .exchange_declare(
                    name.as_str().into(),
                    ExchangeKind::Topic,
                    durable,
                    FieldTable::default(),
                )
                .await
        }
        Declare::Queue(name, arguments) => {
            let mut table = FieldTable::default();
            for (k, v) in arguments {
                table.insert((*k).into(), v.clone());
            }
            let durable = QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            };
            channel
                .queue_declare(name.as_str().into(), durable, table)
                .await
                .map(|_| ())
        }
    }
}

/// The URL without its password.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "(an unreadable URL)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            redact("amqp://guest:guest@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
    }
}
