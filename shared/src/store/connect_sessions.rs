//! Connect sessions: minted by the host product for one tenant, opened by its user at
//! a URL carrying the session token (stored only hashed), completed once. The OAuth
//! `state` of an authorization under way is stored hashed and taken by exactly one
//! callback; the PKCE verifier is sealed like credentials.

use chrono::{DateTime, Duration, Utc};
use serde_json::{Map, Value};

use super::{corrupt, Store, StoreError};
use crate::domain::time::{parse_stored, stamp};

fn hash(secret: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(secret.as_bytes()))
}

/// Where a session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    Pending,
    Connected,
    Failed,
    /// Pending past its expiry time.
    Expired,
}

/// A session to create.
#[derive(Debug, Clone)]
pub struct NewConnectSession {
    pub tenant: String,
    /// The providers the user may choose from (one: no choice).
    pub providers: Vec<String>,
    /// The resources the connection syncs (None: all of the provider's).
    pub resources: Option<Vec<String>>,
    pub return_url: String,
    /// Settings the connection starts with.
    pub config: Map<String, Value>,
    /// Re-authorize this connection instead of creating one.
    pub reauthorize: Option<String>,
    pub ttl: std::time::Duration,
}

/// A stored session.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ConnectSession {
    pub id: String,
    pub tenant: String,
    pub providers: Vec<String>,
    pub resources: Option<Vec<String>>,
    pub return_url: String,
    pub config: Map<String, Value>,
    pub reauthorize: Option<String>,
    pub state: SessionState,
    pub reason: Option<String>,
    /// The provider chosen when the authorization started.
    pub provider: Option<String>,
    pub connection_id: Option<String>,
    pub created_at: String,
    pub expires_at: String,
    pub finished_at: Option<String>,
}

#[derive(sqlx::FromRow)]
struct SessionRow {
    id: String,
    tenant: String,
    providers: String,
    resources: Option<String>,
    return_url: String,
    config: String,
    reauthorize: Option<String>,
    state: String,
    reason: Option<String>,
    provider: Option<String>,
    connection_id: Option<String>,
    created_at: String,
    expires_at: String,
    finished_at: Option<String>,
}

const SESSION_COLUMNS: &str = "id, tenant, providers, resources, return_url, config, reauthorize, state, reason, provider, connection_id, created_at, expires_at, finished_at";

impl SessionRow {
    fn into_session(self, now: DateTime<Utc>) -> Result<ConnectSession, StoreError> {
        let expired = parse_stored(Some(&self.expires_at)).is_none_or(|t| t <= now);
        let state = match self.state.as_str() {
            "connected" => SessionState::Connected,
            "failed" => SessionState::Failed,
            _ if expired => SessionState::Expired,
            _ => SessionState::Pending,
        };
        Ok(ConnectSession {
            id: self.id,
            tenant: self.tenant,
            providers: serde_json::from_str(&self.providers)
                .map_err(corrupt("session providers"))?,
            resources: self
                .resources
                .map(|r| serde_json::from_str(&r))
                .transpose()
                .map_err(corrupt("session resources"))?,
            return_url: self.return_url,
            config: serde_json::from_str(&self.config).map_err(corrupt("session config"))?,
            reauthorize: self.reauthorize,
            state,
            reason: self.reason,
            provider: self.provider,
            connection_id: self.connection_id,
            created_at: self.created_at,
            expires_at: self.expires_at,
            finished_at: self.finished_at,
        })
    }
}

/// A random token of 32 bytes, hex, with a prefix saying what it is.
fn random_token(prefix: &str) -> String {
    let mut raw = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut raw);
    format!("{prefix}{}", hex::encode(raw))
}

impl Store {
    /// A new pending session and the token its URL carries (only its hash is kept).
    pub async fn create_connect_session(
        &self,
        new: &NewConnectSession,
    ) -> Result<(ConnectSession, String), StoreError> {
        self.require_tenant(&new.tenant).await?;
        let id = format!("cs_{}", uuid::Uuid::now_v7().simple());
        let token = random_token("cst_");
        let now = Utc::now();
        let ttl = Duration::from_std(new.ttl).unwrap_or(Duration::minutes(30));
        sqlx::query(
            "INSERT INTO connect_sessions (id, token_hash, tenant, providers, resources, return_url, config, reauthorize, state, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', $9, $10)",
        )
        .bind(&id)
        .bind(hash(&token))
        .bind(&new.tenant)
        .bind(serde_json::to_string(&new.providers).expect("strings serialize"))
        .bind(new.resources.as_ref().map(|r| serde_json::to_string(r).expect("strings serialize")))
        .bind(&new.return_url)
        .bind(Value::Object(new.config.clone()).to_string())
        .bind(new.reauthorize.clone())
        .bind(stamp(now))
        .bind(stamp(now + ttl))
        .execute(&self.pool)
        .await?;
        Ok((self.connect_session(&id).await?, token))
    }

