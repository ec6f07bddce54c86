//! The generic run of one (connection, resource): requests -> pages -> records.
//!
//! Nothing here knows a provider. The spec says how to build each request, how
//! to read the next-page pointer and when to stop; this module does that,
//! within the budget, through throttles and transient failures.

mod call;
mod discover;
pub mod error;
pub mod event;
mod paginate;
mod request;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt, TryStreamExt};
use rand::SeedableRng;
use serde_json::{Map, Value};
use tracing::Instrument;

pub use call::SubscribeVars;
pub use discover::CustomObject;
pub use error::{EngineError, ErrorKind};
pub use event::{ignore_events, EngineEvent, Observer};

use crate::breaker::Breaker;
/// Where a run is in the pages (domain vocabulary; re-exported where the engine uses it).
pub use crate::domain::PageState;

use crate::budget::{AcquireError, Budget};
use crate::domain::Schema;
use crate::http::auth::{without_url, Authenticator, SignTarget, TokenSink};
use crate::http::guard;
use crate::http::wait;
use crate::mapping::jsonata::truthy;
use crate::mapping::xml::{self, SoapFault, XmlError};
use crate::secrets::Credentials;
use crate::spec::compile::{
    custom_object, CompiledDiscovery, CompiledResponse, CompiledSpec, Plan, CREDENTIAL_FIELDS,
    ENGINE_SETTINGS,
};
use crate::telemetry::{metrics, OwnedLabels};
use request::PreparedRequest;

/// One page of raw provider records.
#[derive(Debug, Clone)]
pub struct Page {
    /// 1-based, counted from where this run started.
    pub number: u32,
    pub records: Vec<Value>,
    /// Where the next page starts; `None` when this was the last page.
    pub next: Option<PageState>,
    /// The delta link the page carries (`incremental.delta_link`, resolved): on a round's
    /// last page, where the next incremental run starts.
    pub delta_link: Option<String>,
    pub bytes: usize,
}

/// A connection as the engine sees it.
#[derive(Debug, Clone, Default)]
pub struct Connection {
    pub config: Map<String, Value>,
    pub credentials: Credentials,
}

/// How one run behaves.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Ask only for records changed since then (the spec's incremental request).
    pub since: Option<DateTime<Utc>>,
    /// A resource with `incremental.delta_link`: start this incremental run by fetching
    /// the link the last round ended with.
    pub delta_link: Option<String>,
    /// Run the incremental request without a since time or a delta link: the first
    /// round of a resource that tracks changes with delta links.
    pub incremental: bool,
    /// Stop (with an error) after this many pages when more remain.
    pub max_pages: Option<u32>,
    pub page_size: Option<u32>,
    /// Allow loopback and private addresses (sandboxes, tests).
    pub allow_private_hosts: bool,
    /// Ceiling on any single wait, and on the time one request spends throttled.
    pub max_wait: Duration,
    /// Attempts for transient failures (5xx, timeouts, connection errors).
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt, with full jitter.
    pub retry_base: Duration,
    pub request_timeout: Duration,
    /// Start from this point instead of the first page.
    pub resume: Option<PageState>,
    /// When a wait for budget or after throttles ends the run with `RateLimited` (a
    /// worker parks the job) instead of being waited out: the circuit breaker's rules.
    pub breaker: Breaker,
    /// Whose run this is: the `tenant` attribute of metrics and spans (empty in `spec run`).
    pub tenant: String,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            since: None,
            delta_link: None,
            incremental: false,
            max_pages: None,
            page_size: None,
            allow_private_hosts: false,
            max_wait: Duration::from_secs(300),
            max_attempts: 5,
            retry_base: Duration::from_millis(500),
            request_timeout: Duration::from_secs(60),
            resume: None,
            breaker: Breaker::default(),
            tenant: String::new(),
        }
    }
}

/// A prepared run of one resource for one connection.
pub struct ResourceRun {
    spec: Arc<CompiledSpec>,
    resource: String,
    reads: Reads,
    /// The custom object read (`custom:<name>` resources and their discovery).
    object: Option<String>,
    /// `fields.all`, `fields.custom`, `fields.standard` for the templates (none without a schema).
    fields: minijinja::Value,
    plan_incremental: bool,
    since_text: Option<String>,
    config: minijinja::Value,
    /// The connection's credentials for XML body templates, the one request template that
    /// may read them (a SOAP envelope's WS-Security header).
    body_credentials: minijinja::Value,
    base_url: url::Url,
    http: reqwest::Client,
    auth: Arc<Authenticator>,
    budget: Arc<Budget>,
    observer: Observer,
    options: RunOptions,
    page_size: u32,
    labels: OwnedLabels,
}

