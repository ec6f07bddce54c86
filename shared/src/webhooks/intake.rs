//! The worker fleet's consumer of `<prefix>.webhooks` (its own consumer group): stored
//! deliveries are taken a window at a time (`TRIBUTARY_WEBHOOK_WINDOW_MS`), read into
//! items, routed, deduplicated and turned into jobs. One window's ids of one
//! (connection, resource) become one fetch job on the urgent jobs topic; a storm (more
//! than the spec's `storm_threshold`, or items the spec marks as bulk) one incremental
//! run instead. Items no connection claims go to `<prefix>.webhooks.unrouted` with the
//! reason. Only once every job and parked item is acknowledged are the event ids
//! remembered and the offsets committed: a crash before replays the window, and the
//! replay's jobs read the same records (duplicates are harmless, losses are not).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::json;
use tracing::warn;

use super::items::{read_items, Item, ItemOp};
use super::stored::{StoredDeliveries, Taken};
use super::RawDelivery;
use crate::bus::job::job_message;
use crate::bus::{Job, JobReason, OutMessage, Pushed};
use crate::domain::RunMode;
use crate::spec::CompiledSpec;
use crate::store::StoreError;
use crate::sync::worker::{retry_delays, StopSignal, WorkerOptions};
use crate::sync::{SyncError, Syncer};

/// At most this many pushed records travel in one job (a job is one broker message).
const PUSHED_PER_JOB: usize = 100;

/// What one window comes to before anything is sent.
#[derive(Default)]
struct Window {
    /// (connection, resource) -> the ids to read, and which of them were deleted.
    pending: BTreeMap<(String, String), Pending>,
    unrouted: Vec<OutMessage>,
    /// Event ids to remember, by provider, with their time to live.
    seen: HashMap<String, (Vec<String>, u64)>,
    /// Verified items per connection (the channel's health).
    deliveries: HashMap<(String, String), i64>,
    items: usize,
    duplicates: usize,
}

struct Pending {
    tenant: String,
    ids: Vec<String>,
    deleted: HashSet<String>,
    /// Records the provider pushed (and deletions it announced), in delivery order.
    pushed: Vec<Pushed>,
    /// Refresh the resource by an incremental run instead.
    incremental: bool,
    storm_threshold: usize,
    can_fetch: bool,
}

impl Pending {
    /// One incremental run instead of fetches: a bulk change, a storm of ids, or ids of
    /// a resource that cannot be read by id. Pushed records alone never storm (applying
    /// them costs no request).
    fn storms(&self) -> bool {
        self.incremental
            || self.ids.len() > self.storm_threshold
            || (!self.can_fetch && !self.ids.is_empty())
    }

    /// Take in one routed item: a pushed record, a deletion the provider's push says is
    /// final, or an id to read.
    fn add(&mut self, item: Item, pushes: bool) {
        self.incremental |= item.coalesce;
        if item.record_id.is_empty() {
            return;
        }
        let final_delete = item.op == ItemOp::Deleted && pushes && !self.can_fetch;
        if item.record.is_some() || final_delete {
            self.pushed.push(Pushed {
                id: item.record_id,
                record: item.record,
            });
            return;
        }
        if !self.ids.contains(&item.record_id) {
            self.ids.push(item.record_id.clone());
        }
        match item.op {
            ItemOp::Deleted => self.deleted.insert(item.record_id),
            _ => self.deleted.remove(&item.record_id),
        };
    }

    /// The jobs reading (or applying) this (connection, resource)'s items.
    fn jobs(&self, connection: &str, resource: &str) -> Vec<Job> {
        let job = || {
            let mode = if self.storms() {
                RunMode::Incremental
            } else {
                RunMode::Fetch
            };
            Job::new_run(&self.tenant, connection, resource, mode, JobReason::Webhook)
        };
        if self.storms() {
            return vec![job()];
        }
        let mut jobs = Vec::new();
        if !self.ids.is_empty() {
            let mut read = job();
            read.deleted_ids = (self.ids.iter())
                .filter(|id| self.deleted.contains(*id))
                .cloned()
                .collect();
            read.ids = self.ids.clone();
            jobs.push(read);
        }
        for chunk in self.pushed.chunks(PUSHED_PER_JOB) {
            let mut apply = job();
            apply.pushed = chunk.to_vec();
            jobs.push(apply);
        }
        jobs
    }
}

