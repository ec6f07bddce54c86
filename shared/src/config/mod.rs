//! Deployment settings: the components' own settings structs (each one's `Default` is the
//! one source of its defaults) composed into `Settings`, with the environment (and
//! `TRIBUTARY_CONFIG_FILE`) overlaid. Every variable is defined once in `entries`, with the
//! doc comment the README's table is generated from (`settings_table`, printed by
//! `tributary-worker settings`; a test fails when the README is stale).

mod codec;
mod entries;

use std::path::PathBuf;
use std::time::Duration;

pub use entries::{settings_table, splice_table, Entry, ENTRIES, TABLE_BEGIN, TABLE_END};

use crate::bus::Topics;
use crate::schedule::tick::ScheduleSettings;
use crate::secrets::crypto::{Cipher, CryptoError};
use crate::store::Store;
use crate::sync::worker::WorkerOptions;
use crate::sync::SyncSettings;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{var}: {message}")]
    Invalid { var: &'static str, message: String },
    #[error("TRIBUTARY_ENCRYPTION_KEY: {0}")]
    Key(#[from] CryptoError),
    #[error("TRIBUTARY_CONFIG_FILE {path}: {message}")]
    File { path: String, message: String },
    #[error("TRIBUTARY_ENCRYPTION_KEY (or TRIBUTARY_ENCRYPTION_KEY_FILE) is not set: credentials are encrypted at rest; generate a key with `tributary-worker keygen` and keep it secret")]
    NoKey,
}

/// Everything a worker and the scheduler read from the environment. Use the accessors
/// (`sync_settings`, `worker_options`) for the components: they carry the brokers and
/// topic names set here.
#[derive(Clone)]
pub struct Settings {
    pub kafka_brokers: String,
    pub database_url: String,
    pub topics: Topics,
    pub encryption_key: Option<String>,
    pub encryption_key_file: Option<PathBuf>,
    pub old_encryption_keys: Vec<String>,
    /// Partitions of the jobs topics when they are created.
    pub jobs_partitions: i32,
    /// Worker: where `/healthz` is served (none: not served).
    pub health_addr: Option<String>,
    /// Scheduler: where the API listens.
    pub api_addr: String,
    pub admin_token: Option<String>,
    /// Scheduler: how often it looks for due schedules.
    pub tick_interval: Duration,
    /// Scheduler: how often idle OAuth connections are refreshed.
    pub keepalive_interval: Duration,
    /// A job's lease (the store's).
    pub lease: Duration,
    pub sync: SyncSettings,
    pub worker: WorkerOptions,
    pub schedule: ScheduleSettings,
    /// Scheduler: the hosted connect flow.
    pub connect: crate::connect::ConnectSettings,
    /// Webhooks: the receiver's patience and the intake's window.
    pub webhooks: crate::webhooks::WebhookSettings,
    /// Where change, status and dead-letter events go.
    pub events_bus: crate::bus::BusKind,
    /// Where jobs, urgent jobs and webhook deliveries go.
    pub jobs_bus: crate::bus::BusKind,
    /// RabbitMQ's URL (a bus on `rabbitmq` needs it).
    pub amqp_url: Option<String>,
    /// Jobs on RabbitMQ: deliveries before a job is dead-lettered.
    pub amqp_delivery_limit: u32,
    /// Jobs on RabbitMQ: how long a claim on a resource lasts unless renewed.
    pub resource_claim: Duration,
    /// RabbitMQ: an event no queue is bound for is an error (not dropped).
    pub amqp_mandatory: bool,
}

impl Default for Settings {
    fn default() -> Self {
        let sync = SyncSettings::default();
        let worker = WorkerOptions::default();
        Settings {
            kafka_brokers: worker.brokers.clone(),
            database_url: "sqlite://tributary.db".into(),
            topics: sync.topics.clone(),
            encryption_key: None,
            encryption_key_file: None,
            old_encryption_keys: Vec::new(),
            jobs_partitions: 6,
            health_addr: None,
            api_addr: "127.0.0.1:8080".into(),
            admin_token: None,
            tick_interval: Duration::from_secs(5),
            keepalive_interval: Duration::from_secs(900),
            lease: Store::DEFAULT_LEASE,
            sync,
            worker,
            schedule: ScheduleSettings::default(),
            connect: crate::connect::ConnectSettings::default(),
            webhooks: crate::webhooks::WebhookSettings::default(),
            events_bus: crate::bus::BusKind::Kafka,
            jobs_bus: crate::bus::BusKind::Kafka,
            amqp_url: None,
            // RabbitMQ 3.x counts a return on a closed channel as a delivery (a worker that
            // stops hands back what it had prefetched): room for many restarts.
            amqp_delivery_limit: 20,
            resource_claim: Duration::from_secs(30),
            amqp_mandatory: true,
        }
    }
}

/// Never shows the encryption keys or the admin token.
impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("kafka_brokers", &self.kafka_brokers)
            .field("topics", &self.topics)
            .field("sync", &self.sync)
            .field("worker", &self.worker)
            .field("schedule", &self.schedule)
            .field("connect", &self.connect)
            .field("webhooks", &self.webhooks)
            .field("events_bus", &self.events_bus)
            .field("jobs_bus", &self.jobs_bus)
            .finish_non_exhaustive()
    }
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// With TRIBUTARY_CONFIG_FILE, put the file's `KEY=value` lines into the environment where
/// the environment does not set them already (telemetry reads its variables there too).
pub fn load_config_file() -> Result<(), ConfigError> {
    if let Some(path) = var("TRIBUTARY_CONFIG_FILE").filter(|p| !p.trim().is_empty()) {
        dotenvy::from_path(&path).map_err(|e| ConfigError::File {
            path: path.clone(),
            message: e.to_string(),
        })?;
    }
    Ok(())
}

