//! A real Kafka-protocol broker process (tansu) for tests, and reading topics.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::Value;

/// A tansu broker on a free loopback port, killed on drop; or the broker
/// `.ci/run` started, named by TRIBUTARY_TEST_KAFKA_BROKERS (tests isolate
/// themselves with their own topic prefixes).
pub struct Broker {
    child: Option<Child>,
    pub addr: String,
}

fn tansu_binary() -> String {
    if let Ok(bin) = std::env::var("TANSU_BIN") {
        return bin;
    }
    let home = std::env::var("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| {
            std::path::PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cargo")
        });
    let installed = home.join("bin/tansu");
    if installed.exists() {
        installed.display().to_string()
    } else {
        "tansu".into()
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Broker {
    pub fn start() -> Broker {
        if let Ok(addr) = std::env::var("TRIBUTARY_TEST_KAFKA_BROKERS") {
            let broker = Broker { child: None, addr };
            broker.wait_ready();
            return broker;
        }
        Self::start_own()
    }

    /// A tansu process of this test's own, even when `.ci/run` named a shared broker (fault
    /// tests freeze it).
    pub fn start_own() -> Broker {
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(tansu_binary())
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url, "--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start tansu ({}): {e}; install it with `cargo install --locked tansu@0.6.0 --features dynostore,postgres`", tansu_binary()));
        let broker = Broker {
            child: Some(child),
            addr: format!("127.0.0.1:{port}"),
        };
        broker.wait_ready();
        broker
    }

    /// No broker: an address nothing listens on, for deployments that must not need Kafka
    /// (anything that tried it would fail).
    pub fn none() -> Broker {
        Broker {
            child: None,
            addr: "127.0.0.1:1".into(),
        }
    }

    /// The broker's process id, when this test started it.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Ready when it answers a metadata request.
    fn wait_ready(&self) {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.addr)
            .create()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if consumer
                .fetch_metadata(None, Duration::from_secs(2))
                .is_ok()
            {
                return;
            }
        }
        panic!("tansu at {} did not answer within 30 s", self.addr);
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One consumed message.
#[derive(Debug, Clone)]
pub struct Received {
    pub key: String,
    pub value: Option<Value>,
    pub headers: Vec<(String, String)>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads a topic from the beginning, across all its partitions, without a group; or
/// (`TopicReader::amqp`) what RabbitMQ routes to a queue of its own.
pub struct TopicReader {
    source: Source,
    pub received: Vec<Received>,
}

enum Source {
    Kafka(BaseConsumer),
    Amqp(std::sync::mpsc::Receiver<Received>),
}

impl Source {
    /// The next message within `wait`, if one came.
    fn next(&self, wait: Duration) -> Option<Received> {
        match self {
            Source::Kafka(consumer) => match consumer.poll(wait) {
                Some(Ok(m)) => Some(received(&m)),
                _ => None,
            },
            Source::Amqp(rx) => rx.recv_timeout(wait).ok(),
        }
    }
}

fn received(m: &rdkafka::message::BorrowedMessage<'_>) -> Received {
    let headers = m
        .headers()
        .map(|h| {
            h.iter()
                .map(|x| {
                    (
                        x.key.to_string(),
                        String::from_utf8_lossy(x.value.unwrap_or_default()).into_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Received {
        key: String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
        value: m
            .payload()
            .map(|p| serde_json::from_slice(p).expect("JSON value")),
        headers,
    }
}

impl TopicReader {
    pub fn new(brokers: &str, topic: &str) -> TopicReader {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set(
                "group.id",
                format!("reader-{}", uuid::Uuid::new_v4().simple()),
            )
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let partitions = loop {
            let md = consumer
                .fetch_metadata(Some(topic), Duration::from_secs(5))
                .unwrap();
            let n = md
                .topics()
                .first()
                .map(|t| t.partitions().len())
                .unwrap_or(0);
            if n > 0 {
                break n;
            }
            assert!(Instant::now() < deadline, "topic {topic} never appeared");
        };
        let mut list = TopicPartitionList::new();
        for p in 0..partitions {
            list.add_partition_offset(topic, p as i32, Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&list).unwrap();
        TopicReader {
            source: Source::Kafka(consumer),
            received: Vec::new(),
        }
    }

    /// What RabbitMQ routes from `exchange` with these binding keys, from now on.
    pub fn amqp(url: &str, exchange: &str, keys: &[&str]) -> TopicReader {
        TopicReader {
            source: Source::Amqp(crate::amqp::read_exchange(url, exchange, keys)),
            received: Vec::new(),
        }
    }

    /// Read until `done(all received so far)` holds, or panic after `timeout`.
    pub fn read_until(
        &mut self,
        timeout: Duration,
        what: &str,
        done: impl Fn(&[Received]) -> bool,
    ) -> &[Received] {
        let deadline = Instant::now() + timeout;
        while !done(&self.received) {
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}; got {} messages",
                self.received.len()
            );
            if let Some(m) = self.source.next(Duration::from_millis(200)) {
                self.received.push(m);
            }
        }
        &self.received
    }

    /// Everything that arrives within `quiet` (used only to confirm that nothing more comes).
    pub fn drain_for(&mut self, quiet: Duration) -> &[Received] {
        let deadline = Instant::now() + quiet;
        while Instant::now() < deadline {
            if let Some(m) = self.source.next(Duration::from_millis(100)) {
                self.received.push(m);
            }
        }
        &self.received
    }
}

/// The end (high watermark) of each partition of `topic`: what was ever published to it.
/// Two equal readings around an action prove the action published nothing there.
pub fn end_offsets(brokers: &str, topic: &str) -> Vec<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let partitions = md.topics().first().map_or(0, |t| t.partitions().len());
    assert!(partitions > 0, "topic {topic} has no partitions");
    (0..partitions as i32)
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .unwrap()
                .1
        })
        .collect()
}
