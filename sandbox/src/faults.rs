//! Failures on demand: tests post faults (`POST /_sandbox/faults`), each for a
//! resource and page or any, firing a number of times or always; a data request
//! takes the first that matches and answers as the fault says.

use std::sync::Mutex;
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::respond::{json_response, with_headers, xml_response};
use crate::state::Sandbox;
use crate::{lock, throttle};

/// A fault to inject into data answers.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Fault {
    #[serde(flatten)]
    pub kind: FaultKind,
    /// Only for this resource.
    #[serde(default)]
    pub resource: Option<String>,
    /// Only on this page (1-based, from offset and limit).
    #[serde(default)]
    pub page: Option<u64>,
    /// How many times it fires; 0 = every time.
    #[serde(default)]
    pub times: u32,
}

/// What the fault does (`kind` in JSON, with its own fields beside it).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FaultKind {
    /// Answer this status (503 unless given) with a JSON error body.
    Status {
        #[serde(default)]
        status: Option<u16>,
    },
    /// Answer normally after a delay (2 s unless given).
    Slow {
        #[serde(default)]
        delay_ms: Option<u64>,
    },
    /// Answer 200 with a truncated JSON body.
    MalformedJson,
    /// Answer 200 with a truncated XML body.
    MalformedXml,
    /// Answer this status (500 unless given) with `body`, a JSON tree written as XML
    /// (e.g. a SOAP fault).
    Xml {
        #[serde(default)]
        status: Option<u16>,
        body: Value,
    },
    /// Hand out the request's own cursor again as the next one.
    RepeatCursor,
    /// The profile's throttle answer, asking for this wait (1 s unless given).
    Throttle {
        #[serde(default)]
        wait_seconds: Option<f64>,
    },
    /// The profile's unauthorized answer.
    Unauthorized,
    /// Create records (1 unless given) just before serving the page, as entries made
    /// while a long read runs; `first` puts them at the list's front, shifting the
    /// later pages of a read that is not pinned to a snapshot.
    Create {
        #[serde(default)]
        count: Option<u64>,
        #[serde(default)]
        first: bool,
    },
}

/// The faults waiting to fire.
#[derive(Default)]
pub struct Faults(Mutex<Vec<Fault>>);

impl Faults {
    pub fn set(&self, faults: Vec<Fault>) {
        *lock(&self.0) = faults;
    }

    pub fn clear(&self) {
        lock(&self.0).clear();
    }

    /// The first fault for this resource and page, counted as fired once.
    pub fn take(&self, resource: &str, page: u64) -> Option<FaultKind> {
        let mut faults = lock(&self.0);
        let i = faults.iter().position(|f| {
            f.resource.as_deref().is_none_or(|r| r == resource) && f.page.is_none_or(|p| p == page)
        })?;
        let kind = faults[i].kind.clone();
        match faults[i].times {
            0 => {}
            1 => {
                faults.remove(i);
            }
            _ => faults[i].times -= 1,
        }
        Some(kind)
    }
}

/// What a data request does after its fault.
pub enum Outcome {
    /// Answer this instead of the page.
    Answer(Response),
    /// Serve the page; `repeat_cursor` hands the request's cursor out again.
    Serve { repeat_cursor: bool },
}

