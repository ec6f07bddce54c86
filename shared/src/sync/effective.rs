//! The spec a connection's slices run with: its provider's spec with the environment's
//! overlay (loaded once per process) and the connection's stored overrides on top,
//! compiled once per (connection, overrides version). A slice reads the version when it
//! starts, so a change applies from the next slice.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::{SyncError, Syncer};
use crate::spec::overrides::{compile_with, render_problems, Overrides};
use crate::spec::CompiledSpec;
use crate::store::ConnectionRecord;

/// Compiled specs of connections with overrides, by connection: the version they were
/// compiled from and the result.
#[derive(Default)]
pub(super) struct EffectiveSpecs {
    by_connection: Mutex<HashMap<String, (i64, Arc<CompiledSpec>)>>,
}

impl EffectiveSpecs {
    fn get(&self, connection: &str, version: i64) -> Option<Arc<CompiledSpec>> {
        let cached = self.by_connection.lock().unwrap_or_else(|p| p.into_inner());
        cached
            .get(connection)
            .filter(|(v, _)| *v == version)
            .map(|(_, spec)| spec.clone())
    }

    fn put(&self, connection: &str, version: i64, spec: Arc<CompiledSpec>) {
        self.by_connection
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(connection.to_string(), (version, spec));
    }
}

impl Syncer {
    /// The connection's effective spec. The inner error is a reason to fail the run (a spec
    /// or overrides that do not compile), worded for the status event.
    pub(super) async fn effective_spec(
        &self,
        conn: &ConnectionRecord,
    ) -> Result<Result<Arc<CompiledSpec>, String>, SyncError> {
        let base = match self.spec(&conn.provider) {
            Ok(spec) => spec,
            Err(e) => return Ok(Err(format!("provider spec `{}`: {e}", conn.provider))),
        };
        let stored = self.store.connection_overrides(&conn.id).await?;
        let Some(json) = stored.overrides else {
            return Ok(Ok(base));
        };
        if let Some(spec) = self.effective.get(&conn.id, stored.version) {
            return Ok(Ok(spec));
        }
        let layer: Overrides = match serde_json::from_value(json) {
            Ok(layer) => layer,
            Err(e) => return Ok(Err(overrides_failed(conn, stored.version, &e.to_string()))),
        };
        match compile_with(&base, &layer) {
            Ok(spec) => {
                let spec = Arc::new(spec);
                self.effective.put(&conn.id, stored.version, spec.clone());
                Ok(Ok(spec))
            }
            Err(problems) => Ok(Err(overrides_failed(
                conn,
                stored.version,
                &render_problems(&problems),
            ))),
        }
    }
}

/// Stored overrides were valid when set; the spec or the environment's overlay under them
/// may have changed since.
fn overrides_failed(conn: &ConnectionRecord, version: i64, problems: &str) -> String {
    format!(
        "the overrides of connection `{}` (version {version}) no longer apply to the `{}` spec: {problems}; fix them with PUT /v1/connections/{}/overrides or remove them with DELETE",
        conn.id, conn.provider, conn.id
    )
}