impl Settings {
    /// Environment variables; with TRIBUTARY_CONFIG_FILE, a `KEY=value` file fills in
    /// what the environment does not set (the environment wins).
    pub fn from_env() -> Result<Settings, ConfigError> {
        load_config_file()?;
        Settings::from_vars(var)
    }

    /// The defaults with these variables overlaid (empty values count as unset).
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Settings, ConfigError> {
        let mut settings = Settings::default();
        for entry in ENTRIES {
            let Some(text) = get(entry.name) else {
                continue;
            };
            let text = text.trim();
            if text.is_empty() {
                continue;
            }
            (entry.apply)(&mut settings, text).map_err(|message| ConfigError::Invalid {
                var: entry.name,
                message,
            })?;
        }
        if settings.encryption_key.is_none() {
            if let Some(path) = &settings.encryption_key_file {
                let key = std::fs::read_to_string(path).map_err(|e| ConfigError::Invalid {
                    var: "TRIBUTARY_ENCRYPTION_KEY_FILE",
                    message: format!("{}: {e}", path.display()),
                })?;
                settings.encryption_key = Some(key.trim().to_string());
            }
        }
        Ok(settings)
    }

    /// Topic names from the prefix and template.
    pub fn topics(&self) -> Topics {
        self.topics.clone()
    }

    /// How slices behave, with this deployment's topic names.
    pub fn sync_settings(&self) -> SyncSettings {
        SyncSettings {
            topics: self.topics(),
            ..self.sync.clone()
        }
    }

    /// The jobs consumer's options, with this deployment's brokers and topic names.
    pub fn worker_options(&self) -> WorkerOptions {
        WorkerOptions {
            brokers: self.kafka_brokers.clone(),
            topics: self.topics(),
            amqp_jobs: self.amqp_jobs(),
            ..self.worker.clone()
        }
    }

    /// Jobs on RabbitMQ, when `TRIBUTARY_JOBS_BUS=rabbitmq` and a URL is set.
    pub fn amqp_jobs(&self) -> Option<crate::bus::amqp::AmqpJobSettings> {
        if self.jobs_bus != crate::bus::BusKind::Rabbitmq {
            return None;
        }
        Some(crate::bus::amqp::AmqpJobSettings {
            url: self.amqp_url.clone()?,
            delivery_limit: self.amqp_delivery_limit.max(1),
            // Renewed every third of it: a second at least.
            claim_ttl: self.resource_claim.max(Duration::from_secs(1)),
        })
    }

    /// Whether any role uses Kafka.
    pub fn uses_kafka(&self) -> bool {
        use crate::bus::BusKind::Kafka;
        self.events_bus == Kafka || self.jobs_bus == Kafka
    }