/// What a run reads: a resource's records, or the entries of a discovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reads {
    Resource,
    Discovery(DiscoveryTarget),
    /// These records of the resource, by id (`webhooks.fetch`).
    Fetch(Vec<String>),
    /// One request of `webhooks.subscribe`.
    Subscribe(
        crate::spec::compile_webhooks::SubscribeStep,
        Box<call::SubscribeVars>,
    ),
}

/// Which discovery a run reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiscoveryTarget {
    /// A `discovery` entry of the spec, by name.
    Named(String),
    /// The list of the tenant's custom objects.
    ObjectList,
    /// One custom object's fields.
    ObjectFields(String),
}

impl DiscoveryTarget {
    /// The compiled discovery, if the spec has it.
    pub fn find<'s>(&self, spec: &'s CompiledSpec) -> Option<&'s CompiledDiscovery> {
        match self {
            DiscoveryTarget::Named(name) => spec.discoveries.get(name),
            DiscoveryTarget::ObjectList => spec.custom_objects.as_ref().map(|c| &c.list),
            DiscoveryTarget::ObjectFields(_) => spec.custom_objects.as_ref().map(|c| &c.discovery),
        }
    }

    fn object(&self) -> Option<String> {
        match self {
            DiscoveryTarget::ObjectFields(o) => Some(o.clone()),
            _ => None,
        }
    }
}

/// Shared pieces several runs of one connection may reuse.
pub struct ConnectionRuntime {
    pub http: reqwest::Client,
    pub auth: Arc<Authenticator>,
    pub budget: Arc<Budget>,
    /// Provider (the spec's name) and tenant, for metrics.
    pub labels: OwnedLabels,
}

impl ConnectionRuntime {
    pub fn new(
        spec: &Arc<CompiledSpec>,
        connection: &Connection,
        options: &RunOptions,
        sink: Arc<dyn TokenSink>,
        budget: Budget,
    ) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .dns_resolver(guard::resolver(options.allow_private_hosts))
            .timeout(options.request_timeout)
            .connect_timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("tributary/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| e.to_string())?;
        let config = config_context(spec, connection).map_err(|e| e.to_string())?;
        let labels = OwnedLabels::new(spec.name(), &options.tenant);
        Ok(ConnectionRuntime {
            http,
            auth: Arc::new(
                Authenticator::new(spec.clone(), config, connection.credentials.clone(), sink)
                    .with_labels(labels.clone()),
            ),
            budget: Arc::new(budget.with_labels(labels.clone())),
            labels,
        })
    }
}

/// Settings with the spec's defaults applied; a missing required one is an error.
fn config_context(
    spec: &CompiledSpec,
    connection: &Connection,
) -> Result<minijinja::Value, ErrorKind> {
    let mut merged = connection.config.clone();
    for (name, field) in &spec.spec.config {
        if !merged.contains_key(name) {
            match &field.default {
                Some(d) => {
                    merged.insert(name.clone(), Value::String(d.clone()));
                }
                None if field.required
                    && !(name == "base_url" || connection.config.contains_key("base_url")) =>
                {
                    let about = field
                        .description
                        .as_deref()
                        .map(|d| format!(" ({d})"))
                        .unwrap_or_default();
                    return Err(ErrorKind::Config(format!(
                        "`{name}` is required{about}; add it to the connection's config"
                    )));
                }
                None => {}
            }
        }
    }
    Ok(minijinja::Value::from(minijinja::value::Serde(merged)))
}

fn body_credentials(connection: &Connection) -> minijinja::Value {
    minijinja::Value::from(minijinja::value::Serde(
        connection.credentials.expose_for_templates(),
    ))
}

