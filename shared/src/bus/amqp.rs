//! Change, status and dead-letter events on RabbitMQ (AMQP 0-9-1, through lapin), for host
//! products that run RabbitMQ rather than Kafka (`TRIBUTARY_EVENTS_BUS=rabbitmq`).
//!
//! Every event goes to one durable topic exchange, `<prefix>.events`, declared at connect.
//! The routing key says what it is: `<model>.<op>` for a change (`crm.contact.updated`),
//! `status.<type>` for a status event (`status.run.completed`), `deadletter` for a record
//! that failed its mapping. A host binds a queue per consuming service to the keys it wants.
//! Messages are persistent and carry the same JSON envelope as on Kafka, `message_id` = the
//! event id (a replay repeats it) and the Kafka headers (tenant, connection, CloudEvents
//! attributes) as AMQP headers.
//!
//! The channel is in confirm mode and a batch (a page's events) returns only once the broker
//! confirmed every message of it, so a checkpoint never covers an unconfirmed event.
//! Publishing is `mandatory` by default: an event no queue is bound for comes back and fails
//! the batch instead of vanishing (`TRIBUTARY_AMQP_MANDATORY=false` for hosts that bind later).
//! A lost connection fails the batch in progress (the slice is retried whole, with the same
//! event ids) and the next batch connects again and re-declares the exchange.

use futures::future::join_all;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;

use super::kafka::{BusError, OutMessage, Topics};

/// How long a page waits for its confirms.
const CONFIRM_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Where events go on RabbitMQ, and how.
#[derive(Debug, Clone)]
pub struct AmqpSettings {
    /// `amqp://user:password@host:5672/vhost` (`amqps://` for TLS).
    pub url: String,
    /// Unroutable events are errors (true) or dropped by the broker (false).
    pub mandatory: bool,
}

/// The events exchange of a topic prefix.
pub fn events_exchange(topics: &Topics) -> String {
    format!("{}.events", topics.prefix)
}

/// Publishes events to the exchange and waits for the broker's confirms.
pub struct AmqpEvents {
    settings: AmqpSettings,
    topics: Topics,
    exchange: String,
    /// The open connection and its confirm-mode channel; None after a failure (the next
    /// batch connects again).
    open: Mutex<Option<(Connection, Channel)>>,
}

impl AmqpEvents {
    /// Connect and declare the exchange (a wrong URL or refused credentials fail here).
    pub async fn connect(settings: AmqpSettings, topics: &Topics) -> Result<Self, BusError> {
        let events = AmqpEvents {
            exchange: events_exchange(topics),
            topics: topics.clone(),
            settings,
            open: Mutex::new(None),
        };
        events.channel().await?;
        Ok(events)
    }

    /// The open channel, connecting (and declaring the exchange) first if there is none.
    async fn channel(&self) -> Result<Channel, BusError> {
        let mut open = self.open.lock().await;
        if let Some((connection, channel)) = open.as_ref() {
            if connection.status().connected() && channel.status().connected() {
                return Ok(channel.clone());
            }
        }
        let connection = Connection::connect(&self.settings.url, ConnectionProperties::default())
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
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        channel
            .exchange_declare(
                self.exchange.as_str().into(),
                ExchangeKind::Topic,
                durable,
                FieldTable::default(),
            )
            .await
            .map_err(|e| self.failed(&format!("declare exchange `{}`", self.exchange), e))?;
        *open = Some((connection, channel.clone()));
        Ok(channel)
    }

    fn failed(&self, what: &str, e: lapin::Error) -> BusError {
        BusError::Amqp {
            url: redact(&self.settings.url),
            message: format!("cannot {what}: {e}"),
        }
    }

    /// Publish every event of the batch (tombstones have no meaning here and are left
    /// out), then wait for every confirm; any nack, return or lost connection fails it all.
    pub async fn publish(&self, messages: &[&OutMessage]) -> Result<(), BusError> {
        let result = self.try_publish(messages).await;
        if result.is_err() {
            // Whatever went wrong, the next batch starts on a fresh connection.
            *self.open.lock().await = None;
        }
        result
    }

