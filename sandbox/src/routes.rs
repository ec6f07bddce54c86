//! Data requests: match the route, pick the resource it serves (its `when`
//! predicate, and for a query route the object the query reads), then in order:
//! count it, the sandbox's budget, paging inputs, an injected fault, the
//! credential, the fields the request may see, and the page answer. Describe
//! routes (`schema_routes`) are looked up first and answered by `describe`.

use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use serde_json::{json, Map, Value};
use tributary::mapping::jsonata::truthy;

use crate::compile::{Candidate, Candidates};
use crate::faults::{self, Outcome};
use crate::paging::{self, PageRequest, Serving};
use crate::respond::{bad_request, json_response, not_found, respond, text, FixedAnswer};
use crate::select::{self, Selection};
use crate::soql::{self, ParseError, Select};
use crate::state::Sandbox;
use crate::throttle::{self, epoch_millis};
use crate::{auth, authorize, describe, lock, oauth, subscriptions};

/// The resource a request is for, with the query it carries when the resource
/// reads one (`select_query`).
struct Dispatch {
    resource: String,
    statement: Option<Statement>,
}

/// A query as dispatch read it.
enum Statement {
    /// FROM the resource's object.
    Read(Select),
    /// Not readable: answered as malformed.
    Unreadable(ParseError),
    /// FROM an object no resource at the route serves: answered as an invalid type.
    UnknownObject(Select),
}

/// Every request the control API does not answer.
pub async fn provider(
    State(s): State<Arc<Sandbox>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    lock(&s.stats).requests += 1;
    let path = uri.path().to_string();
    if let Some(o) = &s.profile.oauth {
        if method == Method::POST && path == o.path {
            return oauth::token_endpoint(&s, o, &headers, &body);
        }
        if let Some(a) = o.authorize.as_ref().filter(|a| a.path == path) {
            return match method {
                Method::POST => authorize::decide(&s, o, a, &body),
                _ => authorize::consent_page(&s, o, a, uri.query().unwrap_or("")),
            };
        }
        if let Some(found) = s
            .compiled
            .identity_routes
            .get(method.as_str())
            .and_then(|r| r.at(&path).ok())
        {
            let params: Map<String, Value> = found
                .params
                .iter()
                .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
                .collect();
            let index = *found.value;
            let (_, request) = request_context(&uri, params.clone(), &headers, &body);
            return oauth::identity(&s, index, &params, &headers, &request);
        }
    }
    let arrival = auth::arrive(&s, &method, &uri, &headers);
    if let Some(answer) = subscriptions::route(&s, &method, &uri, &headers, &body, &arrival) {
        return answer;
    }
    if let Some((index, params)) = describe::route(&s, method.as_str(), &path) {
        let (query, request) = request_context(&uri, params, &headers, &body);
        return describe_request(&s, index, &headers, &query, request, &arrival);
    }
    let Some(matched) = s
        .compiled
        .routes
        .get(method.as_str())
        .and_then(|router| router.at(&path).ok())
    else {
        return not_found(&path);
    };
    let params: Map<String, Value> = matched
        .params
        .iter()
        .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
        .collect();
    let (query, request) = request_context(&uri, params, &headers, &body);
    let Some(dispatch) = dispatch(&s, matched.value, &request) else {
        return bad_request(format!("no resource at {path} matches this request"));
    };
    if let Some(answer) = refusal(matched.value, &dispatch.resource, &request) {
        lock(&s.stats).refused += 1;
        return answer;
    }
    count_data_request(&s, &dispatch.resource);
    if let Some(throttled) = throttle::over_budget(&s) {
        return throttled;
    }
    serve(&s, &dispatch, &headers, &query, request, &arrival).await
}

/// The request as the profile's expressions read it, `{query, body, params,
/// headers, path}`, and its query parameters.
pub(crate) fn request_context(
    uri: &Uri,
    params: Map<String, Value>,
    headers: &HeaderMap,
    body: &Bytes,
) -> (Map<String, Value>, Value) {
    let query: Map<String, Value> =
        url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
            .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
            .collect();
    let header_map: Map<String, Value> = headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_string(), json!(v.to_str().ok()?))))
        .collect();
    let body_json = request_body(headers, body);
    let request = json!({"query": query, "body": body_json, "params": params,
        "headers": header_map, "path": uri.path()});
    (query, request)
}

/// A JSON body, or an XML one (by its `Content-Type`) decoded as the engine decodes
/// answers, so a SOAP request's page number is a path like `body.Envelope.Body.Page`.
fn request_body(headers: &HeaderMap, body: &Bytes) -> Value {
    let is_xml = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.contains("xml"));
    if is_xml {
        tributary::mapping::xml::decode(body, &Default::default()).unwrap_or(Value::Null)
    } else {
        serde_json::from_slice(body).unwrap_or(Value::Null)
    }
}