    pub async fn connect_session(&self, id: &str) -> Result<ConnectSession, StoreError> {
        let row: Option<SessionRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {SESSION_COLUMNS} FROM connect_sessions WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.ok_or_else(|| StoreError::NotFound {
            what: "connect session",
            id: id.to_string(),
        })?
        .into_session(Utc::now())
    }

    /// The session a URL's token opens (None for a token never minted).
    pub async fn connect_session_by_token(
        &self,
        token: &str,
    ) -> Result<Option<ConnectSession>, StoreError> {
        let row: Option<SessionRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {SESSION_COLUMNS} FROM connect_sessions WHERE token_hash = $1"
        )))
        .bind(hash(token))
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| r.into_session(Utc::now())).transpose()
    }

    /// Record an authorization under way for a pending, unexpired session: the provider
    /// chosen, the OAuth state (hashed) and the PKCE verifier (sealed). A new start
    /// replaces an earlier one, whose state then no longer matches. False when the
    /// session is no longer pending.
    pub async fn start_authorization(
        &self,
        id: &str,
        provider: &str,
        oauth_state: &str,
        verifier: Option<&str>,
    ) -> Result<bool, StoreError> {
        let sealed = verifier.map(|v| self.cipher.seal(v.as_bytes()));
        let done = sqlx::query(
            "UPDATE connect_sessions SET provider = $1, oauth_state_hash = $2, verifier = $3, verifier_key_id = $4
             WHERE id = $5 AND state = 'pending' AND expires_at > $6",
        )
        .bind(provider)
        .bind(hash(oauth_state))
        .bind(sealed.as_ref().map(|(_, s)| s.clone()))
        .bind(sealed.as_ref().map(|(k, _)| k.clone()))
        .bind(id)
        .bind(stamp(Utc::now()))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The session an OAuth callback's `state` belongs to, with its PKCE verifier; the
    /// state is cleared in the same statement, so one callback alone takes it. None for
    /// a state that is unknown or was already taken.
    pub async fn take_authorization(
        &self,
        oauth_state: &str,
    ) -> Result<Option<(ConnectSession, Option<String>)>, StoreError> {
        let taken: Option<(String, Option<String>, Option<String>)> = sqlx::query_as(
            "UPDATE connect_sessions SET oauth_state_hash = NULL
             WHERE oauth_state_hash = $1 AND state = 'pending'
             RETURNING id, verifier, verifier_key_id",
        )
        .bind(hash(oauth_state))
        .fetch_optional(&self.pool)
        .await?;
        let Some((id, sealed, key_id)) = taken else {
            return Ok(None);
        };
        let verifier = match (sealed, key_id) {
            (Some(s), Some(k)) => {
                let plain = self
                    .cipher
                    .open(&k, &s)
                    .map_err(|source| StoreError::Crypto {
                        connection: format!("(connect session {id})"),
                        source,
                    })?;
                Some(String::from_utf8(plain).map_err(|_| StoreError::Corrupt {
                    what: "session verifier",
                    message: "not UTF-8".into(),
                })?)
            }
            _ => None,
        };
        Ok(Some((self.connect_session(&id).await?, verifier)))
    }

    /// End a pending session: connected (with the connection) or failed (with the
    /// reason). False when it was no longer pending.
    pub async fn finish_connect_session(
        &self,
        id: &str,
        outcome: Result<&str, &str>,
    ) -> Result<bool, StoreError> {
        let (state, connection, reason) = match outcome {
            Ok(connection) => ("connected", Some(connection), None),
            Err(reason) => ("failed", None, Some(reason)),
        };
        let done = sqlx::query(
            "UPDATE connect_sessions SET state = $1, connection_id = $2, reason = $3, finished_at = $4,
                 oauth_state_hash = NULL, verifier = NULL, verifier_key_id = NULL
             WHERE id = $5 AND state = 'pending'",
        )
        .bind(state)
        .bind(connection)
        .bind(reason)
        .bind(stamp(Utc::now()))
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}
