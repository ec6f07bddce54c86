//! The `tributary-worker spec run` command line of the worker's process tests: one
//! resource of one spec, from the repository root, with the flags a test adds.

use std::process::Command;

use serde_json::Value;

use crate::repo_root;

/// The arguments of a `spec run`, built up flag by flag.
pub struct SpecRun {
    args: Vec<String>,
}

impl SpecRun {
    /// `spec run <spec> --resource <resource>` (the spec's path from the repository root).
    pub fn new(spec: &str, resource: &str) -> SpecRun {
        SpecRun {
            args: ["spec", "run", spec, "--resource", resource]
                .map(String::from)
                .to_vec(),
        }
    }

    /// The HubSpot spec's `contacts`.
    pub fn contacts() -> SpecRun {
        SpecRun::new("provider-specs/hubspot.yaml", "contacts")
    }

    /// `--config` with this JSON object.
    pub fn config(self, config: &Value) -> SpecRun {
        self.args(&["--config", &config.to_string()])
    }

    /// `--credentials` with this JSON object.
    pub fn credentials(self, credentials: &Value) -> SpecRun {
        self.args(&["--credentials", &credentials.to_string()])
    }

    /// Further arguments, as they are.
    pub fn args(mut self, more: &[&str]) -> SpecRun {
        self.args.extend(more.iter().map(|a| a.to_string()));
        self
    }

    /// The worker binary `worker_bin` with these arguments, run from the repository root.
    pub fn command(&self, worker_bin: &str) -> Command {
        let mut cmd = Command::new(worker_bin);
        cmd.current_dir(repo_root()).args(&self.args);
        cmd
    }
}
