//! What the in-process rig (`inprocess::InProcess`) and the process rig (`pipeline::Rig`)
//! share: their `Lane` (a broker's address, the store, tenant `acme`'s connection to the
//! contacts sandbox), the jobs a test enqueues for it and the readers of what the worker
//! publishes. Each rig adds its broker and its workers.

use std::future::Future;
use std::time::Duration;

use futures::FutureExt;
use serde_json::Value;
use tributary::bus::{Job, JobReason, Publisher, Topics};
use tributary::domain::RunMode;
use tributary::store::{ConnectionRecord, Store};
use tributary_sandbox::{Profile, SandboxHandle};

use crate::broker::TopicReader;
use crate::pipeline::{contacts_sandbox, oauth_contacts_connection, wait_run_end};
use crate::SandboxControl;

/// The parts both rigs have: a broker's address, the store, the pipeline's topics, and
/// the contacts sandbox with tenant `acme`'s OAuth connection to it.
pub struct Lane {
    /// The bootstrap servers of the rig's broker.
    pub brokers: String,
    pub store: Store,
    pub topics: Topics,
    pub publisher: Publisher,
    pub sandbox: SandboxHandle,
    pub control: SandboxControl,
    pub tenant: String,
    /// The id of the tenant's OAuth connection to the sandbox.
    pub connection: String,
}

impl Lane {
    /// A sandbox serving `count` contacts (its profile changed by `adjust` first), the tenant
    /// and its connection in `store`, and a publisher to `brokers`.
    pub async fn start(
        brokers: String,
        topics: Topics,
        store: Store,
        count: u64,
        adjust: impl FnOnce(&mut Profile),
    ) -> Lane {
        let sandbox = contacts_sandbox(count, adjust).await;
        let control = SandboxControl::new(sandbox.base_url());
        let tenant = "acme".to_string();
        let connection = oauth_contacts_connection(&store, &tenant, &sandbox).await;
        let publisher = Publisher::new(&brokers).unwrap();
        Lane {
            brokers,
            store,
            topics,
            publisher,
            sandbox,
            control,
            tenant,
            connection,
        }
    }
}

/// A rig: its lane, and what tests do with it.
pub trait PipelineRig {
    fn lane(&self) -> &Lane;

    /// A scheduled run of the connection's contacts.
    fn job(&self, mode: RunMode) -> Job {
        let lane = self.lane();
        Job::new_run(
            &lane.tenant,
            &lane.connection,
            "contacts",
            mode,
            JobReason::Schedule,
        )
    }

    /// Publish `job` to the jobs topic.
    fn enqueue(&self, job: &Job) -> impl Future<Output = ()> {
        let lane = self.lane();
        lane.publisher
            .enqueue(&lane.topics, job)
            .map(|sent| sent.expect("the job is enqueued"))
    }

    /// Enqueue a run of `mode` and wait for its end: the job and its end's status event.
    fn run_to_end(
        &self,
        mode: RunMode,
        statuses: &mut TopicReader,
        timeout: Duration,
    ) -> impl Future<Output = (Job, Value)> {
        async move {
            let job = self.job(mode);
            self.enqueue(&job).await;
            let end = wait_run_end(statuses, &job.run_id, timeout);
            (job, end)
        }
    }

    /// The rig's connection as the store holds it now.
    fn stored_connection(&self) -> impl Future<Output = ConnectionRecord> {
        let lane = self.lane();
        lane.store
            .connection(&lane.connection)
            .map(|found| found.expect("the rig's connection is stored"))
    }

    /// The change events of `crm.contact`.
    fn events(&self) -> TopicReader {
        let lane = self.lane();
        TopicReader::new(&lane.brokers, &lane.topics.model("crm.contact"))
    }

    fn statuses(&self) -> TopicReader {
        let lane = self.lane();
        TopicReader::new(&lane.brokers, &lane.topics.status())
    }

    fn dead_letters(&self) -> TopicReader {
        let lane = self.lane();
        TopicReader::new(&lane.brokers, &lane.topics.dead_letters())
    }
}
