//! From a spec as written to a spec ready to run: every template and JSONata
//! expression compiled once, every cross-reference checked, every problem
//! reported with its file, line and path.

use std::collections::{BTreeSet, HashSet};
use std::path::Path;
use std::sync::Arc;

use globset::{Glob, GlobSet, GlobSetBuilder};
use indexmap::IndexMap;
use regex::Regex;

use super::load::{read_spec_file, Problem, SpecError, SpecSource};
use super::model::*;
use super::template::{BodyTemplate, TemplateId, Templates};
use crate::mapping::jsonata::Jsonata;
use crate::mapping::models::{self, UnifiedModel};
use crate::mapping::plan::MappingPlan;

/// Credential fields every spec understands.
pub const CREDENTIAL_FIELDS: &[&str] = &[
    "access_token",
    "refresh_token",
    "expires_at",
    "client_id",
    "client_secret",
    "api_key",
    "username",
    "password",
    "consumer_key",
    "consumer_secret",
    "token_id",
    "token_secret",
];

/// Connection settings the engine itself reads, whatever the spec declares.
pub const ENGINE_SETTINGS: &[&str] = &["base_url", "token_url"];

const REQUEST_VARS: &[&str] = &[
    "captured",
    "config",
    "cursor",
    "page_size",
    "since",
    "offset",
    "page",
    "resource",
];
const CONFIG_VARS: &[&str] = &["config"];
/// The unified model every custom object maps into.
pub const CUSTOM_OBJECT_MODEL: &str = "custom.object";
const AUTH_VARS: &[&str] = &["config", "credentials"];

/// A spec ready to run.
#[derive(Debug)]
pub struct CompiledSpec {
    pub file: std::path::PathBuf,
    pub spec: ProviderSpec,
    pub templates: Templates,
    pub base_url: TemplateId,
    pub hosts: GlobSet,
    pub headers: Vec<(String, TemplateId)>,
    pub query: Vec<(String, TemplateId)>,
    pub auth: CompiledAuth,
    pub throttle_body: Option<Jsonata>,
    pub error_message: Option<Jsonata>,
    /// `errors.auth_fault`: over a decoded SOAP fault, true when it refuses the credentials.
    pub auth_fault: Option<Jsonata>,
    /// `response`: how answers are decoded where a resource does not say (discoveries too).
    pub response: CompiledResponse,
    pub resources: IndexMap<String, CompiledResource>,
    /// Credential fields the auth scheme reads.
    pub credentials_used: BTreeSet<String>,
    /// Field discoveries, by name.
    pub discoveries: IndexMap<String, CompiledDiscovery>,
    pub custom_objects: Option<CompiledCustomObjects>,
    /// `connect.authorize`, compiled (an OAuth provider's connect flow).
    pub authorize: Option<CompiledAuthorize>,
    /// `webhooks`, compiled.
    pub webhooks: Option<super::compile_webhooks::CompiledWebhooks>,
}

/// The authorization request and identity capture, compiled.
#[derive(Debug)]
pub struct CompiledAuthorize {
    pub url: TemplateId,
    pub params: Vec<(String, TemplateId)>,
    /// The identity request's path (templates see `token` and `config`).
    pub identity_request: Option<(Method, TemplateId)>,
    pub external_id: Option<Jsonata>,
    pub config: Vec<(String, Jsonata)>,
}

/// What identity templates and expressions read.
const IDENTITY_VARS: &[&str] = &["config", "token", "callback"];

/// How a connection names one of its custom objects among its resources.
pub const CUSTOM_PREFIX: &str = "custom:";

/// The object a `custom:<name>` resource reads, if it is one.
pub fn custom_object(resource: &str) -> Option<&str> {
    resource
        .strip_prefix(CUSTOM_PREFIX)
        .filter(|name| !name.is_empty())
}

impl CompiledSpec {
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// A resource by name; `custom:<object>` is the custom-object resource.
    pub fn resource(&self, name: &str) -> Option<&CompiledResource> {
        match custom_object(name) {
            Some(_) => self.custom_objects.as_ref().map(|c| &c.resource),
            None => self.resources.get(name),
        }
    }

    /// The discovery that lists a resource's fields, if it has one.
    pub fn discovery_of(&self, resource: &str) -> Option<&CompiledDiscovery> {
        if custom_object(resource).is_some() {
            return self.custom_objects.as_ref().map(|c| &c.discovery);
        }
        let name = self.resources.get(resource)?.discovery.as_ref()?;
        self.discoveries.get(name)
    }

    /// Where a resource's discovered schema is kept for a connection: its discovery's
    /// name (shared by the resources that use it), or `custom:<object>`.
    pub fn schema_subject(&self, resource: &str) -> Option<String> {
        if custom_object(resource).is_some() {
            return self.custom_objects.as_ref().map(|_| resource.to_string());
        }
        self.resources.get(resource)?.discovery.clone()
    }
}

/// A discovery with its request and its field expression compiled.
#[derive(Debug)]
pub struct CompiledDiscovery {
    /// The spec path it was written at (`discovery.contact_fields`), for errors.
    pub at: String,
    pub plan: Plan,
    pub field: Jsonata,
    pub every: std::time::Duration,
}

/// The custom-object parts, compiled.
#[derive(Debug)]
pub struct CompiledCustomObjects {
    pub list: CompiledDiscovery,
    pub discovery: CompiledDiscovery,
    pub resource: CompiledResource,
}

/// Authentication with its templates compiled.
#[derive(Debug)]
pub enum CompiledAuth {
    None,
    ApiKey {
        location: KeyLocation,
        name: String,
        value: TemplateId,
    },
    Basic {
        username: TemplateId,
        password: TemplateId,
    },
    Bearer {
        header: String,
        prefix: String,
        value: TemplateId,
    },
    OAuth2(Box<CompiledOAuth2>),
    /// OAuth 1.0a signatures with the four token-based credentials.
    OAuth1 {
        signature_method: Oauth1SignatureMethod,
        realm: Option<TemplateId>,
    },
}

/// The credentials an OAuth 1.0a scheme signs with.
pub const OAUTH1_CREDENTIALS: [&str; 4] = [
    "consumer_key",
    "consumer_secret",
    "token_id",
    "token_secret",
];

