//! Shared test harness: where the repository is, provider test cases, and
//! sandbox control from tests.

pub mod amqp;
pub mod broker;
pub mod engine;
pub mod fleet;
pub mod inprocess;
pub mod otlp;
pub mod outage;
pub mod pipeline;
pub mod replay;
pub mod rig;
pub mod spec_run;
pub mod stories;

use std::path::PathBuf;

use serde::Deserialize;
use serde_json::{Map, Value};

/// The repository root (this crate lives in `<root>/tests`).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// A connection of `tenant` to `provider` reading `contacts`, with no schedule (times in
/// UTC); `config` and `credentials` are JSON objects. Set `id` on the result to choose it.
pub fn new_connection(
    tenant: &str,
    provider: &str,
    config: Value,
    credentials: Value,
) -> tributary::store::NewConnection {
    tributary::store::NewConnection {
        id: None,
        tenant: tenant.to_string(),
        provider: provider.to_string(),
        config: match config {
            Value::Object(map) => map,
            other => panic!("a connection's config is a JSON object, not {other}"),
        },
        credentials: serde_json::from_value(credentials)
            .expect("the credentials are a JSON object of strings"),
        resources: vec!["contacts".into()],
        schedule: None,
        full_schedule: None,
        timezone: "UTC".into(),
        external_id: None,
    }
}

/// A provider test case: `tests/providers/<provider>.yaml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderCase {
    /// Spec file, relative to `provider-specs/`.
    pub spec: String,
    /// Sandbox profile, relative to `provider-specs/`.
    pub profile: String,
    /// Connection settings; the harness adds `base_url` (and `token_url` when `token_path` is set).
    #[serde(default)]
    pub config: Map<String, Value>,
    #[serde(default)]
    pub credentials: Map<String, Value>,
    /// Settings whose values are sandbox paths to turn into URLs, e.g. `token_url: /oauth/token`.
    #[serde(default)]
    pub sandbox_urls: Map<String, Value>,
    /// Resources read in full and compared with the sandbox's listing.
    pub resources: Vec<String>,
    /// Resources read incrementally after the sandbox changed a few records.
    #[serde(default)]
    pub incremental: Vec<String>,
    /// Resources read by delta rounds: a first round (`--incremental`) reads everything, then
    /// the round from its delta link reads only what the sandbox changed after it.
    #[serde(default)]
    pub delta: Vec<String>,
    /// Resources the provider answers in one page by design (a report: no paging to test).
    #[serde(default)]
    pub single_page: Vec<String>,
    /// Page size for the runs (small, so several pages are read).
    #[serde(default)]
    pub page_size: Option<u32>,
}

impl ProviderCase {
    pub fn all() -> Vec<(String, ProviderCase)> {
        let dir = repo_root().join("tests/providers");
        let mut cases: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .map(|p| {
                let text = std::fs::read_to_string(&p).unwrap();
                let case: ProviderCase = serde_yaml_ng::from_str(&text)
                    .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                (p.file_stem().unwrap().to_string_lossy().into_owned(), case)
            })
            .collect();
        cases.sort_by(|a, b| a.0.cmp(&b.0));
        cases
    }
}

/// A shipped sandbox profile (`provider-specs/sandbox/<file>`), edited by `edit`, serving
/// on loopback, with its control client.
pub async fn shipped_sandbox(
    file: &str,
    edit: impl FnOnce(&mut tributary_sandbox::Profile),
) -> (tributary_sandbox::SandboxHandle, SandboxControl) {
    let path = repo_root().join("provider-specs/sandbox").join(file);
    let mut profile = tributary_sandbox::Profile::load(&path).expect("a shipped profile loads");
    edit(&mut profile);
    let sbx = tributary_sandbox::start(profile, "127.0.0.1:0".parse().expect("an address"))
        .await
        .expect("the sandbox starts on loopback");
    let control = SandboxControl::new(sbx.base_url());
    (sbx, control)
}

/// Talk to a sandbox's control endpoints (`/_sandbox/...`, see `sandbox/src/control.rs`):
/// records (`GET resources/{name}`), mutations (`POST resources/{name}/mutate`), faults
/// (`POST faults`), token expiry (`POST oauth/expire`), counters (`GET stats`), and a
/// resource's fields (`GET`/`POST resources/{name}/fields`, `DELETE resources/{name}/fields/{field}`).
#[derive(Clone)]
pub struct SandboxControl {
    pub base_url: String,
    http: reqwest::Client,
}