/// Consume `<prefix>.webhooks` until `stop`.
pub async fn intake(
    syncer: Arc<Syncer>,
    options: WorkerOptions,
    window: Duration,
    stop: StopSignal,
) -> Result<(), crate::bus::BusError> {
    let mut stored = StoredDeliveries::open(&options).await?;
    while !stop.is_stopped() {
        let taken = stored.take_window(window, &stop).await;
        if taken.is_empty() {
            continue;
        }
        let mut delays = retry_delays();
        loop {
            match handle_window(&syncer, &taken).await {
                Ok(()) => break,
                Err(e) => {
                    warn!("webhook window not handled (retried; offsets kept): {e}");
                    let wait = delays.next().unwrap_or(Duration::from_secs(5));
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = stop.stopped() => return Ok(()),
                    }
                }
            }
        }
        stored.release(taken).await;
    }
    stored.close().await;
    Ok(())
}

/// Route, deduplicate and enqueue one window; remember its events after that.
async fn handle_window(syncer: &Syncer, taken: &[Taken]) -> Result<(), SyncError> {
    let mut window = Window::default();
    let mut routes = Routes::default();
    let mut candidates: Vec<Candidate> = Vec::new();
    let specs = Specs::new(syncer);
    for t in taken {
        let delivery = match &t.delivery {
            Ok(d) => d,
            Err(reason) => {
                window.park(syncer, None, json!(null), reason);
                continue;
            }
        };
        let Some(spec) = specs.get(&delivery.provider) else {
            window.park(
                syncer,
                Some(delivery),
                json!(null),
                &format!("no spec `{}` with a `webhooks` section", delivery.provider),
            );
            continue;
        };
        let hooks = spec.webhooks.as_ref().expect("checked by Specs");
        let items = match read_items(hooks, &delivery.body_bytes()) {
            Ok(items) => items,
            Err(reason) => {
                window.park(syncer, Some(delivery), json!(null), &reason);
                continue;
            }
        };
        for item in items {
            let item = match item {
                Ok(item) => item,
                Err(bad) => {
                    window.park(syncer, Some(delivery), bad.item, &bad.reason);
                    continue;
                }
            };
            window.items += 1;
            let Some(resource) = item.resource.clone() else {
                continue;
            };
            let route = match &delivery.connection {
                Some(c) => Some((c.clone(), delivery.tenant.clone().unwrap_or_default())),
                None => {
                    routes
                        .find(
                            syncer,
                            &delivery.provider,
                            item.route_key.as_deref().unwrap_or_default(),
                        )
                        .await?
                }
            };
            let Some(route) = route else {
                let reason = format!(
                    "no {} connection has external_id `{}`",
                    delivery.provider,
                    item.route_key.as_deref().unwrap_or_default()
                );
                window.park(syncer, Some(delivery), json!({"event_id": item.event_id, "resource": resource, "record_id": item.record_id}), &reason);
                continue;
            };
            candidates.push(Candidate {
                provider: delivery.provider.clone(),
                item,
                route,
                spec: spec.clone(),
            });
        }
    }
    window.dedup_and_group(syncer, candidates).await?;
    window.send(syncer).await
}

/// A routed item, before deduplication.
struct Candidate {
    provider: String,
    item: Item,
    /// Connection and tenant.
    route: (String, String),
    /// Its spec (with webhooks).
    spec: Arc<CompiledSpec>,
}

