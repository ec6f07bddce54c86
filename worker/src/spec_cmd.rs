//! `tributary-worker spec check | run | schema`: validate a spec, try it against
//! any live or simulated API, print the format's JSON Schema.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use clap::{Args, Subcommand};
use futures::StreamExt;
use rayon::prelude::*;
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tributary::breaker::{Breaker, BreakerSettings};
use tributary::budget::{Budget, BudgetOwner};
use tributary::domain::Schema;
use tributary::engine::{
    Connection, ConnectionRuntime, EngineError, Page, ResourceRun, RunOptions,
};
use tributary::http::auth::{DiscardTokens, TokenSink};
use tributary::mapping::normalize::{normalize_for, primary_key, NormalizeError, Tenancy};
use tributary::secrets::Credentials;
use tributary::spec::compile::custom_object;
use tributary::spec::overrides::compile_with_file;
use tributary::spec::{load_spec, CompiledSpec};

use crate::progress::Progress;

/// Exit codes: 0 the whole resource was read and every record normalized;
/// 1 the run stopped; 2 bad input (spec, flags, settings); 3 the run finished but
/// some records could not be normalized (they are listed on stderr).
const EXIT_RUN_FAILED: u8 = 1;
const EXIT_BAD_INPUT: u8 = 2;
const EXIT_RECORDS_REJECTED: u8 = 3;

#[derive(Subcommand)]
pub enum SpecCommand {
    /// Validate spec files; every problem is reported as file:line: at `path`: what is wrong.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Also check this environment's overrides directory (TRIBUTARY_OVERRIDES_DIR):
        /// each `<provider>.yaml` in it must name one of the specs checked and apply to it.
        #[arg(long, value_name = "DIR")]
        overrides: Option<PathBuf>,
    },
    /// Read one resource and print one JSON object per normalized record per line
    /// (with `--overrides FILE`, mapped with those overrides on top of the spec).
    Run(Box<RunArgs>),
    /// Print the JSON Schema of the spec format.
    Schema,
}

#[derive(Args)]
pub struct RunArgs {
    /// The spec file.
    file: PathBuf,
    /// The resource to read (see the spec's `resources`).
    #[arg(long)]
    resource: String,
    /// An overrides file (`{"resources": {...}}`, YAML or JSON) applied on top of the spec;
    /// repeat it for more layers, later wins (e.g. the environment's, then a connection's).
    #[arg(long, value_name = "FILE")]
    overrides: Vec<PathBuf>,
    /// Connection settings, a JSON object (e.g. '{"subdomain": "acme"}'; `base_url` replaces the spec's).
    #[arg(long, default_value = "{}")]
    config: String,
    /// Credentials, a JSON object (access_token, refresh_token, expires_at, client_id, client_secret,
    /// api_key, username, password), or `@FILE` to read them from a file (keeps them out of `ps`).
    #[arg(long, default_value = "{}")]
    credentials: String,
    /// Write credentials the token endpoint renewed (a rotated refresh token) to this file
    /// (mode 0600) before they are used. Pass the same file to `--credentials @FILE` next time.
    #[arg(long, value_name = "FILE")]
    save_credentials: Option<PathBuf>,
    /// Only records changed since this time (RFC 3339), through the spec's incremental request.
    #[arg(long)]
    since: Option<String>,
    /// Run the incremental request without a since time: the first round of a resource
    /// that tracks changes with delta links (`incremental.delta_link`).
    #[arg(long)]
    incremental: bool,
    /// Start an incremental run from this delta link (a round's last link, as
    /// `--save-delta-link` wrote it).
    #[arg(long, value_name = "URL")]
    delta_link: Option<String>,
    /// Write the delta link the round ends with to this file (mode 0600), for the next
    /// `--delta-link`.
    #[arg(long, value_name = "FILE")]
    save_delta_link: Option<PathBuf>,
    /// Stop after this many pages (exit 1 if more remain).
    #[arg(long)]
    max_pages: Option<u32>,
    /// Records per page (overrides the spec).
    #[arg(long)]
    page_size: Option<u32>,
    /// Allow loopback and private addresses (sandboxes, local tests).
    #[arg(long, env = "TRIBUTARY_ALLOW_PRIVATE_HOSTS", value_parser = clap::builder::FalseyValueParser::new())]
    allow_private_hosts: bool,
    /// Ceiling in seconds on any single wait, and on the time one request may stay throttled.
    #[arg(long, default_value_t = 300.0)]
    max_wait: f64,
    /// Attempts for transient failures (5xx, timeouts, connection errors).
    #[arg(long, default_value_t = 5)]
    max_attempts: u32,
    /// Print only waits, retries, warnings and errors on stderr.
    #[arg(long)]
    quiet: bool,
    /// Serve this sandbox profile in-process and read from it: sets `base_url` (and
    /// `token_url` when the profile has a token endpoint) and allows private hosts.
    #[arg(long, value_name = "PROFILE")]
    sandbox: Option<PathBuf>,
    /// Connect the account first, as the connect page would (the spec's
    /// `connect.authorize`): prints the authorize URL, waits for the browser on
    /// `--redirect-uri`, exchanges the code. `--credentials` names the OAuth app
    /// (`client_id`, `client_secret`); `--save-credentials FILE` keeps the tokens.
    #[arg(long)]
    authorize: bool,
    /// The loopback callback `--authorize` listens on (register it with the OAuth app).
    #[arg(long, default_value = "http://127.0.0.1:8765/callback")]
    redirect_uri: String,
}

