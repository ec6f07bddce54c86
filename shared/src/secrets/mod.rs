//! Secrets: credentials that redact themselves wherever they are printed, and
//! encryption at rest (`crypto`).

pub mod crypto;

use std::collections::BTreeMap;
use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// A connection's credential fields (`access_token`, `refresh_token`, `api_key`, ...).
/// Debug output lists the field names only.
#[derive(Clone, Default)]
pub struct Credentials {
    fields: BTreeMap<String, SecretString>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(self.fields.keys().map(|k| format!("{k}=[redacted]")))
            .finish()
    }
}

impl<'de> Deserialize<'de> for Credentials {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw: BTreeMap<String, serde_json::Value> = BTreeMap::deserialize(d)?;
        Ok(Credentials {
            fields: raw
                .into_iter()
                .filter_map(|(k, v)| {
                    let text = match v {
                        serde_json::Value::Null => return None,
                        serde_json::Value::String(s) => s,
                        other => other.to_string(),
                    };
                    Some((k, SecretString::from(text)))
                })
                .collect(),
        })
    }
}

impl Credentials {
    pub fn get(&self, field: &str) -> Option<&str> {
        self.fields.get(field).map(|s| s.expose_secret())
    }

    pub fn set(&mut self, field: &str, value: impl Into<String>) {
        self.fields
            .insert(field.to_string(), SecretString::from(value.into()));
    }

    /// What identifies the provider app these credentials belong to (its OAuth client id):
    /// connections of one app share its app-wide budgets. Only ever used hashed.
    pub fn app_identity(&self) -> Option<String> {
        self.get("client_id").map(str::to_string)
    }

    pub fn field_names(&self) -> impl Iterator<Item = &str> {
        self.fields.keys().map(String::as_str)
    }

    /// All fields as a JSON object, for sealing. The result holds secrets.
    pub fn expose_json(&self) -> String {
        serde_json::to_string(&self.expose_for_templates()).expect("strings serialize")
    }

    /// The values as a template context. The result holds secrets: render it, never print it.
    pub fn expose_for_templates(&self) -> BTreeMap<&str, &str> {
        self.fields
            .iter()
            .map(|(k, v)| (k.as_str(), v.expose_secret()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_values() {
        let c: Credentials =
            serde_json::from_str(r#"{"api_key": "sk_live_123", "expires_at": null}"#).unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("sk_live_123"), "{shown}");
        assert!(shown.contains("api_key"));
        assert_eq!(c.get("api_key"), Some("sk_live_123"));
        assert_eq!(c.get("expires_at"), None);
    }
}
