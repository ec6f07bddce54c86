//! The process stage: the pure core of a slice.
//!
//! One page's raw records and their stored fingerprints in; normalized records,
//! change classifications, dead letters and the outgoing messages out. No I/O and no
//! clock (the time is an input), so every rule of change detection is unit-tested here.
//! The deletion sweep's event building lives here too ([`sweep`]), for the same reason.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use rayon::prelude::*;
use serde_json::Value;

use crate::bus::envelope::{Change as EventChange, ModelRef, RecordFailure, RunRef};
use crate::bus::{ChangeEvent, DeadLetter, Op, OutMessage, Topics};
use crate::changes::{self, Change};
use crate::domain::{RunCounts, StoredFingerprint};
use crate::mapping::normalize::{normalize_for, primary_key, Tenancy, UnifiedRecord};
use crate::spec::compile::{custom_object, CompiledResource, Plan};

/// Everything processing a page needs to know besides the page.
pub struct PageContext<'a> {
    pub run: &'a RunRef,
    pub resource: &'a CompiledResource,
    /// The connection's discovered fields (typing custom fields) and custom object.
    pub tenancy: &'a Tenancy,
    /// The plan the pages were read with (full or incremental): its primary key and
    /// updated-at expressions.
    pub plan: &'a Plan,
    /// The spec file, named in dead letters.
    pub spec_file: &'a str,
    pub topics: &'a Topics,
    pub emit_remote_data: bool,
    pub tombstones: bool,
    pub now: DateTime<Utc>,
}

impl PageContext<'_> {
    fn model(&self) -> ModelRef {
        ModelRef {
            name: self.resource.model.name,
            version: self.resource.model.version,
        }
    }

    /// The model's topic; a custom object's records go to the object's own topic.
    fn model_topic(&self) -> String {
        match custom_object(&self.run.resource) {
            Some(object) => self.topics.model(&super::read::object_topic(object)),
            None => self.topics.model(self.resource.model.name),
        }
    }
}

/// What one page came to.
#[derive(Debug, Default)]
pub struct PageOutcome {
    /// Change events and dead letters, in record order.
    pub messages: Vec<OutMessage>,
    /// Fingerprints of every normalized record (new, changed or unchanged).
    pub seen: Vec<StoredFingerprint>,
    /// Which of `seen` are unchanged (indices): the commit only marks those seen
    /// instead of rewriting them.
    pub unchanged: Vec<usize>,
    /// Records that exist at the provider but failed their mapping: never swept.
    pub touched: Vec<String>,
    /// Known records the provider marked removed on this page (`records.deleted`): their
    /// `deleted` events are among `messages`; the commit forgets them.
    pub removed: Vec<String>,
    pub counts: RunCounts,
    /// The latest updated-at among the page's records.
    pub max_updated: Option<DateTime<Utc>>,
    /// Records older than the version already published (left alone, only marked seen).
    pub stale: usize,
}

impl PageOutcome {
    /// What the commit writes (new and changed fingerprints) and what it only marks seen
    /// (unchanged and dead-lettered records), taken out of the outcome.
    pub fn take_for_commit(&mut self) -> (Vec<StoredFingerprint>, Vec<String>) {
        let unchanged: HashSet<usize> = std::mem::take(&mut self.unchanged).into_iter().collect();
        let mut marked = std::mem::take(&mut self.touched);
        let mut written = Vec::with_capacity(self.seen.len() - unchanged.len());
        for (i, fp) in std::mem::take(&mut self.seen).into_iter().enumerate() {
            if unchanged.contains(&i) {
                marked.push(fp.record_id);
            } else {
                written.push(fp);
            }
        }
        (written, marked)
    }

    /// The outcome of a page processed in parts, the parts in record order.
    fn join(parts: Vec<PageOutcome>) -> PageOutcome {
        let mut out = PageOutcome::default();
        for part in parts {
            let offset = out.seen.len();
            out.messages.extend(part.messages);
            out.unchanged
                .extend(part.unchanged.into_iter().map(|i| i + offset));
            out.seen.extend(part.seen);
            out.touched.extend(part.touched);
            out.removed.extend(part.removed);
            out.counts.add(&part.counts);
            out.max_updated = out.max_updated.max(part.max_updated);
            out.stale += part.stale;
        }
        // The parts are one page.
        out.counts.pages = 1;
        out
    }
}

