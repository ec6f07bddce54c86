//! The pipeline stories both tiers tell (`tests/tests/inprocess_pipeline.rs` in one
//! process, `worker/tests/pipeline.rs` with worker processes): the steps and the assertions
//! they share, written once over `PipelineRig`. Each test adds what only its tier checks.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};
use tributary::bus::Job;
use tributary::domain::RunMode;

use crate::broker::TopicReader;
use crate::pipeline::{of_run, values};
use crate::repo_root;
use crate::rig::PipelineRig;

/// A story on one rig: the readers of its events and statuses, a label for the messages
/// (the backend) and how long to wait for each step.
pub struct Story<'a, R> {
    pub rig: &'a R,
    pub events: TopicReader,
    pub statuses: TopicReader,
    label: &'a str,
    wait: Duration,
}

/// The ids a sandbox `mutate` answer lists under `key` ("updated", "deleted").
pub fn ids(answer: &Value, key: &str) -> HashSet<String> {
    answer[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.to_string())
        .collect()
}

/// The end of a full sync that failed on page 2, and of the complete one after it.
pub struct FailedThenFixed {
    pub broken: Job,
    pub fixed: Job,
    pub fixed_end: Value,
    /// The contacts removed at the provider before the failed run.
    pub removed: HashSet<String>,
    /// Every delete event read.
    pub deletes: Vec<Value>,
}

impl<'a, R: PipelineRig> Story<'a, R> {
    /// Opens the readers; start the rig's worker first.
    pub fn new(rig: &'a R, label: &'a str, wait: Duration) -> Self {
        Story {
            rig,
            events: rig.events(),
            statuses: rig.statuses(),
            label,
            wait,
        }
    }

    /// Enqueue a run of `mode` and wait for its end: the job and its end's status event.
    pub async fn run(&mut self, mode: RunMode) -> (Job, Value) {
        self.rig
            .run_to_end(mode, &mut self.statuses, self.wait)
            .await
    }

    /// `run`, which must complete.
    pub async fn completed(&mut self, mode: RunMode) -> (Job, Value) {
        let (job, end) = self.run(mode).await;
        assert_eq!(end["type"], "run.completed", "{}: {end}", self.label);
        (job, end)
    }

    /// A first full sync of the sandbox's `n` contacts in bounded slices: `n` created
    /// events, one per record, keyed by tenant and record with the tenant and type in
    /// headers. Returns the job.
    pub async fn first_full_sync(&mut self, n: u64) -> Job {
        let label = self.label;
        let (first, end) = self.completed(RunMode::Full).await;
        assert_eq!(end["counts"]["created"], n, "{label}: {end}");
        assert!(
            end["counts"]["slices"].as_i64().unwrap() >= 3,
            "{label}: bounded slices: {end}"
        );
        let n = n as usize;
        self.events
            .read_until(self.wait, "N created events", |all| all.len() >= n);
        let created = of_run(&self.events.received, &first.run_id);
        assert_eq!(created.len(), n, "{label}");
        let records: HashSet<&str> = created
            .iter()
            .map(|v| v["record_id"].as_str().unwrap())
            .collect();
        assert_eq!(records.len(), n, "{label}: one event per record");
        let r = &self.events.received[0];
        let record_id = r.value.as_ref().unwrap()["record_id"].as_str().unwrap();
        assert_eq!(r.key, format!("acme:{record_id}"), "{label}");
        assert_eq!(r.header("tenant"), Some("acme"), "{label}");
        assert_eq!(r.header("type"), Some("crm.contact.created"), "{label}");
        first
    }

    /// After a first full sync of `n`: 4 contacts changed and 3 removed at the provider;
    /// the incremental run gives exactly the 4 updated (with `title` among the changed
    /// fields), the next full run exactly the 3 deleted. Returns the full run's end and
    /// the events read so far.
    pub async fn updates_then_deletes(&mut self, n: u64) -> (Value, usize) {
        let label = self.label;
        let changed = self
            .rig
            .lane()
            .control
            .mutate("contacts", 4, 3, 0)
            .await
            .unwrap();
        let (updated_ids, deleted_ids) = (ids(&changed, "updated"), ids(&changed, "deleted"));

        let (inc, _) = self.completed(RunMode::Incremental).await;
        let total = n as usize + 4;
        self.events
            .read_until(self.wait, "4 updated events", |all| all.len() >= total);
        let updates = of_run(&self.events.received, &inc.run_id);
        assert_eq!(
            updates.len(),
            4,
            "{label}: exactly the k changed: {updates:?}"
        );
        for v in &updates {
            assert_eq!(v["op"], "updated", "{label}: {v}");
            assert!(
                updated_ids.contains(v["record_id"].as_str().unwrap()),
                "{label}: {v}"
            );
            assert!(
                v["changed_fields"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|f| f == "title"),
                "{label}: {v}"
            );
        }

        let (full, end) = self.run(RunMode::Full).await;
        assert_eq!(end["counts"]["deleted"], 3, "{label}: {end}");
        let total = total + 3;
        self.events
            .read_until(self.wait, "3 deleted events", |all| all.len() >= total);
        let deletes = of_run(&self.events.received, &full.run_id);
        assert_eq!(
            deletes.len(),
            3,
            "{label}: exactly the d removed, nothing else"
        );
        for v in &deletes {
            assert_eq!(v["op"], "deleted", "{label}: {v}");
            assert!(v["data"].is_null(), "{label}: {v}");
            assert!(
                deleted_ids.contains(v["record_id"].as_str().unwrap()),
                "{label}: {v}"
            );
        }
        (end, total)
    }

