//! `tributary-worker run`: a stateless worker in the jobs consumer group (see
//! `tributary::sync::worker`). SIGTERM drains: slices checkpoint, offsets commit, the
//! consumer leaves the group, the process exits 0.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use tracing::{error, info};
use tributary::budget::BudgetSettings;
use tributary::bus::kafka::ensure_pipeline_topics;
use tributary::bus::Publisher;
use tributary::config::Settings;
use tributary::engine::RunOptions;
use tributary::store::Store;
use tributary::sync::worker::{consume, default_instance_id, StopSignal, WorkerOptions};
use tributary::sync::{SyncSettings, Syncer};

pub async fn run() -> ExitCode {
    match serve().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn serve() -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    let cipher = settings.cipher()?;
    let store = Store::connect(&settings.database_url, cipher)
        .await
        .with_context(|| {
            format!(
                "TRIBUTARY_DATABASE_URL {}",
                redact_url(&settings.database_url)
            )
        })?
        .with_lease(settings.lease);
    let topics = settings.topics();
    ensure_pipeline_topics(&settings.kafka_brokers, &topics, settings.jobs_partitions)
        .await
        .with_context(|| format!("TRIBUTARY_KAFKA_BROKERS {}", settings.kafka_brokers))?;
    let publisher = Publisher::new(&settings.kafka_brokers)?;
    let syncer = Arc::new(Syncer::new(
        store,
        publisher,
        SyncSettings {
            specs_dir: settings.specs_dir.clone(),
            topics: topics.clone(),
            slice_max_pages: settings.slice_max_pages,
            slice_max_duration: settings.slice_max_duration,
            emit_remote_data: settings.emit_remote_data,
            tombstones: settings.tombstones,
            engine: RunOptions {
                allow_private_hosts: settings.allow_private_hosts,
                max_wait: settings.max_wait,
                park_after: settings.park_after,
                breaker_after: settings.breaker_after,
                ..RunOptions::default()
            },
            budgets: BudgetSettings {
                headroom: settings.budget_headroom,
                ..BudgetSettings::default()
            },
            ledger: settings.budget_ledger,
            breaker_open: settings.breaker_open,
            breaker_max_open: settings.breaker_max_open,
        },
    ));
    tributary::readiness::spawn_probes(
        syncer.store().clone(),
        Some(settings.kafka_brokers.clone()),
    );
    if let Some(addr) = &settings.health_addr {
        crate::health::serve(addr).await?;
    }
    // Static group membership only when asked for: tansu 0.6.0 rebalances a static member
    // out of its group every session timeout (measured), so the default stays dynamic.
    let instance_id = match settings.worker_instance_id.as_deref() {
        Some("auto") => Some(default_instance_id()),
        Some(id) => Some(id.to_string()),
        None => None,
    };
    let stop = StopSignal::default();
    watch_signals(stop.clone())?;
    eprintln!(
        "worker consuming {} as {} (static member id: {instance_id:?})",
        topics.jobs(),
        topics.consumer_group()
    );
    consume(
        syncer,
        WorkerOptions {
            brokers: settings.kafka_brokers.clone(),
            topics: topics.clone(),
            session_timeout: settings.session_timeout,
            concurrency: settings.worker_concurrency,
            tenant_concurrency: settings.tenant_concurrency,
            instance_id,
        },
        stop,
    )
    .await?;
    eprintln!("worker stopped");
    Ok(())
}

fn watch_signals(stop: StopSignal) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        info!("signal received: finishing current slices");
        stop.stop();
    });
    Ok(())
}

/// A database URL without its password, for messages.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}