/// The provider ids of a page's records, to look their fingerprints up before processing.
pub fn record_ids(plan: &Plan, records: &[Value]) -> Vec<String> {
    records
        .iter()
        .filter_map(|raw| primary_key(raw, &plan.records.primary_key).ok())
        .collect()
}

/// Records per part, at least, when a page is spread over several cores (below that,
/// handing the work to another thread costs more than it saves).
const MIN_PART: usize = 32;

/// Normalize, classify and turn into messages one page of records. A large page is
/// processed in parts on the cores there are (rayon's pool, whose threads keep their
/// compiled expressions), the parts joined in record order: the result is the same.
pub fn process_page(
    ctx: &PageContext<'_>,
    page_number: u32,
    records: Vec<Value>,
    stored: &HashMap<String, StoredFingerprint>,
) -> PageOutcome {
    let cores = rayon::current_num_threads();
    if cores < 2 || records.len() < 2 * MIN_PART {
        return process_part(ctx, page_number, records, stored);
    }
    let size = records.len().div_ceil(cores).max(MIN_PART);
    let mut parts = Vec::with_capacity(records.len().div_ceil(size));
    let mut records = records.into_iter();
    loop {
        let part: Vec<Value> = records.by_ref().take(size).collect();
        if part.is_empty() {
            break;
        }
        parts.push(part);
    }
    let outcomes = parts
        .into_par_iter()
        .map(|part| process_part(ctx, page_number, part, stored))
        .collect();
    PageOutcome::join(outcomes)
}

/// [`process_page`] on one thread.
fn process_part(
    ctx: &PageContext<'_>,
    page_number: u32,
    records: Vec<Value>,
    stored: &HashMap<String, StoredFingerprint>,
) -> PageOutcome {
    let mut out = PageOutcome {
        counts: RunCounts {
            pages: 1,
            records: records.len() as i64,
            ..RunCounts::default()
        },
        ..PageOutcome::default()
    };
    let model_topic = ctx.model_topic();
    for raw in records {
        let updated = updated_at(ctx.plan, &raw);
        if let Some(t) = updated {
            out.max_updated = Some(out.max_updated.map_or(t, |m| m.max(t)));
        }
        if ctx.plan.records.marks_removed(&raw) {
            removed(ctx, &model_topic, &raw, stored, &mut out);
            continue;
        }
        match normalized(ctx, raw) {
            Ok(rec) => classify(ctx, &model_topic, rec, updated, stored, &mut out),
            Err(failure) => dead_letter(ctx, page_number, failure, &mut out),
        }
    }
    out
}

/// Whether a record the provider last updated at `updated` is older than the version
/// already published (a webhook delivered late, or a page read before a push landed).
/// Equal times are not stale: the fingerprints decide.
fn is_stale(updated: Option<DateTime<Utc>>, known: Option<&StoredFingerprint>) -> bool {
    match (updated, known.and_then(|k| k.source_updated_at)) {
        (Some(new), Some(old)) => new < old,
        _ => false,
    }
}

fn normalized(ctx: &PageContext<'_>, raw: Value) -> Result<UnifiedRecord, RecordFailure> {
    let id = match primary_key(&raw, &ctx.plan.records.primary_key) {
        Ok(id) => id,
        Err(e) => {
            return Err(RecordFailure {
                record_id: None,
                error: e.to_string(),
                raw,
            })
        }
    };
    // A failed record comes back from normalize with its error: no copy is kept for it.
    normalize_for(ctx.resource, ctx.tenancy, id.clone(), raw).map_err(|rejected| RecordFailure {
        record_id: Some(id),
        error: rejected.error.to_string(),
        raw: rejected.raw,
    })
}

