//! Building one page's request from the spec's templates and the page state.

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, ACCEPT, CONTENT_TYPE};
use serde_json::Value;
use url::Url;

use super::{ErrorKind, PageState, ResourceRun};
use crate::http::auth::AuthParts;
use crate::http::guard;
use crate::spec::compile::{CompiledDetail, CompiledRequest};
use crate::spec::model::{Method, PaginationKind};

/// A request ready to send (credentials are added per attempt).
pub(crate) struct PreparedRequest {
    pub method: Method,
    pub url: Url,
    pub headers: Vec<(String, String)>,
    pub body: Option<Value>,
    /// `xml_body`, rendered (values escaped).
    pub xml_body: Option<String>,
    /// The answers are XML: what `Accept` asks for.
    pub accept_xml: bool,
}

impl PreparedRequest {
    pub fn method_name(&self) -> &'static str {
        self.method.as_str()
    }

    /// The path only: query strings may carry API keys.
    pub fn path_for_errors(&self) -> String {
        self.url.path().to_string()
    }
}

/// Resolve a URL the provider gave (absolute, or relative to the base URL).
pub(crate) fn resolve(run: &ResourceRun, link: &str) -> Result<Url, ErrorKind> {
    run.base_url.join(link).map_err(|e| ErrorKind::Url {
        url: link.to_string(),
        message: e.to_string(),
    })
}

pub(crate) fn prepare(run: &ResourceRun, state: &PageState) -> Result<PreparedRequest, ErrorKind> {
    let spec = &run.spec;
    if run.fields.is_none() {
        if let Some(subject) = run.reads_resource_with_discovery() {
            return Err(ErrorKind::Config(format!(
                "resource `{}` names the connection's fields (discovery `{subject}`): discover \
                 them first (`ResourceRun::with_schema`)",
                run.resource
            )));
        }
    }
    let plan = run.plan();
    let pg = &plan.pagination;
    let none = minijinja::Value::from(());
    let (cursor, offset, page) = match state {
        PageState::First => (
            none.clone(),
            if pg.kind == PaginationKind::Offset {
                minijinja::Value::from(pg.start)
            } else {
                none.clone()
            },
            if pg.kind == PaginationKind::PageNumber {
                minijinja::Value::from(pg.start)
            } else {
                none.clone()
            },
        ),
        PageState::Cursor { cursor, .. } => (
            minijinja::Value::from(cursor.as_str()),
            none.clone(),
            none.clone(),
        ),
        PageState::Offset { offset, .. } => {
            (none.clone(), minijinja::Value::from(*offset), none.clone())
        }
        PageState::Page { page, .. } => (none.clone(), none.clone(), minijinja::Value::from(*page)),
        PageState::Url { .. } => (none.clone(), none.clone(), none.clone()),
    };
    let ctx = minijinja::context! {
        config => run.config.clone(),
        cursor => cursor.clone(),
        offset => offset.clone(),
        page => page.clone(),
        page_size => run.page_size,
        since => run.since_text.clone(),
        resource => run.resource.clone(),
        object => run.object.clone(),
        fields => run.fields.clone(),
        captured => state.captured().cloned().unwrap_or_default(),
        ids => run.fetch_ids().to_vec(),
        ids_as_objects => run.fetch_ids().iter().map(|id| minijinja::context! { id => id }).collect::<Vec<_>>(),
        ..run.subscribe_vars()
    };
    if let PageState::Url { url, .. } = state {
        let url = resolve(run, url)?;
        guard::check_url(&url, &spec.hosts, run.options.allow_private_hosts)?;
        return Ok(PreparedRequest {
            method: Method::Get,
            url,
            headers: render_headers(run, &plan.request, &ctx)?,
            body: None,
            xml_body: None,
            accept_xml: run.response().xml,
        });
    }
    let mut paging = Vec::new();
    if let Some(param) = &pg.param {
        let value = [&cursor, &offset, &page].into_iter().find(|v| !v.is_none());
        if let Some(v) = value {
            paging.push((param.clone(), v.to_string()));
        }
    }
    if let Some(limit) = &pg.limit_param {
        paging.push((limit.clone(), run.page_size.to_string()));
    }
    render(run, &plan.request, &ctx, &paging)
}

