//! `tributary-scheduler`: schedules sync jobs and serves the control API (`run`),
//! or runs everything in one process on embedded defaults (`standalone`).

mod standalone;

use std::process::ExitCode;

/// mimalloc: a slice allocates and frees many small values per record (JSON trees,
/// strings, messages) from several threads; glibc's allocator spent about a quarter of
/// the pipeline bench's CPU on it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use clap::{Parser, Subcommand};
use tracing::{error, info, warn};
use tributary::bootstrap::{Services, TopicSetup};
use tributary::config::Settings;
use tributary::schedule::tick::Scheduler;
use tributary_scheduler::api;

#[derive(Parser)]
#[command(
    name = "tributary-scheduler",
    version,
    about = "Tributary scheduler and control API"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Enqueue due sync jobs and serve the API on TRIBUTARY_API_ADDR (settings from TRIBUTARY_* variables).
    Run,
    /// Scheduler, workers, an embedded broker, SQLite and sandbox providers in one process, with demo tenants.
    Standalone(standalone::Args),
    /// Print the OpenAPI document of the control API.
    Openapi,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Logs (and, with OTEL_EXPORTER_OTLP_ENDPOINT, traces and metrics); the guard flushes
    // the exporters when main returns, after the runtime has stopped.
    let default_logs = match &cli.command {
        Command::Run => Some("info,rdkafka=warn"),
        Command::Standalone(_) => Some("warn"),
        Command::Openapi => None,
    };
    let _telemetry = match default_logs
        .map(|filter| tributary::telemetry::init("tributary-scheduler", filter))
        .transpose()
    {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = rt.block_on(async move {
        match cli.command {
            Command::Run => run().await,
            Command::Standalone(args) => standalone::run(args).await,
            Command::Openapi => {
                print!("{}", api::OPENAPI);
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    let admin_token = settings.admin_token.clone().ok_or_else(|| {
        anyhow!("TRIBUTARY_ADMIN_TOKEN is not set: the API needs an admin token for the host product (a long random string)")
    })?;
    for (name, expr) in [
        (
            "TRIBUTARY_DEFAULT_SCHEDULE",
            &settings.schedule.default_schedule,
        ),
        (
            "TRIBUTARY_DEFAULT_FULL_SCHEDULE",
            &settings.schedule.default_full_schedule,
        ),
    ] {
        expr.parse::<tributary::schedule::Cadence>()
            .map_err(|e| anyhow!("{name}: {e}"))?;
    }
    let services = Services::start(settings.clone(), TopicSetup::CreateMissing).await?;
    // Readiness (`/readyz`): the store and the broker, checked every few seconds. Ticks and
    // keepalive passes that fail meanwhile are retried on their next turn.
    tributary::readiness::spawn_probes(
        services.store.clone(),
        settings
            .uses_kafka()
            .then(|| settings.kafka_brokers.clone()),
    );
    let apps = match &settings.connect.apps_file {
        Some(path) => tributary::connect::apps::Apps::load(path)?,
        None => Default::default(),
    };
    let state = Arc::new(api::ApiState {
        store: services.store.clone(),
        publisher: services.publisher.clone(),
        topics: services.topics.clone(),
        specs_dir: settings.sync.specs_dir.clone(),
        admin_token,
        syncer: Arc::new(services.syncer()),
        connect: api::ConnectState {
            settings: settings.connect.clone(),
            apps,
        },
        webhooks: match settings.jobs_bus {
            tributary::bus::BusKind::Kafka => api::webhooks::WebhookState::new(
                &settings.kafka_brokers,
                settings.webhooks.ack_timeout,
            )?,
            tributary::bus::BusKind::Rabbitmq => api::webhooks::WebhookState::on(
                services.publisher.clone(),
                settings.webhooks.ack_timeout,
            ),
        },
    });
    let listener = tokio::net::TcpListener::bind(&settings.api_addr)
        .await
        .with_context(|| format!("TRIBUTARY_API_ADDR {}", settings.api_addr))?;
    eprintln!("API on http://{}", listener.local_addr()?);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, api::router(state)).await {
            error!("API server stopped: {e}");
        }
    });
    // Idle OAuth connections are kept alive in the background (see sync::keepalive).
    let (keep_store, specs, overlays, private, every) = (
        services.store.clone(),
        settings.sync.specs_dir.clone(),
        settings.sync.overrides_dir.clone(),
        settings.sync.engine.allow_private_hosts,
        settings.keepalive_interval,
    );
    tokio::spawn(async move {
        let mut every = tokio::time::interval(every);
        loop {
            every.tick().await;
            match tributary::sync::keepalive::refresh_idle(
                &keep_store,
                &specs,
                overlays.as_deref(),
                private,
            )
            .await
            {
                Ok(n) if n > 0 => info!(refreshed = n, "idle connections kept alive"),
                Ok(_) => {}
                Err(e) => warn!("keeping idle connections alive failed (retried later): {e}"),
            }
        }
    });
    spawn_webhook_upkeep(&services, &settings);
    tick_until_signal(&services.scheduler(), settings.tick_interval).await
}

/// Incremental runs for connections whose webhooks went silent for longer than their
/// spec expects (each channel marked only once its runs are enqueued).
async fn silence_runs(
    syncer: &tributary::sync::Syncer,
    publisher: &tributary::bus::Publisher,
    topics: &tributary::bus::Topics,
) {
    let now = chrono::Utc::now();
    let runs = match syncer.silence_runs(now).await {
        Ok(runs) => runs,
        Err(e) => return warn!("silent webhook channels not checked (retried later): {e}"),
    };
    for (connection, jobs) in runs {
        let mut sent = true;
        for job in &jobs {
            if let Err(e) = publisher.enqueue(topics, job).await {
                warn!(connection, "silence run not enqueued (retried later): {e}");
                sent = false;
            }
        }
        if sent {
            if let Err(e) = syncer.store().mark_silence_run(&connection, now).await {
                warn!(connection, "silence run not recorded: {e}");
            }
        }
    }
}

/// Every `TRIBUTARY_WEBHOOK_UPKEEP_SECONDS`: silent channels read by incremental runs,
/// webhook subscriptions renewed before they expire and failed registrations retried
/// (these two only with a public URL to register).
fn spawn_webhook_upkeep(services: &Services, settings: &Settings) {
    let base = settings.connect.public_url.clone();
    let syncer = services.syncer();
    let (publisher, topics) = (services.publisher.clone(), services.topics.clone());
    let every = settings.webhooks.upkeep_interval;
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        loop {
            ticks.tick().await;
            silence_runs(&syncer, &publisher, &topics).await;
            let Some(base) = base.as_deref() else {
                continue;
            };
            // Look a day ahead; each spec's `renew.before_seconds` decides within it.
            match syncer
                .upkeep_webhooks(base, Duration::from_secs(24 * 3600))
                .await
            {
                Ok(n) if n > 0 => info!(channels = n, "webhook subscriptions looked after"),
                Ok(_) => {}
                Err(e) => warn!("webhook upkeep failed (retried later): {e}"),
            }
        }
    });
}

/// Tick at a steady cadence until SIGTERM or Ctrl-C.
pub async fn tick_until_signal(
    scheduler: &Scheduler,
    every: std::time::Duration,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {
                match scheduler.tick(chrono::Utc::now()).await {
                    Ok(r) if r.enqueued > 0 || r.invalid > 0 => info!(due = r.due, enqueued = r.enqueued, lost = r.lost, invalid = r.invalid, "tick"),
                    Ok(_) => {}
                    Err(e) => warn!("tick failed (retrying next tick): {e}"),
                }
            }
            _ = term.recv() => return Ok(()),
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}