/// An OAuth2 scheme (refresh-token or client-credentials grant).
#[derive(Debug)]
pub struct CompiledOAuth2 {
    pub grant: Grant,
    pub token_url: TemplateId,
    pub client_auth: ClientAuth,
    pub token_params: Vec<(String, TemplateId)>,
    pub access_token: Jsonata,
    pub expires_in: Jsonata,
    pub refresh_token: Jsonata,
    pub default_expires_in_seconds: u64,
    pub invalid_grant: Jsonata,
    pub header: String,
    pub prefix: String,
    pub refresh_margin_seconds: u64,
    pub scopes: Vec<String>,
    pub refresh_token_idle_days: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    RefreshToken,
    ClientCredentials,
}

/// One resource with everything compiled.
#[derive(Debug)]
pub struct CompiledResource {
    pub name: String,
    pub model: &'static UnifiedModel,
    pub full: Plan,
    pub incremental: Option<IncrementalPlan>,
    pub page_size: u32,
    pub mapping: Jsonata,
    /// The mapping compiled for evaluation record by record.
    pub mapping_plan: MappingPlan,
    /// Field names the mapping mentions: these are not custom fields.
    pub mapped_fields: BTreeSet<String>,
    pub custom_from: Jsonata,
    pub custom_exclude: HashSet<String>,
    pub custom_include: Option<Regex>,
    /// The resource's `fields`, merged into the mapping's result (see `FieldExpr`).
    pub fields: Vec<FieldExpr>,
    /// `custom_fields.include`: only these provider fields are custom.
    pub custom_include_names: Option<HashSet<String>>,
    /// The discovery listing this resource's fields (by name), if any.
    pub discovery: Option<String>,
    /// How this resource's answers are decoded (its `response`, else the spec's).
    pub response: CompiledResponse,
    /// `detail`: each listed record read in full.
    pub detail: Option<CompiledDetail>,
}

/// The request reading one listed record in full, and where the record is in its answer.
#[derive(Debug)]
pub struct CompiledDetail {
    pub request: CompiledRequest,
    pub record: Option<Jsonata>,
    pub concurrency: usize,
}

/// How answers are decoded: JSON, or XML with the elements always read as arrays.
#[derive(Debug, Clone, Default)]
pub struct CompiledResponse {
    pub xml: bool,
    pub arrays: HashSet<String>,
}

impl CompiledResponse {
    fn new(r: Option<&crate::spec::model::ResponseFormat>) -> Self {
        match r {
            None => CompiledResponse::default(),
            Some(r) => CompiledResponse {
                xml: r.format == crate::spec::model::BodyFormat::Xml,
                arrays: r.arrays.iter().cloned().collect(),
            },
        }
    }
}

/// One entry of a resource's `fields`: an expression over the provider record and
/// where its value goes.
#[derive(Debug)]
pub struct FieldExpr {
    pub target: FieldTarget,
    pub expr: Jsonata,
}

/// Where a `fields` entry's value goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldTarget {
    /// A field of the unified model.
    Unified(String),
    /// `custom_fields.<name>`.
    Custom(String),
}

/// Fields of the unified record the pipeline sets itself: `fields` cannot set them.
const RESERVED_FIELDS: &[&str] = &["id", "custom_fields", "remote_data"];

impl CompiledResource {
    /// The plan a run reads with: the incremental one when the run asks only for
    /// changes and the resource has one, else the full one. The one place this is decided.
    pub fn plan(&self, incremental: bool) -> &Plan {
        match (&self.incremental, incremental) {
            (Some(inc), true) => &inc.plan,
            _ => &self.full,
        }
    }
}

/// How to read the resource: the request, the pages and the records.
#[derive(Debug)]
pub struct Plan {
    pub request: CompiledRequest,
    pub pagination: CompiledPagination,
    pub records: CompiledRecords,
}

#[derive(Debug)]
pub struct IncrementalPlan {
    pub plan: Plan,
    /// Where a round's last page carries the link the next incremental run starts from.
    pub delta_link: Option<Jsonata>,
    pub since_format: SinceFormat,
    pub lookback_seconds: u64,
}

#[derive(Debug)]
pub struct CompiledRequest {
    pub method: Method,
    pub path: TemplateId,
    pub query: Vec<(String, TemplateId)>,
    pub headers: Vec<(String, TemplateId)>,
    pub body: Option<BodyTemplate>,
    /// `xml_body`: rendered with every value XML-escaped.
    pub xml_body: Option<TemplateId>,
}

#[derive(Debug)]
pub struct CompiledPagination {
    pub kind: PaginationKind,
    pub cursor: Option<Jsonata>,
    pub next_url: Option<Jsonata>,
    pub param: Option<String>,
    pub limit_param: Option<String>,
    pub start: u64,
    pub has_more: Option<Jsonata>,
    pub total: Option<Jsonata>,
    pub stop_on_empty_page: bool,
    pub stop_on_short_page: bool,
    pub max_pages: Option<u32>,
    pub total_pages: Option<Jsonata>,
    /// Values read from the first page, by name.
    pub capture: Vec<(String, Jsonata)>,
}

#[derive(Debug)]
pub struct CompiledRecords {
    pub path: Jsonata,
    pub primary_key: Jsonata,
    pub updated_at: Option<Jsonata>,
    /// The provider marks the record removed.
    pub deleted: Option<Jsonata>,
}

impl CompiledRecords {
    /// Whether the provider marks this record removed (`records.deleted`).
    pub fn marks_removed(&self, raw: &serde_json::Value) -> bool {
        self.deleted
            .as_ref()
            .is_some_and(|e| crate::mapping::jsonata::truthy(&e.eval_json(raw).ok().flatten()))
    }
}

/// How a since time is written for the provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinceFormat {
    Rfc3339,
    Rfc3339Millis,
    EpochSeconds,
    EpochMillis,
    Pattern(String),
}

impl SinceFormat {
    pub fn parse(text: &str) -> Result<Self, String> {
        Ok(match text {
            "rfc3339" => SinceFormat::Rfc3339,
            "rfc3339_millis" => SinceFormat::Rfc3339Millis,
            "epoch_seconds" => SinceFormat::EpochSeconds,
            "epoch_millis" => SinceFormat::EpochMillis,
            p if p.contains('%') => {
                let probe = chrono::DateTime::UNIX_EPOCH;
                let mut out = String::new();
                use std::fmt::Write;
                write!(out, "{}", probe.format(p))
                    .map_err(|_| format!("`{p}` is not a valid strftime pattern"))?;
                SinceFormat::Pattern(p.to_string())
            }
            other => {
                return Err(format!(
                    "`{other}` is not a since format: use rfc3339, rfc3339_millis, epoch_seconds, epoch_millis or a strftime pattern containing %"
                ))
            }
        })
    }

