//! A delta-tracked resource through the whole pipeline (mock cluster, SQLite, the real
//! consumer loop) against the Microsoft Graph sandbox: a full run creates every user; the
//! first incremental run is the first delta round (nothing new to say, a link stored);
//! after users change and are removed at the provider, the next incremental run starts
//! from the stored link and emits exactly the updates and the deletes.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Value};
use tributary::bus::{Job, JobReason};
use tributary::domain::RunMode;
use tributary_e2e::broker::TopicReader;
use tributary_e2e::inprocess::InProcess;
use tributary_e2e::pipeline::{of_run, wait_run_end};
use tributary_e2e::rig::PipelineRig;
use tributary_e2e::{new_connection, repo_root, SandboxControl};
use tributary_sandbox::{self as sandbox, Profile};

const WAIT: Duration = Duration::from_secs(60);
const USERS: u64 = 30;

#[tokio::test(flavor = "multi_thread")]
async fn the_next_delta_round_updates_and_deletes_exactly_what_changed() {
    let rig = InProcess::start(10).await;
    let _worker = rig.worker(|s| s.slice_max_pages = 1);
    let lane = rig.lane();
    let mut profile =
        Profile::load(&repo_root().join("provider-specs/sandbox/msgraph.yaml")).unwrap();
    profile.resources.get_mut("users").unwrap().count = USERS;
    let graph = sandbox::start(profile, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let control = SandboxControl::new(graph.base_url());
    let connection = lane
        .store
        .create_connection(&new_connection(
            &lane.tenant,
            "msgraph",
            json!({
                "tenant_id": "sandbox-tenant",
                "base_url": graph.base_url(),
                "token_url": format!("{}/sandbox-tenant/oauth2/v2.0/token", graph.base_url()),
            }),
            json!({
                "refresh_token": "sandbox-msgraph-refresh",
                "client_id": "sandbox-client",
                "client_secret": "sandbox-client-secret"
            }),
        ))
        .await
        .unwrap();
    let mut events = TopicReader::new(&lane.brokers, &lane.topics.model("directory.user"));
    let mut statuses = rig.statuses();

    let full = run(&rig, &mut statuses, &connection, RunMode::Full).await;
    let created = read_run(&mut events, &full.run_id, USERS as usize);
    assert!(created.iter().all(|v| v["op"] == "created"));

    let first_round = run(&rig, &mut statuses, &connection, RunMode::Incremental).await;
    let stored = lane.store.checkpoint(&connection, "users").await.unwrap();
    let link = stored.delta_link.expect("the first round's link is stored");
    assert!(link.contains("/v1.0/users/delta"), "{link}");
    assert!(
        of_run(&events.received, &first_round.run_id).is_empty(),
        "the first round found nothing changed"
    );

    let changed = control.mutate("users", 3, 2, 0).await.unwrap();
    let ids = |key: &str| -> BTreeSet<String> {
        changed[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.to_string().trim_matches('"').to_string())
            .collect()
    };
    let second_round = run(&rig, &mut statuses, &connection, RunMode::Incremental).await;
    let events_of_round = read_run(&mut events, &second_round.run_id, 5);
    let by_op = |op: &str| -> BTreeSet<String> {
        events_of_round
            .iter()
            .filter(|v| v["op"] == op)
            .map(|v| v["record_id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(by_op("updated").len(), 3, "{events_of_round:?}");
    assert_eq!(by_op("deleted").len(), 2, "{events_of_round:?}");
    assert_eq!(
        events_of_round.len(),
        5,
        "nothing else: {events_of_round:?}"
    );
    assert_eq!(ids("updated").len(), 3);
    assert_eq!(ids("deleted").len(), 2);
    let known: BTreeSet<&str> = created
        .iter()
        .map(|v| v["record_id"].as_str().unwrap())
        .collect();
    assert!(
        by_op("deleted")
            .iter()
            .all(|id| known.contains(id.as_str())),
        "only users the full run created are deleted"
    );
    let next = lane.store.checkpoint(&connection, "users").await.unwrap();
    assert_ne!(
        next.delta_link.as_deref(),
        Some(link.as_str()),
        "a new link"
    );
}

/// A run of the connection's users, to its end (which must be a completion).
async fn run(rig: &InProcess, statuses: &mut TopicReader, connection: &str, mode: RunMode) -> Job {
    let lane = rig.lane();
    let job = Job::new_run(&lane.tenant, connection, "users", mode, JobReason::Schedule);
    rig.enqueue(&job).await;
    let end = wait_run_end(statuses, &job.run_id, WAIT);
    assert_eq!(end["type"], "run.completed", "{end}");
    job
}

/// The change events of `run`, once `count` of them arrived.
fn read_run(events: &mut TopicReader, run: &str, count: usize) -> Vec<Value> {
    events.read_until(WAIT, &format!("{count} events of run {run}"), |all| {
        of_run(all, run).len() >= count
    });
    of_run(&events.received, run).into_iter().cloned().collect()
}
