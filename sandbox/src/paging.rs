//! Paging: the inputs a request gives (cursor, offset, page, limit, since, as
//! the profile's expressions read them), the cursors the sandbox hands out, and
//! the page context the profile's response body is evaluated over.

use chrono::{DateTime, TimeZone, Utc};
use serde_json::{json, Value};

use crate::compile::{CompiledInputs, CompiledResource};
use crate::lock;
use crate::profile::{ResourceProfile, SinceFormat};
use crate::respond::text;
use crate::select::Selection;
use crate::state::{Sandbox, Tombstone};

/// A cursor the sandbox hands out: `<resource>.<offset>.<since millis or "all">`,
/// then `~<selection id>` when the query selected fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub resource: String,
    pub offset: u64,
    pub since: Option<DateTime<Utc>>,
    pub selection: Option<usize>,
}

impl Cursor {
    pub fn encode(&self) -> String {
        let since = match self.since {
            Some(s) => s.timestamp_millis().to_string(),
            None => "all".into(),
        };
        let mut out = format!("{}.{}.{since}", self.resource, self.offset);
        if let Some(id) = self.selection {
            out.push_str(&format!("~{id}"));
        }
        out
    }

    pub fn decode(cursor: &str) -> Option<Cursor> {
        let (body, selection) = match cursor.rsplit_once('~') {
            Some((body, id)) => (body, Some(id.parse().ok()?)),
            None => (cursor, None),
        };
        let mut parts = body.rsplitn(3, '.');
        let since = parts.next()?;
        let offset = parts.next()?.parse().ok()?;
        let resource = parts.next()?.to_string();
        let since = match since {
            "all" => None,
            ms => Some(Utc.timestamp_millis_opt(ms.parse().ok()?).single()?),
        };
        Some(Cursor {
            resource,
            offset,
            since,
            selection,
        })
    }
}

