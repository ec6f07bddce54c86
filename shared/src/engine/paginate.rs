//! After a page: its records, and where the next page is (or that this was the last).

use reqwest::header::HeaderMap;
use serde_json::Value;

use super::{request, ErrorKind, PageState, ResourceRun};
use crate::domain::Captured;
use crate::mapping::jsonata::{truthy, Jsonata};
use crate::spec::model::PaginationKind;

pub(crate) struct Step {
    pub records: Vec<Value>,
    pub next: Option<PageState>,
    /// The page's delta link (`incremental.delta_link`), resolved against the base URL.
    pub delta_link: Option<String>,
}

fn eval(expr: &Jsonata, body: &Value, what: &'static str) -> Result<Option<Value>, ErrorKind> {
    expr.eval_json(body)
        .map_err(|message| ErrorKind::Evaluation { what, message })
}

fn text(v: Option<Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.is_empty() => Some(s),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The key under which a next-page pointer must not repeat.
pub(crate) fn repeat_key(state: &PageState) -> Option<(&'static str, String)> {
    match state {
        PageState::Cursor { cursor, .. } => Some(("cursor", cursor.clone())),
        PageState::Url { url, .. } => Some(("next-page URL", url.clone())),
        _ => None,
    }
}

fn number(v: Option<Value>) -> Option<u64> {
    let v = v?;
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
}

/// What the run carries to its next page: read from the first page's answer, then kept.
fn captured(
    capture: &[(String, Jsonata)],
    state: &PageState,
    body: &Value,
) -> Result<Captured, ErrorKind> {
    if let Some(kept) = state.captured() {
        return Ok(kept.clone());
    }
    let mut out = Captured::new();
    for (name, expr) in capture {
        if let Some(value) = text(eval(expr, body, "pagination.capture")?) {
            out.insert(name.clone(), value);
        }
    }
    Ok(out)
}

pub(crate) fn next(
    run: &ResourceRun,
    state: &PageState,
    headers: &HeaderMap,
    body: &mut Value,
    read_before: u64,
) -> Result<Step, ErrorKind> {
    let plan = run.plan();
    let pg = &plan.pagination;
    // Pointers first: records are then moved out of the body without a copy.
    let has_more = match &pg.has_more {
        Some(e) => Some(truthy(&eval(e, body, "pagination.has_more")?)),
        None => None,
    };
    let total = match &pg.total {
        Some(e) => eval(e, body, "pagination.total")?.and_then(|v| {
            v.as_u64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        }),
        None => None,
    };
    let cursor = match &pg.cursor {
        Some(e) => text(eval(e, body, "pagination.cursor_path")?),
        None => None,
    };
    let next_url = match &pg.next_url {
        Some(e) => text(eval(e, body, "pagination.next_url_path")?),
        None => None,
    };
    let total_pages = match &pg.total_pages {
        Some(e) => number(eval(e, body, "pagination.total_pages")?),
        None => None,
    };
    let captured = captured(&pg.capture, state, body)?;
    let delta_link = match run.delta_link_expr() {
        Some(e) => match text(eval(e, body, "incremental.delta_link")?) {
            Some(link) => Some(request::resolve(run, &link)?.to_string()),
            None => None,
        },
        None => None,
    };
    let found = match plan.records.path.take_json(body) {
        Some(v) => v,
        None => eval(&plan.records.path, body, "records.path")?,
    };
    let records = match found {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items,
        Some(obj @ Value::Object(_)) => vec![obj],
        Some(other) => {
            return Err(ErrorKind::Records {
                path: plan.records.path.source().to_string(),
                found: other.to_string().chars().take(60).collect(),
            })
        }
    };
    let count = records.len() as u64;
    let current_offset = match state {
        PageState::Offset { offset, .. } => *offset,
        _ => pg.start,
    };
    let position = match pg.kind {
        PaginationKind::Offset => current_offset - pg.start + count,
        _ => read_before + count,
    };
    let this_page = match state {
        PageState::Page { page, .. } => *page,
        _ => pg.start,
    };
    let stop = has_more == Some(false)
        || (pg.stop_on_empty_page && count == 0)
        || (pg.stop_on_short_page && count < run.page_size as u64)
        || total.is_some_and(|t| position >= t)
        || (pg.kind == PaginationKind::PageNumber && total_pages.is_some_and(|n| this_page >= n));
    let next = if stop {
        None
    } else {
        match pg.kind {
            PaginationKind::None => None,
            PaginationKind::Cursor => cursor.map(|cursor| PageState::Cursor { cursor, captured }),
            PaginationKind::NextUrl => match next_url {
                Some(u) => Some(PageState::Url {
                    url: request::resolve(run, &u)?.to_string(),
                    captured,
                }),
                None => None,
            },
            PaginationKind::LinkHeader => match link_next(headers) {
                Some(u) => Some(PageState::Url {
                    url: request::resolve(run, &u)?.to_string(),
                    captured,
                }),
                None => None,
            },
            PaginationKind::Offset => Some(PageState::Offset {
                offset: current_offset + count,
                captured,
            }),
            PaginationKind::PageNumber => Some(PageState::Page {
                page: this_page + 1,
                captured,
            }),
        }
    };
    Ok(Step {
        records,
        next,
        delta_link,
    })
}

/// The `rel="next"` target of an RFC 8288 Link header.
fn link_next(headers: &HeaderMap) -> Option<String> {
    headers.get_all("link").iter().find_map(|v| {
        let v = v.to_str().ok()?;
        let links = parse_link_header::parse_with_rel(v).ok()?;
        links.get("next").map(|l| l.raw_uri.clone())
    })
}