impl SandboxControl {
    pub fn new(base_url: impl Into<String>) -> Self {
        SandboxControl {
            base_url: base_url.into(),
            http: reqwest::Client::new(),
        }
    }

    /// The provider-shaped records of a resource with their sandbox ids, in the
    /// order the sandbox serves them.
    pub async fn records(&self, resource: &str) -> anyhow::Result<Vec<(u64, Value)>> {
        let v: Value = self
            .http
            .get(format!("{}/_sandbox/resources/{resource}", self.base_url))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let ids = v["ids"].as_array().cloned().unwrap_or_default();
        let records = v["records"].as_array().cloned().unwrap_or_default();
        Ok(ids
            .into_iter()
            .map(|id| id.as_u64().unwrap_or_default())
            .zip(records)
            .collect())
    }

    /// Change, delete or add records; returns the sandbox's answer (ids touched).
    pub async fn mutate(
        &self,
        resource: &str,
        update: usize,
        delete: usize,
        create: usize,
    ) -> anyhow::Result<Value> {
        Ok(self
            .http
            .post(format!(
                "{}/_sandbox/resources/{resource}/mutate",
                self.base_url
            ))
            .json(&serde_json::json!({"update": update, "delete": delete, "create": create}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }

    /// Have the sandbox send signed webhooks (`POST /_sandbox/webhooks/send`); its answer
    /// lists every delivery and attempt with the status it got.
    pub async fn send_webhooks(&self, request: Value) -> anyhow::Result<Value> {
        Ok(self
            .http
            .post(format!("{}/_sandbox/webhooks/send", self.base_url))
            .json(&request)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }

    pub async fn faults(&self, faults: Value) -> anyhow::Result<()> {
        self.http
            .post(format!("{}/_sandbox/faults", self.base_url))
            .json(&faults)
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    /// Expire every access token the sandbox issued (refresh tokens stay valid).
    pub async fn expire_tokens(&self) -> anyhow::Result<()> {
        self.http
            .post(format!("{}/_sandbox/oauth/expire", self.base_url))
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    /// The fields a resource has now: `{"standard": [FieldDef], "custom": [FieldDef]}`.
    pub async fn fields(&self, resource: &str) -> anyhow::Result<Value> {
        Ok(self
            .http
            .get(format!(
                "{}/_sandbox/resources/{resource}/fields",
                self.base_url
            ))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }

    /// Add a custom field to a resource at runtime: `field` is a profile `FieldDef` as
    /// JSON (`{"name", "type", "label"?, "options"?, "generate"?, "min"?, "max"?,
    /// "decimals"?, "attributes"?}`). Its values appear in every record (when a request
    /// asks for it) and it is described; records keep their last-modified times.
    pub async fn add_field(&self, resource: &str, field: Value) -> anyhow::Result<()> {
        self.http
            .post(format!(
                "{}/_sandbox/resources/{resource}/fields",
                self.base_url
            ))
            .json(&field)
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    /// Remove a field (standard or custom) from a resource's records and describe answers.
    pub async fn remove_field(&self, resource: &str, field: &str) -> anyhow::Result<()> {
        self.http
            .delete(format!(
                "{}/_sandbox/resources/{resource}/fields/{field}",
                self.base_url
            ))
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    pub async fn stats(&self) -> anyhow::Result<tributary_sandbox::Stats> {
        Ok(self
            .http
            .get(format!("{}/_sandbox/stats", self.base_url))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }
}

/// Databases the state-store suites run on: a fresh SQLite file and, in the process-level
/// tier (feature `process-tests`), a fresh PostgreSQL database too (127.0.0.1:5432, user
/// postgres; override with TRIBUTARY_TEST_POSTGRES_URL pointing at a server's `postgres`
/// database). Without the feature no test reaches for a PostgreSQL server.
pub async fn fresh_databases() -> Vec<(&'static str, String)> {
    let mut databases = vec![("sqlite", fresh_sqlite())];
    if cfg!(feature = "process-tests") {
        databases.push(("postgres", fresh_postgres().await));
    }
    databases
}

pub fn fresh_sqlite() -> String {
    let dir = std::env::temp_dir().join("tributary-tests");
    std::fs::create_dir_all(&dir).unwrap();
    format!(
        "sqlite://{}/{}.db",
        dir.display(),
        uuid::Uuid::new_v4().simple()
    )
}

pub async fn fresh_postgres() -> String {
    use sqlx::Connection;
    let admin = std::env::var("TRIBUTARY_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {admin} is needed for these tests: {e}"));
    let name = format!("tributary_test_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .unwrap();
    let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
    format!("{base}/{name}")
}

/// A test encryption key (random per process).
pub fn test_cipher() -> tributary::secrets::crypto::Cipher {
    use std::sync::OnceLock;
    static KEY: OnceLock<String> = OnceLock::new();
    let key = KEY.get_or_init(tributary::secrets::crypto::Cipher::generate_key);
    tributary::secrets::crypto::Cipher::from_base64(key, &[]).unwrap()
}

/// Check a published message value against a committed event schema
/// (`shared/schemas/events/<name>.v1.json`); the error lists every violation.
pub fn check_event_schema(name: &str, value: &Value) -> Result<(), String> {
    let validator = event_validator(name);
    let errors: Vec<String> = validator
        .iter_errors(value)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

/// The compiled validator of an event schema, compiled once per process (suites check
/// every event they read).
fn event_validator(name: &str) -> std::sync::Arc<jsonschema::Validator> {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex, OnceLock};
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<jsonschema::Validator>>>> = OnceLock::new();
    let mut cache = CACHE.get_or_init(Default::default).lock().unwrap();
    cache
        .entry(name.to_string())
        .or_insert_with(|| {
            let path = repo_root().join(format!("shared/schemas/events/{name}.v1.json"));
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let schema: Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            Arc::new(jsonschema::validator_for(&schema).unwrap())
        })
        .clone()
}

/// Every row of every table as text (for "no secret in plain text" checks).
pub async fn dump_database(store: &tributary::store::Store) -> String {
    use sqlx::{Column, Row};
    let mut out = String::new();
    for table in [
        "tenants",
        "connections",
        "checkpoints",
        "fingerprints",
        "sync_runs",
        "schedules",
        "api_tokens",
        "connect_sessions",
    ] {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT * FROM {table}")))
            .fetch_all(store.pool())
            .await
            .unwrap();
        for row in rows {
            out.push_str(table);
            for (i, col) in row.columns().iter().enumerate() {
                let text = row
                    .try_get::<Option<String>, _>(i)
                    .map(|v| v.unwrap_or_default())
                    .or_else(|_| {
                        row.try_get::<Option<i64>, _>(i)
                            .map(|v| v.map(|n| n.to_string()).unwrap_or_default())
                    })
                    .unwrap_or_default();
                out.push_str(&format!(" {}={text}", col.name()));
            }
            out.push('\n');
        }
    }
    out
}

/// The benchmarks' baseline: fetch every page of a HubSpot-shaped sandbox's contacts
/// (pages of 100, following `paging.next.after`) and parse each with serde_json, doing
/// nothing else. Returns the raw pages and the number of records.
pub async fn fetch_and_parse_contacts(http: &reqwest::Client, base: &str) -> (Vec<Vec<u8>>, usize) {
    let mut pages = Vec::new();
    let mut records = 0;
    let mut after: Option<String> = None;
    loop {
        let mut url = format!("{base}/crm/v3/objects/contacts?limit=100");
        if let Some(a) = &after {
            url.push_str(&format!("&after={a}"));
        }
        let body = http
            .get(url)
            .bearer_auth("sandbox-hubspot-token")
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let page: Value = serde_json::from_slice(&body).unwrap();
        records += page["results"].as_array().map_or(0, Vec::len);
        after = page["paging"]["next"]["after"].as_str().map(String::from);
        pages.push(body.to_vec());
        if after.is_none() {
            return (pages, records);
        }
    }
}

/// A spec (as YAML text) without its discoveries and custom objects, every request naming
/// no custom field: for benches, which measure syncing, against servers that replay pages
/// (and answer no discovery).
pub fn without_discovery(yaml: &str) -> String {
    let mut doc: Value = serde_yaml_ng::from_str(yaml).expect("the spec is YAML");
    let top = doc.as_object_mut().expect("a spec is a mapping");
    top.remove("discovery");
    top.remove("custom_objects");
    if let Some(Value::Object(resources)) = top.get_mut("resources") {
        for resource in resources.values_mut() {
            if let Value::Object(r) = resource {
                r.remove("discovery");
            }
        }
    }
    serde_yaml_ng::to_string(&doc)
        .expect("YAML serializes")
        .replace("fields.custom", "[]")
}
