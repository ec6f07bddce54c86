//! Scheduling: cadences (cron, intervals, jitter) and the tick that enqueues due jobs.

pub mod cadence;
pub mod tick;

pub use cadence::{next_due, parse_timezone, Cadence};