    /// Replaying `first` (the same message) after `total` events adds no event and does
    /// not run it again: the next run's end (same partition, same resource lock, later in
    /// line) proves the replay was handled, and its events, had there been any, were
    /// acknowledged before that.
    pub async fn replay_adds_nothing(&mut self, first: &Job, n: u64, total: usize) {
        let label = self.label;
        self.rig.enqueue(first).await;
        self.completed(RunMode::Incremental).await;
        let all = values(self.events.drain_for(Duration::from_millis(500))).len();
        assert_eq!(all, total, "{label}: the replay added no events");
        assert_eq!(
            self.rig
                .lane()
                .store
                .run(&first.run_id)
                .await
                .unwrap()
                .counts
                .created,
            n as i64,
            "{label}: the replay did not run again"
        );
    }

    /// A full sync of the sandbox's 300 contacts, then 5 removed and page 2 failing for
    /// good: that full sync is `run.failed` naming page 2; with the fault gone the next
    /// one deletes exactly the 5, all from its own run.
    pub async fn failed_full_sync_then_a_complete_one(&mut self) -> FailedThenFixed {
        let label = self.label;
        self.completed(RunMode::Full).await;
        let removed = self
            .rig
            .lane()
            .control
            .mutate("contacts", 0, 5, 0)
            .await
            .unwrap();
        let removed = ids(&removed, "deleted");
        self.rig
            .lane()
            .control
            .faults(json!([{"kind": "status", "status": 500, "page": 2, "times": 0}]))
            .await
            .unwrap();
        let (broken, end) = self.run(RunMode::Full).await;
        assert_eq!(end["type"], "run.failed", "{label}: {end}");
        assert!(
            end["reason"].as_str().unwrap().contains("page 2"),
            "{label}: {end}"
        );
        self.rig.lane().control.faults(json!([])).await.unwrap();
        let (fixed, fixed_end) = self.run(RunMode::Full).await;
        assert_eq!(fixed_end["counts"]["deleted"], 5, "{label}: {fixed_end}");
        self.events
            .read_until(self.wait, "the deletes", |all| all.len() >= 305);
        let deletes: Vec<Value> = values(&self.events.received)
            .into_iter()
            .filter(|v| v["op"] == "deleted")
            .cloned()
            .collect();
        assert_eq!(deletes.len(), 5, "{label}: {deletes:?}");
        for v in &deletes {
            assert_eq!(
                v["sync_run"],
                fixed.run_id.as_str(),
                "{label}: no delete from the failed run: {v}"
            );
        }
        FailedThenFixed {
            broken,
            fixed,
            fixed_end,
            removed,
            deletes,
        }
    }

    /// Two full syncs where 2 of the sandbox's 120 contacts fail their mapping (see
    /// `broken_title_specs`): each completes with 2 dead-lettered and nothing deleted, the
    /// first with the other 118 created. Returns the reader of the dead letters, with 4.
    pub async fn two_syncs_with_dead_letters(&mut self) -> TopicReader {
        let label = self.label;
        let mut dead = self.rig.dead_letters();
        for round in 0..2 {
            let (_, end) = self.completed(RunMode::Full).await;
            assert_eq!(end["counts"]["dead_lettered"], 2, "{label}: {end}");
            assert_eq!(
                end["counts"]["deleted"], 0,
                "{label}: a dead-lettered record is not deleted: {end}"
            );
            if round == 0 {
                assert_eq!(end["counts"]["created"], 118, "{label}: {end}");
            }
        }
        dead.read_until(self.wait, "4 dead letters", |all| all.len() >= 4);
        dead
    }
}

/// A specs directory of its own whose HubSpot spec gives every 50th contact a number as
/// its title, which `crm.contact` refuses: records 50 and 100 of 120 fail their mapping.
pub fn broken_title_specs() -> PathBuf {
    let specs = std::env::temp_dir().join(format!(
        "tributary-broken-specs-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&specs).unwrap();
    let spec = std::fs::read_to_string(repo_root().join("provider-specs/hubspot.yaml")).unwrap();
    let broken = spec.replace(
        "\"title\": $p.jobtitle,",
        "\"title\": $number(id) % 50 = 0 ? 42 : $p.jobtitle,",
    );
    assert_ne!(
        broken, spec,
        "the mapping line to break is still in the spec"
    );
    std::fs::write(specs.join("hubspot.yaml"), broken).unwrap();
    specs
}
