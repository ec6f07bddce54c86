//! A slice commits its checkpoint and then sends its continuation job: two systems, no
//! transaction across them. When the send fails (the jobs topic is refused, the broker
//! went away, the worker died in between), the job is retried and finds its slice done;
//! it must send the continuation again, not skip it, or the rest of the run is lost until
//! the schedule's lease expires. The mock cluster refuses the jobs topic to make that
//! happen on purpose.

use std::sync::atomic::AtomicBool;
use std::time::Duration;

use rdkafka::types::RDKafkaRespErr;
use tributary::bus::{Job, Publisher};
use tributary::domain::RunMode;
use tributary::store::Checkpoint;
use tributary::sync::{SliceOutcome, Syncer};
use tributary_e2e::broker::TopicReader;
use tributary_e2e::inprocess::InProcess;
use tributary_e2e::pipeline::{values, wait_run_end};
use tributary_e2e::rig::PipelineRig;

const WAIT: Duration = Duration::from_secs(60);

fn syncer(rig: &InProcess, publisher: Publisher) -> Syncer {
    let mut settings = rig.settings();
    settings.slice_max_pages = 1;
    Syncer::new(rig.lane.store.clone(), publisher, settings)
}

async fn stored_checkpoint(rig: &InProcess) -> Checkpoint {
    let lane = &rig.lane;
    lane.store
        .checkpoint(&lane.connection, "contacts")
        .await
        .unwrap()
}

/// Every job message of `run` on the jobs topic so far.
fn jobs_of_run(jobs: &mut TopicReader, run: &str) -> Vec<Job> {
    values(jobs.drain_for(Duration::from_millis(500)))
        .into_iter()
        .filter(|v| v["run_id"] == run)
        .map(|v| serde_json::from_value(v.clone()).expect("a job message"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slice_retried_after_its_continuation_was_refused_sends_it_again() {
    let rig = InProcess::start(300).await;
    let jobs_topic = rig.lane.topics.jobs();
    let no = AtomicBool::new(false);
    let job = rig.job(RunMode::Full);

    // The jobs topic refused: slice 0 publishes its page and commits, its continuation fails.
    rig.cluster()
        .topic_error(
            &jobs_topic,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
        )
        .unwrap();
    let refused =
        Publisher::with_message_timeout(&rig.lane.brokers, Duration::from_secs(2)).unwrap();
    let first = syncer(&rig, refused).run_job(&job, &no).await;
    assert!(
        first.is_err(),
        "the continuation could not be sent: {first:?}"
    );
    let checkpoint = stored_checkpoint(&rig).await;
    assert_eq!(checkpoint.slice, 1, "slice 0 committed before the send");
    assert!(
        checkpoint.handover_pending,
        "and its continuation is not on the bus"
    );

    // The topic back: the retried job hands over instead of skipping a done slice.
    rig.cluster()
        .topic_error(&jobs_topic, RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR)
        .unwrap();
    let worker = syncer(&rig, rig.lane.publisher.clone());
    let mut jobs = TopicReader::new(&rig.lane.brokers, &jobs_topic);
    let again = worker.run_job(&job, &no).await.unwrap();
    let SliceOutcome::Continued(next) = again else {
        panic!("the retried slice sends its continuation: {again:?}")
    };
    assert_eq!(next.slice, 1);
    let sent = jobs_of_run(&mut jobs, &job.run_id);
    assert_eq!(
        sent.len(),
        1,
        "one continuation on the jobs topic: {sent:?}"
    );
    assert_eq!(sent[0].job_id, next.job_id);
    let checkpoint = stored_checkpoint(&rig).await;
    assert!(!checkpoint.handover_pending, "the bus has it now");

    // A third delivery of slice 0 is a plain duplicate now: skipped, nothing sent.
    let third = worker.run_job(&job, &no).await.unwrap();
    assert!(
        matches!(&third, SliceOutcome::Skipped(r) if r.contains("already done")),
        "{third:?}"
    );
    let sent = jobs_of_run(&mut jobs, &job.run_id);
    assert_eq!(sent.len(), 1, "still the one continuation: {sent:?}");

    // The run goes on from the continuation to its end, every record in it.
    let mut statuses = rig.statuses();
    let loop_worker = rig.worker(|s| s.slice_max_pages = 1);
    let end = wait_run_end(&mut statuses, &job.run_id, WAIT);
    assert_eq!(end["type"], "run.completed", "{end}");
    assert_eq!(end["counts"]["created"], 300, "{end}");
    loop_worker.drain().await.unwrap();
}
