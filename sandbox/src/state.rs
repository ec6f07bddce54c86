//! What a running sandbox holds: the profile and its compiled form, each
//! resource's records (rendered lazily, once per version), issued tokens,
//! injected faults, the throttle window and the counters tests read.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::compile::{compile, Compiled, CompiledResource};
use crate::control::Stats;
use crate::data::{self, Stored};
use crate::faults::Faults;
use crate::fields::{Generator, Schema};
use crate::profile::{FieldValues, Profile, ResourceProfile};
use crate::select::Selections;
use crate::throttle::Window;
use crate::SandboxError;

/// One resource's records as the provider would answer them.
/// A deleted record, remembered so delta queries can report it.
pub struct Tombstone {
    pub id: u64,
    pub deleted_at: DateTime<Utc>,
    /// The provider's record as it was rendered when deleted.
    pub record: Arc<Value>,
}

pub struct ResourceData {
    pub records: Vec<Stored>,
    /// The provider's record per id, for the current version.
    pub rendered: HashMap<u64, Arc<Value>>,
    pub next_id: u64,
    /// Records deleted through the control API, oldest first (for delta queries).
    pub tombstones: Vec<Tombstone>,
    /// The fields the records have now (custom values are written at rendering).
    pub schema: Schema,
    /// Every top-level key of the provider's records (cleared on any change).
    fields: Option<Arc<BTreeSet<String>>>,
    seed: u64,
    name: String,
    values: FieldValues,
}

impl ResourceData {
    fn generate(profile: &Profile, name: &str, rp: &ResourceProfile) -> ResourceData {
        ResourceData {
            records: (1..=rp.count)
                .map(|id| data::generate(profile.seed, name, id))
                .collect(),
            rendered: HashMap::new(),
            next_id: rp.count + 1,
            tombstones: Vec::new(),
            schema: Schema::new(&rp.schema),
            fields: None,
            seed: profile.seed,
            name: name.to_string(),
            values: profile.field_values.clone(),
        }
    }

    /// The provider's record at `index` of the list.
    pub fn render(&mut self, compiled: &CompiledResource, index: usize) -> Arc<Value> {
        let rec = &self.records[index];
        if let Some(r) = self.rendered.get(&rec.id) {
            return r.clone();
        }
        let r = Arc::new(self.render_one(compiled, rec));
        self.rendered.insert(rec.id, r.clone());
        r
    }

    /// Create a record entered `now`: last in the list, or first (as a provider listing
    /// newest first, or sorting new names before old ones, would place it).
    pub fn create(&mut self, now: DateTime<Utc>, first: bool) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let mut rec = data::generate(self.seed, &self.name, id);
        rec.updated_at = now;
        rec.entered_at = now;
        let created_at = data::base_time() + chrono::Duration::minutes(id as i64 * 7);
        data::refresh_times(&mut rec, created_at);
        if first {
            self.records.insert(0, rec);
        } else {
            self.records.push(rec);
        }
        self.changed(None);
        id
    }

    /// Forget what was derived from the records (after a change).
    pub fn changed(&mut self, id: Option<u64>) {
        if let Some(id) = id {
            self.rendered.remove(&id);
        }
        self.fields = None;
    }

    /// Forget every rendered record (after the fields changed).
    pub fn fields_changed(&mut self) {
        self.rendered.clear();
        self.fields = None;
    }

    /// The field names the records have: what a query may select. With no record
    /// left, the fields of the record the seed would generate first.
    pub fn fields(&mut self, compiled: &CompiledResource) -> Arc<BTreeSet<String>> {
        if let Some(f) = &self.fields {
            return f.clone();
        }
        let mut fields = BTreeSet::new();
        let mut add = |v: &Value| {
            if let Some(obj) = v.as_object() {
                fields.extend(obj.keys().cloned());
            }
        };
        if self.records.is_empty() {
            add(&self.render_one(compiled, &data::generate(self.seed, &self.name, 1)));
        }
        for i in 0..self.records.len() {
            add(&self.render(compiled, i));
        }
        let fields = Arc::new(fields);
        self.fields = Some(fields.clone());
        fields
    }

    /// The profile's record expression over the canonical record, then the fields as they are now.
    fn render_one(&self, compiled: &CompiledResource, rec: &Stored) -> Value {
        let mut record = compiled
            .record
            .eval_json(&rec.canonical)
            .ok()
            .flatten()
            .unwrap_or(Value::Null);
        let gen = Generator {
            seed: self.seed,
            resource: &self.name,
            values: &self.values,
        };
        self.schema.apply(&mut record, &gen, rec.id);
        record
    }
}

/// Tokens the OAuth endpoint issued, and refresh tokens it accepts.
pub struct Tokens {
    pub access: HashMap<String, Instant>,
    pub refresh: HashSet<String>,
    pub issued: u64,
    /// Authorization codes the consent page handed out, until exchanged or expired.
    pub codes: HashMap<String, IssuedCode>,
    /// The scope each access token from a code was granted (for identity answers).
    pub scopes: HashMap<String, String>,
}

/// What an authorization code stands for.
#[derive(Debug, Clone)]
pub struct IssuedCode {
    pub client_id: String,
    pub redirect_uri: String,
    pub scope: String,
    /// The PKCE challenge and its method (`S256` or `plain`).
    pub challenge: Option<(String, String)>,
    pub expires: Instant,
}

/// A running sandbox's state, shared by every handler.
pub struct Sandbox {
    pub profile: Profile,
    pub compiled: Compiled,
    pub data: Mutex<HashMap<String, ResourceData>>,
    pub faults: Faults,
    pub stats: Mutex<Stats>,
    pub tokens: Mutex<Tokens>,
    pub window: Mutex<Window>,
    /// Field selections that query locators carry.
    pub selections: Selections,
    /// OAuth 1.0a nonces seen, with their timestamps (a nonce is good for one request).
    pub nonces: Mutex<HashMap<String, i64>>,
    /// Webhook subscriptions registered through the profile's subscription routes.
    pub subscriptions: crate::subscriptions::Store,
    /// Numbers of the webhook events sent.
    pub webhook_events: crate::webhooks::EventCounter,
    /// Deliveries prepared by a `hold` send, waiting for their release.
    pub held: Mutex<HashMap<String, crate::webhooks::Planned>>,
}

impl Sandbox {
    pub fn new(profile: Profile) -> Result<Sandbox, SandboxError> {
        let compiled = compile(&profile)?;
        let data = profile
            .resources
            .iter()
            .map(|(name, r)| (name.clone(), ResourceData::generate(&profile, name, r)))
            .collect();
        let refresh = profile
            .oauth
            .as_ref()
            .map(|o| o.refresh_tokens.iter().cloned().collect())
            .unwrap_or_default();
        Ok(Sandbox {
            compiled,
            data: Mutex::new(data),
            faults: Faults::default(),
            stats: Mutex::new(Stats::default()),
            tokens: Mutex::new(Tokens {
                access: HashMap::new(),
                refresh,
                issued: 0,
                codes: HashMap::new(),
                scopes: HashMap::new(),
            }),
            window: Mutex::new(Window::new()),
            selections: Selections::default(),
            nonces: Mutex::new(HashMap::new()),
            subscriptions: Default::default(),
            webhook_events: Default::default(),
            held: Default::default(),
            profile,
        })
    }
}
