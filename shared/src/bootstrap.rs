//! One startup for every process that syncs: settings -> the environment's overrides
//! checked -> state store (migrations applied) -> the pipeline's topics -> publisher, then
//! the syncer and the scheduler built from the same settings. Used by `tributary-worker run`, `tributary-scheduler run` and
//! the standalone mode.

use crate::bus::amqp::{AmqpEvents, AmqpSettings};
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
    #[error("TRIBUTARY_EVENTS_BUS=rabbitmq needs TRIBUTARY_AMQP_URL (e.g. amqp://guest:guest@127.0.0.1:5672/%2f)")]
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
        let broker_error = |source| BootstrapError::Broker {
            brokers: settings.kafka_brokers.clone(),
            source,
        };
        let events_on_amqp = settings.events_bus == BusKind::Rabbitmq;
        if setup == TopicSetup::CreateMissing {
            let mut wanted = pipeline_topics(&topics, settings.jobs_partitions);
            if events_on_amqp {
                wanted.retain(|(t, _)| !topics.is_events_topic(t));
            }
            ensure_topics(&settings.kafka_brokers, &wanted)
                .await
                .map_err(broker_error)?;
        }
        let mut publisher = Publisher::new(&settings.kafka_brokers).map_err(broker_error)?;
        if events_on_amqp {
            let amqp = AmqpSettings {
                url: settings.amqp_url.clone().ok_or(BootstrapError::NoAmqpUrl)?,
                mandatory: settings.amqp_mandatory,
            };
            let events = AmqpEvents::connect(amqp, &topics)
                .await
                .map_err(BootstrapError::Amqp)?;
            publisher = publisher.with_amqp_events(events, &topics);
        }
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
