//! RabbitMQ for tests: a virtual host of its own per rig (made with `rabbitmqctl`, removed
//! when dropped), and readers of the events exchange: a queue of their own bound to the
//! routing keys they want, consumed on a thread of their own so `TopicReader` stays
//! synchronous whatever bus it reads.

use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Connection, ConnectionProperties, ExchangeKind};

use crate::broker::Received;

/// The RabbitMQ tests use (this machine's: 127.0.0.1:5672, guest/guest).
pub const AMQP_HOST: &str = "127.0.0.1:5672";

fn rabbitmqctl(args: &[&str]) {
    let out = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("rabbitmqctl runs (RabbitMQ is installed on this machine)");
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A virtual host for one test run, guest allowed everything in it; deleted on drop.
pub struct TestVhost {
    pub name: String,
}

impl TestVhost {
    pub fn new() -> TestVhost {
        let name = format!("tributary-test-{}", uuid::Uuid::new_v4().simple());
        rabbitmqctl(&["add_vhost", &name]);
        rabbitmqctl(&["set_permissions", "-p", &name, "guest", ".*", ".*", ".*"]);
        TestVhost { name }
    }

    /// `amqp://guest:guest@127.0.0.1:5672/<vhost>`.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@{AMQP_HOST}/{}", self.name)
    }
}

impl Default for TestVhost {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestVhost {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl")
            .args(["delete_vhost", &self.name])
            .output();
    }
}

/// Bind a fresh queue to `exchange` (declared as Tributary declares it) for each of
/// `keys`, and hand every message on to the returned channel, acknowledged. Returns once
/// the bindings exist, so nothing published after it is missed.
pub fn read_exchange(url: &str, exchange: &str, keys: &[&str]) -> mpsc::Receiver<Received> {
    let (tx, rx) = mpsc::channel();
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
    let (url, exchange) = (url.to_string(), exchange.to_string());
    let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        rt.block_on(async move {
            let consumer = match bind(&url, &exchange, &keys).await {
                Ok(c) => {
                    let _ = ready_tx.send(Ok(()));
                    c
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    return;
                }
            };
            use futures::StreamExt;
            let mut consumer = consumer;
            while let Some(Ok(delivery)) = consumer.next().await {
                let _ = delivery.ack(BasicAckOptions::default()).await;
                if tx.send(received(&delivery)).is_err() {
                    return;
                }
            }
        });
    });
    ready_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the reader binds its queue in time")
        .expect("the reader binds its queue");
    rx
}

async fn bind(url: &str, exchange: &str, keys: &[String]) -> lapin::Result<lapin::Consumer> {
    let connection = Connection::connect(url, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    channel
        .exchange_declare(
            exchange.into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    for key in keys {
        channel
            .queue_bind(
                queue.name().clone(),
                exchange.into(),
                key.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    let consumer = channel
        .basic_consume(
            queue.name().clone(),
            "tributary-test-reader".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    // The connection lives as long as the consumer reads (it is moved into the thread).
    std::mem::forget(connection);
    Ok(consumer)
}

/// A delivery as the readers keep it: the routing key and message id among the headers.
fn received(d: &lapin::message::Delivery) -> Received {
    let mut headers = vec![("routing_key".to_string(), d.routing_key.to_string())];
    if let Some(id) = d.properties.message_id() {
        headers.push(("message_id".to_string(), id.to_string()));
    }
    if let Some(mode) = d.properties.delivery_mode() {
        headers.push(("delivery_mode".to_string(), mode.to_string()));
    }
    let mut key = String::new();
    if let Some(table) = d.properties.headers() {
        for (k, v) in table.inner() {
            let text = match v {
                AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
                other => format!("{other:?}"),
            };
            if k.as_str() == "key" {
                key = text.clone();
            }
            headers.push((k.to_string(), text));
        }
    }
    Received {
        key,
        value: Some(serde_json::from_slice(&d.data).expect("JSON value")),
        headers,
    }
}
