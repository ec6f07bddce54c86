//! Tributary's core: provider specs, the generic sync engine, mappings into
//! unified models, and the sandbox provider. Both binaries build on this crate.

pub mod budget;
pub mod bus;
pub mod changes;
pub mod config;
pub mod engine;
pub mod http;
pub mod logging;
pub mod mapping;
pub mod readiness;
pub mod sandbox;
pub mod schedule;
pub mod secrets;
pub mod spec;
pub mod store;
pub mod sync;
