//! Jobs on RabbitMQ, at the queues (this machine's RabbitMQ, a virtual host of the test's
//! own): a job that must wait goes to its lane's delay queue and comes back to its own
//! lane, so an urgent job (a resync, a webhook's fetch) that waited is still taken ahead
//! of the backlog.
#![cfg(feature = "process-tests")]

use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use tributary::bus::amqp::AmqpJobs;
use tributary::bus::job::job_message;
use tributary::bus::{Job, JobReason, Topics};
use tributary::domain::RunMode;
use tributary_e2e::amqp::{read_queue, TestVhost};
use tributary_e2e::broker::Received;

const WAIT: Duration = Duration::from_secs(30);

fn job_due_in(wait: Duration, reason: JobReason) -> Job {
    let mut job = Job::new_run("acme", "c1", "contacts", RunMode::Full, reason);
    job.not_before = Some(chrono::Utc::now() + chrono::Duration::from_std(wait).unwrap());
    job
}

fn job_id(received: Received) -> String {
    received.value.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_string()
}

fn next_job(queue: &Receiver<Received>, what: &str) -> String {
    job_id(
        queue
            .recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("{what} never arrived")),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_waiting_job_comes_back_to_its_own_lane() {
    let vhost = TestVhost::new();
    let topics = Topics::new("t");
    let jobs = AmqpJobs::connect(&vhost.url(), &topics, 5).await.unwrap();
    let queues = jobs.queues().clone();
    let normal = read_queue(&vhost.url(), &queues.jobs);
    let urgent = read_queue(&vhost.url(), &queues.urgent);

    // Published with a not-before time: each waits in its own lane's delay queue.
    let started = Instant::now();
    let resync = job_due_in(Duration::from_millis(1500), JobReason::Resync);
    let scheduled = job_due_in(Duration::from_millis(1500), JobReason::Schedule);
    let sent = [
        job_message(&topics.urgent_jobs(), &resync),
        job_message(&topics.jobs(), &scheduled),
    ];
    jobs.publish(&sent.iter().collect::<Vec<_>>())
        .await
        .unwrap();
    assert_eq!(next_job(&urgent, "the resync"), resync.job_id);
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "it waited its step first"
    );
    assert_eq!(next_job(&normal, "the scheduled job"), scheduled.job_id);

    // A delivered job a worker puts back to wait (its tenant was busy) returns to its lane.
    let busy = job_due_in(Duration::ZERO, JobReason::Resync);
    let message = job_message(&topics.urgent_jobs(), &busy);
    let properties = lapin::BasicProperties::default().with_delivery_mode(2);
    jobs.delay(
        &queues.urgent,
        message.payload.as_deref().unwrap(),
        &properties,
        Duration::from_secs(1),
    )
    .await
    .unwrap();
    assert_eq!(next_job(&urgent, "the delayed urgent job"), busy.job_id);
}