pub async fn run(cmd: SpecCommand) -> ExitCode {
    match cmd {
        SpecCommand::Check { files, overrides } => check(&files, overrides.as_deref()),
        SpecCommand::Schema => {
            print!("{}", tributary::spec::schema::spec_schema_json());
            ExitCode::SUCCESS
        }
        SpecCommand::Run(args) => match run_resource(*args).await {
            Ok(code) => code,
            Err((code, err)) => {
                eprintln!("error: {err:#}");
                ExitCode::from(code)
            }
        },
    }
}

fn check(files: &[PathBuf], overrides: Option<&Path>) -> ExitCode {
    let mut failed = 0;
    let mut names = Vec::new();
    for file in files {
        match load_spec(file) {
            Ok(spec) => {
                eprintln!(
                    "{}: ok ({} resources)",
                    file.display(),
                    spec.resources.len()
                );
                names.push(spec.name().to_string());
                if let Some(dir) = overrides {
                    failed += check_overlay(&spec, dir);
                }
            }
            Err(e) => {
                failed += 1;
                eprintln!("{e}");
            }
        }
    }
    if let Some(dir) = overrides {
        failed += unmatched_overlays(dir, &names);
    }
    if failed > 0 {
        eprintln!("{failed} of {} specs have problems", files.len());
        ExitCode::from(EXIT_BAD_INPUT)
    } else {
        ExitCode::SUCCESS
    }
}

/// The overlay of `spec` in `dir`, if any, applied and compiled; 1 when it has problems.
fn check_overlay(spec: &CompiledSpec, dir: &Path) -> usize {
    let file = dir.join(format!("{}.yaml", spec.name()));
    if !file.exists() {
        return 0;
    }
    match compile_with_file(spec, &file) {
        Ok(_) => {
            eprintln!("{}: ok (overrides of {})", file.display(), spec.name());
            0
        }
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}

/// Overlay files of `dir` naming none of the specs checked: each is a problem.
fn unmatched_overlays(dir: &Path, names: &[String]) -> usize {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            eprintln!(
                "{}: cannot read the overrides directory: {e}",
                dir.display()
            );
            return 1;
        }
    };
    let mut failed = 0;
    for path in entries.flatten().map(|e| e.path()) {
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        if path.extension().is_some_and(|e| e == "yaml") && !names.iter().any(|n| n == stem) {
            eprintln!(
                "{}: names no provider among the specs checked ({}); name it after one",
                path.display(),
                names.join(", ")
            );
            failed += 1;
        }
    }
    failed
}

/// The spec file with each `--overrides FILE` applied in order.
fn layered_spec(args: &RunArgs) -> anyhow::Result<Arc<CompiledSpec>> {
    let mut spec = load_spec(&args.file)?;
    for file in &args.overrides {
        spec = Arc::new(compile_with_file(&spec, file)?);
    }
    Ok(spec)
}

/// Renewed credentials saved to a file, replaced atomically, readable by the owner only.
struct CredentialsFile {
    path: PathBuf,
}