/// The specs of one window, loaded once each.
struct Specs<'a> {
    syncer: &'a Syncer,
    loaded: std::sync::Mutex<HashMap<String, Option<Arc<CompiledSpec>>>>,
}

impl<'a> Specs<'a> {
    fn new(syncer: &'a Syncer) -> Self {
        Specs {
            syncer,
            loaded: Default::default(),
        }
    }

    fn get(&self, provider: &str) -> Option<Arc<CompiledSpec>> {
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        loaded
            .entry(provider.to_string())
            .or_insert_with(|| {
                self.syncer
                    .spec(provider)
                    .ok()
                    .filter(|s| s.webhooks.is_some())
            })
            .clone()
    }
}

/// Account ids to connections, looked up once per window.
#[derive(Default)]
struct Routes(HashMap<(String, String), Option<(String, String)>>);

impl Routes {
    async fn find(
        &mut self,
        syncer: &Syncer,
        provider: &str,
        key: &str,
    ) -> Result<Option<(String, String)>, StoreError> {
        let k = (provider.to_string(), key.to_string());
        if let Some(found) = self.0.get(&k) {
            return Ok(found.clone());
        }
        let found = syncer
            .store()
            .connection_by_external_id(provider, key)
            .await?;
        self.0.insert(k, found.clone());
        Ok(found)
    }
}

impl Window {
    /// Park what no connection claims, with the reason and what the delivery was.
    fn park(
        &mut self,
        syncer: &Syncer,
        delivery: Option<&RawDelivery>,
        item: serde_json::Value,
        reason: &str,
    ) {
        crate::telemetry::metrics().webhook_items("unrouted", 1);
        let payload = json!({
            "provider": delivery.map(|d| d.provider.clone()),
            "delivery": delivery.map(|d| d.id.clone()),
            "received_at": delivery.map(|d| crate::domain::time::stamp(d.received_at)),
            "reason": reason,
            "item": item,
        });
        self.unrouted.push(OutMessage {
            topic: syncer.settings().topics.webhooks_unrouted(),
            key: delivery.map(|d| d.provider.clone()).unwrap_or_default(),
            payload: Some(payload.to_string().into_bytes()),
            headers: vec![],
        });
    }

    /// Drop items whose event id was handled before (or earlier in this window), then
    /// collect the rest per (connection, resource).
    async fn dedup_and_group(
        &mut self,
        syncer: &Syncer,
        candidates: Vec<Candidate>,
    ) -> Result<(), SyncError> {
        let mut by_provider: HashMap<&str, Vec<String>> = HashMap::new();
        for c in &candidates {
            if let Some(id) = &c.item.event_id {
                by_provider.entry(&c.provider).or_default().push(id.clone());
            }
        }
        let mut handled: HashSet<(String, String)> = HashSet::new();
        for (provider, ids) in by_provider {
            for id in syncer.store().seen_events(provider, &ids).await? {
                handled.insert((provider.to_string(), id));
            }
        }
        for Candidate {
            provider,
            item,
            route,
            spec,
        } in candidates
        {
            if let Some(id) = &item.event_id {
                if !handled.insert((provider.clone(), id.clone())) {
                    self.duplicates += 1;
                    continue;
                }
            }
            let hooks = spec.webhooks.as_ref().expect("checked by Specs");
            let (connection, tenant) = route;
            let resource = item.resource.clone().expect("checked");
            let seen = self
                .seen
                .entry(provider.clone())
                .or_insert((Vec::new(), hooks.dedup_ttl_seconds));
            seen.0.extend(item.event_id.clone());
            *self
                .deliveries
                .entry((connection.clone(), provider))
                .or_default() += 1;
            let pending = self
                .pending
                .entry((connection, resource.clone()))
                .or_insert_with(|| Pending {
                    tenant,
                    ids: Vec::new(),
                    deleted: HashSet::new(),
                    pushed: Vec::new(),
                    incremental: false,
                    storm_threshold: hooks.storm_threshold,
                    can_fetch: hooks.fetch.contains_key(&resource),
                });
            pending.add(item, hooks.event.record.is_some());
        }
        let metrics = crate::telemetry::metrics();
        metrics.webhook_items("duplicate", self.duplicates as u64);
        Ok(())
    }

