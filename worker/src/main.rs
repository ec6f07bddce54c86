//! `tributary-worker`: the worker binary. Today it carries the spec tools
//! (`spec check`, `spec run`, `spec schema`) and the sandbox provider.

mod progress;
mod sandbox_cmd;
mod spec_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "tributary-worker",
    version,
    about = "Tributary worker: sync provider data into Kafka topics"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Work with provider specs.
    #[command(subcommand)]
    Spec(spec_cmd::SpecCommand),
    /// Serve the sandbox provider (fake provider APIs with generated data).
    Sandbox(sandbox_cmd::SandboxArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async move {
        match cli.command {
            Command::Spec(cmd) => spec_cmd::run(cmd).await,
            Command::Sandbox(args) => sandbox_cmd::run(args).await,
        }
    })
}