impl ResourceRun {
    /// Prepare a run; settings, credentials and the base URL are checked here,
    /// before any request.
    pub fn new(
        spec: Arc<CompiledSpec>,
        resource: &str,
        connection: &Connection,
        runtime: &ConnectionRuntime,
        options: RunOptions,
        observer: Observer,
    ) -> Result<Self, EngineError> {
        let fail = |kind: ErrorKind| EngineError {
            spec: spec.file.clone(),
            resource: resource.to_string(),
            page: 0,
            kind: Box::new(kind),
        };
        let Some(res) = spec.resource(resource) else {
            let mut known: Vec<_> = spec.resources.keys().cloned().collect();
            if spec.custom_objects.is_some() {
                known.push(format!(
                    "{}<object name>",
                    crate::spec::compile::CUSTOM_PREFIX
                ));
            }
            return Err(fail(ErrorKind::Config(format!(
                "the spec has no resource `{resource}`; it has: {}",
                known.join(", ")
            ))));
        };
        for key in connection.config.keys() {
            if !spec.spec.config.contains_key(key) && !ENGINE_SETTINGS.contains(&key.as_str()) {
                observer(&EngineEvent::Warning(format!(
                    "config `{key}` is not a setting of {}; it is ignored",
                    spec.name()
                )));
            }
        }
        for field in connection.credentials.field_names() {
            if !spec.credentials_used.contains(field) {
                let note = if CREDENTIAL_FIELDS.contains(&field) {
                    format!(
                        "credential `{field}` is not used by {}'s {} auth; it is ignored",
                        spec.name(),
                        spec.spec.auth.kind()
                    )
                } else {
                    format!(
                        "`{field}` is not a credential field (known: {}); it is ignored",
                        CREDENTIAL_FIELDS.join(", ")
                    )
                };
                observer(&EngineEvent::Warning(note));
            }
        }
        let (config, base_url) = Self::checked_base(&spec, connection, &options, &fail)?;
        let plan_incremental = match &res.incremental {
            None => false,
            Some(inc) if inc.delta_link.is_some() => {
                options.since.is_some() || options.delta_link.is_some() || options.incremental
            }
            Some(_) => options.since.is_some(),
        };
        if let (Some(_), Some(inc)) = (&options.delta_link, &res.incremental) {
            if inc.delta_link.is_none() {
                return Err(fail(ErrorKind::Config(format!(
                    "resource `{resource}` has no `incremental.delta_link`: it cannot start \
                     from a delta link"
                ))));
            }
        }
        if options.since.is_some() && res.incremental.is_none() {
            observer(&EngineEvent::Warning(format!(
                "resource `{resource}` has no incremental request; reading everything"
            )));
        }
        let since_text = match (&res.incremental, options.since) {
            (Some(inc), Some(since)) if plan_incremental => {
                let from = since - chrono::Duration::seconds(inc.lookback_seconds as i64);
                Some(inc.since_format.render(from))
            }
            _ => None,
        };
        let page_size = options.page_size.unwrap_or(res.page_size);
        Ok(ResourceRun {
            spec: spec.clone(),
            resource: resource.to_string(),
            reads: Reads::Resource,
            object: custom_object(resource).map(str::to_string),
            fields: minijinja::Value::from(()),
            plan_incremental,
            since_text,
            config,
            body_credentials: body_credentials(connection),
            base_url,
            http: runtime.http.clone(),
            auth: runtime.auth.clone(),
            budget: runtime.budget.clone(),
            observer,
            options,
            page_size,
            labels: runtime.labels.clone(),
        })
    }

    /// The connection's settings for the templates and its checked base URL.
    fn checked_base(
        spec: &Arc<CompiledSpec>,
        connection: &Connection,
        options: &RunOptions,
        fail: &impl Fn(ErrorKind) -> EngineError,
    ) -> Result<(minijinja::Value, url::Url), EngineError> {
        let config = config_context(spec, connection).map_err(fail)?;
        let base_url = match connection.config.get("base_url").and_then(Value::as_str) {
            Some(b) => b.to_string(),
            None => spec
                .templates
                .render(
                    &spec.base_url,
                    &minijinja::context! { config => config.clone() },
                )
                .map_err(|e| fail(ErrorKind::Template(format!("base_url: {e}"))))?,
        };
        let base_url = url::Url::parse(&base_url).map_err(|e| {
            fail(ErrorKind::Url {
                url: base_url.clone(),
                message: e.to_string(),
            })
        })?;
        guard::check_url(&base_url, &spec.hosts, options.allow_private_hosts)
            .map_err(|e| fail(ErrorKind::Host(e)))?;
        Ok((config, base_url))
    }

    /// Prepare a run of a discovery (a tenant's fields, or its custom objects), through
    /// the same auth, budgets and pagination as a resource's.
    pub fn discovery(
        spec: Arc<CompiledSpec>,
        target: DiscoveryTarget,
        connection: &Connection,
        runtime: &ConnectionRuntime,
        options: RunOptions,
        observer: Observer,
    ) -> Result<Self, EngineError> {
        let at = target
            .find(&spec)
            .map(|d| d.at.clone())
            .unwrap_or_else(|| format!("{target:?}"));
        let fail = |kind: ErrorKind| EngineError {
            spec: spec.file.clone(),
            resource: at.clone(),
            page: 0,
            kind: Box::new(kind),
        };
        if target.find(&spec).is_none() {
            return Err(fail(ErrorKind::Config(format!(
                "the spec has no discovery {target:?}"
            ))));
        }
        let object = target.object();
        let reads = Reads::Discovery(target);
        Self::outside_resources(
            spec, at, object, reads, connection, runtime, options, observer,
        )
    }

