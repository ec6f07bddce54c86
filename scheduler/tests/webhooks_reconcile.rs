//! Webhooks and polling together, on the in-process rig and the shipped HubSpot spec
//! (`silence_seconds: 21600`, `reconcile_every_seconds: 3600`): while verified deliveries
//! flow, a scheduled incremental run soon after a completed one is skipped (full runs, and
//! runs asked for, still run); a channel silent for longer than the spec expects calls for
//! incremental runs of every resource of its connection, once per silence.

use std::sync::atomic::AtomicBool;

use chrono::{Duration as ChronoDuration, Utc};
use tributary::bus::{Job, JobReason};
use tributary::domain::RunMode;
use tributary::sync::{SliceOutcome, Syncer};
use tributary_e2e::inprocess::InProcess;

fn job(rig: &InProcess, mode: RunMode, reason: JobReason) -> Job {
    let lane = &rig.lane;
    Job::new_run(&lane.tenant, &lane.connection, "contacts", mode, reason)
}

async fn run(syncer: &Syncer, job: &Job) -> SliceOutcome {
    syncer.run_job(job, &AtomicBool::new(false)).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn healthy_webhooks_relax_polling_and_silence_calls_for_incremental_runs() {
    let rig = InProcess::start(10).await;
    let lane = &rig.lane;
    let syncer = Syncer::new(lane.store.clone(), lane.publisher.clone(), rig.settings());
    let scheduled = || job(&rig, RunMode::Incremental, JobReason::Schedule);
    assert!(matches!(
        run(&syncer, &job(&rig, RunMode::Full, JobReason::Schedule)).await,
        SliceOutcome::Completed(_)
    ));
    // No channel yet: polling as scheduled.
    assert!(matches!(
        run(&syncer, &scheduled()).await,
        SliceOutcome::Completed(_)
    ));

    // The last verified delivery seven hours ago (the spec expects one every six):
    // polling as scheduled, and the silence calls for one incremental run per resource,
    // once.
    let now = Utc::now();
    let quiet = now - ChronoDuration::hours(7);
    lane.store
        .record_deliveries(&lane.connection, "hubspot", 1, quiet)
        .await
        .unwrap();
    assert!(matches!(
        run(&syncer, &scheduled()).await,
        SliceOutcome::Completed(_)
    ));
    let runs = syncer.silence_runs(now).await.unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
    let (connection, jobs) = &runs[0];
    assert_eq!(connection, &lane.connection);
    assert_eq!(jobs.len(), 1);
    assert_eq!(
        (jobs[0].resource.as_str(), jobs[0].mode, jobs[0].reason),
        ("contacts", RunMode::Incremental, JobReason::Webhook)
    );
    lane.store.mark_silence_run(connection, now).await.unwrap();
    assert!(
        syncer.silence_runs(now).await.unwrap().is_empty(),
        "one run per silence"
    );

    // A verified delivery just now: the next scheduled incremental run is not needed.
    lane.store
        .record_deliveries(&lane.connection, "hubspot", 1, now)
        .await
        .unwrap();
    match run(&syncer, &scheduled()).await {
        SliceOutcome::Skipped(reason) => {
            assert!(
                reason.contains("webhooks keep `contacts` current"),
                "{reason}"
            )
        }
        other => panic!("a scheduled incremental run went ahead: {other:?}"),
    }
    // A resync someone asked for, and full runs, always run.
    assert!(matches!(
        run(&syncer, &job(&rig, RunMode::Incremental, JobReason::Resync)).await,
        SliceOutcome::Completed(_)
    ));
    assert!(matches!(
        run(&syncer, &job(&rig, RunMode::Full, JobReason::Schedule)).await,
        SliceOutcome::Completed(_)
    ));
    assert!(
        syncer.silence_runs(now).await.unwrap().is_empty(),
        "the channel is not silent"
    );
    let later = now + ChronoDuration::hours(7);
    assert_eq!(
        syncer.silence_runs(later).await.unwrap().len(),
        1,
        "silent again after the next six hours"
    );
}
