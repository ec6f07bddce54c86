//! Kafka: job messages, the event envelope, publishing and consuming.

pub mod amqp;
pub mod envelope;
pub mod job;
pub mod kafka;
pub mod lag;

pub use envelope::{ChangeEvent, DeadLetter, Op, StatusEvent};
pub use job::{Job, JobReason, Pushed};
pub use kafka::{BusError, OutMessage, Publisher, Topics};

/// Which broker carries a role's messages (`TRIBUTARY_EVENTS_BUS`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BusKind {
    #[default]
    Kafka,
    Rabbitmq,
}

crate::domain::named_enum!(BusKind, "bus", {
    Kafka => "kafka",
    Rabbitmq => "rabbitmq",
});