    pub fn render(&self, t: chrono::DateTime<chrono::Utc>) -> String {
        match self {
            SinceFormat::Rfc3339 => t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            SinceFormat::Rfc3339Millis => t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            SinceFormat::EpochSeconds => t.timestamp().to_string(),
            SinceFormat::EpochMillis => t.timestamp_millis().to_string(),
            SinceFormat::Pattern(p) => t.format(p).to_string(),
        }
    }
}

/// Read, parse and compile a spec file.
pub fn load_spec(file: &Path) -> Result<Arc<CompiledSpec>, SpecError> {
    let source = read_spec_file(file)?;
    compile(source).map(Arc::new)
}

/// Compile a parsed spec, reporting every problem at once.
pub fn compile(source: SpecSource) -> Result<CompiledSpec, SpecError> {
    let mut c = Compiler {
        src: &source,
        templates: Templates::new(),
        problems: Vec::new(),
        request_vars: REQUEST_VARS.to_vec(),
        body_credentials: BTreeSet::new(),
        writes_allowed: false,
    };
    let spec = &source.spec;
    if spec.spec_version != 1 {
        c.problem(
            "spec_version",
            format!(
                "version {} is not supported; this engine reads spec_version 1",
                spec.spec_version
            ),
        );
    }
    let base_url = c.template("base_url", &spec.base_url, CONFIG_VARS);
    let hosts = c.hosts();
    let headers = c.template_map("headers", &spec.headers, REQUEST_VARS);
    let query = c.template_map("query", &spec.query, REQUEST_VARS);
    let auth = c.auth(&spec.auth);
    let throttle_body = spec
        .rate_limit
        .throttle_body
        .as_deref()
        .and_then(|e| c.jsonata("rate_limit.throttle_body", e));
    if spec.rate_limit.requests.is_some() != spec.rate_limit.per_seconds.is_some() {
        c.problem(
            "rate_limit",
            "`requests` and `per_seconds` go together: give both or neither",
        );
    }
    if spec.rate_limit.per_seconds.is_some_and(|s| s <= 0.0) {
        c.problem("rate_limit.per_seconds", "must be greater than 0");
    }
    if let Some(app) = &spec.rate_limit.app_budget {
        if spec.rate_limit.scope == BudgetScope::App {
            c.problem(
                "rate_limit.app_budget",
                "with `scope: app` the budget above is already the app's; put these limits there, or use `scope: connection`",
            );
        }
        if app.requests.is_some() != app.per_seconds.is_some() {
            c.problem(
                "rate_limit.app_budget",
                "`requests` and `per_seconds` go together: give both or neither",
            );
        }
        if app.per_seconds.is_some_and(|s| s <= 0.0) {
            c.problem(
                "rate_limit.app_budget.per_seconds",
                "must be greater than 0",
            );
        }
    }
    let error_message = spec
        .errors
        .message
        .as_deref()
        .and_then(|e| c.jsonata("errors.message", e));
    let auth_fault = spec
        .errors
        .auth_fault
        .as_deref()
        .and_then(|e| c.jsonata("errors.auth_fault", e));
    if spec.resources.is_empty() {
        c.problem("resources", "a spec needs at least one resource");
    }
    let mut discoveries = IndexMap::new();
    for (name, d) in &spec.discovery {
        if let Some(d) = c.discovery(&format!("discovery.{name}"), d, false) {
            discoveries.insert(name.clone(), d);
        }
    }
    let mut resources = IndexMap::new();
    for (name, resource) in &spec.resources {
        if let Some(r) = c.resource(name, resource) {
            resources.insert(name.clone(), r);
        }
    }
    let custom_objects = spec
        .custom_objects
        .as_ref()
        .and_then(|o| c.custom_objects(o));
    let mut credentials_used = credentials_used(&c.templates, &auth);
    credentials_used.extend(std::mem::take(&mut c.body_credentials));
    let authorize = spec
        .connect
        .as_ref()
        .and_then(|connect| c.connect(connect, &credentials_used));
    let webhooks = spec.webhooks.as_ref().and_then(|w| c.webhooks(w));
    let Compiler {
        templates,
        problems,
        ..
    } = c;
    if !problems.is_empty() {
        return Err(SpecError::Invalid {
            file: source.file.clone(),
            problems,
        });
    }
    Ok(CompiledSpec {
        file: source.file.clone(),
        spec: source.spec.clone(),
        templates,
        base_url: base_url.expect("no problems means compiled"),
        hosts: hosts.expect("no problems means compiled"),
        headers,
        query,
        auth: auth.expect("no problems means compiled"),
        throttle_body,
        error_message,
        auth_fault,
        response: CompiledResponse::new(spec.response.as_ref()),
        resources,
        credentials_used,
        discoveries,
        custom_objects,
        authorize,
        webhooks,
    })
}

fn credentials_used(templates: &Templates, auth: &Option<CompiledAuth>) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    let mut from = |id: &TemplateId| {
        for v in templates.variables(id) {
            if let Some(field) = v.strip_prefix("credentials.") {
                used.insert(field.to_string());
            }
        }
    };
    match auth {
        None | Some(CompiledAuth::None) => {}
        Some(CompiledAuth::ApiKey { value, .. }) => from(value),
        Some(CompiledAuth::Basic { username, password }) => {
            from(username);
            from(password);
        }
        Some(CompiledAuth::Bearer { value, .. }) => from(value),
        Some(CompiledAuth::OAuth2(o)) => {
            o.token_params.iter().for_each(|(_, t)| from(t));
            let fixed: &[&str] = match o.grant {
                Grant::RefreshToken => &[
                    "access_token",
                    "refresh_token",
                    "expires_at",
                    "client_id",
                    "client_secret",
                ],
                Grant::ClientCredentials => {
                    &["access_token", "expires_at", "client_id", "client_secret"]
                }
            };
            used.extend(fixed.iter().map(|s| s.to_string()));
        }
        Some(CompiledAuth::OAuth1 { realm, .. }) => {
            realm.iter().for_each(&mut from);
            used.extend(OAUTH1_CREDENTIALS.iter().map(|s| s.to_string()));
        }
    }
    used
}

