//! An end-to-end rig: a tansu broker process, a database, a sandbox provider,
//! and worker processes started from the real binary.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use tributary::bus::Topics;
use tributary::secrets::crypto::Cipher;
use tributary::store::{NewConnection, Store};
use tributary_sandbox::{self as sandbox, Profile, SandboxHandle};

use crate::broker::{Broker, Received, TopicReader};
use crate::rig::{Lane, PipelineRig};
use crate::{new_connection, repo_root};

pub struct Rig {
    pub backend: &'static str,
    pub broker: Broker,
    pub database_url: String,
    pub key: String,
    pub lane: Lane,
    worker_bin: String,
    /// Events on RabbitMQ (`with_rabbitmq_events`): the rig's own virtual host.
    pub amqp: Option<crate::amqp::TestVhost>,
    /// Jobs on RabbitMQ too (`without_kafka`).
    pub jobs_on_amqp: bool,
}

impl Rig {
    /// A rig reading HubSpot-shaped contacts (`count` of them) from the sandbox.
    pub async fn start(
        backend: &'static str,
        database_url: String,
        worker_bin: &str,
        count: u64,
    ) -> Rig {
        Self::start_with(backend, database_url, worker_bin, count, |_| {}).await
    }

    /// Like `start`, with a chance to adjust the sandbox profile first.
    pub async fn start_with(
        backend: &'static str,
        database_url: String,
        worker_bin: &str,
        count: u64,
        adjust: impl FnOnce(&mut Profile),
    ) -> Rig {
        Self::start_on(
            Broker::start(),
            backend,
            database_url,
            worker_bin,
            count,
            adjust,
        )
        .await
    }

    /// Like `start_with`, on a given broker.
    pub async fn start_on(
        broker: Broker,
        backend: &'static str,
        database_url: String,
        worker_bin: &str,
        count: u64,
        adjust: impl FnOnce(&mut Profile),
    ) -> Rig {
        let key = Cipher::generate_key();
        let store = Store::connect(&database_url, Cipher::from_base64(&key, &[]).unwrap())
            .await
            .unwrap();
        let lane = Lane::start(broker.addr.clone(), fresh_topics(), store, count, adjust).await;
        Rig {
            backend,
            broker,
            database_url,
            key,
            lane,
            worker_bin: worker_bin.to_string(),
            amqp: None,
            jobs_on_amqp: false,
        }
    }

    /// A deployment with no Kafka at all: events and jobs on RabbitMQ (a virtual host of
    /// the rig's own), the rig's jobs published to its queues, and every process pointed
    /// at a Kafka address where nothing listens.
    pub async fn without_kafka(
        backend: &'static str,
        database_url: String,
        worker_bin: &str,
        count: u64,
    ) -> Rig {
        Self::without_kafka_with(backend, database_url, worker_bin, count, |_| {}).await
    }

    /// Like `without_kafka`, with a chance to adjust the sandbox profile first.
    pub async fn without_kafka_with(
        backend: &'static str,
        database_url: String,
        worker_bin: &str,
        count: u64,
        adjust: impl FnOnce(&mut Profile),
    ) -> Rig {
        let mut rig = Self::start_on(
            Broker::none(),
            backend,
            database_url,
            worker_bin,
            count,
            adjust,
        )
        .await
        .with_rabbitmq_events();
        let url = rig.amqp.as_ref().expect("a virtual host").url();
        let jobs = tributary::bus::amqp::AmqpJobs::connect(&url, &rig.lane.topics, 5)
            .await
            .expect("the rig's jobs queues are declared");
        rig.lane.publisher = tributary::bus::Publisher::without_kafka().with_amqp_jobs(jobs);
        rig.jobs_on_amqp = true;
        rig
    }

    /// The buses' settings for the rig's processes.
    fn bus_env(&self, cmd: &mut Command) {
        if let Some(vhost) = &self.amqp {
            cmd.env("TRIBUTARY_EVENTS_BUS", "rabbitmq")
                .env("TRIBUTARY_AMQP_URL", vhost.url());
        }
        if self.jobs_on_amqp {
            cmd.env("TRIBUTARY_JOBS_BUS", "rabbitmq")
                .env("TRIBUTARY_AMQP_DELIVERY_LIMIT", "5")
                .env("TRIBUTARY_RESOURCE_CLAIM_SECONDS", "6");
        }
    }

    /// Workers publish events to RabbitMQ (a virtual host of the rig's own), and the rig's
    /// readers bind queues to the events exchange; jobs stay on Kafka.
    pub fn with_rabbitmq_events(mut self) -> Rig {
        self.amqp = Some(crate::amqp::TestVhost::new());
        self
    }

    /// A reader of the events exchange (events on RabbitMQ) for these binding keys.
    fn exchange_reader(&self, keys: &[&str]) -> Option<TopicReader> {
        let vhost = self.amqp.as_ref()?;
        let exchange = tributary::bus::amqp::events_exchange(&self.lane.topics);
        Some(TopicReader::amqp(&vhost.url(), &exchange, keys))
    }