/// Read a `since` value in the profile's format (quotes around it are ignored).
pub fn parse_since(v: &Value, format: &SinceFormat) -> Option<DateTime<Utc>> {
    let s = text(v);
    let s = s.trim().trim_matches('\'');
    match format {
        SinceFormat::EpochSeconds => Utc.timestamp_opt(s.parse::<f64>().ok()? as i64, 0).single(),
        SinceFormat::EpochMillis => Utc
            .timestamp_millis_opt(s.parse::<f64>().ok()? as i64)
            .single(),
        SinceFormat::Rfc3339 => DateTime::parse_from_rfc3339(s)
            .or_else(|_| DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z"))
            .ok()
            .map(|d| d.with_timezone(&Utc)),
        SinceFormat::Pattern(pattern) => chrono::NaiveDateTime::parse_from_str(s, pattern)
            .ok()
            .map(|n| n.and_utc())
            .or_else(|| {
                DateTime::parse_from_str(s, pattern)
                    .ok()
                    .map(|d| d.with_timezone(&Utc))
            }),
    }
}

/// Where in the list a request starts, and how much it wants.
#[derive(Debug, Clone)]
pub struct PageRequest {
    /// From the list's first record (0-based, whatever base the provider counts from).
    pub offset: u64,
    pub limit: u64,
    pub since: Option<DateTime<Utc>>,
    /// The cursor as the request gave it.
    pub cursor: Option<String>,
    /// The selection its cursor carries.
    pub cursor_selection: Option<usize>,
    /// Leave out the records entered after this (an as-of-entry snapshot).
    pub as_of: Option<DateTime<Utc>>,
    /// Fetch exactly these record ids (`input.ids`), in one page.
    pub ids: Option<Vec<String>>,
}

impl PageRequest {
    /// 1-based, as faults name pages.
    pub fn number(&self) -> u64 {
        self.offset / self.limit + 1
    }
}

/// The error `read_inputs` gives for a delta token the sandbox did not hand out
/// (answered with the profile's `delta.invalid_token`).
pub const DELTA_TOKEN_REFUSED: &str = "the delta token is not one the sandbox handed out";

/// The start of the error `read_inputs` gives for a page size outside the profile's
/// range (followed by the size; answered with the profile's `over_limit`).
pub const OVER_LIMIT: &str = "page size out of range: ";

/// Read the paging inputs; the error is the message of a 400.
pub fn read_inputs(
    rp: &ResourceProfile,
    inputs: &CompiledInputs,
    resource: &str,
    request: &Value,
) -> Result<PageRequest, String> {
    let input = |e: &Option<tributary::mapping::jsonata::Jsonata>| -> Option<Value> {
        e.as_ref()?
            .eval_json(request)
            .ok()
            .flatten()
            .filter(|v| !v.is_null() && v != "")
    };
    let number =
        |v: Option<Value>| v.and_then(|v| v.as_u64().or_else(|| text(&v).trim().parse().ok()));
    let asked = number(input(&inputs.limit));
    if let (Some(n), Some(_)) = (asked, &rp.over_limit) {
        if n < 1 || n > rp.max_limit {
            return Err(format!("{OVER_LIMIT}{n}"));
        }
    }
    let limit = asked
        .unwrap_or(rp.default_limit)
        .clamp(1, rp.max_limit.max(1));
    let cursor = input(&inputs.cursor).map(|v| text(&v));
    let since_input = input(&inputs.since);
    let mut since = since_input
        .as_ref()
        .and_then(|v| parse_since(v, &rp.since_format));
    if since_input.is_some() && since.is_none() {
        return Err(format!(
            "cannot read the since value as {}",
            rp.since_format
        ));
    }
    let as_of = match input(&inputs.as_of) {
        Some(v) => Some(
            parse_since(&v, &SinceFormat::Rfc3339)
                .ok_or_else(|| format!("cannot read the as-of time {} as RFC 3339", text(&v)))?,
        ),
        None => None,
    };
    let ids = inputs
        .ids
        .as_ref()
        .and_then(|e| e.eval_json(request).ok().flatten())
        .and_then(|v| match v {
            Value::Array(items) => Some(
                items
                    .iter()
                    .filter(|v| !v.is_null())
                    .map(|v| text(v).trim().to_string())
                    .collect::<Vec<_>>(),
            ),
            Value::Null => None,
            one => Some(vec![text(&one).trim().to_string()]),
        });
    if let Some(ids) = ids {
        return Ok(PageRequest {
            offset: 0,
            limit: (ids.len() as u64).max(1),
            since: None,
            cursor: None,
            cursor_selection: None,
            as_of,
            ids: Some(ids),
        });
    }
    let mut cursor_selection = None;
    if let Some(d) = &rp.delta {
        if let Some(token) = request["query"].get(&d.token_param) {
            match Cursor::decode(&text(token)) {
                Some(c) if c.resource == resource && c.since.is_some() && c.offset == 0 => {
                    since = c.since;
                }
                _ => return Err(DELTA_TOKEN_REFUSED.to_string()),
            }
        }
    }
    let offset = match &cursor {
        Some(c) => match Cursor::decode(c) {
            Some(d) if d.resource == resource => {
                since = since.or(d.since);
                cursor_selection = d.selection;
                d.offset
            }
            _ => return Err(format!("invalid cursor {c}")),
        },
        None => match (number(input(&inputs.offset)), number(input(&inputs.page))) {
            (Some(o), _) => o.saturating_sub(rp.offset_base),
            (None, Some(p)) => p.saturating_sub(1) * limit,
            (None, None) => 0,
        },
    };
    Ok(PageRequest {
        offset,
        limit,
        since,
        cursor,
        cursor_selection,
        as_of,
        ids: None,
    })
}

/// How the page is served beyond the request's own inputs.
pub struct Serving<'a> {
    pub selection: &'a Selection,
    /// Carried by the next cursor.
    pub selection_id: Option<usize>,
    /// Hand the request's cursor out again (a fault).
    pub repeat_cursor: bool,
    /// `http://<Host header>`, for next-page links.
    pub base_url: String,
}

