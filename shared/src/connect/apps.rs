//! The OAuth apps connections are made with (`TRIBUTARY_APPS_FILE`, YAML): per
//! provider, and per tenant for tenants who bring their own app. A secret is written
//! in the file, or read from a file or an environment variable; secrets are never
//! shown (`App`'s Debug redacts them).
//!
//! ```yaml
//! apps:
//!   crmhub:
//!     client_id: "1234-abcd"
//!     client_secret_env: CRMHUB_CLIENT_SECRET   # or client_secret_file, or client_secret
//!     scopes: [crm.objects.owners.read]          # asked for beside the spec's
//!     webhook_keys:                              # keys webhooks are verified with (the
//!       verifier_token:                          # spec's `app.<name>`; `client_secret` is
//!         - {env: CRMHUB_VERIFIER}               # the secret above), several while one
//!         - {value: "the-old-one"}               # is rotated
//! tenants:
//!   acme:                                        # acme's own app for that provider
//!     crmhub: {client_id: "9876", client_secret_file: /run/secrets/acme-crmhub}
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::App;

/// Why the apps file cannot be used; names the file, the path inside it and what to do.
#[derive(Debug, thiserror::Error)]
#[error("TRIBUTARY_APPS_FILE {file}: {message}")]
pub struct AppsError {
    pub file: String,
    pub message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AppsFile {
    #[serde(default)]
    apps: BTreeMap<String, AppEntry>,
    #[serde(default)]
    tenants: BTreeMap<String, BTreeMap<String, AppEntry>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AppEntry {
    client_id: String,
    #[serde(default)]
    client_secret: Option<String>,
    #[serde(default)]
    client_secret_file: Option<PathBuf>,
    #[serde(default)]
    client_secret_env: Option<String>,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    webhook_keys: BTreeMap<String, Vec<KeySource>>,
}

/// Where one webhook key is: in the file, a file of its own or an environment variable.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeySource {
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    file: Option<PathBuf>,
    #[serde(default)]
    env: Option<String>,
}

impl KeySource {
    fn resolve(&self, at: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
        match (&self.value, &self.file, &self.env) {
            (Some(v), None, None) => Ok(v.clone()),
            (None, Some(path), None) => std::fs::read_to_string(path)
                .map(|s| s.trim().to_string())
                .map_err(|e| format!("at `{at}.file`: {}: {e}", path.display())),
            (None, None, Some(var)) => env(var)
                .filter(|v| !v.trim().is_empty())
                .ok_or_else(|| format!("at `{at}.env`: the environment variable {var} is not set")),
            _ => Err(format!("at `{at}`: give exactly one of value, file, env")),
        }
    }
}

/// Every app, secrets resolved.
#[derive(Debug, Clone, Default)]
pub struct Apps {
    by_provider: BTreeMap<String, App>,
    /// Tenant, then provider.
    by_tenant: BTreeMap<String, BTreeMap<String, App>>,
}

impl Apps {
    /// Read the file and resolve every secret now, so a missing one fails at start.
    pub fn load(path: &Path) -> Result<Apps, AppsError> {
        let fail = |message: String| AppsError {
            file: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
        Apps::parse(&text, &|var| std::env::var(var).ok()).map_err(fail)
    }

    /// From the file's text; `env` reads environment variables.
    pub fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Apps, String> {
        let de = serde_yaml_ng::Deserializer::from_str(text);
        let file: AppsFile = serde_path_to_error::deserialize(de).map_err(|e| {
            let line = e
                .inner()
                .location()
                .map(|l| format!("line {}: ", l.line()))
                .unwrap_or_default();
            format!("{line}at `{}`: {}", e.path(), e.inner())
        })?;
        let mut apps = Apps::default();
        for (provider, entry) in file.apps {
            let app = entry.resolve(&format!("apps.{provider}"), env)?;
            apps.by_provider.insert(provider, app);
        }
        for (tenant, providers) in file.tenants {
            for (provider, entry) in providers {
                let app = entry.resolve(&format!("tenants.{tenant}.{provider}"), env)?;
                apps.by_tenant
                    .entry(tenant.clone())
                    .or_default()
                    .insert(provider, app);
            }
        }
        Ok(apps)
    }

    /// The app a tenant connects a provider with: its own, else the deployment's.
    /// Every key a provider's webhooks may be signed with under this name, over the
    /// deployment's app and the tenants' own (an app-level delivery is verified before
    /// anyone knows its tenant).
    pub fn webhook_keys(&self, provider: &str, name: &str) -> Vec<String> {
        let apps = self
            .by_provider
            .get(provider)
            .into_iter()
            .chain(self.by_tenant.values().filter_map(|p| p.get(provider)));
        let mut keys = Vec::new();
        for app in apps {
            if name == "client_secret" {
                keys.push(app.client_secret.clone());
            }
            keys.extend(app.webhook_keys.get(name).into_iter().flatten().cloned());
        }
        keys.dedup();
        keys
    }

    pub fn for_tenant(&self, tenant: &str, provider: &str) -> Option<&App> {
        self.by_tenant
            .get(tenant)
            .and_then(|p| p.get(provider))
            .or_else(|| self.by_provider.get(provider))
    }
}

impl AppEntry {
    fn resolve(self, at: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<App, String> {
        let given = [
            self.client_secret.is_some(),
            self.client_secret_file.is_some(),
            self.client_secret_env.is_some(),
        ];
        if given.iter().filter(|g| **g).count() != 1 {
            return Err(format!(
                "at `{at}`: give exactly one of client_secret, client_secret_file, client_secret_env"
            ));
        }
        let secret = if let Some(s) = self.client_secret {
            s
        } else if let Some(path) = &self.client_secret_file {
            std::fs::read_to_string(path)
                .map(|s| s.trim().to_string())
                .map_err(|e| format!("at `{at}.client_secret_file`: {}: {e}", path.display()))?
        } else {
            let var = self.client_secret_env.unwrap_or_default();
            env(&var).filter(|v| !v.trim().is_empty()).ok_or_else(|| {
                format!("at `{at}.client_secret_env`: the environment variable {var} is not set")
            })?
        };
        if self.client_id.trim().is_empty() {
            return Err(format!("at `{at}.client_id`: empty"));
        }
        let mut webhook_keys = BTreeMap::new();
        for (name, sources) in &self.webhook_keys {
            let keys = (sources.iter().enumerate())
                .map(|(i, s)| s.resolve(&format!("{at}.webhook_keys.{name}[{i}]"), env))
                .collect::<Result<Vec<_>, _>>()?;
            webhook_keys.insert(name.clone(), keys);
        }
        Ok(App {
            client_id: self.client_id,
            client_secret: secret,
            scopes: self.scopes,
            webhook_keys,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "
apps:
  crmhub: {client_id: hs-id, client_secret_env: HS_SECRET, scopes: [extra.scope]}
  salescloud: {client_id: sf-id, client_secret: inline-secret, webhook_keys: {verifier: [{value: v1}, {value: v0}]}}
tenants:
  acme:
    crmhub: {client_id: acme-hs-id, client_secret_env: ACME_HS_SECRET}
";

    fn env(var: &str) -> Option<String> {
        match var {
            "HS_SECRET" => Some("hs-secret".into()),
            "ACME_HS_SECRET" => Some("acme-secret".into()),
            _ => None,
        }
    }

    #[test]
    fn a_tenant_app_wins_over_the_deployments_and_secrets_are_resolved() {
        let apps = Apps::parse(FILE, &env).unwrap();
        let acme = apps.for_tenant("acme", "crmhub").unwrap();
        assert_eq!(
            (acme.client_id.as_str(), acme.client_secret.as_str()),
            ("acme-hs-id", "acme-secret")
        );
        let other = apps.for_tenant("globex", "crmhub").unwrap();
        assert_eq!(
            (other.client_id.as_str(), other.scopes.as_slice()),
            ("hs-id", &["extra.scope".to_string()][..])
        );
        assert_eq!(
            apps.for_tenant("acme", "salescloud").unwrap().client_secret,
            "inline-secret"
        );
        assert!(apps.for_tenant("acme", "helpdesk").is_none());
        assert_eq!(
            apps.webhook_keys("crmhub", "client_secret"),
            vec!["hs-secret".to_string(), "acme-secret".to_string()]
        );
        assert_eq!(
            apps.webhook_keys("salescloud", "verifier"),
            vec!["v1".to_string(), "v0".to_string()]
        );
        assert!(!format!("{apps:?}").contains("secret\""), "{apps:?}");
        assert!(!format!("{apps:?}").contains("acme-secret"));
    }

    #[test]
    fn a_missing_secret_or_an_unknown_key_names_where() {
        let err = Apps::parse(FILE, &|_| None).unwrap_err();
        assert!(
            err.contains("apps.crmhub.client_secret_env") && err.contains("HS_SECRET"),
            "{err}"
        );
        let err = Apps::parse("apps:\n  crmhub: {client_id: x, secret: y}\n", &env).unwrap_err();
        assert!(
            err.contains("line 2") && err.contains("apps.crmhub"),
            "{err}"
        );
        let err = Apps::parse("apps:\n  crmhub: {client_id: x}\n", &env).unwrap_err();
        assert!(err.contains("exactly one of"), "{err}");
    }
}