/// Apply a fault to a data request (`request` is its JSONata context).
pub async fn inject(s: &Sandbox, resource: &str, kind: &FaultKind, request: &Value) -> Outcome {
    match kind {
        FaultKind::Status { status } => {
            let status = status.unwrap_or(503);
            Outcome::Answer(json_response(
                status,
                &json!({"error": "injected failure", "status": status}),
                Vec::new(),
            ))
        }
        FaultKind::Slow { delay_ms } => {
            tokio::time::sleep(Duration::from_millis(delay_ms.unwrap_or(2000))).await;
            Outcome::Serve {
                repeat_cursor: false,
            }
        }
        FaultKind::MalformedJson => {
            let mut resp = (StatusCode::OK, "{\"results\": [{\"id\": 1,").into_response();
            resp.headers_mut()
                .insert("content-type", HeaderValue::from_static("application/json"));
            Outcome::Answer(resp)
        }
        FaultKind::MalformedXml => Outcome::Answer(with_headers(
            200,
            "<?xml version=\"1.0\"?><Envelope><Body><Page><Item><id>1</id>".into(),
            "text/xml; charset=utf-8",
            Vec::new(),
        )),
        FaultKind::Xml { status, body } => {
            Outcome::Answer(xml_response(status.unwrap_or(500), body, Vec::new()))
        }
        FaultKind::Throttle { wait_seconds } => {
            lock(&s.stats).throttled += 1;
            let wait = Duration::from_secs_f64(wait_seconds.unwrap_or(1.0).max(0.0));
            Outcome::Answer(throttle::answer(s, wait))
        }
        FaultKind::Unauthorized => {
            lock(&s.stats).unauthorized += 1;
            Outcome::Answer(s.compiled.unauthorized.render(request))
        }
        FaultKind::RepeatCursor => Outcome::Serve {
            repeat_cursor: true,
        },
        FaultKind::Create { count, first } => {
            if let Some(set) = lock(&s.data).get_mut(resource) {
                let now = chrono::Utc::now();
                for _ in 0..count.unwrap_or(1) {
                    set.create(now, *first);
                }
            }
            Outcome::Serve {
                repeat_cursor: false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_read_as_the_control_api_has_always_taken_them() {
        let faults: Vec<Fault> = serde_json::from_value(json!([
            {"kind": "status", "status": 502, "page": 2, "times": 2},
            {"kind": "slow", "delay_ms": 150, "times": 0},
            {"kind": "throttle", "times": 3, "wait_seconds": 1},
            {"kind": "malformed_json", "page": 2},
            {"kind": "repeat_cursor", "page": 3, "resource": "contacts"},
            {"kind": "unauthorized", "status": 401},
            {"kind": "xml", "body": {"Envelope": {"Body": {"Fault": {"faultstring": "no"}}}}},
            {"kind": "create", "page": 2, "first": true}
        ]))
        .unwrap();
        assert_eq!(faults[0].kind, FaultKind::Status { status: Some(502) });
        assert_eq!((faults[0].page, faults[0].times), (Some(2), 2));
        assert_eq!(
            faults[1].kind,
            FaultKind::Slow {
                delay_ms: Some(150)
            }
        );
        assert_eq!(
            faults[2].kind,
            FaultKind::Throttle {
                wait_seconds: Some(1.0)
            }
        );
        assert_eq!(faults[3].kind, FaultKind::MalformedJson);
        assert_eq!(faults[4].resource.as_deref(), Some("contacts"));
        assert_eq!(faults[5].kind, FaultKind::Unauthorized);
        assert!(matches!(
            faults[6].kind,
            FaultKind::Xml { status: None, .. }
        ));
        assert_eq!(
            faults[7].kind,
            FaultKind::Create {
                count: None,
                first: true
            }
        );
        let unknown = serde_json::from_value::<Fault>(json!({"kind": "explode"}));
        assert!(unknown.is_err(), "an unknown kind is refused when posted");
    }

    #[test]
    fn a_fault_fires_as_many_times_as_asked_on_its_page_only() {
        let faults = Faults::default();
        faults.set(vec![Fault {
            kind: FaultKind::RepeatCursor,
            resource: Some("a".into()),
            page: Some(2),
            times: 2,
        }]);
        assert_eq!(faults.take("a", 1), None);
        assert_eq!(faults.take("b", 2), None);
        assert_eq!(faults.take("a", 2), Some(FaultKind::RepeatCursor));
        assert_eq!(faults.take("a", 2), Some(FaultKind::RepeatCursor));
        assert_eq!(faults.take("a", 2), None);
    }
}
