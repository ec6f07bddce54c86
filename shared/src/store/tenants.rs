//! Tenants: the host product's customers; every connection and API token belongs to one.

use super::{Store, StoreError};
use crate::domain::time::now_stamp;

impl Store {
    pub async fn create_tenant(&self, id: &str) -> Result<(), StoreError> {
        let done = sqlx::query(
            "INSERT INTO tenants (id, created_at) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(now_stamp())
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::Conflict {
                what: "tenant",
                id: id.to_string(),
            });
        }
        Ok(())
    }

    pub async fn tenant_exists(&self, id: &str) -> Result<bool, StoreError> {
        Ok(sqlx::query("SELECT id FROM tenants WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .is_some())
    }

    /// NotFound unless the tenant exists (what is created under it needs it).
    pub(super) async fn require_tenant(&self, id: &str) -> Result<(), StoreError> {
        if self.tenant_exists(id).await? {
            Ok(())
        } else {
            Err(StoreError::NotFound {
                what: "tenant",
                id: id.to_string(),
            })
        }
    }
}