impl TokenSink for CredentialsFile {
    fn store(
        &self,
        credentials: &Credentials,
    ) -> futures::future::BoxFuture<'_, Result<(), String>> {
        let text = serde_json::to_string_pretty(&credentials.expose_for_templates())
            .expect("strings serialize");
        Box::pin(async move {
            use std::os::unix::fs::OpenOptionsExt;
            let tmp = self.path.with_extension("tmp");
            let write = || -> std::io::Result<()> {
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&tmp)?;
                f.write_all(text.as_bytes())?;
                f.sync_all()?;
                std::fs::rename(&tmp, &self.path)
            };
            write().map_err(|e| {
                format!(
                    "cannot save renewed credentials to {}: {e}",
                    self.path.display()
                )
            })
        })
    }
}

fn json_object(flag: &str, text: &str) -> anyhow::Result<Map<String, Value>> {
    let value: Value =
        serde_json::from_str(text).with_context(|| format!("--{flag} is not valid JSON"))?;
    match value {
        Value::Object(m) => Ok(m),
        other => Err(anyhow!("--{flag} must be a JSON object, got {other}")),
    }
}

async fn run_resource(args: RunArgs) -> Result<ExitCode, (u8, anyhow::Error)> {
    let bad = |e: anyhow::Error| (EXIT_BAD_INPUT, e);
    let spec = layered_spec(&args).map_err(bad)?;
    let mut config = json_object("config", &args.config).map_err(bad)?;
    // Kept alive until the run ends: dropping it stops the server.
    let sandbox = start_sandbox(&args, &mut config).await?;
    let mut credentials = read_credentials(&args.credentials).map_err(bad)?;
    let options = run_options(&args, sandbox.is_some()).map_err(bad)?;
    if args.authorize {
        let authorized = crate::authorize_cmd::authorize(
            &spec,
            &args.resource,
            &config,
            &credentials,
            &args.redirect_uri,
            options.allow_private_hosts,
        )
        .await
        .map_err(|e| (EXIT_RUN_FAILED, e))?;
        credentials = authorized.credentials;
        config = authorized.config;
        if let Some(path) = &args.save_credentials {
            CredentialsFile { path: path.clone() }
                .store(&credentials)
                .await
                .map_err(|e| (EXIT_RUN_FAILED, anyhow!(e)))?;
        }
    }
    let connection = Connection {
        config,
        credentials,
    };
    let progress = Arc::new(Progress {
        quiet: args.quiet,
        ..Progress::default()
    });
    let sink: Arc<dyn TokenSink> = match &args.save_credentials {
        Some(path) => Arc::new(CredentialsFile { path: path.clone() }),
        None => Arc::new(DiscardTokens),
    };
    let budget = Budget::local(
        &spec.spec.rate_limit,
        &BudgetOwner {
            provider: spec.name().to_string(),
            connection: "cli".into(),
            app: connection.credentials.app_identity(),
        },
    );
    let runtime = ConnectionRuntime::new(&spec, &connection, &options, sink, budget)
        .map_err(|e| bad(anyhow!("{}: {e}", spec.file.display())))?;
    let schema = discover(&spec, &args.resource, &connection, &runtime, &options).await?;
    let run = ResourceRun::new(
        spec.clone(),
        &args.resource,
        &connection,
        &runtime,
        options,
        progress.observer(),
    )
    .map_err(|e| bad(anyhow!(e)))?
    .with_schema(&schema);
    let tenancy = Tenancy::new(&schema, custom_object(&args.resource));
    let started = Instant::now();
    let counts = print_records(&spec, &args.resource, &tenancy, run).await?;
    if counts.closed {
        return Ok(ExitCode::SUCCESS);
    }
    counts.report(started.elapsed().as_secs_f64(), &progress);
    if let Some(link) = &counts.delta_link {
        save_delta_link(args.save_delta_link.as_deref(), link).map_err(|e| (EXIT_RUN_FAILED, e))?;
    }
    Ok(counts.exit_code())
}

/// The round's delta link: on stderr, and in the file `--save-delta-link` names.
fn save_delta_link(path: Option<&Path>, link: &str) -> anyhow::Result<()> {
    eprintln!("delta link: {link}");
    let Some(path) = path else {
        return Ok(());
    };
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(link.as_bytes()))
        .with_context(|| format!("--save-delta-link {}: cannot write", path.display()))
}

