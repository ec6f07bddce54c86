//! Discovered schemas: per (connection, subject) the last good schema, when it was found,
//! the last attempt and its error, and whether a discovery was asked for.

use chrono::{DateTime, Utc};

use super::{corrupt, Store, StoreError};
use crate::domain::time::{parse_stored, stamp};
use crate::domain::Schema;

/// A connection's schema of one subject, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSchema {
    pub subject: String,
    /// The last good schema (empty until a discovery succeeded).
    pub schema: Schema,
    pub discovered_at: Option<DateTime<Utc>>,
    pub checked_at: Option<DateTime<Utc>>,
    /// Why the last attempt failed; the schema above is still the one in use.
    pub error: Option<String>,
    pub requested: bool,
}

#[derive(sqlx::FromRow)]
struct SchemaRow {
    subject: String,
    schema: String,
    discovered_at: Option<String>,
    checked_at: String,
    error: Option<String>,
    requested: i64,
}

impl TryFrom<SchemaRow> for StoredSchema {
    type Error = StoreError;
    fn try_from(row: SchemaRow) -> Result<Self, StoreError> {
        Ok(StoredSchema {
            subject: row.subject,
            schema: serde_json::from_str(&row.schema).map_err(corrupt("connection schema"))?,
            discovered_at: parse_stored(row.discovered_at.as_deref()),
            checked_at: parse_stored(Some(&row.checked_at)),
            error: row.error,
            requested: row.requested != 0,
        })
    }
}

const ONE: &str = "SELECT subject, schema, discovered_at, checked_at, error, requested
     FROM connection_schemas WHERE connection = $1 AND subject = $2";
const ALL: &str = "SELECT subject, schema, discovered_at, checked_at, error, requested
     FROM connection_schemas WHERE connection = $1 ORDER BY subject";

impl Store {
    pub async fn schema(
        &self,
        connection: &str,
        subject: &str,
    ) -> Result<Option<StoredSchema>, StoreError> {
        let row: Option<SchemaRow> = sqlx::query_as(ONE)
            .bind(connection)
            .bind(subject)
            .fetch_optional(&self.pool)
            .await?;
        row.map(StoredSchema::try_from).transpose()
    }

    /// Every subject's schema of a connection, by subject.
    pub async fn schemas(&self, connection: &str) -> Result<Vec<StoredSchema>, StoreError> {
        let rows: Vec<SchemaRow> = sqlx::query_as(ALL)
            .bind(connection)
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(StoredSchema::try_from).collect()
    }

    /// A good discovery: its schema replaces the stored one, the error and the request clear.
    pub async fn save_schema(
        &self,
        connection: &str,
        subject: &str,
        schema: &Schema,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let text = serde_json::to_string(schema).expect("schemas serialize");
        sqlx::query(
            "INSERT INTO connection_schemas (connection, subject, schema, discovered_at, checked_at, error, requested)
             VALUES ($1, $2, $3, $4, $4, NULL, 0)
             ON CONFLICT (connection, subject) DO UPDATE SET schema = excluded.schema,
               discovered_at = excluded.discovered_at, checked_at = excluded.checked_at,
               error = NULL, requested = 0",
        )
        .bind(connection)
        .bind(subject)
        .bind(text)
        .bind(stamp(at))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A failed discovery: the stored schema stays, the error is kept for the status.
    pub async fn schema_failed(
        &self,
        connection: &str,
        subject: &str,
        error: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO connection_schemas (connection, subject, schema, discovered_at, checked_at, error, requested)
             VALUES ($1, $2, '{\"fields\":[]}', NULL, $3, $4, 0)
             ON CONFLICT (connection, subject) DO UPDATE SET checked_at = excluded.checked_at,
               error = excluded.error, requested = 0",
        )
        .bind(connection)
        .bind(subject)
        .bind(stamp(at))
        .bind(error)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Ask for a discovery of every stored subject of a connection at its next run.
    pub async fn request_discovery(&self, connection: &str) -> Result<u64, StoreError> {
        let done = sqlx::query("UPDATE connection_schemas SET requested = 1 WHERE connection = $1")
            .bind(connection)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