    /// Start a worker process; `env` adds or overrides settings.
    pub fn worker(&self, env: &[(&str, String)]) -> WorkerProcess {
        let log = std::env::temp_dir().join(format!(
            "tributary-worker-{}.log",
            uuid::Uuid::new_v4().simple()
        ));
        let file = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(&self.worker_bin);
        cmd.arg("run")
            .current_dir(repo_root())
            .env("TRIBUTARY_KAFKA_BROKERS", &self.broker.addr)
            .env("TRIBUTARY_DATABASE_URL", &self.database_url)
            .env("TRIBUTARY_ENCRYPTION_KEY", &self.key)
            .env("TRIBUTARY_SPECS_DIR", repo_root().join("provider-specs"))
            .env("TRIBUTARY_TOPIC_PREFIX", &self.lane.topics.prefix)
            .env("TRIBUTARY_ALLOW_PRIVATE_HOSTS", "1")
            .env("TRIBUTARY_KAFKA_SESSION_TIMEOUT_MS", "6000")
            .env("TRIBUTARY_JOBS_PARTITIONS", "3")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(file);
        self.bus_env(&mut cmd);
        for (k, v) in env {
            cmd.env(k, v);
        }
        WorkerProcess {
            child: cmd.spawn().expect("start the worker"),
            log,
        }
    }

    /// Start the scheduler binary `bin` (a test's `CARGO_BIN_EXE_tributary-scheduler`) on
    /// the rig's broker, database and topics, its API on a loopback port that is also its
    /// `TRIBUTARY_PUBLIC_URL`, ticking hourly (tests enqueue their runs); `env` adds or
    /// overrides settings. Returns once `/healthz` answers.
    pub async fn scheduler(&self, bin: &str, env: &[(&str, String)]) -> SchedulerProcess {
        let port = crate::broker::free_port();
        let base = format!("http://127.0.0.1:{port}");
        let log = std::env::temp_dir().join(format!("tributary-scheduler-{port}.log"));
        let mut cmd = Command::new(bin);
        cmd.arg("run")
            .current_dir(repo_root())
            .env("TRIBUTARY_API_ADDR", format!("127.0.0.1:{port}"))
            .env("TRIBUTARY_PUBLIC_URL", &base)
            .env("TRIBUTARY_ADMIN_TOKEN", SCHEDULER_ADMIN_TOKEN)
            .env("TRIBUTARY_KAFKA_BROKERS", &self.broker.addr)
            .env("TRIBUTARY_DATABASE_URL", &self.database_url)
            .env("TRIBUTARY_ENCRYPTION_KEY", &self.key)
            .env("TRIBUTARY_SPECS_DIR", repo_root().join("provider-specs"))
            .env("TRIBUTARY_TOPIC_PREFIX", &self.lane.topics.prefix)
            .env("TRIBUTARY_ALLOW_PRIVATE_HOSTS", "1")
            .env("TRIBUTARY_SCHEDULER_TICK_SECONDS", "3600")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("the scheduler's log file"));
        self.bus_env(&mut cmd);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start the scheduler");
        let http = reqwest::Client::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !matches!(http.get(format!("{base}/healthz")).send().await, Ok(r) if r.status().is_success())
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the scheduler did not come up; see {}",
                log.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        SchedulerProcess { child, base, log }
    }

    /// Another connection of the rig's tenant, on the same sandbox, with a static token.
    pub async fn add_static_connection(&self, id: &str) -> String {
        self.static_connection(&self.lane.tenant, id, &self.lane.sandbox.base_url())
            .await
    }

    /// A connection of `tenant` (which must exist) to the HubSpot-shaped sandbox at
    /// `base_url`, with a static token.
    pub async fn static_connection(&self, tenant: &str, id: &str, base_url: &str) -> String {
        self.lane
            .store
            .create_connection(&NewConnection {
                id: Some(id.to_string()),
                ..new_connection(
                    tenant,
                    "hubspot",
                    json!({ "base_url": base_url }),
                    json!({"access_token": "sandbox-hubspot-token"}),
                )
            })
            .await
            .unwrap()
    }
}

impl PipelineRig for Rig {
    fn lane(&self) -> &Lane {
        &self.lane
    }

    fn events(&self) -> TopicReader {
        self.exchange_reader(&["crm.contact.*"]).unwrap_or_else(|| {
            TopicReader::new(&self.lane.brokers, &self.lane.topics.model("crm.contact"))
        })
    }

    fn statuses(&self) -> TopicReader {
        self.exchange_reader(&["status.#"])
            .unwrap_or_else(|| TopicReader::new(&self.lane.brokers, &self.lane.topics.status()))
    }

    fn dead_letters(&self) -> TopicReader {
        self.exchange_reader(&["deadletter"]).unwrap_or_else(|| {
            TopicReader::new(&self.lane.brokers, &self.lane.topics.dead_letters())
        })
    }
}

/// The JSON values of these messages (tombstones left out).
pub fn values(events: &[Received]) -> Vec<&Value> {
    events.iter().filter_map(|r| r.value.as_ref()).collect()
}

