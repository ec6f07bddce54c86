//! Tenant-scoped API tokens, stored as SHA-256 hashes (never in clear).

use super::{Store, StoreError};
use crate::domain::time::now_stamp;

fn token_hash(token: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}

impl Store {
    /// A new tenant-scoped token; only its hash is stored.
    pub async fn create_token(&self, tenant: &str) -> Result<String, StoreError> {
        self.require_tenant(tenant).await?;
        let mut raw = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut raw);
        let token = format!("trib_{}", hex::encode(raw));
        sqlx::query("INSERT INTO api_tokens (token_hash, tenant, created_at) VALUES ($1, $2, $3)")
            .bind(token_hash(&token))
            .bind(tenant)
            .bind(now_stamp())
            .execute(&self.pool)
            .await?;
        Ok(token)
    }

    /// The tenant a token belongs to (None for an unknown token).
    pub async fn token_tenant(&self, token: &str) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT tenant FROM api_tokens WHERE token_hash = $1")
                .bind(token_hash(token))
                .fetch_optional(&self.pool)
                .await?,
        )
    }
}
