//! RabbitMQ for tests: a virtual host of its own per rig (made with `rabbitmqctl`, removed
//! when dropped), readers of the events exchange (a quorum queue of their own bound to the
//! routing keys they want, consumed on a thread of their own so `TopicReader` stays
//! synchronous whatever bus it reads), and stopping and starting the broker's application.

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

/// `rabbitmqctl stop_app` (the node stays up, its listeners and queues stop); `start_app`
/// brings it back. Only for tests run alone: it stops a shared service.
pub fn stop_app() {
    rabbitmqctl(&["stop_app"]);
}

pub fn start_app() {
    rabbitmqctl(&["start_app"]);
    rabbitmqctl(&["await_startup"]);
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

/// Bind a quorum queue of its own to `exchange` (declared as Tributary declares it) for
/// each of `keys`, and hand every message on to the returned channel, acknowledged. The
/// queue is durable and the reader connects again when the broker goes away (a restart
/// loses nothing), as a host's consumer would. Returns once the bindings exist, so nothing
/// published after it is missed.
pub fn read_exchange(url: &str, exchange: &str, keys: &[&str]) -> mpsc::Receiver<Received> {
    let (tx, rx) = mpsc::channel();
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
    let queue = format!("tributary-test-reader-{}", uuid::Uuid::new_v4().simple());
    let (url, exchange) = (url.to_string(), exchange.to_string());
    let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    on_a_thread_of_its_own(async move {
        let mut ready = Some(ready_tx);
        loop {
            match bind(&url, &exchange, &queue, &keys).await {
                Ok((connection, consumer)) => {
                    if let Some(r) = ready.take() {
                        let _ = r.send(Ok(()));
                    }
                    if !forward(consumer, &tx).await {
                        return;
                    }
                    drop(connection);
                }
                Err(e) => {
                    if let Some(r) = ready.take() {
                        let _ = r.send(Err(e.to_string()));
                        return;
                    }
                }
            }
            // The broker went away: try again (the queue kept what arrived meanwhile).
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the reader binds its queue in time")
        .expect("the reader binds its queue");
    rx
}

/// A durable queue bound to `exchange` for `keys` that nobody consumes (it keeps what is
/// routed to it): lets mandatory publishing go through without a consumer's cost, for
/// benchmarks.
pub async fn bind_queue(url: &str, exchange: &str, keys: &[&str]) {
    let queue = format!("tributary-bench-{}", uuid::Uuid::new_v4().simple());
    let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    let (connection, _channel) = declare_and_bind(url, exchange, &queue, &keys)
        .await
        .expect("the queue is bound");
    // The queue is durable: it outlives this connection.
    let _ = connection.close(200, "bound".into()).await;
}

/// Every message of an existing queue (one Tributary declared, e.g. `<prefix>.jobs.dead`),
/// acknowledged and handed on, read on a thread of its own.
pub fn read_queue(url: &str, queue: &str) -> mpsc::Receiver<Received> {
    let (tx, rx) = mpsc::channel();
    let (url, queue) = (url.to_string(), queue.to_string());
    on_a_thread_of_its_own(async move {
        let connection = Connection::connect(&url, ConnectionProperties::default())
            .await
            .expect("RabbitMQ answers");
        let channel = connection.create_channel().await.expect("a channel");
        let consumer = channel
            .basic_consume(
                queue.as_str().into(),
                "tributary-test-queue-reader".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("the queue exists");
        forward(consumer, &tx).await;
    });
    rx
}

/// Run `work` on a thread of its own with a runtime of its own, so readers keep reading
/// whatever the test's runtime does (and synchronous code can wait on them).
fn on_a_thread_of_its_own(work: impl std::future::Future<Output = ()> + Send + 'static) {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
            .block_on(work)
    });
}

/// Publish raw bytes to a queue through the default exchange, confirmed.
pub async fn publish_raw(url: &str, queue: &str, body: &[u8]) {
    let connection = Connection::connect(url, ConnectionProperties::default())
        .await
        .expect("RabbitMQ answers");
    let channel = connection.create_channel().await.expect("a channel");
    channel
        .confirm_select(lapin::options::ConfirmSelectOptions::default())
        .await
        .unwrap();
    let confirm = channel
        .basic_publish(
            "".into(),
            queue.into(),
            lapin::options::BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            body,
            lapin::BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .expect("published")
        .await
        .expect("confirmed");
    assert!(
        !confirm.is_nack() && confirm.take_message().is_none(),
        "`{queue}` took it"
    );
    let _ = connection.close(200, "sent".into()).await;
}

/// Pass deliveries on until the consumer ends; false when nobody reads any more.
async fn forward(mut consumer: lapin::Consumer, tx: &mpsc::Sender<Received>) -> bool {
    use futures::StreamExt;
    while let Some(Ok(delivery)) = consumer.next().await {
        let _ = delivery.ack(BasicAckOptions::default()).await;
        if tx.send(received(&delivery)).is_err() {
            return false;
        }
    }
    true
}

async fn declare_and_bind(
    url: &str,
    exchange: &str,
    queue: &str,
    keys: &[String],
) -> lapin::Result<(Connection, lapin::Channel)> {
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
    let mut quorum = FieldTable::default();
    quorum.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            quorum,
        )
        .await?;
    for key in keys {
        channel
            .queue_bind(
                queue.into(),
                exchange.into(),
                key.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    Ok((connection, channel))
}

async fn bind(
    url: &str,
    exchange: &str,
    queue: &str,
    keys: &[String],
) -> lapin::Result<(Connection, lapin::Consumer)> {
    let (connection, channel) = declare_and_bind(url, exchange, queue, keys).await?;
    let consumer = channel
        .basic_consume(
            queue.into(),
            "tributary-test-reader".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok((connection, consumer))
}

/// A delivery as the readers keep it: the routing key and message id among the headers
/// (a body that is not JSON is kept as a JSON string).
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
        value: Some(serde_json::from_slice(&d.data).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&d.data).into_owned())
        })),
        headers,
    }
}
