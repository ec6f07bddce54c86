//! Deployment settings, from environment variables (documented in the README).

use std::path::PathBuf;
use std::time::Duration;

use crate::secrets::crypto::{Cipher, CryptoError};

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

/// Everything a worker (and the scheduler) reads from the environment.
#[derive(Debug, Clone)]
pub struct Settings {
    pub kafka_brokers: String,
    pub database_url: String,
    pub specs_dir: PathBuf,
    pub topic_prefix: String,
    pub topic_template: String,
    pub allow_private_hosts: bool,
    pub encryption_key: Option<String>,
    pub old_encryption_keys: Vec<String>,
    pub slice_max_pages: u32,
    pub slice_max_duration: Duration,
    pub worker_concurrency: usize,
    pub emit_remote_data: bool,
    pub tombstones: bool,
    pub jobs_partitions: i32,
    pub session_timeout: Duration,
    pub max_wait: Duration,
    pub health_addr: Option<String>,
    /// The worker's static consumer-group membership id (`TRIBUTARY_WORKER_INSTANCE_ID`;
    /// `auto`: host name and process id); None: a dynamic member.
    pub worker_instance_id: Option<String>,
    pub lease: Duration,
    pub api_addr: String,
    pub admin_token: Option<String>,
    pub tick_interval: Duration,
    pub default_schedule: String,
    pub default_full_schedule: String,
    pub max_jitter: Duration,
    pub park_after: Duration,
    pub breaker_after: u32,
    pub breaker_open: Duration,
    pub breaker_max_open: Duration,
    pub budget_headroom: f64,
    pub budget_ledger: crate::sync::LedgerChoice,
    pub tenant_concurrency: Option<usize>,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn flag(name: &'static str, default: bool) -> Result<bool, ConfigError> {
    match var(name).as_deref().map(str::to_ascii_lowercase).as_deref() {
        None => Ok(default),
        Some("1" | "true" | "yes" | "on") => Ok(true),
        Some("0" | "false" | "no" | "off") => Ok(false),
        Some(other) => Err(ConfigError::Invalid {
            var: name,
            message: format!("`{other}` is not a boolean (use true or false)"),
        }),
    }
}

fn number<T: std::str::FromStr>(name: &'static str, default: T) -> Result<T, ConfigError> {
    match var(name) {
        None => Ok(default),
        Some(v) => v.trim().parse().map_err(|_| ConfigError::Invalid {
            var: name,
            message: format!("`{v}` is not a number"),
        }),
    }
}

impl Settings {
    /// Environment variables; with TRIBUTARY_CONFIG_FILE, a `KEY=value` file fills in
    /// what the environment does not set (the environment wins).
    pub fn from_env() -> Result<Settings, ConfigError> {
        if let Some(path) = var("TRIBUTARY_CONFIG_FILE") {
            dotenvy::from_path(&path).map_err(|e| ConfigError::File {
                path: path.clone(),
                message: e.to_string(),
            })?;
        }
        Ok(Settings {
            kafka_brokers: var("TRIBUTARY_KAFKA_BROKERS")
                .unwrap_or_else(|| "127.0.0.1:9092".into()),
            database_url: var("TRIBUTARY_DATABASE_URL")
                .unwrap_or_else(|| "sqlite://tributary.db".into()),
            specs_dir: var("TRIBUTARY_SPECS_DIR")
                .unwrap_or_else(|| "provider-specs".into())
                .into(),
            topic_prefix: var("TRIBUTARY_TOPIC_PREFIX").unwrap_or_else(|| "tributary".into()),
            topic_template: var("TRIBUTARY_TOPIC_TEMPLATE")
                .unwrap_or_else(|| "{prefix}.{model}".into()),
            allow_private_hosts: flag("TRIBUTARY_ALLOW_PRIVATE_HOSTS", false)?,
            encryption_key: match (
                var("TRIBUTARY_ENCRYPTION_KEY"),
                var("TRIBUTARY_ENCRYPTION_KEY_FILE"),
            ) {
                (Some(k), _) => Some(k),
                (None, Some(path)) => Some(
                    std::fs::read_to_string(&path)
                        .map_err(|e| ConfigError::Invalid {
                            var: "TRIBUTARY_ENCRYPTION_KEY_FILE",
                            message: format!("{path}: {e}"),
                        })?
                        .trim()
                        .to_string(),
                ),
                (None, None) => None,
            },
            old_encryption_keys: var("TRIBUTARY_ENCRYPTION_OLD_KEYS")
                .map(|v| {
                    v.split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
            slice_max_pages: number("TRIBUTARY_SLICE_MAX_PAGES", 50)?,
            slice_max_duration: Duration::from_secs_f64(number(
                "TRIBUTARY_SLICE_MAX_SECONDS",
                30.0,
            )?),
            worker_concurrency: number("TRIBUTARY_WORKER_CONCURRENCY", 8)?,
            emit_remote_data: flag("TRIBUTARY_EMIT_REMOTE_DATA", true)?,
            tombstones: flag("TRIBUTARY_TOMBSTONES", false)?,
            jobs_partitions: number("TRIBUTARY_JOBS_PARTITIONS", 6)?,
            session_timeout: Duration::from_millis(number(
                "TRIBUTARY_KAFKA_SESSION_TIMEOUT_MS",
                10_000,
            )?),
            max_wait: Duration::from_secs_f64(number("TRIBUTARY_MAX_WAIT_SECONDS", 300.0)?),
            health_addr: var("TRIBUTARY_HEALTH_ADDR"),
            worker_instance_id: var("TRIBUTARY_WORKER_INSTANCE_ID"),
            lease: Duration::from_secs(number("TRIBUTARY_LEASE_SECONDS", 900)?),
            api_addr: var("TRIBUTARY_API_ADDR").unwrap_or_else(|| "127.0.0.1:8080".into()),
            admin_token: var("TRIBUTARY_ADMIN_TOKEN"),
            tick_interval: Duration::from_secs_f64(number(
                "TRIBUTARY_SCHEDULER_TICK_SECONDS",
                5.0,
            )?),
            default_schedule: var("TRIBUTARY_DEFAULT_SCHEDULE")
                .unwrap_or_else(|| "*/15 * * * *".into()),
            default_full_schedule: var("TRIBUTARY_DEFAULT_FULL_SCHEDULE")
                .unwrap_or_else(|| "0 3 * * *".into()),
            max_jitter: Duration::from_secs_f64(number(
                "TRIBUTARY_SCHEDULE_JITTER_SECONDS",
                300.0,
            )?),
            park_after: Duration::from_secs_f64(number("TRIBUTARY_PARK_AFTER_SECONDS", 30.0)?),
            breaker_after: number("TRIBUTARY_BREAKER_AFTER", 5)?,
            breaker_open: Duration::from_secs_f64(number("TRIBUTARY_BREAKER_OPEN_SECONDS", 60.0)?),
            breaker_max_open: Duration::from_secs_f64(number(
                "TRIBUTARY_BREAKER_MAX_OPEN_SECONDS",
                600.0,
            )?),
            budget_headroom: number("TRIBUTARY_BUDGET_HEADROOM", 0.05)?,
            budget_ledger: match var("TRIBUTARY_RATE_BUDGETS").as_deref() {
                None | Some("auto") => crate::sync::LedgerChoice::Auto,
                Some("store") => crate::sync::LedgerChoice::Store,
                Some("memory") => crate::sync::LedgerChoice::Memory,
                Some(other) => {
                    return Err(ConfigError::Invalid {
                        var: "TRIBUTARY_RATE_BUDGETS",
                        message: format!("`{other}` is not one of auto, store, memory"),
                    })
                }
            },
            tenant_concurrency: match var("TRIBUTARY_WORKER_TENANT_CONCURRENCY") {
                None => None,
                Some(_) => Some(number("TRIBUTARY_WORKER_TENANT_CONCURRENCY", 1)?),
            },
        })
    }

    /// Topic names from the prefix and template.
    pub fn topics(&self) -> crate::bus::Topics {
        let mut topics = crate::bus::Topics::new(&self.topic_prefix);
        topics.model_template = self.topic_template.clone();
        topics
    }

    pub fn cipher(&self) -> Result<Cipher, ConfigError> {
        let key = self.encryption_key.as_deref().ok_or(ConfigError::NoKey)?;
        Ok(Cipher::from_base64(key, &self.old_encryption_keys)?)
    }
}