    /// Enqueue the jobs and park the unrouted (all acknowledged), then remember the
    /// events and count the deliveries.
    async fn send(self, syncer: &Syncer) -> Result<(), SyncError> {
        let topics = &syncer.settings().topics;
        let mut messages = self.unrouted;
        let (mut fetches, mut incremental) = (0u64, 0u64);
        for ((connection, resource), p) in &self.pending {
            for job in p.jobs(connection, resource) {
                match job.mode {
                    RunMode::Fetch => fetches += 1,
                    _ => incremental += 1,
                }
                messages.push(job_message(&topics.urgent_jobs(), &job));
            }
        }
        syncer.publisher().publish_all(&messages).await?;
        let metrics = crate::telemetry::metrics();
        metrics.webhook_items(
            "routed",
            self.seen.values().map(|(ids, _)| ids.len() as u64).sum(),
        );
        metrics.webhook_jobs("fetch", fetches);
        metrics.webhook_jobs("incremental", incremental);
        let now = Utc::now();
        for (provider, (ids, ttl)) in &self.seen {
            let until = now + chrono::Duration::seconds(*ttl as i64);
            syncer
                .store()
                .mark_events_seen(provider, ids, until)
                .await?;
        }
        for ((connection, provider), count) in &self.deliveries {
            syncer
                .store()
                .record_deliveries(connection, provider, *count, now)
                .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pending(can_fetch: bool) -> Pending {
        Pending {
            tenant: "acme".into(),
            ids: Vec::new(),
            deleted: HashSet::new(),
            pushed: Vec::new(),
            incremental: false,
            storm_threshold: 3,
            can_fetch,
        }
    }

    fn item(id: &str, op: ItemOp, record: Option<serde_json::Value>) -> Item {
        Item {
            route_key: None,
            event_id: None,
            resource: Some("persons".into()),
            record_id: id.into(),
            op,
            coalesce: false,
            record,
        }
    }

    #[test]
    fn pushed_records_travel_in_fetch_jobs_and_never_storm() {
        let mut p = pending(false);
        for i in 0..250 {
            let id = i.to_string();
            p.add(item(&id, ItemOp::Updated, Some(json!({"id": i}))), true);
        }
        // A deletion of a pushing provider without a fetch is the provider's own word.
        p.add(item("7", ItemOp::Deleted, None), true);
        let jobs = p.jobs("c1", "persons");
        assert_eq!(jobs.len(), 3, "100 pushed records per job");
        assert!(jobs
            .iter()
            .all(|j| j.mode == RunMode::Fetch && j.ids.is_empty()));
        let last = &jobs[2].pushed;
        assert_eq!(last.len(), 51);
        assert_eq!(
            last[50],
            Pushed {
                id: "7".into(),
                record: None
            }
        );
    }

    #[test]
    fn ids_without_a_fetch_or_past_the_threshold_become_one_incremental_run() {
        let mut p = pending(true);
        p.add(item("1", ItemOp::Updated, None), false);
        p.add(item("2", ItemOp::Deleted, None), false);
        let jobs = p.jobs("c1", "persons");
        assert_eq!(jobs.len(), 1);
        assert_eq!(
            (jobs[0].ids.len(), jobs[0].deleted_ids.clone()),
            (2, vec!["2".to_string()])
        );
        for id in ["3", "4"] {
            p.add(item(id, ItemOp::Updated, None), false);
        }
        assert_eq!(p.jobs("c1", "persons")[0].mode, RunMode::Incremental);
        let mut thin = pending(false);
        thin.add(item("1", ItemOp::Updated, None), true);
        assert_eq!(thin.jobs("c1", "persons")[0].mode, RunMode::Incremental);
    }
}