/// The request reading one listed record in full (`detail`): its templates see the list
/// entry as `record`.
pub(crate) fn prepare_detail(
    run: &ResourceRun,
    detail: &CompiledDetail,
    record: &Value,
) -> Result<PreparedRequest, ErrorKind> {
    let ctx = minijinja::context! {
        config => run.config.clone(),
        page_size => run.page_size,
        since => run.since_text.clone(),
        resource => run.resource.clone(),
        object => run.object.clone(),
        fields => run.fields.clone(),
        record => minijinja::Value::from(minijinja::value::Serde(record)),
    };
    render(run, &detail.request, &ctx, &[])
}

fn render_headers(
    run: &ResourceRun,
    request: &CompiledRequest,
    ctx: &minijinja::Value,
) -> Result<Vec<(String, String)>, ErrorKind> {
    let spec = &run.spec;
    let mut headers = Vec::new();
    for (k, t) in spec.headers.iter().chain(request.headers.iter()) {
        let v = spec.templates.render(t, ctx).map_err(ErrorKind::Template)?;
        headers.push((k.clone(), v));
    }
    Ok(headers)
}

/// A request from its templates: the base URL joined with the path, the spec's and the
/// request's query (empty values left out) then `paging`, checked against the allowed
/// hosts; headers and body rendered.
fn render(
    run: &ResourceRun,
    request: &CompiledRequest,
    ctx: &minijinja::Value,
    paging: &[(String, String)],
) -> Result<PreparedRequest, ErrorKind> {
    let spec = &run.spec;
    let render = |id| spec.templates.render(id, ctx).map_err(ErrorKind::Template);
    let path = render(&request.path)?;
    let joined = format!(
        "{}/{}",
        run.base_url.as_str().trim_end_matches('/'),
        path.trim_start_matches('/')
    );
    let mut url = Url::parse(&joined).map_err(|e| ErrorKind::Url {
        url: joined.clone(),
        message: e.to_string(),
    })?;
    {
        let mut q = url.query_pairs_mut();
        for (k, t) in spec.query.iter().chain(request.query.iter()) {
            let v = render(t)?;
            if !v.is_empty() {
                q.append_pair(k, &v);
            }
        }
        for (k, v) in paging {
            q.append_pair(k, v);
        }
    }
    if url.query() == Some("") {
        url.set_query(None);
    }
    guard::check_url(&url, &spec.hosts, run.options.allow_private_hosts)?;
    let body = match &request.body {
        Some(b) => spec
            .templates
            .render_body(b, ctx)
            .map_err(ErrorKind::Template)?,
        None => None,
    };
    let xml_body = match &request.xml_body {
        Some(t) => {
            let ctx =
                minijinja::context! { credentials => run.body_credentials.clone(), ..ctx.clone() };
            Some(
                spec.templates
                    .render(t, &ctx)
                    .map_err(ErrorKind::Template)?,
            )
        }
        None => None,
    };
    Ok(PreparedRequest {
        method: request.method,
        url,
        headers: render_headers(run, request, ctx)?,
        body,
        xml_body,
        accept_xml: run.response().xml,
    })
}

pub(crate) fn build(
    http: &reqwest::Client,
    req: &PreparedRequest,
    auth: AuthParts,
) -> reqwest::RequestBuilder {
    let mut url = req.url.clone();
    if !auth.query.is_empty() {
        let mut q = url.query_pairs_mut();
        for (k, v) in &auth.query {
            q.append_pair(k, v);
        }
    }
    let mut b = http.request(req.method.to_http(), url);
    let mut headers = HeaderMap::new();
    headers.insert(ACCEPT, HeaderValue::from_static(accept(req)));
    if req.xml_body.is_some() {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(XML_CONTENT_TYPE));
    }
    // The spec's headers replace defaults of the same name rather than repeating them.
    for (k, v) in &req.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            headers.insert(name, value);
        }
    }
    for (name, value) in auth.headers {
        headers.insert(name, value);
    }
    b = b.headers(headers);
    if let Some(body) = &req.body {
        b = b.json(body);
    } else if let Some(xml) = &req.xml_body {
        b = b.body(xml.clone());
    }
    b
}

/// SOAP 1.1's content type; a spec's `Content-Type` header replaces it (SOAP 1.2 is
/// `application/soap+xml`).
const XML_CONTENT_TYPE: &str = "text/xml; charset=utf-8";

fn accept(req: &PreparedRequest) -> &'static str {
    if req.accept_xml {
        "application/xml, text/xml, application/soap+xml"
    } else {
        "application/json"
    }
}