fn classify(
    ctx: &PageContext<'_>,
    model_topic: &str,
    rec: UnifiedRecord,
    updated: Option<DateTime<Utc>>,
    stored: &HashMap<String, StoredFingerprint>,
    out: &mut PageOutcome,
) {
    let known = stored.get(&rec.id);
    if is_stale(updated, known) {
        // Exists at the provider (never swept), but what was published is newer.
        out.stale += 1;
        out.touched.push(rec.id);
        return;
    }
    let mut fp = changes::fingerprint(&rec.id, &rec.data, &rec.custom_fields);
    fp.source_updated_at = updated;
    let (op, changed_fields) = match changes::classify(&fp, known) {
        Change::Unchanged => {
            // Rewritten (without an event) when only the provider's time moved on, so a
            // late older version is still told apart from this one.
            let newer = updated.is_some() && known.and_then(|k| k.source_updated_at) < updated;
            if !newer {
                out.unchanged.push(out.seen.len());
            }
            out.seen.push(fp);
            return;
        }
        Change::Created => (Op::Created, None),
        Change::Updated { changed_fields } => (Op::Updated, Some(changed_fields)),
    };
    match op {
        Op::Created => out.counts.created += 1,
        _ => out.counts.updated += 1,
    }
    let mut data = rec.data;
    data.insert("custom_fields".into(), Value::Object(rec.custom_fields));
    let change = EventChange {
        record_id: rec.id,
        content_hash: fp.hash.clone(),
        data: Some(Value::Object(data)),
        changed_fields,
        remote_data: ctx.emit_remote_data.then_some(rec.remote_data),
    };
    let event = ChangeEvent::new(ctx.run, ctx.model(), op, change, ctx.now);
    out.messages.push(event.to_message(model_topic));
    out.seen.push(fp);
}

fn dead_letter(ctx: &PageContext<'_>, page: u32, failure: RecordFailure, out: &mut PageOutcome) {
    out.counts.dead_lettered += 1;
    if let Some(id) = &failure.record_id {
        // The record exists at the provider: it must not be swept as deleted.
        out.touched.push(id.clone());
    }
    let letter = DeadLetter::new(ctx.run, ctx.spec_file, page, failure, ctx.now);
    out.messages.push(letter.to_message(ctx.topics));
}

/// A record the provider says is removed: a `deleted` event when it was known (one never
/// synced has nothing to delete), at once, whatever the run's mode.
fn removed(
    ctx: &PageContext<'_>,
    model_topic: &str,
    raw: &Value,
    stored: &HashMap<String, StoredFingerprint>,
    out: &mut PageOutcome,
) {
    let Ok(id) = primary_key(raw, &ctx.plan.records.primary_key) else {
        return;
    };
    let Some(known) = stored.get(&id) else {
        return;
    };
    out.messages
        .extend(delete_messages(ctx, model_topic, known));
    out.counts.deleted += 1;
    out.removed.push(id);
}

/// The `deleted` event of a stored record (and its tombstone, when the topics want one).
fn delete_messages(
    ctx: &PageContext<'_>,
    model_topic: &str,
    gone: &StoredFingerprint,
) -> Vec<OutMessage> {
    let change = EventChange {
        record_id: gone.record_id.clone(),
        content_hash: format!("deleted:{}", gone.hash),
        ..EventChange::default()
    };
    let event = ChangeEvent::new(ctx.run, ctx.model(), Op::Deleted, change, ctx.now);
    let mut messages = vec![event.to_message(model_topic)];
    if ctx.tombstones {
        messages.push(event.tombstone(model_topic));
    }
    messages
}

fn updated_at(plan: &Plan, raw: &Value) -> Option<DateTime<Utc>> {
    let expr = plan.records.updated_at.as_ref()?;
    let value = expr.eval_json(raw).ok().flatten()?;
    crate::domain::time::parse_provider(&value)
}