    pub fn cipher(&self) -> Result<Cipher, ConfigError> {
        let key = self.encryption_key.as_deref().ok_or(ConfigError::NoKey)?;
        Ok(Cipher::from_base64(key, &self.old_encryption_keys)?)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn from(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_vars(|name| map.get(name).cloned())
    }

    #[test]
    fn variables_land_in_their_components() {
        let s = from(&[
            ("TRIBUTARY_PARK_AFTER_SECONDS", "12.5"),
            ("TRIBUTARY_KAFKA_SESSION_TIMEOUT_MS", "6000"),
            ("TRIBUTARY_RATE_BUDGETS", "store"),
            ("TRIBUTARY_WORKER_TENANT_CONCURRENCY", "2"),
            ("TRIBUTARY_ALLOW_PRIVATE_HOSTS", "yes"),
            ("TRIBUTARY_TOPIC_PREFIX", "acme"),
            ("TRIBUTARY_ENCRYPTION_OLD_KEYS", "a, b,,"),
            ("TRIBUTARY_BREAKER_PROBE_SECONDS", "5"),
            ("TRIBUTARY_SLICE_MAX_PAGES", "  "),
        ])
        .unwrap();
        let sync = s.sync_settings();
        assert_eq!(
            sync.engine.breaker.settings.park_after,
            Duration::from_millis(12_500)
        );
        assert_eq!(sync.ledger, crate::domain::LedgerChoice::Store);
        assert!(sync.engine.allow_private_hosts);
        assert_eq!(sync.topics.jobs(), "acme.jobs");
        assert_eq!(
            sync.engine.breaker.settings.probe_hold,
            Duration::from_secs(5)
        );
        assert_eq!(sync.slice_max_pages, 50, "an empty value is unset");
        let worker = s.worker_options();
        assert_eq!(worker.session_timeout, Duration::from_secs(6));
        assert_eq!(worker.tenant_concurrency, Some(2));
        assert_eq!(worker.topics.prefix, "acme");
        assert_eq!(s.old_encryption_keys, ["a", "b"]);
    }

    #[test]
    fn one_default_per_setting() {
        // park_after was 30 s in two places and 300 s in a third: now the engine's alone.
        let s = Settings::default();
        assert_eq!(
            s.sync.engine.breaker.settings.park_after,
            crate::engine::RunOptions::default()
                .breaker
                .settings
                .park_after
        );
        assert_eq!(
            s.sync.engine.breaker.settings.park_after,
            Duration::from_secs(30)
        );
        assert_eq!(s.lease, Store::DEFAULT_LEASE);
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (var, value, says) in [
            (
                "TRIBUTARY_SLICE_MAX_PAGES",
                "many",
                "`many` is not a number",
            ),
            ("TRIBUTARY_TOMBSTONES", "maybe", "not a boolean"),
            (
                "TRIBUTARY_RATE_BUDGETS",
                "disk",
                "one of: auto, store, memory",
            ),
            ("TRIBUTARY_MAX_WAIT_SECONDS", "-1", "seconds >= 0"),
        ] {
            let err = from(&[(var, value)]).unwrap_err().to_string();
            assert!(err.starts_with(var) && err.contains(says), "{err}");
        }
    }

    #[test]
    fn every_variable_is_documented_once() {
        let mut names: Vec<&str> = ENTRIES.iter().map(|e| e.name).collect();
        assert!(ENTRIES.iter().all(|e| !e.meaning().is_empty()));
        names.sort();
        let before = names.len();
        names.dedup();
        assert_eq!(names.len(), before, "a variable is defined twice");
    }

    /// The README's settings table is generated: regenerate it with
    /// `cargo run -p tributary-worker -- settings --readme README.md`.
    #[test]
    fn the_readme_settings_table_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
        let readme = std::fs::read_to_string(path).expect("README.md exists");
        assert!(
            readme == splice_table(&readme).expect("README.md has the settings markers"),
            "README.md's settings table is stale: regenerate it with `cargo run -p tributary-worker -- settings --readme README.md`"
        );
    }

    #[test]
    fn jobs_on_rabbitmq_need_no_kafka_and_never_show_the_password() {
        let s = from(&[
            ("TRIBUTARY_EVENTS_BUS", "rabbitmq"),
            ("TRIBUTARY_JOBS_BUS", "rabbitmq"),
            (
                "TRIBUTARY_AMQP_URL",
                "amqp://guest:s3cret@127.0.0.1:5672/%2f",
            ),
            ("TRIBUTARY_AMQP_DELIVERY_LIMIT", "3"),
            ("TRIBUTARY_RESOURCE_CLAIM_SECONDS", "0"),
        ])
        .unwrap();
        assert!(!s.uses_kafka());
        let amqp = s.worker_options().amqp_jobs.expect("jobs on RabbitMQ");
        assert_eq!(amqp.delivery_limit, 3);
        assert_eq!(amqp.claim_ttl, Duration::from_secs(1), "at least a second");
        let shown = format!("{:?}", s.worker_options());
        assert!(
            !shown.contains("s3cret") && shown.contains("guest:***@"),
            "{shown}"
        );
        let kafka = from(&[("TRIBUTARY_JOBS_BUS", "rabbitmq")]).unwrap();
        assert!(kafka.uses_kafka(), "events stay on Kafka");
        assert!(
            kafka.amqp_jobs().is_none(),
            "no URL: bootstrap refuses to start"
        );
    }
}