    /// A run of something that is not one of the spec's resources (a discovery, a
    /// webhook subscription's request), the caller having checked the spec declares it:
    /// the connection's base URL, auth, budgets and observer.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn outside_resources(
        spec: Arc<CompiledSpec>,
        at: String,
        object: Option<String>,
        reads: Reads,
        connection: &Connection,
        runtime: &ConnectionRuntime,
        options: RunOptions,
        observer: Observer,
    ) -> Result<Self, EngineError> {
        let fail = |kind: ErrorKind| EngineError {
            spec: spec.file.clone(),
            resource: at.clone(),
            page: 0,
            kind: Box::new(kind),
        };
        let (config, base_url) = Self::checked_base(&spec, connection, &options, &fail)?;
        Ok(ResourceRun {
            page_size: options.page_size.unwrap_or(spec.spec.page_size),
            spec,
            resource: at,
            object,
            reads,
            fields: minijinja::Value::from(()),
            plan_incremental: false,
            since_text: None,
            config,
            body_credentials: body_credentials(connection),
            base_url,
            http: runtime.http.clone(),
            auth: runtime.auth.clone(),
            budget: runtime.budget.clone(),
            observer,
            options,
            labels: runtime.labels.clone(),
        })
    }

    /// Give the request templates a connection's discovered fields (`fields.all`,
    /// `fields.custom`, `fields.standard`).
    pub fn with_schema(mut self, schema: &Schema) -> Self {
        self.fields = minijinja::context! {
            all => schema.all(),
            custom => schema.custom(),
            standard => schema.standard(),
        };
        self
    }

    /// What this run reads: the resource's name, or the discovery's path in the spec.
    pub fn name(&self) -> &str {
        &self.resource
    }

    /// The schema subject of the resource this run reads, when its spec discovers its fields.
    fn reads_resource_with_discovery(&self) -> Option<String> {
        match self.reads {
            Reads::Resource | Reads::Fetch(_) => self.spec.schema_subject(&self.resource),
            Reads::Discovery(_) | Reads::Subscribe(..) => None,
        }
    }

    /// How this run's answers are decoded.
    pub(crate) fn response(&self) -> &CompiledResponse {
        match &self.reads {
            Reads::Resource | Reads::Fetch(_) => {
                &self
                    .spec
                    .resource(&self.resource)
                    .expect("checked in new")
                    .response
            }
            Reads::Discovery(_) | Reads::Subscribe(..) => &self.spec.response,
        }
    }

    /// Whether this run reads with the resource's incremental plan (a since time, a delta
    /// link, or the first round of a delta-tracked resource).
    pub fn reads_incremental(&self) -> bool {
        self.plan_incremental
    }

    /// Where a run that is not resuming starts: the stored delta link of an incremental
    /// run that has one, else the first page.
    fn first_state(&self) -> PageState {
        match (&self.options.delta_link, self.delta_link_expr()) {
            (Some(link), Some(_)) => PageState::Url {
                url: link.clone(),
                captured: Default::default(),
            },
            _ => PageState::First,
        }
    }

    /// `incremental.delta_link`, when this run reads with the incremental plan.
    pub(crate) fn delta_link_expr(&self) -> Option<&crate::mapping::jsonata::Jsonata> {
        if !self.plan_incremental || !matches!(self.reads, Reads::Resource) {
            return None;
        }
        let res = self.spec.resource(&self.resource)?;
        res.incremental.as_ref()?.delta_link.as_ref()
    }

    fn plan(&self) -> &Plan {
        match &self.reads {
            Reads::Resource => {
                let res = self.spec.resource(&self.resource).expect("checked in new");
                res.plan(self.plan_incremental)
            }
            Reads::Discovery(target) => {
                &target.find(&self.spec).expect("checked in discovery").plan
            }
            Reads::Fetch(_) => &self.fetch_plan().expect("checked in fetch").plan,
            Reads::Subscribe(step, _) => {
                call::subscribe_plan(&self.spec, *step).expect("checked in subscribe_call")
            }
        }
    }

    /// The resource's `webhooks.fetch`, if the spec has one.
    fn fetch_plan(&self) -> Option<&crate::spec::compile_webhooks::CompiledFetch> {
        self.spec.webhooks.as_ref()?.fetch.get(&self.resource)
    }

    /// Prepare a run reading these records of a resource by id (`webhooks.fetch`): one
    /// page, through the same auth, budgets and answers as the resource's listing.
    pub fn fetch(
        spec: Arc<CompiledSpec>,
        resource: &str,
        ids: Vec<String>,
        connection: &Connection,
        runtime: &ConnectionRuntime,
        options: RunOptions,
        observer: Observer,
    ) -> Result<Self, EngineError> {
        let mut run = Self::new(spec, resource, connection, runtime, options, observer)?;
        run.plan_incremental = false;
        run.since_text = None;
        run.reads = Reads::Fetch(ids);
        if run.fetch_plan().is_none() {
            return Err(run.error(
                0,
                ErrorKind::Config(format!(
                    "resource `{resource}` has no `webhooks.fetch`: it cannot be read by id"
                )),
            ));
        }
        Ok(run)
    }

    /// The ids a fetch run reads (none for other runs).
    pub(crate) fn fetch_ids(&self) -> &[String] {
        match &self.reads {
            Reads::Fetch(ids) => ids,
            _ => &[],
        }
    }

    fn error(&self, page: u32, kind: ErrorKind) -> EngineError {
        EngineError {
            spec: self.spec.file.clone(),
            resource: self.resource.clone(),
            page,
            kind: Box::new(kind),
        }
    }

    /// The pages, in order. The stream ends after the last page or the first error.
    pub fn pages(self) -> impl Stream<Item = Result<Page, EngineError>> + Send {
        async_stream::stream! {
            let mut state = self.options.resume.clone().unwrap_or_else(|| self.first_state());
            let mut seen: HashSet<String> = HashSet::new();
            let mut read: u64 = 0;
            let mut number: u32 = 0;
            loop {
                number += 1;
                if let Some(max) = self.options.max_pages.or(self.plan().pagination.max_pages) {
                    if number > max {
                        yield Err(self.error(number, ErrorKind::MaxPages { max }));
                        return;
                    }
                }
                let prepared = match request::prepare(&self, &state) {
                    Ok(p) => p,
                    Err(kind) => { yield Err(self.error(number, kind)); return; }
                };
                let (headers, mut body, bytes) = match self.send(number, &prepared).await {
                    Ok(r) => r,
                    Err(kind) => { yield Err(self.error(number, kind)); return; }
                };
                let step = match paginate::next(&self, &state, &headers, &mut body, read) {
                    Ok(s) => s,
                    Err(kind) => { yield Err(self.error(number, kind)); return; }
                };
                let (records, detail_bytes) = match self.details(number, step.records).await {
                    Ok(r) => r,
                    Err(kind) => { yield Err(self.error(number, kind)); return; }
                };
                let step = paginate::Step { records, ..step };
                let bytes = bytes + detail_bytes;
                read += step.records.len() as u64;
                (self.observer)(&EngineEvent::Page { page: number, records: step.records.len(), bytes });
                if let Some(next) = &step.next {
                    if let Some(key) = paginate::repeat_key(next) {
                        if !seen.insert(key.1.clone()) {
                            yield Err(self.error(number, ErrorKind::RepeatedCursor { what: key.0, value: key.1 }));
                            return;
                        }
                    }
                }
                let next = step.next.clone();
                yield Ok(Page { number, records: step.records, next: step.next, delta_link: step.delta_link, bytes });
                match next {
                    Some(n) => state = n,
                    None => return,
                }
            }
        }
    }

    /// A page's listed entries read in full, when the resource declares a `detail`
    /// request (in list order, at most `concurrency` at once); else the entries as they
    /// are. Also the bytes the detail answers took.
    async fn details(
        &self,
        page: u32,
        listed: Vec<Value>,
    ) -> Result<(Vec<Value>, usize), ErrorKind> {
        let detail = match &self.reads {
            Reads::Resource => self
                .spec
                .resource(&self.resource)
                .and_then(|r| r.detail.as_ref()),
            Reads::Discovery(_) | Reads::Fetch(_) | Reads::Subscribe(..) => None,
        };
        let Some(detail) = detail else {
            return Ok((listed, 0));
        };
        let read_one = |entry: &Value| {
            let req = request::prepare_detail(self, detail, entry);
            async move {
                let req = req?;
                let (_, mut body, bytes) = self.send(page, &req).await?;
                let record = match &detail.record {
                    None => body,
                    Some(path) => {
                        let found = match path.take_json(&mut body) {
                            Some(v) => v,
                            None => {
                                path.eval_json(&body)
                                    .map_err(|message| ErrorKind::Evaluation {
                                        what: "detail.record",
                                        message,
                                    })?
                            }
                        };
                        found.ok_or_else(|| ErrorKind::Records {
                            path: path.source().to_string(),
                            found: format!("nothing in the answer of {}", req.path_for_errors()),
                        })?
                    }
                };
                Ok::<_, ErrorKind>((record, bytes))
            }
        };
        let read: Vec<(Value, usize)> = futures::stream::iter(listed.iter().map(read_one))
            .buffered(detail.concurrency)
            .try_collect()
            .await?;
        let bytes = read.iter().map(|(_, b)| b).sum();
        Ok((read.into_iter().map(|(r, _)| r).collect(), bytes))
    }

    /// One request, through the budget, auth, throttles and retries.
    async fn send(
        &self,
        page: u32,
        req: &PreparedRequest,
    ) -> Result<(reqwest::header::HeaderMap, Value, usize), ErrorKind> {
        let mut tries = Tries::new();
        loop {
            let _permit = self.acquire_budget(page).await?;
            let token_url =
                |u: &str| guard::checked_url(u, &self.spec.hosts, self.options.allow_private_hosts);
            let (parts, refreshed) = self
                .auth
                .parts(
                    &self.http,
                    &token_url,
                    tries.stale_token.as_deref(),
                    SignTarget {
                        method: req.method_name(),
                        url: &req.url,
                    },
                )
                .await?;
            if let Some(r) = refreshed {
                (self.observer)(&EngineEvent::TokenRefreshed {
                    rotated_refresh_token: r.rotated_refresh_token,
                    expires_in_seconds: r.expires_in_seconds,
                });
            }
            let sent_token = parts.oauth_token.clone();
            tries.attempt += 1;
            let answer = match self.exchange(page, req, parts, tries.attempt).await {
                Ok((status, headers, bytes)) => {
                    Answer::new(status, headers, bytes, self.response())
                }
                Err(e) => {
                    let reason = without_url(&e);
                    self.retry_or_fail(page, req, &mut tries.transient, reason, &mut tries.rng)
                        .await?;
                    continue;
                }
            };
            let rate = &self.spec.spec.rate_limit;
            if let Some(wait) = wait::exhausted_wait(&answer.headers, rate, SystemTime::now()) {
                self.budget
                    .hold_scope(SystemTime::now() + wait.min(self.options.max_wait))
                    .await?;
            }
            match self.classify(&answer) {
                Verdict::Throttled => self.throttled(page, &answer, &mut tries).await?,
                Verdict::Unauthorized => {
                    if !tries.refreshed_after_401 && self.auth.can_refresh().await {
                        // One refresh and one retry; the token a 401 answered is stale.
                        tries.refreshed_after_401 = true;
                        tries.stale_token = sent_token;
                    } else {
                        return Err(self.refused(req, &answer, true));
                    }
                }
                Verdict::ServerError => {
                    let reason = format!(
                        "{}{}",
                        answer.status,
                        self.error_message(answer.json.as_ref(), &answer.headers)
                            .map(|m| format!(" ({m})"))
                            .unwrap_or_default()
                    );
                    self.retry_or_fail(page, req, &mut tries.transient, reason, &mut tries.rng)
                        .await?;
                }
                Verdict::Busy => {
                    let reason = format!("{} (too many requests in flight)", answer.status);
                    self.retry_or_fail(page, req, &mut tries.transient, reason, &mut tries.rng)
                        .await?;
                }
                Verdict::Refused => return Err(self.refused(req, &answer, false)),
                Verdict::Fault => return Err(self.fault(req, &answer)),
                Verdict::Page => return answer.into_page(),
            }
        }
    }

    /// Wait for this request's place in the budgets; a long wait parks the job instead.
    async fn acquire_budget(&self, page: u32) -> Result<crate::budget::BudgetPermit, ErrorKind> {
        let acquired = self
            .budget
            .acquire(self.options.breaker.settings.park_after, |w, scope| {
                (self.observer)(&EngineEvent::Waiting {
                    page,
                    wait: w,
                    reason: format!("{scope} request budget"),
                })
            })
            .await;
        match acquired {
            Ok(p) => Ok(p),
            Err(AcquireError::Exhausted(e)) => Err(ErrorKind::RateLimited {
                until: e.until,
                reason: e.reason,
                throttled: false,
            }),
            Err(AcquireError::Ledger(e)) => Err(ErrorKind::Ledger(e)),
        }
    }

    /// What an answer means, in the order the spec's rules apply.
    fn classify(&self, answer: &Answer) -> Verdict {
        let status = answer.status.as_u16();
        let throttle_body = || {
            self.spec.throttle_body.as_ref().is_some_and(|p| {
                answer
                    .json
                    .as_ref()
                    .is_some_and(|j| truthy(&p.eval_json(j).unwrap_or(None)))
            })
        };
        let auth_statuses = self.spec.spec.errors.auth_statuses.as_deref();
        if self
            .spec
            .spec
            .rate_limit
            .in_flight_statuses
            .contains(&status)
        {
            Verdict::Busy
        } else if self
            .spec
            .spec
            .rate_limit
            .throttle_statuses
            .contains(&status)
            || (status >= 400 && throttle_body())
        {
            Verdict::Throttled
        } else if let Some(fault) = &answer.fault {
            self.fault_verdict(fault)
        } else if auth_statuses.unwrap_or(&[401]).contains(&status) {
            Verdict::Unauthorized
        } else if answer.status.is_server_error() {
            Verdict::ServerError
        } else if !answer.status.is_success() {
            Verdict::Refused
        } else {
            Verdict::Page
        }
    }

    /// The provider throttled: hold the connection on every replica for the wait it
    /// asks (within the ceiling), or park the job when the breaker says so.
    async fn throttled(
        &self,
        page: u32,
        answer: &Answer,
        tries: &mut Tries,
    ) -> Result<(), ErrorKind> {
        metrics().throttled(&self.labels.labels());
        let rate = &self.spec.spec.rate_limit;
        let (asked, source) = wait::throttle_wait(
            &answer.headers,
            rate,
            tries.throttles,
            SystemTime::now(),
            &mut tries.rng,
        );
        tries.throttles += 1;
        let ceiling = self.options.max_wait;
        let wait =
            wait::within_ceiling(asked, ceiling).map_err(|asked| ErrorKind::WaitTooLong {
                asked,
                ceiling,
                origin: source.as_str(),
            })?;
        if tries.throttled_for + wait > ceiling {
            return Err(ErrorKind::ThrottleStorm {
                waited: tries.throttled_for + wait,
                ceiling,
            });
        }
        tries.throttled_for += wait;
        let until = SystemTime::now() + wait;
        // Every request of this connection waits, on every replica.
        self.budget.hold_connection(until).await?;
        let status = answer.status;
        if self.options.breaker.should_park(wait, tries.throttles) {
            return Err(ErrorKind::RateLimited {
                until: until.into(),
                reason: format!(
                    "throttled {} time(s) in a row ({status}, wait from {})",
                    tries.throttles,
                    source.as_str()
                ),
                throttled: true,
            });
        }
        (self.observer)(&EngineEvent::Waiting {
            page,
            wait,
            reason: format!("throttled ({status}, {})", source.as_str()),
        });
        // The next acquire waits out the hold just placed.
        Ok(())
    }

    /// A SOAP fault refuses the credentials when the spec's `errors.auth_fault` says so;
    /// any other fault stops the run (whatever the status: it is the provider's answer).
    fn fault_verdict(&self, fault: &SoapFault) -> Verdict {
        let refused = self
            .spec
            .auth_fault
            .as_ref()
            .is_some_and(|p| truthy(&p.eval_json(&fault.fault).unwrap_or(None)));
        if refused {
            Verdict::Unauthorized
        } else {
            Verdict::Fault
        }
    }

    fn fault(&self, req: &PreparedRequest, answer: &Answer) -> ErrorKind {
        let fault = answer.fault.as_ref().expect("a fault verdict has a fault");
        ErrorKind::SoapFault {
            method: req.method_name(),
            path: req.path_for_errors(),
            status: answer.status.as_u16(),
            code: fault.code.clone(),
            message: fault.message.clone(),
        }
    }

    /// A 4xx the request cannot get past (or a 401 after its one refresh).
    fn refused(&self, req: &PreparedRequest, answer: &Answer, unauthorized: bool) -> ErrorKind {
        let (method, path) = (req.method_name(), req.path_for_errors());
        let status = answer.status.as_u16();
        let message = match &answer.fault {
            Some(f) => Some(f.message.clone()),
            // An error page that is not the XML the spec expects: show how it starts.
            None if answer.xml_error.is_some() && !answer.bytes.is_empty() => {
                Some(snippet(&answer.bytes))
            }
            // A body that is not JSON (a sentence, an HTML page): show how it starts.
            None => self
                .error_message(answer.json.as_ref(), &answer.headers)
                .or_else(|| (!answer.bytes.is_empty()).then(|| snippet(&answer.bytes))),
        };
        if unauthorized {
            ErrorKind::Unauthorized {
                method,
                path,
                status,
                message,
            }
        } else {
            ErrorKind::Status {
                method,
                path,
                status,
                message,
            }
        }
    }

    /// One HTTP attempt, in a `provider.request` span (HTTP semantic conventions; the
    /// path without its query, which may carry a key) and measured.
    async fn exchange(
        &self,
        page: u32,
        req: &PreparedRequest,
        parts: crate::http::auth::AuthParts,
        attempt: u32,
    ) -> Result<
        (
            reqwest::StatusCode,
            reqwest::header::HeaderMap,
            bytes::Bytes,
        ),
        reqwest::Error,
    > {
        let method = req.method_name();
        let span = tracing::info_span!(
            "provider.request",
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            http.request.method = method,
            url.path = %req.path_for_errors(),
            http.response.status_code = tracing::field::Empty,
            error.type = tracing::field::Empty,
            attempt,
            tributary.provider = %self.labels.provider,
            tributary.tenant = %self.labels.tenant,
            tributary.resource = %self.resource,
            tributary.page = page,
        );
        let started = Instant::now();
        let answer: Result<_, reqwest::Error> = async {
            let response = request::build(&self.http, req, parts).send().await?;
            let status = response.status();
            span.record("http.response.status_code", status.as_u16());
            let headers = response.headers().clone();
            Ok((status, headers, response.bytes().await?))
        }
        .instrument(span.clone())
        .await;
        let status = match &answer {
            Ok((status, _, _)) => status.as_u16(),
            Err(e) => {
                span.record(
                    "error.type",
                    if e.is_timeout() {
                        "timeout"
                    } else {
                        "transport"
                    },
                );
                span.record("otel.status_code", "ERROR");
                0
            }
        };
        if status >= 500 {
            span.record("error.type", status);
            span.record("otel.status_code", "ERROR");
        }
        metrics().provider_request(&self.labels.labels(), method, status, started.elapsed());
        answer
    }

    async fn retry_or_fail(
        &self,
        page: u32,
        req: &PreparedRequest,
        failures: &mut u32,
        reason: String,
        rng: &mut rand::rngs::StdRng,
    ) -> Result<(), ErrorKind> {
        *failures += 1;
        if *failures >= self.options.max_attempts {
            return Err(ErrorKind::Exhausted {
                method: req.method_name(),
                path: req.path_for_errors(),
                attempts: *failures,
                last: reason,
            });
        }
        let cap = wait::exponential(
            self.options.retry_base,
            self.options.max_wait,
            *failures - 1,
        );
        let delay = wait::full_jitter(cap, rng);
        (self.observer)(&EngineEvent::Retrying {
            page,
            attempt: *failures,
            wait: delay,
            reason,
        });
        tokio::time::sleep(delay).await;
        Ok(())
    }

    fn error_message(
        &self,
        body: Option<&Value>,
        headers: &reqwest::header::HeaderMap,
    ) -> Option<String> {
        if let Some(name) = &self.spec.spec.errors.message_header {
            if let Some(text) = headers.get(name).and_then(|v| v.to_str().ok()) {
                return Some(text.to_string());
            }
        }
        let body = body?;
        let from_spec = self
            .spec
            .error_message
            .as_ref()
            .and_then(|e| e.eval_json(body).ok().flatten());
        let text = match from_spec {
            Some(Value::String(s)) => s,
            Some(other) => other.to_string(),
            None => {
                let s = body.to_string();
                if s.len() > 300 {
                    format!("{}...", &s[..s.floor_char_boundary(300)])
                } else {
                    s
                }
            }
        };
        Some(text)
    }

    pub fn since_text(&self) -> Option<&str> {
        self.since_text.as_deref()
    }
}

