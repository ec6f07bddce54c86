//! Reading a discovery: every page of its answer, each entry mapped by the spec's `field`
//! expression into a field definition (or, for the custom-object list, an object).

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{DiscoveryTarget, EngineError, ErrorKind, ResourceRun};
use crate::domain::{FieldDef, Schema};

/// One of a tenant's custom objects, as the spec's list maps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomObject {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

impl ResourceRun {
    /// Every entry of this discovery's answer, mapped; entries mapped to nothing are skipped.
    async fn entries<T: serde::de::DeserializeOwned>(self) -> Result<Vec<T>, EngineError> {
        let super::Reads::Discovery(target) = &self.reads else {
            unreachable!("entries are read from discovery runs only")
        };
        let target: DiscoveryTarget = target.clone();
        let spec = self.spec.clone();
        let at = self.resource.clone();
        let field = &target
            .find(&spec)
            .expect("checked when the run was made")
            .field;
        let mut out = Vec::new();
        let mut pages = std::pin::pin!(self.pages());
        while let Some(page) = pages.next().await {
            let page = page?;
            for entry in &page.records {
                let bad = |message: String| EngineError {
                    spec: spec.file.clone(),
                    resource: at.clone(),
                    page: page.number,
                    kind: Box::new(ErrorKind::Config(message)),
                };
                let mapped = field
                    .eval_json(entry)
                    .map_err(|e| bad(format!("`{at}.field` failed on an entry: {e}")))?;
                let Some(mapped) = mapped.filter(|v| !v.is_null()) else {
                    continue;
                };
                let item = serde_json::from_value(mapped.clone()).map_err(|e| {
                    bad(format!(
                        "`{at}.field` gave {} for an entry, which is not a definition ({e}); \
                         it must give an object with at least a string `name`",
                        short(&mapped)
                    ))
                })?;
                out.push(item);
            }
        }
        Ok(out)
    }

    /// The fields this discovery lists (a discovery run, see [`ResourceRun::discovery`]).
    pub async fn discover_fields(self) -> Result<Schema, EngineError> {
        let fields: Vec<FieldDef> = self.entries().await?;
        Ok(Schema { fields })
    }

    /// The tenant's custom objects (a run of [`DiscoveryTarget::ObjectList`]).
    pub async fn list_objects(self) -> Result<Vec<CustomObject>, EngineError> {
        self.entries().await
    }
}

fn short(v: &Value) -> String {
    let text = v.to_string();
    match text.char_indices().nth(80) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text,
    }
}
