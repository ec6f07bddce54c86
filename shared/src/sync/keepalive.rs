//! Keep idle OAuth connections alive: some providers expire a refresh token that goes
//! unused for a while (the spec's `refresh_token_idle_days`); connections idle for half
//! that long are refreshed in the background, under the same fleet-wide lock as any refresh.

use std::path::Path;
use std::sync::Arc;

use chrono::Utc;
use tracing::{info, warn};

use super::StoreTokens;
use crate::budget::{Budget, BudgetOwner};
use crate::domain::ConnectionState;
use crate::engine::{Connection, ConnectionRuntime, RunOptions};
use crate::http::auth::AuthError;
use crate::http::guard;
use crate::spec::compile::CompiledAuth;
use crate::spec::load_layered;
use crate::store::{Store, StoreError};

/// Refresh every connection idle too long; returns how many were refreshed.
pub async fn refresh_idle(
    store: &Store,
    specs_dir: &Path,
    overrides_dir: Option<&Path>,
    allow_private_hosts: bool,
) -> Result<usize, StoreError> {
    let Ok(entries) = std::fs::read_dir(specs_dir) else {
        return Ok(0);
    };
    let mut refreshed = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let Some(provider) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        let Ok(spec) = load_layered(specs_dir, overrides_dir, provider) else {
            continue;
        };
        let days = match &spec.auth {
            CompiledAuth::OAuth2(o) => match o.refresh_token_idle_days {
                Some(d) => d,
                None => continue,
            },
            _ => continue,
        };
        let before = Utc::now() - chrono::Duration::hours(i64::from(days) * 12);
        for id in store
            .idle_connections(&[spec.name().to_string()], before)
            .await?
        {
            let conn = store.connection(&id).await?;
            let connection = Connection {
                config: conn.config.clone(),
                credentials: conn.credentials.clone(),
            };
            let options = RunOptions {
                allow_private_hosts,
                tenant: conn.tenant.clone(),
                ..RunOptions::default()
            };
            let sink = Arc::new(StoreTokens::new(store.clone(), id.clone()));
            // Only the token endpoint is called here; provider budgets are not involved.
            let budget = Budget::local(
                &spec.spec.rate_limit,
                &BudgetOwner {
                    provider: conn.provider.clone(),
                    connection: id.clone(),
                    app: None,
                },
            );
            let runtime = match ConnectionRuntime::new(&spec, &connection, &options, sink, budget) {
                Ok(r) => r,
                Err(e) => {
                    warn!(connection = %id, "cannot keep the token alive: {e}");
                    continue;
                }
            };
            let check = |u: &str| guard::checked_url(u, &spec.hosts, allow_private_hosts);
            match runtime.auth.refresh_now(&runtime.http, &check).await {
                Ok(_) => {
                    refreshed += 1;
                    info!(connection = %id, "idle connection's token refreshed");
                }
                Err(AuthError::InvalidGrant(reason)) => {
                    store
                        .set_connection_state(&id, ConnectionState::NeedsReauth, Some(&reason))
                        .await?;
                    warn!(connection = %id, "idle connection needs re-authorization");
                }
                Err(e) => {
                    warn!(connection = %id, "keeping the token alive failed (retried later): {e}")
                }
            }
        }
    }
    Ok(refreshed)
}
