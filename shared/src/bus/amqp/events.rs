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

use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::BasicProperties;
use sha2::{Digest, Sha256};

use super::{events_exchange, AmqpSettings, Declare, Link, Outgoing};
use crate::bus::kafka::{BusError, OutMessage, Topics};

/// Publishes events to the exchange and waits for the broker's confirms.
pub struct AmqpEvents {
    mandatory: bool,
    topics: Topics,
    exchange: String,
    link: Link,
}

impl AmqpEvents {
    /// Connect and declare the exchange (a wrong URL or refused credentials fail here).
    pub async fn connect(settings: AmqpSettings, topics: &Topics) -> Result<Self, BusError> {
        let exchange = events_exchange(topics);
        let events = AmqpEvents {
            link: Link::new(
                &settings.url,
                vec![Declare::TopicExchange(exchange.clone())],
            ),
            exchange,
            topics: topics.clone(),
            mandatory: settings.mandatory,
        };
        events.link.channel().await?;
        Ok(events)
    }

    /// Publish every event of the batch (tombstones have no meaning here and are left
    /// out), then wait for every confirm; any nack, return or lost connection fails it all
    /// (and the next batch starts on a fresh connection).
    pub async fn publish(&self, messages: &[&OutMessage]) -> Result<(), BusError> {
        let sends = messages
            .iter()
            .filter_map(|m| {
                let payload = m.payload.as_deref()?;
                Some(Outgoing {
                    exchange: &self.exchange,
                    key: routing_key(&self.topics, m),
                    payload,
                    properties: properties(m, payload),
                })
            })
            .collect();
        let unroutable = format!(
            "bind a queue to `{}` with that key, or set TRIBUTARY_AMQP_MANDATORY=false to let \
             the broker drop such events",
            self.exchange
        );
        self.link
            .publish_confirmed(sends, self.mandatory, &unroutable)
            .await
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
}
