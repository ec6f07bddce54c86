//! `tributary-worker sandbox`: serve a sandbox profile until interrupted.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use tributary_sandbox::{self as sandbox, Profile};

#[derive(Args)]
pub struct SandboxArgs {
    /// The sandbox profile (YAML), e.g. provider-specs/sandbox/<provider>.yaml.
    #[arg(long)]
    profile: PathBuf,
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Override the profile's data seed.
    #[arg(long)]
    seed: Option<u64>,
}

pub async fn run(args: SandboxArgs) -> ExitCode {
    let mut profile = match Profile::load(&args.profile) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(seed) = args.seed {
        profile.seed = seed;
    }
    let name = profile.name.clone();
    let handle = match sandbox::start(profile, args.listen).await {
        Ok(h) => h,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    // The first stdout line is the address: scripts and tests read it.
    println!("{}", handle.base_url());
    eprintln!(
        "sandbox `{name}` listening on {} (Ctrl-C to stop)",
        handle.base_url()
    );
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot watch SIGTERM: {e}");
            return ExitCode::from(1);
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    ExitCode::SUCCESS
}