pub(super) struct Compiler<'a> {
    pub(super) src: &'a SpecSource,
    templates: Templates,
    problems: Vec<Problem>,
    /// What request templates may read where the compiler is now (`fields` only in a
    /// resource with a discovery, `object` only inside `custom_objects`).
    request_vars: Vec<&'static str>,
    /// Credential fields XML body templates read (a SOAP envelope's WS-Security header).
    body_credentials: BTreeSet<String>,
    /// Inside `webhooks.subscribe`: requests may be PUT, PATCH or DELETE.
    pub(super) writes_allowed: bool,
}

impl Compiler<'_> {
    pub(super) fn problem(&mut self, path: &str, message: impl Into<String>) {
        self.problems.push(self.src.problem(path, message));
    }

    pub(super) fn jsonata(&mut self, path: &str, source: &str) -> Option<Jsonata> {
        match Jsonata::compile(source) {
            Ok(e) => Some(e),
            Err(err) => {
                self.problem(
                    path,
                    format!("invalid JSONata expression `{}`: {err}", source.trim()),
                );
                None
            }
        }
    }

    fn template(&mut self, path: &str, source: &str, allowed: &[&str]) -> Option<TemplateId> {
        match self.templates.add(source) {
            Ok(id) => {
                self.check_vars(path, self.templates.variables(&id), allowed);
                Some(id)
            }
            Err(err) => {
                self.problem(path, format!("invalid template `{source}`: {err}"));
                None
            }
        }
    }

    fn template_map(
        &mut self,
        path: &str,
        map: &IndexMap<String, String>,
        allowed: &[&str],
    ) -> Vec<(String, TemplateId)> {
        map.iter()
            .filter_map(|(k, v)| {
                self.template(&format!("{path}.{k}"), v, allowed)
                    .map(|id| (k.clone(), id))
            })
            .collect()
    }

    fn check_vars(&mut self, path: &str, vars: HashSet<String>, allowed: &[&str]) {
        let mut vars: Vec<_> = vars.into_iter().collect();
        vars.sort();
        for var in vars {
            let (root, field) = match var.split_once('.') {
                Some((r, f)) => (r, Some(f)),
                None => (var.as_str(), None),
            };
            if !allowed.contains(&root) {
                self.problem(
                    path,
                    format!(
                        "the template reads `{var}`, which is not available here; available: {}",
                        allowed.join(", ")
                    ),
                );
                continue;
            }
            match (root, field) {
                ("config", Some(f)) => {
                    let f = f.split('.').next().unwrap_or(f);
                    if !self.src.spec.config.contains_key(f) && !ENGINE_SETTINGS.contains(&f) {
                        self.problem(path, format!("the template reads `config.{f}`, which the spec's `config` section does not declare"));
                    }
                }
                ("credentials", Some(f)) => {
                    let f = f.split('.').next().unwrap_or(f);
                    if !CREDENTIAL_FIELDS.contains(&f) {
                        self.problem(
                            path,
                            format!(
                                "`credentials.{f}` is not a credential field; use one of {}",
                                CREDENTIAL_FIELDS.join(", ")
                            ),
                        );
                    }
                }
                _ => {}
            }
        }
    }

    /// The `connect` section: an authorization only for OAuth authorization-code specs,
    /// credential fields only for the others and only for credentials the spec reads.
    fn connect(
        &mut self,
        connect: &super::connect::Connect,
        credentials_used: &BTreeSet<String>,
    ) -> Option<CompiledAuthorize> {
        let oauth = matches!(self.src.spec.auth, Auth::Oauth2RefreshToken { .. });
        for name in connect.fields.keys() {
            if oauth {
                self.problem(&format!("connect.fields.{name}"), "an OAuth provider's credentials come from the authorization; give `connect.authorize` instead");
            } else if !credentials_used.contains(name) {
                let used: Vec<&str> = credentials_used.iter().map(String::as_str).collect();
                self.problem(
                    &format!("connect.fields.{name}"),
                    format!(
                        "the spec's auth does not read `credentials.{name}`; it reads: {}",
                        used.join(", ")
                    ),
                );
            }
        }
        let a = connect.authorize.as_ref()?;
        if !oauth {
            self.problem(
                "connect.authorize",
                format!(
                    "authorization needs `auth.type: oauth2_refresh_token`; this spec's auth is {}",
                    self.src.spec.auth.kind()
                ),
            );
            return None;
        }
        for name in a.resource_scopes.keys() {
            if !self.src.spec.resources.contains_key(name) {
                self.problem(
                    &format!("connect.authorize.resource_scopes.{name}"),
                    "no resource has this name",
                );
            }
        }
        let identity = &a.identity;
        let identity_request = identity.request.as_ref().and_then(|r| {
            let path = self.template(
                "connect.authorize.identity.request.path",
                &r.path,
                IDENTITY_VARS,
            )?;
            Some((r.method, path))
        });
        let config: Vec<(String, Jsonata)> = identity
            .config
            .iter()
            .filter_map(|(k, e)| {
                Some((
                    k.clone(),
                    self.jsonata(&format!("connect.authorize.identity.config.{k}"), e)?,
                ))
            })
            .collect();
        for name in identity.config.keys() {
            if !self.src.spec.config.contains_key(name) && !ENGINE_SETTINGS.contains(&name.as_str())
            {
                self.problem(
                    &format!("connect.authorize.identity.config.{name}"),
                    "the spec's `config` section does not declare this setting",
                );
            }
        }
        Some(CompiledAuthorize {
            url: self.template("connect.authorize.url", &a.url, CONFIG_VARS)?,
            params: self.template_map("connect.authorize.params", &a.params, CONFIG_VARS),
            identity_request,
            external_id: identity
                .external_id
                .as_deref()
                .and_then(|e| self.jsonata("connect.authorize.identity.external_id", e)),
            config,
        })
    }

    fn hosts(&mut self) -> Option<GlobSet> {
        let patterns = &self.src.spec.allowed_hosts;
        if patterns.is_empty() {
            self.problem(
                "allowed_hosts",
                "list at least one host pattern the provider's URLs may use",
            );
            return None;
        }
        let mut set = GlobSetBuilder::new();
        let mut ok = true;
        for (i, p) in patterns.iter().enumerate() {
            match Glob::new(&p.to_ascii_lowercase()) {
                Ok(g) => {
                    set.add(g);
                }
                Err(e) => {
                    self.problem(
                        &format!("allowed_hosts[{i}]"),
                        format!("`{p}` is not a host pattern: {e}"),
                    );
                    ok = false;
                }
            }
        }
        if !ok {
            return None;
        }
        set.build().ok()
    }

    fn auth(&mut self, auth: &Auth) -> Option<CompiledAuth> {
        Some(match auth {
            Auth::None => CompiledAuth::None,
            Auth::ApiKey {
                location,
                name,
                value,
            } => CompiledAuth::ApiKey {
                location: *location,
                name: name.clone(),
                value: self.template("auth.value", value, AUTH_VARS)?,
            },
            Auth::Basic { username, password } => CompiledAuth::Basic {
                username: self.template("auth.username", username, AUTH_VARS)?,
                password: self.template("auth.password", password, AUTH_VARS)?,
            },
            Auth::Bearer {
                header,
                prefix,
                value,
            } => CompiledAuth::Bearer {
                header: header.clone(),
                prefix: prefix.clone(),
                value: self.template("auth.value", value, AUTH_VARS)?,
            },
            Auth::Oauth2RefreshToken {
                token_url,
                client_auth,
                token_params,
                token_response,
                header,
                prefix,
                refresh_margin_seconds,
                refresh_token_idle_days,
            } => self.oauth2(
                Grant::RefreshToken,
                token_url,
                *client_auth,
                token_params,
                token_response,
                header,
                prefix,
                *refresh_margin_seconds,
                &[],
                *refresh_token_idle_days,
            )?,
            Auth::Oauth2ClientCredentials {
                token_url,
                client_auth,
                token_params,
                token_response,
                header,
                prefix,
                scopes,
            } => self.oauth2(
                Grant::ClientCredentials,
                token_url,
                *client_auth,
                token_params,
                token_response,
                header,
                prefix,
                60,
                scopes,
                None,
            )?,
            Auth::Oauth1 {
                signature_method,
                realm,
            } => CompiledAuth::OAuth1 {
                signature_method: *signature_method,
                realm: match realm {
                    Some(r) => Some(self.template("auth.realm", r, CONFIG_VARS)?),
                    None => None,
                },
            },
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn oauth2(
        &mut self,
        grant: Grant,
        token_url: &str,
        client_auth: ClientAuth,
        token_params: &IndexMap<String, String>,
        tr: &TokenResponse,
        header: &str,
        prefix: &str,
        refresh_margin_seconds: u64,
        scopes: &[String],
        refresh_token_idle_days: Option<u32>,
    ) -> Option<CompiledAuth> {
        let token_url = self.template("auth.token_url", token_url, CONFIG_VARS);
        let token_params = self.template_map("auth.token_params", token_params, AUTH_VARS);
        let access_token = self.jsonata("auth.token_response.access_token", &tr.access_token);
        let expires_in = self.jsonata("auth.token_response.expires_in", &tr.expires_in);
        let refresh_token = self.jsonata("auth.token_response.refresh_token", &tr.refresh_token);
        let invalid_grant = self.jsonata("auth.token_response.invalid_grant", &tr.invalid_grant);
        Some(CompiledAuth::OAuth2(Box::new(CompiledOAuth2 {
            grant,
            token_url: token_url?,
            client_auth,
            token_params,
            access_token: access_token?,
            expires_in: expires_in?,
            refresh_token: refresh_token?,
            default_expires_in_seconds: tr.default_expires_in_seconds,
            invalid_grant: invalid_grant?,
            header: header.to_string(),
            prefix: prefix.to_string(),
            refresh_margin_seconds,
            scopes: scopes.to_vec(),
            refresh_token_idle_days,
        })))
    }

    fn resource(&mut self, name: &str, r: &Resource) -> Option<CompiledResource> {
        let at = format!("resources.{name}");
        if let Some(d) = &r.discovery {
            if !self.src.spec.discovery.contains_key(d) {
                let known: Vec<&str> = self.src.spec.discovery.keys().map(String::as_str).collect();
                self.problem(
                    &format!("{at}.discovery"),
                    format!(
                        "no `discovery` entry is named `{d}`; the spec has: {}",
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    ),
                );
            }
        }
        let vars = if r.discovery.is_some() {
            &["fields"][..]
        } else {
            &[]
        };
        self.with_vars(vars, |c| c.resource_at(&at, name, r))
    }

    /// Compile with extra request variables available.
    pub(super) fn with_vars<T>(
        &mut self,
        extra: &[&'static str],
        f: impl FnOnce(&mut Self) -> T,
    ) -> T {
        let before = self.request_vars.len();
        self.request_vars.extend_from_slice(extra);
        let out = f(self);
        self.request_vars.truncate(before);
        out
    }

    fn discovery(
        &mut self,
        at: &str,
        d: &Discovery,
        in_objects: bool,
    ) -> Option<CompiledDiscovery> {
        let vars = if in_objects { &["object"][..] } else { &[] };
        let plan = self.with_vars(vars, |c| c.plan(at, &d.request, &d.pagination, &d.records));
        let field = self.jsonata(&format!("{at}.field"), &d.field);
        if d.every_seconds == 0 {
            self.problem(&format!("{at}.every_seconds"), "must be at least 1");
        }
        Some(CompiledDiscovery {
            at: at.to_string(),
            plan: plan?,
            field: field?,
            every: std::time::Duration::from_secs(d.every_seconds),
        })
    }

    fn custom_objects(&mut self, o: &CustomObjects) -> Option<CompiledCustomObjects> {
        let list = self.discovery("custom_objects.list", &o.list, false);
        let discovery = self.discovery("custom_objects.discovery", &o.discovery, true);
        if o.resource.model != CUSTOM_OBJECT_MODEL {
            self.problem(
                "custom_objects.resource.model",
                format!(
                    "custom objects map into `{CUSTOM_OBJECT_MODEL}`, not `{}`",
                    o.resource.model
                ),
            );
        }
        if o.resource.discovery.is_some() {
            self.problem(
                "custom_objects.resource.discovery",
                "a custom object's fields come from `custom_objects.discovery`; remove this",
            );
        }
        let resource = self.with_vars(&["object", "fields"], |c| {
            c.resource_at("custom_objects.resource", "custom", &o.resource)
        });
        Some(CompiledCustomObjects {
            list: list?,
            discovery: discovery?,
            resource: resource?,
        })
    }

    fn resource_at(&mut self, at: &str, name: &str, r: &Resource) -> Option<CompiledResource> {
        let at = at.to_string();
        let model = models::model(&r.model);
        if model.is_none() {
            let known: Vec<_> = models::model_names().collect();
            self.problem(
                &format!("{at}.model"),
                format!(
                    "unknown unified model `{}`; known models: {}",
                    r.model,
                    known.join(", ")
                ),
            );
        }
        let full = self.plan(&at, &r.request, &r.pagination, &r.records);
        let incremental = match &r.incremental {
            None => None,
            Some(inc) => {
                let ip = format!("{at}.incremental");
                let since_format = match SinceFormat::parse(&inc.since_format) {
                    Ok(f) => Some(f),
                    Err(e) => {
                        self.problem(&format!("{ip}.since_format"), e);
                        None
                    }
                };
                let plan = self.plan(
                    &ip,
                    inc.request.as_ref().unwrap_or(&r.request),
                    inc.pagination.as_ref().unwrap_or(&r.pagination),
                    inc.records.as_ref().unwrap_or(&r.records),
                );
                let delta_link = match &inc.delta_link {
                    Some(e) => Some(self.jsonata(&format!("{ip}.delta_link"), e)?),
                    None => None,
                };
                if inc.request.is_none() && delta_link.is_none() {
                    let uses_since = self.request_uses_since(&r.request);
                    if !uses_since {
                        self.problem(&ip, "neither `incremental.request` nor the resource's `request` reads `{{ since }}`: the provider would be asked for everything");
                    }
                }
                Some(IncrementalPlan {
                    plan: plan?,
                    since_format: since_format?,
                    lookback_seconds: inc.lookback_seconds,
                    delta_link,
                })
            }
        };
        let mapping = self.jsonata(&format!("{at}.mapping"), &r.mapping);
        let custom_from = self.jsonata(&format!("{at}.custom_fields.from"), &r.custom_fields.from);
        let custom_include = match &r.custom_fields.include_pattern {
            None => None,
            Some(p) => match Regex::new(p) {
                Ok(re) => Some(re),
                Err(e) => {
                    self.problem(
                        &format!("{at}.custom_fields.include_pattern"),
                        format!("not a regular expression: {e}"),
                    );
                    None
                }
            },
        };
        let page_size = r.page_size.unwrap_or(self.src.spec.page_size);
        if page_size == 0 {
            self.problem(&format!("{at}.page_size"), "must be at least 1");
        }
        let fields = model.map(|m| self.fields(&at, &r.fields, m));
        let mapping = mapping?;
        let fields = fields?;
        let mut mapped_fields = mapping.field_names();
        for f in &fields {
            mapped_fields.extend(f.expr.field_names());
        }
        let response =
            CompiledResponse::new(r.response.as_ref().or(self.src.spec.response.as_ref()));
        let detail = match &r.detail {
            Some(d) => Some(self.detail(&format!("{at}.detail"), d)?),
            None => None,
        };
        Some(CompiledResource {
            name: name.to_string(),
            model: model?,
            full: full?,
            incremental,
            page_size,
            mapped_fields,
            mapping_plan: MappingPlan::new(&mapping),
            mapping,
            custom_from: custom_from?,
            custom_exclude: r.custom_fields.exclude.iter().cloned().collect(),
            custom_include,
            fields,
            custom_include_names: r
                .custom_fields
                .include
                .as_ref()
                .map(|names| names.iter().cloned().collect()),
            discovery: r.discovery.clone(),
            response,
            detail,
        })
    }

    fn detail(&mut self, at: &str, d: &Detail) -> Option<CompiledDetail> {
        if d.concurrency == 0 {
            self.problem(&format!("{at}.concurrency"), "must be at least 1");
        }
        let request = self.with_vars(&["record"], |c| {
            c.request(&format!("{at}.request"), &d.request)
        });
        let record = match &d.record {
            Some(e) => Some(self.jsonata(&format!("{at}.record"), e)?),
            None => None,
        };
        Some(CompiledDetail {
            request: request?,
            record,
            concurrency: d.concurrency.max(1) as usize,
        })
    }

    fn request_uses_since(&self, req: &Request) -> bool {
        let mentions = |s: &str| s.contains("since");
        mentions(&req.path)
            || req.query.values().any(|v| mentions(v))
            || req.body.as_ref().is_some_and(|b| mentions(&b.to_string()))
            || req.xml_body.as_deref().is_some_and(mentions)
    }

    pub(super) fn plan(
        &mut self,
        at: &str,
        req: &Request,
        pg: &Pagination,
        rec: &Records,
    ) -> Option<Plan> {
        let request = self.request(&format!("{at}.request"), req);
        let pagination = self.pagination(&format!("{at}.pagination"), pg);
        let records = self.records(&format!("{at}.records"), rec);
        Some(Plan {
            request: request?,
            pagination: pagination?,
            records: records?,
        })
    }

    fn request(&mut self, at: &str, req: &Request) -> Option<CompiledRequest> {
        let vars = self.request_vars.clone();
        if !req.method.is_read() && !self.writes_allowed {
            self.problem(
                &format!("{at}.method"),
                format!(
                    "a read is GET or POST, not {}: only `webhooks.subscribe` may change \
                     what the provider holds",
                    req.method.as_str()
                ),
            );
        }
        let path = self.template(&format!("{at}.path"), &req.path, &vars);
        let query = self.template_map(&format!("{at}.query"), &req.query, &vars);
        let headers = self.template_map(&format!("{at}.headers"), &req.headers, &vars);
        let body = match &req.body {
            None => None,
            Some(b) => {
                if req.method == Method::Get {
                    self.problem(
                        &format!("{at}.body"),
                        "a GET request has no body; use `method: POST`",
                    );
                }
                match self.templates.add_body(b) {
                    Ok(t) => {
                        let used = self.templates.body_variables(&t);
                        self.check_vars(&format!("{at}.body"), used, &vars);
                        Some(t)
                    }
                    Err(e) => {
                        self.problem(
                            &format!("{at}.body"),
                            format!("invalid template in the body: {e}"),
                        );
                        return None;
                    }
                }
            }
        };
        let xml_body = self.xml_body(at, req);
        Some(CompiledRequest {
            method: req.method,
            path: path?,
            query,
            headers,
            body,
            xml_body,
        })
    }

    /// `xml_body`: a POST's XML template, instead of a JSON `body`.
    fn xml_body(&mut self, at: &str, req: &Request) -> Option<TemplateId> {
        let source = req.xml_body.as_deref()?;
        let path = format!("{at}.xml_body");
        if req.method == Method::Get {
            self.problem(&path, "a GET request has no body; use `method: POST`");
        }
        if req.body.is_some() {
            self.problem(
                &path,
                "a request has one body: `body` (JSON) or `xml_body`, not both",
            );
        }
        match self.templates.add_xml(source) {
            Ok(id) => {
                let mut vars = self.request_vars.clone();
                vars.push("credentials");
                let used = self.templates.variables(&id);
                self.body_credentials.extend(
                    used.iter()
                        .filter_map(|v| v.strip_prefix("credentials."))
                        .map(str::to_string),
                );
                self.check_vars(&path, used, &vars);
                Some(id)
            }
            Err(err) => {
                self.problem(&path, format!("invalid template: {err}"));
                None
            }
        }
    }

    fn pagination(&mut self, at: &str, p: &Pagination) -> Option<CompiledPagination> {
        let mut need = |field: &str, present: bool| {
            if !present {
                self.problems.push(self.src.problem(
                    at,
                    format!(
                            "pagination type `{}` needs `{field}`",
                            serde_json::to_value(p.kind)
                                .ok()
                                .and_then(|v| v.as_str().map(String::from))
                                .unwrap_or_default()
                        ),
                ));
            }
        };
        match p.kind {
            PaginationKind::Cursor => need("cursor_path", p.cursor_path.is_some()),
            PaginationKind::NextUrl => need("next_url_path", p.next_url_path.is_some()),
            _ => {}
        }
        let cursor = p
            .cursor_path
            .as_deref()
            .and_then(|e| self.jsonata(&format!("{at}.cursor_path"), e));
        let next_url = p
            .next_url_path
            .as_deref()
            .and_then(|e| self.jsonata(&format!("{at}.next_url_path"), e));
        let has_more = p
            .has_more
            .as_deref()
            .and_then(|e| self.jsonata(&format!("{at}.has_more"), e));
        let total = p
            .total
            .as_deref()
            .and_then(|e| self.jsonata(&format!("{at}.total"), e));
        if p.max_pages == Some(0) {
            self.problem(&format!("{at}.max_pages"), "must be at least 1");
        }
        let total_pages = p
            .total_pages
            .as_deref()
            .and_then(|e| self.jsonata(&format!("{at}.total_pages"), e));
        if p.total_pages.is_some() && p.kind != PaginationKind::PageNumber {
            self.problem(
                &format!("{at}.total_pages"),
                "`total_pages` stops `page_number` pagination; use `total` (records) for the others",
            );
        }
        let capture = p
            .capture
            .iter()
            .filter_map(|(name, e)| {
                self.jsonata(&format!("{at}.capture.{name}"), e)
                    .map(|j| (name.clone(), j))
            })
            .collect();
        let default_start = if p.kind == PaginationKind::PageNumber {
            1
        } else {
            0
        };
        Some(CompiledPagination {
            kind: p.kind,
            cursor,
            next_url,
            param: p.param.clone(),
            limit_param: p.limit_param.clone(),
            start: p.start.unwrap_or(default_start),
            has_more,
            total,
            stop_on_empty_page: p.stop_on_empty_page,
            stop_on_short_page: p.stop_on_short_page,
            max_pages: p.max_pages,
            total_pages,
            capture,
        })
    }

    fn records(&mut self, at: &str, r: &Records) -> Option<CompiledRecords> {
        let path = self.jsonata(&format!("{at}.path"), &r.path);
        let primary_key = self.jsonata(&format!("{at}.primary_key"), &r.primary_key);
        let updated_at = r
            .updated_at
            .as_deref()
            .and_then(|e| self.jsonata(&format!("{at}.updated_at"), e));
        let deleted = r
            .deleted
            .as_deref()
            .and_then(|e| self.jsonata(&format!("{at}.deleted"), e));
        Some(CompiledRecords {
            path: path?,
            primary_key: primary_key?,
            updated_at,
            deleted,
        })
    }
}

impl Compiler<'_> {
    /// A resource's `fields`: each key a field of the model (or `custom_fields.<name>`),
    /// each value a JSONata expression over the provider record.
    fn fields(
        &mut self,
        at: &str,
        fields: &IndexMap<String, String>,
        model: &UnifiedModel,
    ) -> Vec<FieldExpr> {
        let mut out = Vec::new();
        for (key, source) in fields {
            let path = format!("{at}.fields.{key}");
            let target = match key.strip_prefix("custom_fields.") {
                Some("") => {
                    self.problem(&path, "name the custom field: `custom_fields.<name>`");
                    continue;
                }
                Some(name) => FieldTarget::Custom(name.to_string()),
                None if RESERVED_FIELDS.contains(&key.as_str()) => {
                    self.problem(
                        &path,
                        format!("`{key}` is set by the pipeline itself and cannot be mapped"),
                    );
                    continue;
                }
                None if !model.has_field(key) => {
                    let known: Vec<&str> = model
                        .field_names()
                        .filter(|f| !RESERVED_FIELDS.contains(f))
                        .collect();
                    self.problem(
                        &path,
                        format!(
                            "the unified model {} has no field `{key}`; its fields: {} (or use `custom_fields.<name>`)",
                            model.name,
                            known.join(", ")
                        ),
                    );
                    continue;
                }
                None => FieldTarget::Unified(key.clone()),
            };
            if let Some(expr) = self.jsonata(&path, source) {
                out.push(FieldExpr { target, expr });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::load::parse_spec;

    fn spec_with(resource_extra: &str, mapping: &str) -> String {
        format!(
            r#"spec_version: 1
name: demo
base_url: "https://{{{{ config.subdomain }}}}.example.com"
allowed_hosts: ["*.example.com"]
config:
  subdomain: {{required: true}}
auth: {{type: bearer}}
resources:
  contacts:
    model: crm.contact
    request: {{path: /contacts}}
    pagination: {{type: cursor, cursor_path: next, param: after}}
    records: {{path: items, primary_key: id}}
{resource_extra}    mapping: |
      {mapping}
"#
        )
    }

    #[test]
    fn a_good_spec_compiles() {
        let text = spec_with("", "{ 'id': $string(id), 'first_name': first }");
        let spec = compile(parse_spec(Path::new("demo.yaml"), &text).unwrap()).unwrap();
        let r = spec.resource("contacts").unwrap();
        assert!(r.mapped_fields.contains("first"));
        assert!(spec.credentials_used.contains("access_token"));
    }

    #[test]
    fn a_connect_section_that_does_not_fit_the_auth_is_refused() {
        let text = spec_with("", "{ 'id': id }").replace(
            "auth: {type: bearer}",
            "auth: {type: bearer}\nconnect:\n  authorize: {url: https://example.com/authorize, resource_scopes: {tickets: [read]}}\n  fields:\n    api_key: {label: API key}",
        );
        let err = compile(parse_spec(Path::new("demo.yaml"), &text).unwrap()).unwrap_err();
        let shown = err.to_string();
        assert!(
            shown.contains(
                "at `connect.authorize`: authorization needs `auth.type: oauth2_refresh_token`"
            ),
            "{shown}"
        );
        assert!(
            shown.contains("at `connect.fields.api_key`: the spec's auth does not read `credentials.api_key`; it reads: access_token"),
            "{shown}"
        );
    }

    #[test]
    fn an_invalid_mapping_names_file_line_and_path() {
        let text = spec_with("", "{ 'id': id, 'first_name': first[ }");
        let err = compile(parse_spec(Path::new("demo.yaml"), &text).unwrap()).unwrap_err();
        let shown = err.to_string();
        assert!(
            shown.starts_with("demo.yaml:14: at `resources.contacts.mapping`: invalid JSONata"),
            "{shown}"
        );
    }

    #[test]
    fn unknown_models_config_and_since_formats_are_reported_together() {
        let text = spec_with(
            "    incremental: {since_format: yesterday}\n",
            "{ 'id': id }",
        )
        .replace("crm.contact", "crm.person")
        .replace("config.subdomain", "config.tenant");
        let err = compile(parse_spec(Path::new("demo.yaml"), &text).unwrap()).unwrap_err();
        let shown = err.to_string();
        assert!(
            shown.contains("unknown unified model `crm.person`"),
            "{shown}"
        );
        assert!(shown.contains("`config.tenant`"), "{shown}");
        assert!(
            shown.contains("`yesterday` is not a since format"),
            "{shown}"
        );
        assert!(err.problems().len() >= 3);
    }

    #[test]
    fn xml_bodies_need_post_and_no_json_body_and_compile_their_response() {
        let xml = spec_with(
            "    response: {format: xml, arrays: [Item]}\n",
            "{ 'id': id }",
        )
        .replace(
            "request: {path: /contacts}",
            "request: {method: POST, path: /contacts, xml_body: '<q><p>{{ cursor }}</p></q>'}",
        );
        let spec = compile(parse_spec(Path::new("demo.yaml"), &xml).unwrap()).unwrap();
        let r = spec.resource("contacts").unwrap();
        assert!(r.response.xml && r.response.arrays.contains("Item"));
        assert!(r.full.request.xml_body.is_some());
        assert!(!spec.response.xml, "the spec's own default stays JSON");

        let bad = spec_with("", "{ 'id': id }").replace(
            "request: {path: /contacts}",
            "request: {path: /contacts, body: {a: 1}, xml_body: '<q>{{ nope }}</q>'}",
        );
        let err = compile(parse_spec(Path::new("demo.yaml"), &bad).unwrap()).unwrap_err();
        let shown = err.to_string();
        assert!(shown.contains("a GET request has no body"), "{shown}");
        assert!(
            shown.contains("`body` (JSON) or `xml_body`, not both"),
            "{shown}"
        );
        assert!(shown.contains("`nope`"), "{shown}");
    }

    const DISCOVERY: &str = r#"discovery:
  contact_fields:
    request: {path: /fields}
    records: {path: items, primary_key: name}
    field: "{'name': name, 'type': kind, 'custom': custom}"
"#;

    #[test]
    fn fields_are_for_resources_with_a_discovery_and_the_name_must_exist() {
        let uses_fields = spec_with("", "{ 'id': id }").replace(
            "request: {path: /contacts}",
            "request: {path: /contacts, query: {select: \"{{ fields.all | join(',') }}\"}}",
        );
        let err = compile(parse_spec(Path::new("demo.yaml"), &uses_fields).unwrap()).unwrap_err();
        assert!(
            err.to_string()
                .contains("reads `fields.all`, which is not available here"),
            "{err}"
        );
        let wrong_name = format!(
            "{}{DISCOVERY}",
            uses_fields.replace(
                "    model: crm.contact",
                "    model: crm.contact\n    discovery: fields"
            )
        );
        let err = compile(parse_spec(Path::new("demo.yaml"), &wrong_name).unwrap()).unwrap_err();
        assert!(
            err.to_string()
                .contains("no `discovery` entry is named `fields`; the spec has: contact_fields"),
            "{err}"
        );
        let good = wrong_name.replace("discovery: fields", "discovery: contact_fields");
        let spec = compile(parse_spec(Path::new("demo.yaml"), &good).unwrap()).unwrap();
        assert_eq!(
            spec.schema_subject("contacts").as_deref(),
            Some("contact_fields")
        );
        assert_eq!(
            spec.discovery_of("contacts").unwrap().every.as_secs(),
            86_400
        );
    }

    #[test]
    fn custom_objects_map_into_custom_object_and_name_the_object() {
        let objects = r#"custom_objects:
  list:
    request: {path: /objects}
    records: {path: items, primary_key: name}
    field: "{'name': name}"
  discovery:
    request: {path: "/objects/{{ object }}/fields"}
    records: {path: items, primary_key: name}
    field: "{'name': name}"
  resource:
    model: crm.contact
    request: {path: "/objects/{{ object }}", query: {select: "{{ fields.all | join(',') }}"}}
    pagination: {type: none}
    records: {path: items, primary_key: id}
    mapping: "{'fields': $}"
"#;
        let text = format!("{}{objects}", spec_with("", "{ 'id': id }"));
        let err = compile(parse_spec(Path::new("demo.yaml"), &text).unwrap()).unwrap_err();
        assert!(
            err.to_string()
                .contains("custom objects map into `custom.object`, not `crm.contact`"),
            "{err}"
        );
        let text = text.replace(
            "    model: crm.contact\n    request: {path: \"/objects",
            "    model: custom.object\n    request: {path: \"/objects",
        );
        let spec = compile(parse_spec(Path::new("demo.yaml"), &text).unwrap()).unwrap();
        let r = spec.resource("custom:Project__c").unwrap();
        assert_eq!(r.model.name, "custom.object");
        assert_eq!(
            spec.schema_subject("custom:Project__c").as_deref(),
            Some("custom:Project__c")
        );
        assert!(spec.resource("custom:").is_none());
        // `object` is a custom object's alone.
        let leak =
            spec_with("", "{ 'id': id }").replace("path: /contacts", "path: \"/{{ object }}\"");
        let err = compile(parse_spec(Path::new("demo.yaml"), &leak).unwrap()).unwrap_err();
        assert!(err.to_string().contains("reads `object`"), "{err}");
    }
}
