//! Whether this process can reach what it depends on (the state store, the broker) right
//! now, for the readiness endpoint (`GET /readyz` on both binaries) and its metric.
//!
//! A dependency that is down makes the process not ready, never dead: workers and the
//! scheduler keep running through an outage, retry with backoff and resume by themselves,
//! so `/healthz` (liveness) stays 200 and only `/readyz` answers 503 meanwhile.
//!
//! The state is process-wide (one process, one set of dependencies). Jobs report what they
//! hit (`set_ready(.., false)` on a store or broker error) and [`spawn_probes`] checks both
//! every few seconds, so readiness comes back without waiting for the next job.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use serde_json::{json, Value};
use tracing::{info, warn};

/// The state store (PostgreSQL or SQLite).
pub const STORE: &str = "store";
/// The Kafka broker.
pub const BROKER: &str = "broker";

/// How often the probes check the store and the broker.
pub const PROBE_EVERY: Duration = Duration::from_secs(2);

#[derive(Default)]
struct State {
    ready: BTreeMap<String, bool>,
    /// Jobs-topic partitions with work waiting and no consumer in the group, by topic.
    unowned: BTreeMap<String, Vec<i32>>,
}

static STATE: Mutex<State> = Mutex::new(State {
    ready: BTreeMap::new(),
    unowned: BTreeMap::new(),
});

fn state() -> std::sync::MutexGuard<'static, State> {
    // Plain data: a panic elsewhere while it was held leaves nothing half-written.
    STATE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Record whether `component` is reachable; logs each change (down as a warning).
pub fn set_ready(component: &str, ready: bool) {
    crate::telemetry::metrics().set_ready(component, ready);
    let before = state().ready.insert(component.to_string(), ready);
    match (before, ready) {
        (Some(true) | None, false) => {
            warn!(
                component,
                "dependency unreachable: not ready (retrying with backoff)"
            )
        }
        (Some(false), true) => info!(component, "dependency reachable again: ready"),
        _ => {}
    }
}

/// Whether every dependency reported so far is reachable.
pub fn is_ready() -> bool {
    state().ready.values().all(|r| *r)
}

/// Record the jobs-topic partitions that have waiting jobs and no owner in the group
/// (empty when every partition is owned).
pub fn set_unowned_partitions(topic: &str, partitions: &[i32]) {
    let mut s = state();
    if partitions.is_empty() {
        s.unowned.remove(topic);
    } else {
        s.unowned.insert(topic.to_string(), partitions.to_vec());
    }
}

/// The readiness answer: whether ready, and a JSON body naming each dependency's state
/// (`{"ready": false, "down": ["store"], "dependencies": {"broker": "up", "store": "down"}}`).
pub fn report() -> (bool, Value) {
    let s = state();
    let down: Vec<&str> = s
        .ready
        .iter()
        .filter(|(_, r)| !**r)
        .map(|(c, _)| c.as_str())
        .collect();
    let dependencies: serde_json::Map<String, Value> = s
        .ready
        .iter()
        .map(|(c, r)| (c.clone(), json!(if *r { "up" } else { "down" })))
        .collect();
    let ready = down.is_empty();
    let mut body = json!({"ready": ready, "down": down, "dependencies": dependencies});
    if !s.unowned.is_empty() {
        body["unowned_partitions"] = json!(s.unowned);
    }
    (ready, body)
}

/// Check the store (a `SELECT 1`) and, when `brokers` is given, the broker (a metadata
/// request) every [`PROBE_EVERY`], for the life of the process.
///
/// The store is probed on PostgreSQL only: SQLite is a file beside the process with one
/// connection shared by every job, which a probe would only compete for. Jobs still report
/// a failing SQLite store through [`set_ready`].
pub fn spawn_probes(store: crate::store::Store, brokers: Option<String>) {
    if store.is_postgres() {
        spawn_store_probe(store);
    }
    if let Some(brokers) = brokers {
        spawn_broker_probe(brokers);
    }
}

fn spawn_store_probe(store: crate::store::Store) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(PROBE_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let up = tokio::time::timeout(
                PROBE_EVERY * 2,
                sqlx::query("SELECT 1").execute(store.pool()),
            )
            .await
            .is_ok_and(|r| r.is_ok());
            set_ready(STORE, up);
        }
    });
}

/// The broker check blocks (a metadata request), so it runs on a thread of its own rather
/// than borrowing the runtime's blocking pool every few seconds.
fn spawn_broker_probe(brokers: String) {
    let probe = match crate::bus::kafka::BrokerProbe::new(&brokers) {
        Ok(p) => p,
        Err(e) => {
            warn!("cannot probe the broker at {brokers}: {e}");
            return;
        }
    };
    let spawned = std::thread::Builder::new()
        .name("broker-probe".into())
        .spawn(move || loop {
            std::thread::sleep(PROBE_EVERY);
            set_ready(BROKER, probe.reachable(PROBE_EVERY * 2));
        });
    if let Err(e) = spawned {
        warn!("cannot start the broker probe: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dependency_down_is_named_and_comes_back() {
        set_ready("test-dep", true);
        set_ready("test-dep", false);
        let (ready, body) = report();
        assert!(!ready);
        assert!(body["down"]
            .as_array()
            .unwrap()
            .contains(&json!("test-dep")));
        assert_eq!(body["dependencies"]["test-dep"], "down");
        set_ready("test-dep", true);
        let (_, body) = report();
        assert_eq!(body["dependencies"]["test-dep"], "up");
    }
}
