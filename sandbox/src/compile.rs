//! A profile compiled once at start: every JSONata expression, the fixed
//! answers and one route table per HTTP method. A profile that does not compile
//! is refused with the place of the problem.

use std::collections::HashMap;

use tributary::mapping::jsonata::Jsonata;

use crate::fields::kind_of;
use crate::profile::{AuthKind, FieldValues, Inputs, Profile, ResourceProfile};
use crate::respond::FixedAnswer;
use crate::SandboxError;

/// The resources a route may serve, each with its optional `when` predicate.
pub type Candidates = Vec<Candidate>;

/// One resource a route serves: when, and which requests it refuses with what answer.
pub struct Candidate {
    pub resource: String,
    pub when: Option<Jsonata>,
    pub refuse: Vec<(Jsonata, FixedAnswer)>,
}

/// The paging inputs' expressions (over the request context).
pub struct CompiledInputs {
    pub cursor: Option<Jsonata>,
    pub offset: Option<Jsonata>,
    pub page: Option<Jsonata>,
    pub limit: Option<Jsonata>,
    pub since: Option<Jsonata>,
    pub as_of: Option<Jsonata>,
    pub ids: Option<Jsonata>,
}

/// One resource's expressions.
pub struct CompiledResource {
    pub record: Jsonata,
    pub body: Jsonata,
    /// `response.status`.
    pub status: Option<Jsonata>,
    pub headers: Vec<(String, Jsonata)>,
    pub inputs: CompiledInputs,
    /// `named_properties.names`.
    pub property_names: Option<Jsonata>,
    /// `named_properties.unknown`.
    pub unknown_property: Option<FixedAnswer>,
    /// `over_limit`.
    pub over_limit: Option<FixedAnswer>,
    /// `select_query`'s refusals.
    pub select_answers: Option<SelectAnswers>,
    /// `delta.removed` and `delta.invalid_token`.
    pub delta: Option<(Jsonata, FixedAnswer)>,
}

/// How a resource reading queries refuses one.
pub struct SelectAnswers {
    pub invalid_field: FixedAnswer,
    pub malformed: FixedAnswer,
    pub invalid_type: FixedAnswer,
}

/// A describe route's expressions.
pub struct CompiledSchemaRoute {
    pub body: Jsonata,
    pub not_found: FixedAnswer,
}

/// The whole profile's expressions and route tables.
pub struct Compiled {
    /// Method (upper case) -> path pattern -> index into `profile.schema_routes`
    /// and `schema_answers`; looked up before the data routes.
    pub schema_routes: HashMap<String, matchit::Router<usize>>,
    pub schema_answers: Vec<CompiledSchemaRoute>,
    pub resources: HashMap<String, CompiledResource>,
    /// Method (upper case) -> path pattern -> candidates.
    pub routes: HashMap<String, matchit::Router<Candidates>>,
    pub unauthorized: FixedAnswer,
    pub throttle: Option<FixedAnswer>,
    pub invalid_grant: Option<FixedAnswer>,
    pub token_body: Option<Jsonata>,
    /// `oauth.authorize.callback`: further parameters of the redirect back.
    pub authorize_callback: Option<Jsonata>,
    /// `oauth.identity`: the routes by method, and each one's body and unknown-token answer.
    pub identity_routes: HashMap<String, matchit::Router<usize>>,
    pub identity_answers: Vec<(Jsonata, FixedAnswer)>,
    /// Headers on every data answer.
    pub global_headers: Vec<(String, Jsonata)>,
    /// `webhooks`: the deliveries' expressions and the subscription routes.
    pub webhooks: Option<crate::webhooks::CompiledWebhooks>,
}

fn expr(at: &str, src: &str) -> Result<Jsonata, String> {
    Jsonata::compile(src).map_err(|e| format!("{at}: {e}"))
}

