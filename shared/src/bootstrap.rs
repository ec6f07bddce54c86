//! One startup for every process that syncs: settings -> the environment's overrides
//! checked -> state store (migrations applied) -> the pipeline's topics -> publisher, then
//! the syncer and the scheduler built from the same settings. Used by `tributary-worker run`, `tributary-scheduler run` and
//! the standalone mode.

use crate::bus::amqp::{AmqpEvents, AmqpJobs, AmqpSettings};
use crate::bus::kafka::{ensure_topics, pipeline_topics};
use crate::bus::{BusError, BusKind, Publisher, Topics};
use crate::config::{ConfigError, Settings};
use crate::schedule::tick::Scheduler;
use crate::store::{Store, StoreError};
use crate::sync::Syncer;

/// How the pipeline's topics come to exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicSetup {
    /// Create the missing ones (jobs topics with `jobs_partitions` partitions).
    CreateMissing,
    /// The caller created them (e.g. on an embedded mock cluster).
    Existing,
}

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("TRIBUTARY_OVERRIDES_DIR {dir}: {source}")]
    Overrides {
        dir: String,
        #[source]
        source: crate::spec::OverlayError,
    },
    #[error("TRIBUTARY_DATABASE_URL {url}")]
    Store {
        url: String,
        #[source]
        source: StoreError,
    },
    #[error("TRIBUTARY_KAFKA_BROKERS {brokers}")]
    Broker {
        brokers: String,
        #[source]
        source: BusError,
    },
    #[error("TRIBUTARY_EVENTS_BUS=rabbitmq or TRIBUTARY_JOBS_BUS=rabbitmq needs TRIBUTARY_AMQP_URL (e.g. amqp://guest:guest@127.0.0.1:5672/%2f)")]
    NoAmqpUrl,
    #[error("TRIBUTARY_AMQP_URL")]
    Amqp(#[source] BusError),
}

/// What a process needs to sync: the store, the topic names and a publisher.
#[derive(Clone)]
pub struct Services {
    pub settings: Settings,
    pub store: Store,
    pub topics: Topics,
    pub publisher: Publisher,
}

impl Services {
    /// Connect everything the settings name, in order; each failure names its variable.
    pub async fn start(settings: Settings, setup: TopicSetup) -> Result<Services, BootstrapError> {
        check_overlays(&settings)?;
        let store = Store::connect(&settings.database_url, settings.cipher()?)
            .await
            .map_err(|source| BootstrapError::Store {
                url: redact_url(&settings.database_url),
                source,
            })?
            .with_lease(settings.lease);
        let topics = settings.topics();
        let publisher = connect_buses(&settings, &topics, setup).await?;
        Ok(Services {
            settings,
            store,
            topics,
            publisher,
        })
    }

    /// The slice runner, on the settings' sync settings.
    pub fn syncer(&self) -> Syncer {
        Syncer::new(
            self.store.clone(),
            self.publisher.clone(),
            self.settings.sync_settings(),
        )
    }

    /// The scheduler, on the settings' schedule settings.
    pub fn scheduler(&self) -> Scheduler {
        Scheduler::new(
            self.store.clone(),
            self.publisher.clone(),
            self.topics.clone(),
            self.settings.schedule.clone(),
        )
    }
}

/// The publisher, on the bus of each role: Kafka's topics made first where Kafka is used
/// (only those of its roles), RabbitMQ connected and its exchange or queues declared.
async fn connect_buses(
    settings: &Settings,
    topics: &Topics,
    setup: TopicSetup,
) -> Result<Publisher, BootstrapError> {
    let broker_error = |source| BootstrapError::Broker {
        brokers: settings.kafka_brokers.clone(),
        source,
    };
    let events_on_amqp = settings.events_bus == BusKind::Rabbitmq;
    let jobs_on_amqp = settings.jobs_bus == BusKind::Rabbitmq;
    if setup == TopicSetup::CreateMissing && settings.uses_kafka() {
        let mut wanted = pipeline_topics(topics, settings.jobs_partitions);
        wanted.retain(|(t, _)| {
            let on_amqp = match topics.is_events_topic(t) {
                true => events_on_amqp,
                false => jobs_on_amqp,
            };
            !on_amqp
        });
        ensure_topics(&settings.kafka_brokers, &wanted)
            .await
            .map_err(broker_error)?;
    }
    let mut publisher = match settings.uses_kafka() {
        true => Publisher::new(&settings.kafka_brokers).map_err(broker_error)?,
        false => Publisher::without_kafka(),
    };
    let url = || settings.amqp_url.clone().ok_or(BootstrapError::NoAmqpUrl);
    if events_on_amqp {
        let amqp = AmqpSettings {
            url: url()?,
            mandatory: settings.amqp_mandatory,
        };
        let events = AmqpEvents::connect(amqp, topics)
            .await
            .map_err(BootstrapError::Amqp)?;
        publisher = publisher.with_amqp_events(events, topics);
    }
    if jobs_on_amqp {
        let jobs = AmqpJobs::connect(&url()?, topics, settings.amqp_delivery_limit.max(1))
            .await
            .map_err(BootstrapError::Amqp)?;
        publisher = publisher.with_amqp_jobs(jobs);
    }
    Ok(publisher)
}

/// The environment's overlays, checked before anything starts: a process refuses to start
/// on a file that does not apply (naming the file, the path in it and the problem).
pub fn check_overlays(settings: &Settings) -> Result<(), BootstrapError> {
    let Some(dir) = &settings.sync.overrides_dir else {
        return Ok(());
    };
    crate::spec::overrides::check_overlays(&settings.sync.specs_dir, dir)
        .map(|providers| {
            tracing::info!(dir = %dir.display(), providers = ?providers, "environment overrides");
        })
        .map_err(|source| BootstrapError::Overrides {
            dir: dir.display().to_string(),
            source,
        })
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