/// The resource's fields for this connection, when its spec discovers them (before the
/// first page, as a worker does before a connection's first sync).
async fn discover(
    spec: &Arc<CompiledSpec>,
    resource: &str,
    connection: &Connection,
    runtime: &ConnectionRuntime,
    options: &RunOptions,
) -> Result<Schema, (u8, anyhow::Error)> {
    let Some(target) = tributary::sync::discover::target_of(spec, resource) else {
        return Ok(Schema::default());
    };
    let run = ResourceRun::discovery(
        spec.clone(),
        target,
        connection,
        runtime,
        options.clone(),
        tributary::engine::ignore_events(),
    )
    .map_err(|e| (EXIT_BAD_INPUT, anyhow!(e)))?;
    let schema = run.discover_fields().await.map_err(|e| {
        (
            EXIT_RUN_FAILED,
            anyhow!(e).context("discovering the fields"),
        )
    })?;
    eprintln!(
        "discovered {} fields of `{resource}` ({} custom: {})",
        schema.fields.len(),
        schema.custom().len(),
        schema.custom().join(", ")
    );
    Ok(schema)
}

/// Serve `--sandbox PROFILE` in-process and point the connection at it.
async fn start_sandbox(
    args: &RunArgs,
    config: &mut Map<String, Value>,
) -> Result<Option<tributary_sandbox::SandboxHandle>, (u8, anyhow::Error)> {
    let Some(path) = &args.sandbox else {
        return Ok(None);
    };
    let mut profile =
        tributary_sandbox::Profile::load(path).map_err(|e| (EXIT_BAD_INPUT, anyhow!(e)))?;
    let token_path = profile.oauth.as_ref().map(|o| o.path.clone());
    // The sandbox's OAuth app registers this run's callback.
    let authorize_path = match profile.oauth.as_mut().and_then(|o| o.authorize.as_mut()) {
        Some(a) if args.authorize => {
            a.redirect_uris.push(args.redirect_uri.clone());
            Some(a.path.clone())
        }
        _ => None,
    };
    let handle = tributary_sandbox::start(profile, ([127, 0, 0, 1], 0).into())
        .await
        .map_err(|e| (EXIT_RUN_FAILED, anyhow!(e)))?;
    eprintln!(
        "sandbox {} serving at {}",
        path.display(),
        handle.base_url()
    );
    config.insert("base_url".into(), Value::String(handle.base_url()));
    if let Some(p) = token_path {
        config
            .entry("token_url")
            .or_insert_with(|| Value::String(format!("{}{p}", handle.base_url())));
    }
    if let Some(p) = authorize_path {
        config
            .entry("authorize_url")
            .or_insert_with(|| Value::String(format!("{}{p}", handle.base_url())));
    }
    Ok(Some(handle))
}

/// `--credentials JSON` or `--credentials @FILE`, parsed straight into redacting types:
/// a bad value is reported without echoing it.
fn read_credentials(flag: &str) -> anyhow::Result<Credentials> {
    let text = match flag.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| anyhow!("--credentials @{path}: cannot read the file: {e}"))?,
        None => flag.to_string(),
    };
    serde_json::from_str(&text).map_err(|e| anyhow!("--credentials must be a JSON object: {e}"))
}

fn run_options(args: &RunArgs, sandboxed: bool) -> anyhow::Result<RunOptions> {
    let since = match &args.since {
        Some(s) => Some(tributary::domain::time::parse_stamp(s).ok_or_else(|| {
            anyhow!("--since `{s}` is not an RFC 3339 time (e.g. 2026-11-28T06:40:12Z)")
        })?),
        None => None,
    };
    if !(args.max_wait.is_finite() && args.max_wait >= 0.0) {
        return Err(anyhow!("--max-wait must be a number of seconds >= 0"));
    }
    if args.delta_link.is_some() && args.since.is_some() {
        return Err(anyhow!(
            "--delta-link and --since both say where to start: give one"
        ));
    }
    Ok(RunOptions {
        since,
        delta_link: args.delta_link.clone(),
        incremental: args.incremental,
        max_pages: args.max_pages,
        page_size: args.page_size,
        // A sandbox serves on loopback.
        allow_private_hosts: args.allow_private_hosts || sandboxed,
        max_wait: Duration::from_secs_f64(args.max_wait),
        max_attempts: args.max_attempts.max(1),
        // One run on a terminal: throttles are waited out up to the ceiling, never
        // parked, and there is no circuit to open.
        breaker: Breaker::new(BreakerSettings {
            park_after: Duration::from_secs_f64(args.max_wait),
            throttles_to_open: u32::MAX,
            ..BreakerSettings::default()
        }),
        ..RunOptions::default()
    })
}