pub fn compile(profile: &Profile) -> Result<Compiled, SandboxError> {
    let fail = |message: String| SandboxError::Profile {
        file: profile.name.clone(),
        message,
    };
    if profile.auth.kind == AuthKind::Oauth1 && profile.auth.oauth1.is_none() {
        return Err(fail(
            "auth: type oauth1 needs `oauth1` (consumer_key, consumer_secret, token_id, token_secret, realm)".into(),
        ));
    }
    let mut resources = HashMap::new();
    let mut by_route: HashMap<(String, String), Candidates> = HashMap::new();
    for (name, r) in &profile.resources {
        resources.insert(
            name.clone(),
            compile_resource(name, r, &profile.field_values).map_err(fail)?,
        );
        for route in &r.routes {
            let when = route
                .when
                .as_deref()
                .map(|w| expr(&format!("resources.{name}.routes.when"), w))
                .transpose()
                .map_err(fail)?;
            let refuse = route
                .refuse
                .iter()
                .map(|r| {
                    let at = format!("resources.{name}.routes.refuse");
                    Ok((expr(&at, &r.when)?, FixedAnswer::compile(&at, &r.answer)?))
                })
                .collect::<Result<_, String>>()
                .map_err(fail)?;
            by_route
                .entry((route.method.to_uppercase(), route.path.clone()))
                .or_default()
                .push(Candidate {
                    resource: name.clone(),
                    when,
                    refuse,
                });
        }
    }
    let mut routes: HashMap<String, matchit::Router<Candidates>> = HashMap::new();
    for ((method, path), candidates) in by_route {
        routes
            .entry(method)
            .or_default()
            .insert(path.clone(), candidates)
            .map_err(|e| fail(format!("route {path}: {e}")))?;
    }
    let (schema_routes, schema_answers) = compile_schema_routes(profile).map_err(fail)?;
    let oauth = profile.oauth.as_ref();
    Ok(Compiled {
        schema_routes,
        schema_answers,
        resources,
        routes,
        unauthorized: FixedAnswer::compile("auth.unauthorized", &profile.auth.unauthorized)
            .map_err(fail)?,
        throttle: profile
            .rate_limit
            .as_ref()
            .map(|rl| FixedAnswer::compile("rate_limit.throttle", &rl.throttle))
            .transpose()
            .map_err(fail)?,
        invalid_grant: oauth
            .map(|o| FixedAnswer::compile("oauth.invalid_grant", &o.invalid_grant))
            .transpose()
            .map_err(fail)?,
        token_body: oauth
            .and_then(|o| o.response.as_deref())
            .map(|r| expr("oauth.response", r))
            .transpose()
            .map_err(fail)?,
        authorize_callback: oauth
            .and_then(|o| o.authorize.as_ref())
            .and_then(|a| a.callback.as_deref())
            .map(|c| expr("oauth.authorize.callback", c))
            .transpose()
            .map_err(fail)?,
        identity_routes: identity_routes(oauth).map_err(fail)?,
        identity_answers: oauth
            .map_or(&[][..], |o| o.identity.as_slice())
            .iter()
            .map(|r| {
                let at = "oauth.identity";
                Ok((expr(at, &r.body)?, FixedAnswer::compile(at, &r.unknown)?))
            })
            .collect::<Result<_, String>>()
            .map_err(fail)?,
        global_headers: profile
            .headers
            .iter()
            .map(|(k, v)| Ok((k.clone(), expr("headers", v)?)))
            .collect::<Result<_, String>>()
            .map_err(fail)?,
        webhooks: profile
            .webhooks
            .as_ref()
            .map(crate::webhooks::compile)
            .transpose()
            .map_err(fail)?,
    })
}

/// `oauth.identity` paths by method, each to its index.
fn identity_routes(
    oauth: Option<&crate::profile::OAuthServer>,
) -> Result<HashMap<String, matchit::Router<usize>>, String> {
    let mut routes: HashMap<String, matchit::Router<usize>> = HashMap::new();
    for (i, r) in oauth
        .map_or(&[][..], |o| o.identity.as_slice())
        .iter()
        .enumerate()
    {
        routes
            .entry(r.method.to_uppercase())
            .or_default()
            .insert(r.path.clone(), i)
            .map_err(|e| format!("oauth.identity[{i}].path `{}`: {e}", r.path))?;
    }
    Ok(routes)
}