/// A describe request: counted, then the budget, the credential and the answer.
fn describe_request(
    s: &Sandbox,
    index: usize,
    headers: &HeaderMap,
    query: &Map<String, Value>,
    request: Value,
    arrival: &auth::Arrival,
) -> Response {
    {
        let mut st = lock(&s.stats);
        st.schema_requests += 1;
        st.budgeted_at(epoch_millis(SystemTime::now()));
    }
    if let Some(throttled) = throttle::over_budget(s) {
        return throttled;
    }
    if !auth::authorized(s, headers, query, arrival) {
        lock(&s.stats).unauthorized += 1;
        return s.compiled.unauthorized.render(&request);
    }
    describe::answer(s, index, request, base_url(headers))
}

/// `http://<Host header>`, for links in answers.
fn base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    format!("http://{host}")
}

/// The first candidate whose `when` holds and, if it reads a query, whose object
/// the query is FROM; a query that cannot be read, or reads an object no
/// candidate serves, goes to the first candidate reading queries, which refuses it.
fn dispatch(s: &Sandbox, candidates: &Candidates, request: &Value) -> Option<Dispatch> {
    let mut unreadable = None;
    for Candidate {
        resource: name,
        when,
        ..
    } in candidates
    {
        if !when
            .as_ref()
            .is_none_or(|w| truthy(&w.eval_json(request).unwrap_or(None)))
        {
            continue;
        }
        let found = |statement| {
            Some(Dispatch {
                resource: name.clone(),
                statement,
            })
        };
        let Some(sq) = &s.profile.resources[name].select_query else {
            return found(None);
        };
        // A query locator's page carries no query: its cursor has the selection.
        let Some(q) = sq.statement(request).as_str() else {
            return found(None);
        };
        let refused = match soql::parse(q) {
            Ok(st) if st.object.eq_ignore_ascii_case(&sq.object) => {
                return found(Some(Statement::Read(st)))
            }
            Ok(st) => Statement::UnknownObject(st),
            Err(e) => Statement::Unreadable(e),
        };
        if unreadable.is_none() {
            unreadable = found(Some(refused));
        }
    }
    unreadable
}

/// The answer of the first refusal of the dispatched candidate that holds. A `when`
/// that fails to evaluate (an unknown function, a type error) is the profile's own
/// bug: it is answered as a 500 naming the rule, rather than read as false and
/// silently serving what the profile meant to refuse.
fn refusal(candidates: &Candidates, resource: &str, request: &Value) -> Option<Response> {
    let candidate = candidates.iter().find(|c| c.resource == resource)?;
    for (i, (when, answer)) in candidate.refuse.iter().enumerate() {
        match when.eval_json(request) {
            Ok(v) if truthy(&v) => return Some(answer.render(request)),
            Ok(_) => {}
            Err(e) => {
                let message = json!({"error": format!(
                    "sandbox profile: resources.{resource}.routes.refuse[{i}].when failed: {e}"
                )});
                return Some(json_response(500, &message, Vec::new()));
            }
        }
    }
    None
}

fn count_data_request(s: &Sandbox, resource: &str) {
    let mut st = lock(&s.stats);
    st.data_requests += 1;
    *st.by_resource.entry(resource.to_string()).or_default() += 1;
    let now_ms = epoch_millis(SystemTime::now());
    if st.first_data_request_ms == 0 {
        st.first_data_request_ms = now_ms;
    }
    st.last_data_request_ms = now_ms;
    st.budgeted_at(now_ms);
}

