//! `tributary-worker run`: a stateless worker in the jobs consumer group (see
//! `tributary::sync::worker`). SIGTERM drains: slices checkpoint, offsets commit, the
//! consumer leaves the group, the process exits 0.

use std::process::ExitCode;
use std::sync::Arc;

use tracing::{error, info};
use tributary::bootstrap::{Services, TopicSetup};
use tributary::config::Settings;
use tributary::sync::worker::{consume, default_instance_id, StopSignal, WorkerOptions};

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
    let services = Services::start(settings.clone(), TopicSetup::CreateMissing).await?;
    let topics = services.topics.clone();
    let syncer = Arc::new(services.syncer());
    tributary::readiness::spawn_probes(
        syncer.store().clone(),
        settings
            .uses_kafka()
            .then(|| settings.kafka_brokers.clone()),
    );
    if let Some(addr) = &settings.health_addr {
        crate::health::serve(addr).await?;
    }
    // Static group membership only when asked for: tansu 0.6.0 rebalances a static member
    // out of its group every session timeout (measured), so the default stays dynamic.
    let instance_id = match settings.worker.instance_id.as_deref() {
        Some("auto") => Some(default_instance_id()),
        Some(id) => Some(id.to_string()),
        None => None,
    };
    let stop = StopSignal::default();
    watch_signals(stop.clone())?;
    match settings.jobs_bus {
        tributary::bus::BusKind::Kafka => eprintln!(
            "worker consuming {} as {} (static member id: {instance_id:?})",
            topics.jobs(),
            topics.consumer_group()
        ),
        tributary::bus::BusKind::Rabbitmq => eprintln!(
            "worker consuming the RabbitMQ queues {} and {}",
            topics.urgent_jobs(),
            topics.jobs()
        ),
    }
    let options = WorkerOptions {
        instance_id,
        ..settings.worker_options()
    };
    // The webhook intake beside the jobs consumer: its own consumer group, same stop.
    let intake = tokio::spawn(tributary::webhooks::intake::intake(
        syncer.clone(),
        options.clone(),
        settings.webhooks.window,
        stop.clone(),
    ));
    consume(syncer, options, stop.clone()).await?;
    stop.stop();
    intake.await??;
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
