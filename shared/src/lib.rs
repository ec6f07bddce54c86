//! Tributary's core: provider specs, the generic sync engine and mappings into
//! unified models. Both binaries build on this crate (the sandbox provider is
//! its own crate, `tributary-sandbox`).

pub mod bootstrap;
pub mod breaker;
pub mod budget;
pub mod bus;
pub mod changes;
pub mod config;
pub mod connect;
pub mod domain;
pub mod engine;
pub mod http;
pub mod mapping;
pub mod readiness;
pub mod schedule;
pub mod secrets;
pub mod spec;
pub mod store;
pub mod sync;
pub mod telemetry;
pub mod webhooks;