async fn serve(
    s: &Sandbox,
    dispatch: &Dispatch,
    headers: &HeaderMap,
    query: &Map<String, Value>,
    request: Value,
    arrival: &auth::Arrival,
) -> Response {
    let resource = dispatch.resource.as_str();
    let rp = &s.profile.resources[resource];
    let compiled = &s.compiled.resources[resource];
    let page = match paging::read_inputs(rp, &compiled.inputs, resource, &request) {
        Ok(p) => p,
        Err(message) => {
            if let (Some((_, refused)), true) =
                (&compiled.delta, message == paging::DELTA_TOKEN_REFUSED)
            {
                return refused.render(&request);
            }
            if let (Some(refused), Some(n)) = (
                &compiled.over_limit,
                message.strip_prefix(paging::OVER_LIMIT),
            ) {
                let ctx = json!({"limit": n.parse::<u64>().ok(), "max_limit": rp.max_limit, "request": request});
                return refused.render(&ctx);
            }
            return bad_request(message);
        }
    };
    let mut repeat_cursor = false;
    if let Some(kind) = s.faults.take(resource, page.number()) {
        match faults::inject(s, resource, &kind, &request).await {
            Outcome::Answer(answer) => return answer,
            Outcome::Serve { repeat_cursor: r } => repeat_cursor = r,
        }
    }
    if !auth::authorized(s, headers, query, arrival) {
        lock(&s.stats).unauthorized += 1;
        return s.compiled.unauthorized.render(&request);
    }
    let (selection, selection_id) = match selection(s, dispatch, &page, &request) {
        Ok(chosen) => chosen,
        Err(answer) => return *answer,
    };
    let serving = Serving {
        selection: &selection,
        selection_id,
        repeat_cursor,
        base_url: base_url(headers),
    };
    let ctx = paging::page_context(s, resource, compiled, &page, &serving, request);
    let mut resp_headers = throttle::rate_headers(s);
    for (k, e) in &compiled.headers {
        if let Ok(Some(v)) = e.eval_json(&ctx) {
            if !v.is_null() {
                resp_headers.push((k.clone(), text(&v)));
            }
        }
    }
    let body = compiled
        .body
        .eval_json(&ctx)
        .ok()
        .flatten()
        .unwrap_or(Value::Null);
    let status = compiled
        .status
        .as_ref()
        .and_then(|e| e.eval_json(&ctx).ok().flatten())
        .and_then(|v| v.as_u64())
        .and_then(|n| u16::try_from(n).ok())
        .unwrap_or(200);
    respond(rp.response.format, status, &body, resp_headers)
}

/// What the request may see of each record, and the selection id its next
/// cursor carries; or the answer refusing its query.
fn selection(
    s: &Sandbox,
    dispatch: &Dispatch,
    page: &PageRequest,
    request: &Value,
) -> Result<(Selection, Option<usize>), Box<Response>> {
    let resource = dispatch.resource.as_str();
    let rp = &s.profile.resources[resource];
    let compiled = &s.compiled.resources[resource];
    if let (Some(np), Some(names)) = (&rp.named_properties, &compiled.property_names) {
        let asked = names.eval_json(request).ok().flatten();
        let selection = select::named_properties(np, asked);
        if let (Some(refusal), Selection::Properties { under: None, names }) =
            (&compiled.unknown_property, &selection)
        {
            let known = match lock(&s.data).get_mut(resource) {
                Some(set) => set.fields(compiled),
                None => Default::default(),
            };
            let mut unknown: Vec<&String> = names.iter().filter(|n| !known.contains(*n)).collect();
            unknown.sort();
            if let Some(name) = unknown.first() {
                let ctx = json!({"name": name, "request": request});
                return Err(Box::new(refusal.render(&ctx)));
            }
        }
        return Ok((selection, None));
    }
    let (Some(sq), Some(answers)) = (&rp.select_query, &compiled.select_answers) else {
        return Ok((Selection::Whole, None));
    };
    let q = sq.statement(request).clone();
    let refuse = |answer: &FixedAnswer, ctx: Value| Err(Box::new(answer.render(&ctx)));
    match &dispatch.statement {
        // Neither a query nor a locator's cursor: nothing says what to read.
        None if page.cursor.is_none() => {
            let message = format!("the query `{}` is missing", sq.param);
            refuse(&answers.malformed, json!({"message": message, "query": q}))
        }
        None => match page.cursor_selection {
            None => Ok((Selection::Whole, None)),
            Some(id) => match s.selections.get(id) {
                Some(keys) => Ok((Selection::Fields(keys), Some(id))),
                None => Err(Box::new(bad_request(format!(
                    "invalid cursor {}",
                    page.cursor.as_deref().unwrap_or_default()
                )))),
            },
        },
        Some(Statement::Unreadable(e)) => {
            refuse(&answers.malformed, json!({"message": e.0, "query": q}))
        }
        Some(Statement::UnknownObject(st)) => refuse(
            &answers.invalid_type,
            json!({"object": st.object, "query": q}),
        ),
        Some(Statement::Read(st)) => {
            let fields = match lock(&s.data).get_mut(resource) {
                Some(set) => set.fields(compiled),
                None => return Ok((Selection::Whole, None)),
            };
            match select::selected_fields(st, sq, &fields) {
                Ok(keys) => {
                    let keys = Arc::new(keys);
                    let id = s.selections.register(&keys);
                    Ok((Selection::Fields(keys), Some(id)))
                }
                Err(field) => refuse(
                    &answers.invalid_field,
                    json!({"field": field, "object": st.object, "query": q}),
                ),
            }
        }
    }
}