type SchemaRoutes = (
    HashMap<String, matchit::Router<usize>>,
    Vec<CompiledSchemaRoute>,
);

fn compile_schema_routes(profile: &Profile) -> Result<SchemaRoutes, String> {
    let mut routes: HashMap<String, matchit::Router<usize>> = HashMap::new();
    let mut answers = Vec::new();
    for (i, route) in profile.schema_routes.iter().enumerate() {
        let at = format!("schema_routes[{i}]");
        routes
            .entry(route.method.to_uppercase())
            .or_default()
            .insert(route.path.clone(), i)
            .map_err(|e| format!("{at}: route {}: {e}", route.path))?;
        answers.push(CompiledSchemaRoute {
            body: expr(&format!("{at}.body"), &route.body)?,
            not_found: FixedAnswer::compile(&format!("{at}.not_found"), &route.not_found)?,
        });
    }
    Ok((routes, answers))
}

fn compile_resource(
    name: &str,
    r: &ResourceProfile,
    values: &FieldValues,
) -> Result<CompiledResource, String> {
    let at = |f: &str| format!("resources.{name}.{f}");
    for (i, f) in r.schema.custom_fields.iter().enumerate() {
        kind_of(f, values)
            .map_err(|e| format!("{}: {e}", at(&format!("schema.custom_fields[{i}]"))))?;
    }
    if r.named_properties.is_some() && r.select_query.is_some() {
        return Err(at("named_properties: give it or select_query, not both"));
    }
    let select_answers = match &r.select_query {
        Some(q) => Some(SelectAnswers {
            invalid_field: FixedAnswer::compile(
                &at("select_query.invalid_field"),
                &q.invalid_field,
            )?,
            malformed: FixedAnswer::compile(&at("select_query.malformed"), &q.malformed)?,
            invalid_type: FixedAnswer::compile(&at("select_query.invalid_type"), &q.invalid_type)?,
        }),
        None => None,
    };
    Ok(CompiledResource {
        record: expr(&at("record"), &r.record)?,
        body: expr(&at("response.body"), &r.response.body)?,
        status: r
            .response
            .status
            .as_deref()
            .map(|e| expr(&at("response.status"), e))
            .transpose()?,
        headers: r
            .response
            .headers
            .iter()
            .map(|(k, v)| Ok((k.clone(), expr(&at("response.headers"), v)?)))
            .collect::<Result<_, String>>()?,
        inputs: compile_inputs(name, &r.input)?,
        property_names: r
            .named_properties
            .as_ref()
            .map(|n| expr(&at("named_properties.names"), &n.names))
            .transpose()?,
        unknown_property: match r.named_properties.as_ref().and_then(|n| n.unknown.as_ref()) {
            Some(a) => Some(FixedAnswer::compile(&at("named_properties.unknown"), a)?),
            None => None,
        },
        over_limit: match &r.over_limit {
            Some(a) => Some(FixedAnswer::compile(&at("over_limit"), a)?),
            None => None,
        },
        select_answers,
        delta: match &r.delta {
            Some(d) => Some((
                expr(&at("delta.removed"), &d.removed)?,
                FixedAnswer::compile(&at("delta.invalid_token"), &d.invalid_token)?,
            )),
            None => None,
        },
    })
}

fn compile_inputs(name: &str, input: &Inputs) -> Result<CompiledInputs, String> {
    let one = |f: &str, src: &Option<String>| {
        src.as_deref()
            .map(|s| expr(&format!("resources.{name}.input.{f}"), s))
            .transpose()
    };
    Ok(CompiledInputs {
        cursor: one("cursor", &input.cursor)?,
        offset: one("offset", &input.offset)?,
        page: one("page", &input.page)?,
        limit: one("limit", &input.limit)?,
        since: one("since", &input.since)?,
        as_of: one("as_of", &input.as_of)?,
        ids: one("ids", &input.ids)?,
    })
}
