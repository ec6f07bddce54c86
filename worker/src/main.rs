//! `tributary-worker`: the worker binary: `run` (the jobs consumer), the spec
//! tools (`spec check`, `spec run`, `spec schema`), the sandbox provider, `keygen`,
//! `rotate-key` and `settings` (the settings table).

mod authorize_cmd;
mod health;
mod progress;
mod run_cmd;
mod sandbox_cmd;
mod spec_cmd;

use std::process::ExitCode;

/// mimalloc: a slice allocates and frees many small values per record (JSON trees,
/// strings, messages) from several threads; glibc's allocator spent about a quarter of
/// the pipeline bench's CPU on it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Consume sync jobs from Kafka and publish change events (settings from TRIBUTARY_* variables).
    Run,
    /// Print a new random encryption key (base64, 32 bytes) for TRIBUTARY_ENCRYPTION_KEY.
    Keygen,
    /// Print the table of TRIBUTARY_* settings (markdown: variable, default, meaning).
    Settings {
        /// Instead, rewrite the table between the settings markers of this README.
        #[arg(long)]
        readme: Option<std::path::PathBuf>,
    },
    /// Re-encrypt every stored credential under TRIBUTARY_ENCRYPTION_KEY (the old keys in
    /// TRIBUTARY_ENCRYPTION_OLD_KEYS); safe while workers and the scheduler run.
    RotateKey,
}

async fn rotate_key() -> anyhow::Result<u64> {
    let settings = tributary::config::Settings::from_env()?;
    let store =
        tributary::store::Store::connect(&settings.database_url, settings.cipher()?).await?;
    Ok(store.reseal_all().await?)
}

/// The settings table on stdout, or spliced into a README between its markers.
fn settings_table(readme: Option<&std::path::Path>) -> anyhow::Result<()> {
    use anyhow::Context;
    use tributary::config::{settings_table, splice_table, TABLE_BEGIN, TABLE_END};
    let Some(path) = readme else {
        print!("{}", settings_table());
        return Ok(());
    };
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    let spliced = splice_table(&text).with_context(|| {
        format!(
            "{} has no `{TABLE_BEGIN}` ... `{TABLE_END}` markers around its settings table",
            path.display()
        )
    })?;
    std::fs::write(path, spliced).with_context(|| format!("{}", path.display()))?;
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Logs (and, with OTEL_EXPORTER_OTLP_ENDPOINT, traces and metrics); the guard flushes
    // the exporters when main returns, after the runtime has stopped.
    let default_logs = match &cli.command {
        Command::Run => Some("info,rdkafka=warn"),
        Command::Spec(_) => Some("off"),
        _ => None,
    };
    let _telemetry = match default_logs
        .map(|filter| tributary::telemetry::init("tributary-worker", filter))
        .transpose()
    {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
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
            Command::Run => run_cmd::run().await,
            Command::RotateKey => match rotate_key().await {
                Ok(n) => {
                    eprintln!("re-encrypted {n} connection(s) under the current key; the old keys can be retired once every replica has the new one");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(1)
                }
            },
            Command::Settings { readme } => match settings_table(readme.as_deref()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(1)
                }
            },
            Command::Keygen => {
                println!("{}", tributary::secrets::crypto::Cipher::generate_key());
                ExitCode::SUCCESS
            }
        }
    })
}