/// The deletion sweep of a completed full run: `unseen` are the stored records no run
/// saw since this one started; those the last page saw are kept. Returns the delete
/// events (and tombstones) and the ids deleted.
pub fn sweep(
    ctx: &PageContext<'_>,
    unseen: Vec<StoredFingerprint>,
    last_page: &PageOutcome,
) -> (Vec<OutMessage>, Vec<String>) {
    // Seen by the last page, or already deleted by it (the provider marked them removed).
    let here: HashSet<&str> = last_page
        .seen
        .iter()
        .map(|f| f.record_id.as_str())
        .chain(last_page.touched.iter().map(String::as_str))
        .chain(last_page.removed.iter().map(String::as_str))
        .collect();
    let model_topic = ctx.model_topic();
    let mut messages = Vec::new();
    let mut deleted = Vec::new();
    for gone in unseen {
        if here.contains(gone.record_id.as_str()) {
            continue;
        }
        messages.extend(delete_messages(ctx, &model_topic, &gone));
        deleted.push(gone.record_id);
    }
    (messages, deleted)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde_json::json;

    use super::*;
    use crate::domain::RunMode;
    use crate::spec::compile::{compile, CompiledSpec};
    use crate::spec::load::parse_spec;

    const SPEC: &str = r#"spec_version: 1
name: demo
base_url: "https://api.example.com"
allowed_hosts: ["api.example.com"]
auth: {type: bearer}
resources:
  contacts:
    model: crm.contact
    request: {path: /contacts}
    pagination: {type: cursor, cursor_path: next, param: after}
    records: {path: items, primary_key: id, updated_at: updated, deleted: "status = 'deleted'"}
    mapping: |
      { 'id': $string(id), 'first_name': first, 'title': title, 'emails': email ? [{'email': email}] : undefined }
"#;

    fn spec() -> CompiledSpec {
        compile(parse_spec(Path::new("demo.yaml"), SPEC).unwrap()).unwrap()
    }

    fn run() -> RunRef {
        RunRef {
            tenant: "acme".into(),
            connection: "c1".into(),
            provider: "demo".into(),
            resource: "contacts".into(),
            sync_run: "run_1".into(),
            mode: RunMode::Full,
        }
    }

    fn with_context<T>(f: impl FnOnce(&PageContext<'_>) -> T) -> T {
        let spec = spec();
        let resource = spec.resource("contacts").unwrap();
        let run = run();
        let topics = Topics::new("t");
        let tenancy = Tenancy::default();
        let ctx = PageContext {
            run: &run,
            resource,
            tenancy: &tenancy,
            plan: &resource.full,
            spec_file: "demo.yaml",
            topics: &topics,
            emit_remote_data: true,
            tombstones: true,
            now: DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
        };
        f(&ctx)
    }

    fn body(m: &OutMessage) -> Value {
        serde_json::from_slice(m.payload.as_ref().unwrap()).unwrap()
    }

    fn records() -> Vec<Value> {
        vec![
            json!({"id": 1, "first": "Ada", "title": "Director", "updated": "2026-11-01T00:00:00Z"}),
            json!({"id": 2, "first": "Alan", "updated": "2026-11-03T10:00:00Z"}),
        ]
    }

    #[test]
    fn a_record_the_provider_marks_removed_is_deleted_at_once_if_it_was_known() {
        let first = with_context(|ctx| process_page(ctx, 1, records(), &HashMap::new()));
        let stored = changes::by_id(first.seen);
        let page = vec![
            json!({"id": 1, "status": "deleted", "updated": "2026-11-04T00:00:00Z"}),
            json!({"id": 9, "status": "deleted"}),
            json!({"id": 2, "first": "Alan", "updated": "2026-11-03T10:00:00Z"}),
        ];
        let out = with_context(|ctx| process_page(ctx, 1, page, &stored));
        assert_eq!(out.removed, vec!["1".to_string()], "9 was never synced");
        assert_eq!(out.counts.deleted, 1);
        // The delete event, then its tombstone (this context asks for them).
        assert_eq!(out.messages.len(), 2);
        assert!(out.messages[1].payload.is_none());
        let deleted: Vec<Value> = out.messages[..1].iter().map(body).collect();
        assert_eq!(deleted[0]["op"], "deleted");
        assert_eq!(deleted[0]["record_id"], "1");
        assert!(out.seen.iter().all(|f| f.record_id != "1"));
        // The last page's sweep does not delete it a second time.
        let (events, gone) = with_context(|ctx| sweep(ctx, stored.into_values().collect(), &out));
        assert!(events.is_empty() && gone.is_empty(), "{gone:?}");
    }

    #[test]
    fn new_records_are_created_events_with_their_fingerprints() {
        let out = with_context(|ctx| process_page(ctx, 1, records(), &HashMap::new()));
        assert_eq!((out.counts.records, out.counts.created), (2, 2));
        assert_eq!(out.seen.len(), 2);
        let first = body(&out.messages[0]);
        assert_eq!(first["type"], "crm.contact.created");
        assert_eq!(first["data"]["first_name"], "Ada");
        assert_eq!(first["remote_data"]["title"], "Director");
        assert_eq!(out.messages[0].topic, "t.crm.contact");
        assert_eq!(
            out.max_updated,
            Some("2026-11-03T10:00:00Z".parse().unwrap())
        );
    }

    #[test]
    fn an_older_version_than_the_published_one_is_stale_and_emits_nothing() {
        let first = with_context(|ctx| process_page(ctx, 1, records(), &HashMap::new()));
        assert_eq!(
            first.seen[1].source_updated_at,
            Some("2026-11-03T10:00:00Z".parse().unwrap())
        );
        let stored = changes::by_id(first.seen);
        // A webhook delivered late: different content, an older provider time.
        let late = vec![json!({"id": 2, "first": "Al", "updated": "2026-11-02T00:00:00Z"})];
        let out = with_context(|ctx| process_page(ctx, 1, late, &stored));
        assert!(out.messages.is_empty(), "{:?}", out.messages);
        assert_eq!((out.stale, out.counts.updated), (1, 0));
        assert!(out.seen.is_empty(), "the newer fingerprint is not replaced");
        assert_eq!(out.touched, vec!["2".to_string()], "never swept");
        // The same time with new content is a change (equal times let fingerprints decide),
        // and a record without a time is compared by content alone.
        let same = vec![
            json!({"id": 2, "first": "Al", "updated": "2026-11-03T10:00:00Z"}),
            json!({"id": 1, "first": "Ada", "title": "CEO"}),
        ];
        let out = with_context(|ctx| process_page(ctx, 1, same, &stored));
        assert_eq!((out.stale, out.counts.updated), (0, 2));
    }

    #[test]
    fn an_unchanged_record_with_a_newer_time_is_rewritten_without_an_event() {
        let first = with_context(|ctx| process_page(ctx, 1, records(), &HashMap::new()));
        let mut stored = changes::by_id(first.seen);
        // Stored before the provider's time moved on (or before times were kept at all).
        stored.get_mut("1").unwrap().source_updated_at = None;
        let mut out = with_context(|ctx| process_page(ctx, 1, records(), &stored));
        assert!(out.messages.is_empty());
        let (written, marked) = out.take_for_commit();
        assert_eq!(written.len(), 1, "the newer time is stored");
        assert_eq!(written[0].record_id, "1");
        assert_eq!(marked, vec!["2".to_string()]);
    }

    #[test]
    fn unchanged_records_emit_nothing_and_changed_ones_name_their_fields() {
        let first = with_context(|ctx| process_page(ctx, 1, records(), &HashMap::new()));
        let stored = changes::by_id(first.seen);
        let mut again = records();
        again[1]["title"] = json!("Fellow");
        let out = with_context(|ctx| process_page(ctx, 1, again, &stored));
        assert_eq!((out.counts.created, out.counts.updated), (0, 1));
        assert_eq!(out.messages.len(), 1);
        let event = body(&out.messages[0]);
        assert_eq!(event["op"], "updated");
        assert_eq!(event["changed_fields"], json!(["title"]));
        assert_eq!(out.seen.len(), 2, "unchanged records are still seen");
    }

    #[test]
    fn a_record_that_fails_its_mapping_is_a_dead_letter_and_is_kept() {
        // An email that is not a string fails the unified model's schema.
        let mut bad = records();
        bad[0]["email"] = json!(42);
        let out = with_context(|ctx| process_page(ctx, 3, bad, &HashMap::new()));
        assert_eq!((out.counts.dead_lettered, out.counts.created), (1, 1));
        assert_eq!(out.touched, vec!["1".to_string()]);
        let letter = body(&out.messages[0]);
        assert_eq!(out.messages[0].topic, "t.deadletter");
        assert_eq!(
            (letter["page"].clone(), letter["record_id"].clone()),
            (json!(3), json!("1"))
        );
        assert_eq!(
            letter["raw"]["email"], 42,
            "the raw record travels with the error"
        );
    }

    #[test]
    fn a_record_without_a_primary_key_is_a_dead_letter_without_id() {
        let out =
            with_context(|ctx| process_page(ctx, 1, vec![json!({"first": "x"})], &HashMap::new()));
        assert_eq!(out.counts.dead_lettered, 1);
        assert!(out.touched.is_empty());
        assert_eq!(body(&out.messages[0])["record_id"], Value::Null);
    }

    #[test]
    fn events_are_deterministic_across_replays() {
        let a = with_context(|ctx| process_page(ctx, 1, records(), &HashMap::new()));
        let b = with_context(|ctx| process_page(ctx, 1, records(), &HashMap::new()));
        let ids = |o: &PageOutcome| {
            o.messages
                .iter()
                .map(|m| body(m)["id"].clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(&a), ids(&b));
    }

    #[test]
    fn the_sweep_deletes_what_no_one_saw_but_keeps_this_page() {
        let page = with_context(|ctx| process_page(ctx, 1, records(), &HashMap::new()));
        let stale = |id: &str| StoredFingerprint {
            record_id: id.into(),
            hash: "h".into(),
            field_hashes: Default::default(),
            source_updated_at: None,
        };
        let unseen = vec![stale("1"), stale("9")];
        let (messages, deleted) = with_context(|ctx| sweep(ctx, unseen, &page));
        assert_eq!(deleted, vec!["9".to_string()]);
        assert_eq!(messages.len(), 2, "a delete and its tombstone");
        assert_eq!(body(&messages[0])["op"], "deleted");
        assert!(messages[1].payload.is_none());
    }

    #[test]
    fn record_ids_skip_records_without_a_key() {
        let spec = spec();
        let plan = &spec.resource("contacts").unwrap().full;
        let ids = record_ids(
            plan,
            &[json!({"id": 5}), json!({"x": 1}), json!({"id": "a"})],
        );
        assert_eq!(ids, vec!["5".to_string(), "a".to_string()]);
    }

    /// A page of `n` records, every fifth one failing its mapping, half of the rest stored
    /// unchanged and a few stored with another title.
    fn large_page(n: usize) -> (Vec<Value>, HashMap<String, StoredFingerprint>) {
        let page: Vec<Value> = (0..n)
            .map(|i| {
                let mut r = json!({"id": i, "first": format!("p{i}"), "updated": format!("2026-11-{:02}T00:00:00Z", 1 + i % 28)});
                if i % 5 == 0 {
                    r["email"] = json!(42);
                }
                r
            })
            .collect();
        let earlier = with_context(|ctx| process_part(ctx, 1, page.clone(), &HashMap::new()));
        let stored = earlier
            .seen
            .into_iter()
            .filter(|f| f.record_id.parse::<usize>().unwrap() % 2 == 0)
            .map(|mut f| {
                if f.record_id.ends_with('4') {
                    f.hash = "an older version".into();
                }
                (f.record_id.clone(), f)
            })
            .collect();
        (page, stored)
    }

    #[test]
    fn a_page_processed_in_parts_equals_it_processed_whole() {
        let (page, stored) = large_page(301);
        let whole = with_context(|ctx| process_part(ctx, 7, page.clone(), &stored));
        let parts = with_context(|ctx| {
            let outcomes = page
                .chunks(40)
                .map(|c| process_part(ctx, 7, c.to_vec(), &stored))
                .collect();
            PageOutcome::join(outcomes)
        });
        let by_pool = with_context(|ctx| process_page(ctx, 7, page.clone(), &stored));
        for other in [&parts, &by_pool] {
            assert_eq!(other.counts, whole.counts);
            assert_eq!(other.seen, whole.seen);
            assert_eq!(other.unchanged, whole.unchanged);
            assert_eq!(other.touched, whole.touched);
            assert_eq!(other.max_updated, whole.max_updated);
            let bodies = |o: &PageOutcome| o.messages.iter().map(body).collect::<Vec<_>>();
            assert_eq!(bodies(other), bodies(&whole));
        }
        assert_eq!(whole.counts.pages, 1);
        assert!(
            whole.counts.created > 0 && whole.counts.updated > 0 && !whole.unchanged.is_empty()
        );
    }

    #[test]
    fn the_commit_rewrites_new_and_changed_records_and_only_marks_the_rest() {
        let (page, stored) = large_page(50);
        let mut out = with_context(|ctx| process_page(ctx, 1, page, &stored));
        let (written, marked) = out.take_for_commit();
        let changed = (out.counts.created + out.counts.updated) as usize;
        assert_eq!(written.len(), changed);
        assert!(written.iter().all(|f| stored.get(&f.record_id) != Some(f)));
        let unchanged: Vec<&String> = marked
            .iter()
            .filter(|id| stored.contains_key(*id))
            .collect();
        assert!(!unchanged.is_empty());
        for id in &unchanged {
            assert!(!written.iter().any(|f| &&f.record_id == id));
        }
        assert_eq!(
            marked.len(),
            50 - changed,
            "every record is written or marked"
        );
    }
}
