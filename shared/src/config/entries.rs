//! Every `TRIBUTARY_*` variable, defined once: its name, its doc comment (the README's
//! "meaning"), how its text is read and which setting it sets. Defaults are not here: each
//! is the `Default` of the component that owns the setting, shown by reading it back.

use super::codec::{self, Codec};
use super::Settings;

/// One variable.
pub struct Entry {
    pub name: &'static str,
    /// Its doc comment (lines joined with spaces in the table).
    pub doc: &'static str,
    /// What the table shows as the default instead of the value (for unset values).
    pub shown: Option<&'static str>,
    pub(super) apply: fn(&mut Settings, &str) -> Result<(), String>,
    pub(super) show: fn(&Settings) -> String,
}

impl Entry {
    /// The default as the README shows it.
    pub fn default_text(&self, defaults: &Settings) -> String {
        match self.shown {
            Some(s) => s.to_string(),
            None => match (self.show)(defaults) {
                v if v.is_empty() => String::new(),
                v => format!("`{v}`"),
            },
        }
    }

    /// The doc comment on one line.
    pub fn meaning(&self) -> String {
        self.doc
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

macro_rules! entries {
    ($( $(#[doc = $doc:literal])+ $name:ident : $codec:ident => $($path:ident).+ $(, shown $shown:literal)? ; )+) => {
        /// Every variable, in the README's order.
        pub static ENTRIES: &[Entry] = &[$(
            Entry {
                name: stringify!($name),
                doc: concat!($($doc, "\n"),+),
                shown: entries!(@shown $($shown)?),
                apply: |s: &mut Settings, text: &str| {
                    s.$($path).+ = <codec::$codec as Codec<_>>::parse(text)?;
                    Ok(())
                },
                show: |s: &Settings| <codec::$codec as Codec<_>>::show(&s.$($path).+),
            },
        )+];
    };
    (@shown) => { None };
    (@shown $s:literal) => { Some($s) };
}

entries! {
    /// bootstrap servers
    TRIBUTARY_KAFKA_BROKERS: Text => kafka_brokers;
    /// `postgres://...` for a fleet, `sqlite://path` on one machine; migrations apply at start
    TRIBUTARY_DATABASE_URL: Text => database_url;
    /// where change, status and dead-letter events go: `kafka` (a topic per model,
    /// `<prefix>.status`, `<prefix>.deadletter`) or `rabbitmq` (the topic exchange
    /// `<prefix>.events`, routing keys `<model>.<op>`, `status.<type>`, `deadletter`; needs
    /// `TRIBUTARY_AMQP_URL`; see README, "Events on RabbitMQ")
    TRIBUTARY_EVENTS_BUS: Named => events_bus;
    /// where jobs, urgent jobs and webhook deliveries go: `kafka` (the topics
    /// `<prefix>.jobs`, `<prefix>.jobs.urgent`, `<prefix>.webhooks`) or `rabbitmq` (quorum
    /// queues of those names, plus `<prefix>.jobs.dead` and the delay queues; needs
    /// `TRIBUTARY_AMQP_URL`; see README, "Jobs on RabbitMQ"). With both buses on `rabbitmq`
    /// no Kafka is used at all
    TRIBUTARY_JOBS_BUS: Named => jobs_bus;
    /// RabbitMQ, e.g. `amqp://user:password@host:5672/vhost` (`amqps://` for TLS; the
    /// password is never shown)
    TRIBUTARY_AMQP_URL: OptText => amqp_url, shown "(none)";
    /// RabbitMQ: publish events `mandatory`, so one no queue is bound for fails its page
    /// (retried) instead of being dropped; `false` for hosts that bind their queues later
    TRIBUTARY_AMQP_MANDATORY: Flag => amqp_mandatory;
    /// jobs on RabbitMQ: deliveries of one job before the broker dead-letters it to
    /// `<prefix>.jobs.dead` (a worker dying on it every time); a job that panics is tried
    /// this often too, then dead-lettered with the panic as its reason. RabbitMQ 3.x also
    /// counts the jobs a stopping worker had prefetched and hands back, hence the room
    TRIBUTARY_AMQP_DELIVERY_LIMIT: Number => amqp_delivery_limit;
    /// jobs on RabbitMQ: how long a worker's claim on a (connection, resource) lasts
    /// unless renewed (every third of it while its job runs); one job per resource runs
    /// in the fleet at a time, and a job whose resource another worker holds waits a
    /// second in a delay queue. A worker that died holding one frees it after this long (at
    /// least 1)
    TRIBUTARY_RESOURCE_CLAIM_SECONDS: Seconds => resource_claim;
    /// where `<provider>.yaml` specs are
    TRIBUTARY_SPECS_DIR: Text => sync.specs_dir;
    /// this environment's overrides of the specs: `<provider>.yaml` files (see
    /// provider-specs/README.md, "Overrides"), checked at start
    TRIBUTARY_OVERRIDES_DIR: OptText => sync.overrides_dir, shown "(none)";
    /// prefix of every topic and of the consumer group (`<prefix>.workers`)
    TRIBUTARY_TOPIC_PREFIX: Text => topics.prefix;
    /// name of the per-model topics
    TRIBUTARY_TOPIC_TEMPLATE: Text => topics.model_template;
    /// 32 random bytes, base64 (`tributary-worker keygen`); seals credentials at rest
    TRIBUTARY_ENCRYPTION_KEY: OptText => encryption_key, shown "(required)";
    /// a file holding the key instead (e.g. a mounted secret)
    TRIBUTARY_ENCRYPTION_KEY_FILE: OptText => encryption_key_file;
    /// comma-separated older keys still needed to read rows sealed with them (key rotation)
    TRIBUTARY_ENCRYPTION_OLD_KEYS: List => old_encryption_keys;
    /// allow loopback/private provider addresses (sandboxes and tests only)
    TRIBUTARY_ALLOW_PRIVATE_HOSTS: Flag => sync.engine.allow_private_hosts;
    /// pages per job slice before it checkpoints and enqueues its continuation
    TRIBUTARY_SLICE_MAX_PAGES: Number => sync.slice_max_pages;
    /// seconds per slice, likewise
    TRIBUTARY_SLICE_MAX_SECONDS: Seconds => sync.slice_max_duration;
    /// rediscover every account's fields (custom ones included) at least this often, in seconds,
    /// even where a spec's `discovery` declares a longer cadence (each spec's own, daily by
    /// default, when unset)
    TRIBUTARY_DISCOVERY_MAX_AGE_SECONDS: OptNumber => sync.discovery_max_age,
        shown "each spec's `every_seconds`";
    /// pages a slice reads and maps ahead while earlier ones are published and committed (1 = no overlap; memory grows with it)
    TRIBUTARY_PAGES_IN_FLIGHT: Number => sync.pages_in_flight;
    /// jobs one worker runs at once (bounded memory)
    TRIBUTARY_WORKER_CONCURRENCY: Number => worker.concurrency;
    /// include the raw provider record in change events
    TRIBUTARY_EMIT_REMOTE_DATA: Flag => sync.emit_remote_data;
    /// follow each delete event with a tombstone (for compacted topics)
    TRIBUTARY_TOMBSTONES: Flag => sync.tombstones;
    /// partitions of the jobs topic when the worker creates it
    TRIBUTARY_JOBS_PARTITIONS: Number => jobs_partitions;
    /// consumer session timeout: how fast a dead worker's jobs move on
    TRIBUTARY_KAFKA_SESSION_TIMEOUT_MS: Millis => worker.session_timeout;
    /// ceiling on any single throttle wait
    TRIBUTARY_MAX_WAIT_SECONDS: Seconds => sync.engine.max_wait;
    /// worker: serve `GET /healthz` there, e.g. `0.0.0.0:8081`
    TRIBUTARY_HEALTH_ADDR: OptText => health_addr, shown "(off)";
    /// worker: static consumer-group membership (`group.instance.id`), one stable id per
    /// process (`auto`: host name and process id); unset: an ordinary dynamic member (on
    /// tansu 0.6.0 static members are rebalanced every session timeout, so it stays off there)
    TRIBUTARY_WORKER_INSTANCE_ID: OptText => worker.instance_id, shown "(off)";
    /// scheduler: where the API (and its `/healthz`) listens
    TRIBUTARY_API_ADDR: Text => api_addr;
    /// bearer token of the host product
    TRIBUTARY_ADMIN_TOKEN: OptText => admin_token, shown "(required by the scheduler)";
    /// how often the scheduler looks for due schedules
    TRIBUTARY_SCHEDULER_TICK_SECONDS: Seconds => tick_interval;
    /// cadence of connections created without one
    TRIBUTARY_DEFAULT_SCHEDULE: Text => schedule.default_schedule;
    /// cadence of full syncs (deletion sweeps) without one
    TRIBUTARY_DEFAULT_FULL_SCHEDULE: Text => schedule.default_full_schedule;
    /// upper bound of the per-resource jitter (also at most a tenth of the period)
    TRIBUTARY_SCHEDULE_JITTER_SECONDS: Seconds => schedule.max_jitter;
    /// a job's lease; each slice renews it; an expired lease is enqueued again
    TRIBUTARY_LEASE_SECONDS: Seconds => lease;
    /// scheduler: how often idle OAuth connections are looked for and refreshed (before a
    /// provider expires an unused refresh token, the spec's `refresh_token_idle_days`)
    TRIBUTARY_KEEPALIVE_SECONDS: Seconds => keepalive_interval;
    /// scheduler: the URL browsers reach the scheduler at (e.g. `https://sync.example.com`):
    /// connect session URLs and the OAuth callback (`<url>/v1/connect/callback`, register it
    /// with each OAuth app) start there; connect sessions need it
    TRIBUTARY_PUBLIC_URL: OptText => connect.public_url, shown "(none: no connect sessions)";
    /// scheduler: the OAuth apps file (YAML: client id and secret per provider, and per
    /// tenant for tenants with their own app; see README, "Connect")
    TRIBUTARY_APPS_FILE: OptText => connect.apps_file, shown "(none)";
    /// scheduler: comma-separated origins a connect session's `return_url` may have (e.g.
    /// `https://app.example.com`); any other is refused
    TRIBUTARY_CONNECT_RETURN_ORIGINS: List => connect.return_origins, shown "(none)";
    /// scheduler: how long a connect session's URL stays valid
    TRIBUTARY_CONNECT_SESSION_SECONDS: Seconds => connect.session_ttl;
    /// scheduler: how long a webhook request waits for the broker to acknowledge its
    /// append; past it the request gets 503 and the provider retries (keep it under the
    /// providers' patience: 3 s for some)
    TRIBUTARY_WEBHOOK_ACK_TIMEOUT_MS: Millis => webhooks.ack_timeout;
    /// worker: how long webhook ids are collected per (connection, resource) before one
    /// fetch job reads them all
    TRIBUTARY_WEBHOOK_WINDOW_MS: Millis => webhooks.window;
    /// scheduler: how often webhook subscriptions are looked after: renewed before they
    /// expire (each spec's `renew.before_seconds`), registered again where a registration
    /// failed or the provider forgot it (needs `TRIBUTARY_PUBLIC_URL`)
    TRIBUTARY_WEBHOOK_UPKEEP_SECONDS: Seconds => webhooks.upkeep_interval;
    /// jobs of one tenant one worker runs at once; the rest wait without a slot, so a
    /// tenant's backlog never fills a worker
    TRIBUTARY_WORKER_TENANT_CONCURRENCY: OptNumber => worker.tenant_concurrency,
        shown "half of `TRIBUTARY_WORKER_CONCURRENCY`";
    /// where rate budgets live: `store` (the database: shared by every replica), `memory`
    /// (this process only), `auto` (store on PostgreSQL, memory on SQLite)
    TRIBUTARY_RATE_BUDGETS: Named => sync.ledger;
    /// requests go at most at (1 - headroom) of a spec's window budget, absorbing clock
    /// skew and network jitter
    TRIBUTARY_BUDGET_HEADROOM: Number => sync.budgets.headroom;
    /// a budget or throttle wait longer than this parks the job (checkpoint, continuation
    /// enqueued with a not-before time, connection `rate_limited`) instead of holding a
    /// worker slot
    TRIBUTARY_PARK_AFTER_SECONDS: Seconds => sync.engine.breaker.settings.park_after;
    /// throttles in a row on one request that open the connection's circuit
    TRIBUTARY_BREAKER_AFTER: Number => sync.engine.breaker.settings.throttles_to_open;
    /// runs in a row failing on something that may pass (5xx, timeouts) that open the
    /// connection's circuit
    TRIBUTARY_BREAKER_FAILED_RUNS: Number => sync.engine.breaker.settings.failed_runs_to_open;
    /// how long an open circuit holds the connection's jobs the first time (doubles while
    /// it keeps failing)
    TRIBUTARY_BREAKER_OPEN_SECONDS: Seconds => sync.engine.breaker.settings.open;
    /// the longest an open circuit holds them
    TRIBUTARY_BREAKER_MAX_OPEN_SECONDS: Seconds => sync.engine.breaker.settings.max_open;
    /// once an open circuit's time is up, one job probes the provider; the connection's
    /// other jobs wait this long for its verdict
    TRIBUTARY_BREAKER_PROBE_SECONDS: Seconds => sync.engine.breaker.settings.probe_hold;
}

/// Not `Settings` fields (read by the telemetry setup, `telemetry::settings`), listed with them.
const TELEMETRY_ROWS: &str = "\
| `TRIBUTARY_METRICS_TENANT_LABEL` | `true` | metrics carry a `tenant` attribute (one series per tenant); turn off with many tenants |
| `RUST_LOG` | `info` | log filter (logs go to stderr; they never contain credentials) |";

/// The README's settings table (markdown), from the entries and the defaults.
pub fn settings_table() -> String {
    let defaults = Settings::default();
    let mut out = String::from("| variable | default | meaning |\n| --- | --- | --- |\n");
    for e in ENTRIES {
        out.push_str(&format!(
            "| `{}` | {} | {} |\n",
            e.name,
            e.default_text(&defaults),
            e.meaning()
        ));
    }
    out.push_str(TELEMETRY_ROWS);
    out.push('\n');
    out
}

/// Begin and end markers of the generated table in the README.
pub const TABLE_BEGIN: &str = "<!-- settings:begin -->";
pub const TABLE_END: &str = "<!-- settings:end -->";

/// `readme` with the text between the settings markers replaced by the current table.
/// None when a marker is missing.
pub fn splice_table(readme: &str) -> Option<String> {
    let start = readme.find(TABLE_BEGIN)? + TABLE_BEGIN.len();
    let end = start + readme[start..].find(TABLE_END)?;
    Some(format!(
        "{}\n{}{}",
        &readme[..start],
        settings_table(),
        &readme[end..]
    ))
}
