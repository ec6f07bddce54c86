//! The pipeline in one process, with no external service: librdkafka's mock cluster as
//! the broker, a SQLite file, the sandbox provider on this runtime and the real jobs
//! consumer loop (`sync::worker::consume`) as a task. Plain `cargo test` runs the
//! suites built on it; the process-level rig (`pipeline::Rig`) needs tansu and PostgreSQL.
//!
//! Run tests on the multi-threaded runtime (`#[tokio::test(flavor = "multi_thread")]`):
//! the topic readers block the test's thread while the worker runs on the runtime's threads.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, DefaultProducerContext, Producer};
use tokio::task::JoinHandle;
use tributary::bus::kafka::pipeline_topics;
use tributary::store::Store;
use tributary::sync::worker::{consume, StopSignal, WorkerError, WorkerOptions};
use tributary::sync::{SyncSettings, Syncer};
use tributary_sandbox::Profile;

use crate::pipeline::fresh_topics;
use crate::rig::{Lane, PipelineRig};
use crate::{fresh_sqlite, repo_root, test_cipher};

/// Partitions of the jobs topics (as `TRIBUTARY_JOBS_PARTITIONS` in the process rig).
const JOBS_PARTITIONS: i32 = 3;

/// A mock cluster, a SQLite store and a HubSpot-shaped sandbox with one OAuth
/// connection (tenant `acme`, resource `contacts`). Workers are started with `worker`.
pub struct InProcess {
    pub lane: Lane,
    /// The client that owns the mock cluster (it lives as long as this client). Declared
    /// last so it is dropped last: clients go before the broker they talk to.
    cluster_owner: BaseProducer,
}

impl InProcess {
    /// A rig whose sandbox serves `count` contacts.
    pub async fn start(count: u64) -> InProcess {
        Self::start_with(count, |_| {}).await
    }

    /// Like `start`, with a chance to adjust the sandbox profile first.
    pub async fn start_with(count: u64, adjust: impl FnOnce(&mut Profile)) -> InProcess {
        let owner = mock_cluster_owner();
        let cluster = owner
            .client()
            .mock_cluster()
            .expect("the owner has a mock cluster");
        let brokers = cluster.bootstrap_servers();
        let topics = fresh_topics();
        // The mock cluster does not implement CreateTopics (`ensure_pipeline_topics`):
        // topics are made through its own API, with the partitions the worker would give them.
        let wanted = pipeline_topics(&topics, JOBS_PARTITIONS);
        for (name, partitions) in &wanted {
            cluster
                .create_topic(name, *partitions, 1)
                .unwrap_or_else(|e| panic!("mock cluster: creating {name}: {e}"));
        }
        drop(cluster);
        let store = Store::connect(&fresh_sqlite(), test_cipher())
            .await
            .unwrap();
        InProcess {
            lane: Lane::start(brokers, topics, store, count, adjust).await,
            cluster_owner: owner,
        }
    }

    /// The mock cluster itself, for tests that take its broker down and up
    /// (`broker_down`, `broker_up`) or slow it (`broker_round_trip_time`).
    pub fn cluster(&self) -> MockCluster<'_, DefaultProducerContext> {
        self.cluster_owner
            .client()
            .mock_cluster()
            .expect("the owner has a mock cluster")
    }

    /// The sync settings a worker of this rig runs with (specs from `provider-specs/`,
    /// loopback providers allowed), before a test's adjustments.
    pub fn settings(&self) -> SyncSettings {
        let mut settings =
            SyncSettings::new(repo_root().join("provider-specs"), self.lane.topics.clone());
        settings.engine.allow_private_hosts = true;
        settings
    }

    /// Start a worker (a `Syncer` and the consumer loop, as `tributary-worker run` wires
    /// them) on this runtime; `adjust` changes its sync settings first.
    pub fn worker(&self, adjust: impl FnOnce(&mut SyncSettings)) -> InProcessWorker {
        let mut settings = self.settings();
        adjust(&mut settings);
        let syncer = Arc::new(Syncer::new(
            self.lane.store.clone(),
            self.lane.publisher.clone(),
            settings,
        ));
        let options = WorkerOptions {
            brokers: self.lane.brokers.clone(),
            topics: self.lane.topics.clone(),
            // Short, because after a group's last member leaves, the mock broker holds the
            // next member's join for the session timeout less one second (a real broker
            // empties the group at once); heartbeats go every second.
            session_timeout: Duration::from_secs(3),
            concurrency: 4,
            ..WorkerOptions::default()
        };
        let stop = StopSignal::default();
        let task = tokio::spawn(consume(syncer, options, stop.clone()));
        InProcessWorker {
            stop,
            task: Some(task),
        }
    }
}

impl PipelineRig for InProcess {
    fn lane(&self) -> &Lane {
        &self.lane
    }
}

/// A client owning a one-broker mock cluster whose consumer groups form at once: by default
/// the mock broker waits 3 s for more members before a new group's first assignment (as a
/// real broker's `group.initial.rebalance.delay.ms` does), which every test would pay.
fn mock_cluster_owner() -> BaseProducer {
    let owner: BaseProducer = ClientConfig::new()
        .set("test.mock.num.brokers", "1")
        .create()
        .expect("librdkafka's mock cluster starts");
    // SAFETY: the handle is this live client's; a client created with
    // `test.mock.num.brokers` has a mock cluster, which lives until the client is
    // destroyed, and the pointer is checked before use. The mock's setters take its lock.
    unsafe {
        let cluster = rdkafka::bindings::rd_kafka_handle_mock_cluster(owner.client().native_ptr());
        assert!(!cluster.is_null(), "the client has no mock cluster");
        rdkafka::bindings::rd_kafka_mock_group_initial_rebalance_delay_ms(cluster, 0);
    }
    owner
}

/// A consumer loop running as a task; dropping it asks it to stop.
pub struct InProcessWorker {
    stop: StopSignal,
    task: Option<JoinHandle<Result<(), WorkerError>>>,
}

impl InProcessWorker {
    /// Stop taking jobs and wait for the drain (slices checkpoint, offsets commit, the
    /// consumers leave the group); the loop's own result.
    pub async fn drain(mut self) -> Result<(), WorkerError> {
        self.stop.stop();
        let task = self.task.take().expect("drained once");
        task.await.expect("the consumer loop does not panic")
    }
}

impl Drop for InProcessWorker {
    fn drop(&mut self) {
        self.stop.stop();
    }
}