/// The values of these messages that belong to sync run `run`.
pub fn of_run<'a>(events: &'a [Received], run: &str) -> Vec<&'a Value> {
    values(events)
        .into_iter()
        .filter(|v| v["sync_run"] == run)
        .collect()
}

/// Waits for the run's final status event and returns it.
/// Read change events until each of `want` (record ids) has one of `op`; every event read
/// meanwhile must be one of them, of `connection`, and the first for its record. Returns
/// when each arrived.
pub fn await_record_ops(
    events: &mut TopicReader,
    connection: &str,
    op: &str,
    want: &[String],
) -> std::collections::HashMap<String, std::time::Instant> {
    let mut seen = std::collections::HashMap::new();
    while seen.len() < want.len() {
        let at = events.received.len();
        events.read_until(Duration::from_secs(30), "announced changes", |r| {
            r.len() > at
        });
        for m in &events.received[at..] {
            let v = m.value.as_ref().expect("change events have a body");
            assert_eq!(
                v["connection"], connection,
                "an event at another connection: {v}"
            );
            let id = v["record_id"].as_str().expect("a record id").to_string();
            assert!(want.contains(&id) && v["op"] == op, "unexpected event {v}");
            let first = seen.insert(id, std::time::Instant::now()).is_none();
            assert!(first, "two events for one change: {v}");
        }
    }
    seen
}

pub fn wait_run_end(statuses: &mut TopicReader, run_id: &str, timeout: Duration) -> Value {
    let is_end = |r: &Received| {
        r.value.as_ref().is_some_and(|v| {
            v["sync_run"] == run_id && (v["type"] == "run.completed" || v["type"] == "run.failed")
        })
    };
    statuses.read_until(timeout, &format!("the end of run {run_id}"), |all| {
        all.iter().any(is_end)
    });
    statuses
        .received
        .iter()
        .find(|r| is_end(r))
        .unwrap()
        .value
        .clone()
        .unwrap()
}

/// The HubSpot-shaped sandbox serving `count` contacts, with no rate limit, after `adjust`.
pub async fn contacts_sandbox(count: u64, adjust: impl FnOnce(&mut Profile)) -> SandboxHandle {
    let mut profile =
        Profile::load(&repo_root().join("provider-specs/sandbox/hubspot.yaml")).unwrap();
    profile.resources.get_mut("contacts").unwrap().count = count;
    profile.rate_limit = None;
    adjust(&mut profile);
    sandbox::start(profile, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// Creates `tenant` and its OAuth connection to the HubSpot-shaped `sandbox` (contacts);
/// returns the connection's id.
pub async fn oauth_contacts_connection(
    store: &Store,
    tenant: &str,
    sandbox: &SandboxHandle,
) -> String {
    store.create_tenant(tenant).await.unwrap();
    store
        .create_connection(&new_connection(
            tenant,
            "hubspot",
            json!({"base_url": sandbox.base_url(), "token_url": format!("{}/oauth/v1/token", sandbox.base_url())}),
            json!({
                "refresh_token": "sandbox-hubspot-refresh",
                "client_id": "sandbox-client",
                "client_secret": "sandbox-client-secret"
            }),
        ))
        .await
        .unwrap()
}

/// Topic names of their own (a random prefix), so tests sharing a broker keep apart.
pub fn fresh_topics() -> Topics {
    Topics::new(&format!(
        "t{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    ))
}

/// The admin token of schedulers started by [`Rig::scheduler`].
pub const SCHEDULER_ADMIN_TOKEN: &str = "admin-token-for-scheduler-process-tests";

/// A scheduler process (killed when dropped).
pub struct SchedulerProcess {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    pub log: std::path::PathBuf,
}

impl Drop for SchedulerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct WorkerProcess {
    child: Child,
    pub log: std::path::PathBuf,
}

impl WorkerProcess {
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        send_sigterm(self.child.id());
        self.child.wait().ok().and_then(|s| s.code())
    }

    /// Whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// How many partitions of `jobs_topic` this worker holds, from its latest rebalance
    /// (None before its first assignment or after a revoke).
    pub fn jobs_partitions(&self, jobs_topic: &str) -> Option<usize> {
        let text = strip_colors(&self.log_text());
        let mark = format!("{jobs_topic}/");
        let last = text.lines().rev().find(|l| {
            (l.contains("partitions assigned") || l.contains("partitions revoked"))
                && (l.contains(&mark) || l.contains("count=0"))
                && !l.contains(".urgent")
        })?;
        if last.contains("partitions revoked") {
            return None;
        }
        Some(last.matches(&mark).count())
    }
}

/// The log without its terminal color codes.
fn strip_colors(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Wait until the workers' group has settled: every worker holds `each` partitions of the
/// jobs topic (read from their rebalance log lines).
pub fn wait_group_settled(workers: &[WorkerProcess], jobs_topic: &str, each: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let held: Vec<Option<usize>> = workers
            .iter()
            .map(|w| w.jobs_partitions(jobs_topic))
            .collect();
        if held.iter().all(|h| *h == Some(each)) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the consumer group never settled: {held:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn send_sigterm(pid: u32) {
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
