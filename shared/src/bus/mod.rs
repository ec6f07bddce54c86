//! Kafka: job messages, the event envelope, publishing and consuming.

pub mod envelope;
pub mod job;
pub mod kafka;
pub mod lag;

pub use envelope::{ChangeEvent, DeadLetter, Op, StatusEvent};
pub use job::{Job, JobReason, Pushed};
pub use kafka::{BusError, OutMessage, Publisher, Topics};
