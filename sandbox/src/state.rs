//! What a running sandbox holds: the profile and its compiled form, each
//! resource's records (rendered lazily, once per version), issued tokens,
//! injected faults, the throttle window and the counters tests read.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::Value;

use crate::compile::{compile, Compiled, CompiledResource};
use crate::control::Stats;
use crate::data::{self, Stored};
use crate::faults::Faults;
use crate::profile::Profile;
use crate::select::Selections;
use crate::throttle::Window;
use crate::SandboxError;

/// One resource's records as the provider would answer them.
pub struct ResourceData {
    pub records: Vec<Stored>,
    /// The provider's record per id, for the current version.
    pub rendered: HashMap<u64, Arc<Value>>,
    pub next_id: u64,
    /// Every top-level key of the provider's records (cleared on any change).
    fields: Option<Arc<BTreeSet<String>>>,
}

impl ResourceData {
    fn generate(seed: u64, name: &str, count: u64) -> ResourceData {
        ResourceData {
            records: (1..=count)
                .map(|id| data::generate(seed, name, id))
                .collect(),
            rendered: HashMap::new(),
            next_id: count + 1,
            fields: None,
        }
    }

    /// The provider's record at `index` of the list.
    pub fn render(&mut self, compiled: &CompiledResource, index: usize) -> Arc<Value> {
        let rec = &self.records[index];
        self.rendered
            .entry(rec.id)
            .or_insert_with(|| Arc::new(render_one(compiled, rec)))
            .clone()
    }

    /// Forget what was derived from the records (after a change).
    pub fn changed(&mut self, id: Option<u64>) {
        if let Some(id) = id {
            self.rendered.remove(&id);
        }
        self.fields = None;
    }

    /// The field names the records have: what a query may select. With no record
    /// left, the fields of the record the seed would generate first.
    pub fn fields(
        &mut self,
        compiled: &CompiledResource,
        seed: u64,
        name: &str,
    ) -> Arc<BTreeSet<String>> {
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
            add(&render_one(compiled, &data::generate(seed, name, 1)));
        }
        for i in 0..self.records.len() {
            add(&self.render(compiled, i));
        }
        let fields = Arc::new(fields);
        self.fields = Some(fields.clone());
        fields
    }
}

fn render_one(compiled: &CompiledResource, rec: &Stored) -> Value {
    compiled
        .record
        .eval_json(&rec.canonical)
        .ok()
        .flatten()
        .unwrap_or(Value::Null)
}

/// Tokens the OAuth endpoint issued, and refresh tokens it accepts.
pub struct Tokens {
    pub access: HashMap<String, Instant>,
    pub refresh: HashSet<String>,
    pub issued: u64,
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
}

impl Sandbox {
    pub fn new(profile: Profile) -> Result<Sandbox, SandboxError> {
        let compiled = compile(&profile)?;
        let data = profile
            .resources
            .iter()
            .map(|(name, r)| {
                (
                    name.clone(),
                    ResourceData::generate(profile.seed, name, r.count),
                )
            })
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
            }),
            window: Mutex::new(Window::new()),
            selections: Selections::default(),
            profile,
        })
    }
}
