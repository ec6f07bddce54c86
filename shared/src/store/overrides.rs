//! Connection overrides: per connection the overrides JSON (the top layer over its
//! provider's spec) and a version that every change, set or removal, increments.
//! The JSON is kept as set; what it means is the spec layer's business (`spec::overrides`).

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::{corrupt, Store, StoreError};
use crate::domain::time::{now_stamp, parse_stored};

/// A connection's stored overrides. Version 0 and no overrides: never set.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredOverrides {
    pub version: i64,
    /// None when never set or removed.
    pub overrides: Option<Value>,
    pub updated_at: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct OverridesRow {
    overrides: Option<String>,
    version: i64,
    updated_at: String,
}

impl Store {
    /// The connection's overrides and their version (version 0 when never set).
    pub async fn connection_overrides(
        &self,
        connection: &str,
    ) -> Result<StoredOverrides, StoreError> {
        let row: Option<OverridesRow> = sqlx::query_as(
            "SELECT overrides, version, updated_at FROM connection_overrides WHERE connection = $1",
        )
        .bind(connection)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(StoredOverrides {
                version: 0,
                overrides: None,
                updated_at: None,
            });
        };
        Ok(StoredOverrides {
            version: row.version,
            overrides: row
                .overrides
                .map(|t| serde_json::from_str(&t))
                .transpose()
                .map_err(corrupt("connection overrides"))?,
            updated_at: parse_stored(Some(&row.updated_at)),
        })
    }

    /// Replace the connection's overrides (None removes them); returns the new version.
    pub async fn set_connection_overrides(
        &self,
        connection: &str,
        overrides: Option<&Value>,
    ) -> Result<i64, StoreError> {
        self.connection(connection).await?;
        let version: i64 = sqlx::query_scalar(
            "INSERT INTO connection_overrides (connection, overrides, version, updated_at)
             VALUES ($1, $2, 1, $3)
             ON CONFLICT (connection) DO UPDATE SET overrides = excluded.overrides,
                 version = connection_overrides.version + 1, updated_at = excluded.updated_at
             RETURNING version",
        )
        .bind(connection)
        .bind(overrides.map(Value::to_string))
        .bind(now_stamp())
        .fetch_one(&self.pool)
        .await?;
        Ok(version)
    }
}