    async fn try_publish(&self, messages: &[&OutMessage]) -> Result<(), BusError> {
        let channel = self.channel().await?;
        let options = BasicPublishOptions {
            mandatory: self.settings.mandatory,
            ..BasicPublishOptions::default()
        };
        let mut pending = Vec::with_capacity(messages.len());
        for m in messages {
            let Some(payload) = &m.payload else { continue };
            let key = routing_key(&self.topics, m);
            let confirm = channel
                .basic_publish(
                    self.exchange.as_str().into(),
                    key.as_str().into(),
                    options,
                    payload,
                    properties(m, payload),
                )
                .await
                .map_err(|e| self.failed(&format!("publish `{key}`"), e))?;
            pending.push((key, confirm));
        }
        let (keys, confirms): (Vec<String>, Vec<_>) = pending.into_iter().unzip();
        // A connection that dies quietly must not hold the page forever: past the wait the
        // page fails and is published again, with the same ids.
        let confirmed = tokio::time::timeout(CONFIRM_WAIT, join_all(confirms))
            .await
            .map_err(|_| {
                self.refused(
                    &keys.first().cloned().unwrap_or_default(),
                    &format!("no confirm within {} s", CONFIRM_WAIT.as_secs()),
                )
            })?;
        for (key, confirmed) in keys.into_iter().zip(confirmed) {
            let confirmation =
                confirmed.map_err(|e| self.failed(&format!("confirm `{key}`"), e))?;
            if confirmation.is_nack() {
                return Err(self.refused(&key, "the broker refused it (nack)"));
            }
            if let Some(returned) = confirmation.take_message() {
                return Err(self.refused(
                    &key,
                    &format!(
                        "no queue is bound for it ({} {}): bind a queue to `{}` with that key, \
                         or set TRIBUTARY_AMQP_MANDATORY=false to let the broker drop such events",
                        returned.reply_code, returned.reply_text, self.exchange
                    ),
                ));
            }
        }
        Ok(())
    }

    fn refused(&self, key: &str, why: &str) -> BusError {
        BusError::NotAcknowledged {
            topic: format!("{} (routing key `{key}`)", self.exchange),
            message: why.to_string(),
        }
    }
}

/// `<model>.<op>` for a change, `status.<type>` for a status event, `deadletter` for a
/// dead letter (from the message's topic and its `type` header).
pub fn routing_key(topics: &Topics, m: &OutMessage) -> String {
    let kind = header(m, "type").unwrap_or_default();
    if m.topic == topics.status() {
        format!("status.{kind}")
    } else if m.topic == topics.dead_letters() {
        "deadletter".into()
    } else {
        kind.to_string()
    }
}

fn header<'a>(m: &'a OutMessage, name: &str) -> Option<&'a str> {
    (m.headers.iter())
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.as_str())
}

/// Persistent JSON with the event's id (status events and dead letters have none of their
/// own: a digest of the envelope, the same on a replay) and the headers.
fn properties(m: &OutMessage, payload: &[u8]) -> BasicProperties {
    let id = match header(m, "ce_id") {
        Some(id) => id.to_string(),
        None => hex::encode(&Sha256::digest(payload)[..16]),
    };
    let mut headers = FieldTable::default();
    for (k, v) in &m.headers {
        headers.insert((*k).into(), AMQPValue::LongString(v.as_str().into()));
    }
    headers.insert("key".into(), AMQPValue::LongString(m.key.as_str().into()));
    let mut props = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type(ShortString::from("application/json"))
        .with_message_id(ShortString::from(id.as_str()))
        .with_app_id(ShortString::from("tributary"))
        .with_headers(headers);
    if let Some(kind) = header(m, "type") {
        props = props.with_type(ShortString::from(kind));
    }
    props
}

/// The URL without its password.
fn redact(url: &str) -> String {
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

    fn message(topic: &str, headers: Vec<(&'static str, String)>) -> OutMessage {
        OutMessage {
            topic: topic.into(),
            key: "acme:1".into(),
            payload: Some(b"{}".to_vec()),
            headers,
        }
    }

    #[test]
    fn routing_keys_name_model_and_op_status_type_or_dead_letters() {
        let topics = Topics::new("t");
        let change = message(
            "t.crm.contact",
            vec![("type", "crm.contact.updated".into())],
        );
        assert_eq!(routing_key(&topics, &change), "crm.contact.updated");
        let status = message("t.status", vec![("type", "run.completed".into())]);
        assert_eq!(routing_key(&topics, &status), "status.run.completed");
        let dead = message(
            "t.deadletter",
            vec![("type", "record.dead_lettered".into())],
        );
        assert_eq!(routing_key(&topics, &dead), "deadletter");
    }

    #[test]
    fn the_message_id_is_the_event_id_or_a_digest_that_a_replay_repeats() {
        let change = message("t.crm.contact", vec![("ce_id", "evt_1".into())]);
        let id = |m: &OutMessage| properties(m, b"{}").message_id().clone().unwrap();
        assert_eq!(id(&change).as_str(), "evt_1");
        let status = message("t.status", vec![]);
        assert_eq!(id(&status), id(&status.clone()));
        assert_eq!(id(&status).as_str().len(), 32);
    }

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            redact("amqp://guest:guest@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
    }
}