/// The context the profile's page body and headers are evaluated over.
pub fn page_context(
    s: &Sandbox,
    resource: &str,
    compiled: &CompiledResource,
    page: &PageRequest,
    serving: &Serving,
    request: Value,
) -> Value {
    let rp = &s.profile.resources[resource];
    let mut data = lock(&s.data);
    let Some(set) = data.get_mut(resource) else {
        return Value::Null;
    };
    let now = Utc::now();
    let mut missing_ids: Vec<String> = Vec::new();
    let matching: Vec<usize> = match &page.ids {
        // The records asked for, in the order asked (each once); the others are missing.
        Some(ids) => {
            let mut seen = std::collections::HashSet::new();
            let mut found = Vec::new();
            for id in ids.iter().filter(|id| seen.insert(id.as_str())) {
                let at = (0..set.records.len()).find(|&i| {
                    let r = &set.records[i];
                    r.id.to_string() == *id && page.as_of.is_none_or(|t| r.entered_at <= t)
                });
                match at {
                    Some(i) => found.push(i),
                    None => missing_ids.push(id.clone()),
                }
            }
            found
        }
        None => (0..set.records.len())
            .filter(|&i| {
                let r = &set.records[i];
                page.since.is_none_or(|t| r.updated_at >= t)
                    && page.as_of.is_none_or(|t| r.entered_at <= t)
            })
            .collect(),
    };
    // A delta round bounded by a token also reports what was deleted after it, after
    // the live records.
    let removed: Vec<usize> = match (&compiled.delta, page.since) {
        (Some(_), Some(t)) if page.ids.is_none() => (0..set.tombstones.len())
            .filter(|&i| set.tombstones[i].deleted_at >= t)
            .collect(),
        _ => Vec::new(),
    };
    let total = (matching.len() + removed.len()) as u64;
    let start = (page.offset as usize).min(total as usize);
    let end = (start + page.limit as usize).min(total as usize);
    let records: Vec<Value> = (start..end)
        .map(|k| match matching.get(k) {
            Some(&i) => serving.selection.apply(&set.render(compiled, i)),
            None => {
                let t = &set.tombstones[removed[k - matching.len()]];
                removed_record(compiled, t)
            }
        })
        .collect();
    drop(data);
    let has_more = (end as u64) < total;
    let next_offset = has_more.then_some(end as u64);
    let mut next_cursor = next_offset.map(|offset| {
        Cursor {
            resource: resource.to_string(),
            offset,
            since: page.since,
            selection: serving.selection_id,
        }
        .encode()
    });
    if serving.repeat_cursor && page.cursor.is_some() {
        next_cursor = page.cursor.clone();
    }
    let (offset, limit) = (page.offset, page.limit);
    // The last page of a delta resource's listing hands out the token of this moment.
    let delta_token = (compiled.delta.is_some() && !has_more && page.ids.is_none()).then(|| {
        Cursor {
            resource: resource.to_string(),
            offset: 0,
            since: Some(now),
            selection: serving.selection_id,
        }
        .encode()
    });
    json!({
        "delta_token": delta_token,
        "records": records,
        "count": records.len(),
        "has_more": has_more,
        "next_cursor": next_cursor,
        "next_offset": next_offset.map(|o| o + rp.offset_base),
        "next_page": has_more.then_some(offset / limit + 2),
        "total": total,
        "limit": limit,
        "offset": offset + rp.offset_base,
        "page": offset / limit + 1,
        "base_url": serving.base_url,
        "now": now.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "cursor": page.cursor,
        "ids": page.ids,
        "missing_ids": missing_ids,
        "request": request,
    })
}

/// A deleted record as the profile's `delta.removed` writes it.
fn removed_record(compiled: &CompiledResource, t: &Tombstone) -> Value {
    let ctx = json!({
        "record": *t.record,
        "deleted_at": t.deleted_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    });
    compiled
        .delta
        .as_ref()
        .and_then(|(e, _)| e.eval_json(&ctx).ok().flatten())
        .unwrap_or_else(|| json!({"id": t.id}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip() {
        let t = Utc.timestamp_millis_opt(1_700_000_000_123).single();
        let c = |resource: &str, offset, since, selection| Cursor {
            resource: resource.into(),
            offset,
            since,
            selection,
        };
        for cursor in [
            c("contacts", 40, t, None),
            c("a.b", 0, None, None),
            c("accounts", 200, None, Some(3)),
        ] {
            assert_eq!(Cursor::decode(&cursor.encode()), Some(cursor));
        }
        assert_eq!(c("a.b", 0, None, None).encode(), "a.b.0.all");
        assert_eq!(Cursor::decode("garbage"), None);
        assert_eq!(Cursor::decode("contacts.0.all~x"), None);
    }

    #[test]
    fn since_values_in_each_format() {
        let t = Utc.with_ymd_and_hms(2024, 5, 1, 10, 0, 0).single();
        let rfc = SinceFormat::Rfc3339;
        assert_eq!(parse_since(&json!("2024-05-01T10:00:00Z"), &rfc), t);
        assert_eq!(parse_since(&json!("2024-05-01T10:00:00.000+0000"), &rfc), t);
        assert_eq!(parse_since(&json!("'2024-05-01T10:00:00-00:00'"), &rfc), t);
        assert_eq!(
            parse_since(&json!(1714557600), &SinceFormat::EpochSeconds),
            t
        );
        assert_eq!(
            parse_since(&json!("1714557600000"), &SinceFormat::EpochMillis),
            t
        );
        let pattern = SinceFormat::from("%Y-%m-%d %H:%M:%S".to_string());
        assert_eq!(parse_since(&json!("2024-05-01 10:00:00"), &pattern), t);
    }
}
