//! `tributary-scheduler`: schedules sync jobs and serves the control API (`run`),
//! or runs everything in one process on embedded defaults (`standalone`).

mod api;
mod standalone;

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{anyhow, Context};
use clap::{Parser, Subcommand};
use tracing::{error, info, warn};
use tributary::bus::kafka::ensure_pipeline_topics;
use tributary::bus::Publisher;
use tributary::config::Settings;
use tributary::schedule::tick::{ScheduleSettings, Scheduler};
use tributary::store::Store;

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
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = rt.block_on(async move {
        match cli.command {
            Command::Run => {
                tributary::logging::init("info,rdkafka=warn");
                run().await
            }
            Command::Standalone(args) => {
                tributary::logging::init("warn");
                standalone::run(args).await
            }
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

pub fn schedule_settings(settings: &Settings) -> ScheduleSettings {
    ScheduleSettings {
        default_schedule: settings.default_schedule.clone(),
        default_full_schedule: settings.default_full_schedule.clone(),
        max_jitter: settings.max_jitter,
        ..ScheduleSettings::default()
    }
}

async fn run() -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    let admin_token = settings.admin_token.clone().ok_or_else(|| {
        anyhow!("TRIBUTARY_ADMIN_TOKEN is not set: the API needs an admin token for the host product (a long random string)")
    })?;
    for (name, expr) in [
        ("TRIBUTARY_DEFAULT_SCHEDULE", &settings.default_schedule),
        (
            "TRIBUTARY_DEFAULT_FULL_SCHEDULE",
            &settings.default_full_schedule,
        ),
    ] {
        expr.parse::<tributary::schedule::Cadence>()
            .map_err(|e| anyhow!("{name}: {e}"))?;
    }
    let store = Store::connect(&settings.database_url, settings.cipher()?)
        .await
        .context("TRIBUTARY_DATABASE_URL")?
        .with_lease(settings.lease);
    let topics = settings.topics();
    ensure_pipeline_topics(&settings.kafka_brokers, &topics, settings.jobs_partitions)
        .await
        .with_context(|| format!("TRIBUTARY_KAFKA_BROKERS {}", settings.kafka_brokers))?;
    let publisher = Publisher::new(&settings.kafka_brokers)?;
    // Readiness (`/readyz`): the store and the broker, checked every few seconds. Ticks and
    // keepalive passes that fail meanwhile are retried on their next turn.
    tributary::readiness::spawn_probes(store.clone(), Some(settings.kafka_brokers.clone()));
    let state = Arc::new(api::ApiState {
        store: store.clone(),
        publisher: publisher.clone(),
        topics: topics.clone(),
        specs_dir: settings.specs_dir.clone(),
        admin_token,
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
    let (keep_store, specs, private) = (
        store.clone(),
        settings.specs_dir.clone(),
        settings.allow_private_hosts,
    );
    tokio::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(900));
        loop {
            every.tick().await;
            match tributary::sync::keepalive::refresh_idle(&keep_store, &specs, private).await {
                Ok(n) if n > 0 => info!(refreshed = n, "idle connections kept alive"),
                Ok(_) => {}
                Err(e) => warn!("keeping idle connections alive failed (retried later): {e}"),
            }
        }
    });
    let scheduler = Scheduler::new(store, publisher, topics, schedule_settings(&settings));
    tick_until_signal(&scheduler, settings.tick_interval).await
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
