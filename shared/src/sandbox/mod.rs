//! The sandbox provider: an HTTP server with deterministic generated data that
//! imitates a provider as a profile (YAML) describes it. Tests and the
//! standalone demo run against it.

pub mod data;
pub mod profile;
pub mod server;

pub use profile::Profile;
pub use server::{start, Fault, SandboxError, SandboxHandle, Stats};