fn snippet(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(80)]);
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// What one request has been through so far, across its attempts.
struct Tries {
    rng: rand::rngs::StdRng,
    /// 5xx, timeouts and connection errors so far.
    transient: u32,
    /// Throttles in a row.
    throttles: u32,
    throttled_for: Duration,
    /// The token a 401 answered: the next attempt refreshes past it.
    stale_token: Option<String>,
    refreshed_after_401: bool,
    attempt: u32,
}

impl Tries {
    fn new() -> Self {
        Tries {
            rng: rand::rngs::StdRng::from_os_rng(),
            transient: 0,
            throttles: 0,
            throttled_for: Duration::ZERO,
            stale_token: None,
            refreshed_after_401: false,
            attempt: 0,
        }
    }
}

/// One HTTP answer, its body parsed once (JSON, or XML decoded into the same tree).
struct Answer {
    status: reqwest::StatusCode,
    headers: reqwest::header::HeaderMap,
    bytes: bytes::Bytes,
    json: Option<Value>,
    /// Why an XML answer did not decode.
    xml_error: Option<XmlError>,
    fault: Option<SoapFault>,
}

impl Answer {
    fn new(
        status: reqwest::StatusCode,
        headers: reqwest::header::HeaderMap,
        bytes: bytes::Bytes,
        response: &CompiledResponse,
    ) -> Self {
        let (json, xml_error) = if response.xml {
            match xml::decode(&bytes, &response.arrays) {
                Ok(v) => (Some(v), None),
                Err(e) => (None, Some(e)),
            }
        } else {
            (serde_json::from_slice(&bytes).ok(), None)
        };
        let fault = json.as_ref().and_then(xml::soap_fault);
        Answer {
            status,
            headers,
            bytes,
            json,
            xml_error,
            fault,
        }
    }

    /// A 2xx answer as a page body, or why it is not JSON (or XML).
    fn into_page(self) -> Result<(reqwest::header::HeaderMap, Value, usize), ErrorKind> {
        let len = self.bytes.len();
        if self.status == reqwest::StatusCode::NO_CONTENT {
            return Ok((self.headers, Value::Null, 0));
        }
        if let Some(e) = self.xml_error {
            return Err(ErrorKind::NotXml {
                message: e.to_string(),
                snippet: snippet(&self.bytes),
            });
        }
        match self.json {
            Some(body) => Ok((self.headers, body, len)),
            None => {
                let message = serde_json::from_slice::<Value>(&self.bytes)
                    .err()
                    .map(|e| e.to_string())
                    .unwrap_or_default();
                Err(ErrorKind::NotJson {
                    message,
                    snippet: snippet(&self.bytes),
                })
            }
        }
    }
}

/// What an answer calls for.
enum Verdict {
    Throttled,
    /// Too many requests in flight at the provider: retried after a short backoff.
    Busy,
    Unauthorized,
    /// A SOAP fault that is not about the credentials.
    Fault,
    ServerError,
    Refused,
    Page,
}