/// What `spec run` printed.
#[derive(Default)]
struct Printed {
    records: u64,
    rejected: u64,
    /// Records the provider marked removed (printed as `"event": "deleted"` lines).
    deleted: u64,
    /// The delta link the round ended with.
    delta_link: Option<String>,
    /// stdout was closed (e.g. piped into `head`): the run stopped quietly.
    closed: bool,
}

impl Printed {
    fn report(&self, secs: f64, progress: &Progress) {
        eprintln!(
            "done: {} records{} in {} pages in {secs:.2}s ({:.0} records/s){}",
            self.records,
            if self.deleted > 0 {
                format!(" ({} deleted)", self.deleted)
            } else {
                String::new()
            },
            progress.pages.load(std::sync::atomic::Ordering::Relaxed),
            self.records as f64 / secs.max(1e-9),
            if self.rejected > 0 {
                format!("; {} records could not be normalized", self.rejected)
            } else {
                String::new()
            }
        );
    }

    fn exit_code(&self) -> ExitCode {
        if self.rejected > 0 {
            ExitCode::from(EXIT_RECORDS_REJECTED)
        } else {
            ExitCode::SUCCESS
        }
    }
}

/// Normalize every record of every page and print it as one JSON line on stdout;
/// records that fail are reported on stderr with where they came from. The next pages
/// are fetched while this one is mapped (at most two ahead), and a page's records are
/// mapped on every core; lines are printed in record order.
async fn print_records(
    spec: &CompiledSpec,
    resource_name: &str,
    tenancy: &Tenancy,
    run: ResourceRun,
) -> Result<Printed, (u8, anyhow::Error)> {
    let resource = spec
        .resource(resource_name)
        .expect("checked by ResourceRun::new");
    let records = &resource.plan(run.reads_incremental()).records;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut printed = Printed::default();
    let mut pages = read_ahead(run, 2);
    while let Some(page) = pages.recv().await {
        let page = page.map_err(|e| {
            let _ = out.flush();
            let after = format!("after {} records", printed.records);
            (EXIT_RUN_FAILED, anyhow!(e).context(after))
        })?;
        if page.delta_link.is_some() {
            printed.delta_link = page.delta_link.clone();
        }
        let lines = tokio::task::block_in_place(|| {
            page.records
                .into_par_iter()
                .with_min_len(16)
                .map(|raw| print_line(resource, records, tenancy, raw))
                .collect::<Vec<Result<Line, NormalizeError>>>()
        });
        for (i, line) in lines.into_iter().enumerate() {
            match line {
                Ok(line) => {
                    if writeln!(out, "{}", line.text).is_err() {
                        printed.closed = true;
                        return Ok(printed);
                    }
                    printed.records += 1;
                    printed.deleted += u64::from(line.deleted);
                }
                Err(e) => {
                    printed.rejected += 1;
                    eprintln!(
                        "{} resource `{resource_name}`, page {}, record {}: {e}",
                        spec.file.display(),
                        page.number,
                        i + 1
                    );
                }
            }
        }
        let _ = out.flush();
    }
    let _ = out.flush();
    Ok(printed)
}

/// One printed line: a normalized record, or `{"event": "deleted", ...}` for a record
/// the provider marks removed (`records.deleted`).
struct Line {
    text: String,
    deleted: bool,
}

fn print_line(
    resource: &tributary::spec::compile::CompiledResource,
    records: &tributary::spec::compile::CompiledRecords,
    tenancy: &Tenancy,
    raw: Value,
) -> Result<Line, NormalizeError> {
    let id = primary_key(&raw, &records.primary_key)?;
    if records.marks_removed(&raw) {
        let event = serde_json::json!({"event": "deleted", "id": id, "model": resource.model.name});
        return Ok(Line {
            text: event.to_string(),
            deleted: true,
        });
    }
    let record = normalize_for(resource, tenancy, id, raw).map_err(|rejected| rejected.error)?;
    Ok(Line {
        text: serde_json::to_string(&record).expect("records serialize"),
        deleted: false,
    })
}

/// The run's pages, fetched by a task of their own up to `ahead` pages before they are
/// taken; an error is the last item.
fn read_ahead(run: ResourceRun, ahead: usize) -> mpsc::Receiver<Result<Page, EngineError>> {
    let (tx, rx) = mpsc::channel(ahead);
    tokio::spawn(async move {
        let pages = run.pages();
        futures::pin_mut!(pages);
        while let Some(page) = pages.next().await {
            let failed = page.is_err();
            if tx.send(page).await.is_err() || failed {
                return;
            }
        }
    });
    rx
}
