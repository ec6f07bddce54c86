//! A connection's webhook channel at the provider (`webhooks.subscribe`): registered
//! when the connection is created, renewed before it expires, registered again when a
//! registration failed or the provider forgot it, removed when the connection goes.
//!
//! The channel's URL carries a fresh random hook token (stored hashed: the URL itself
//! is never stored or logged). The token and any secret Tributary generates are stored
//! before the provider is called, since some providers call the URL while they register
//! it (a validation handshake) and deliver right after.

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use rand::distr::{Alphanumeric, SampleString};
use serde::Serialize;
use serde_json::Value;
use tracing::{info, warn};

use super::{SyncError, Syncer};
use crate::engine::{ignore_events, EngineError, ErrorKind, ResourceRun, SubscribeVars};
use crate::mapping::jsonata::Jsonata;
use crate::spec::compile_webhooks::{CompiledSubscribe, SubscribeStep};
use crate::spec::webhooks::Delivery;
use crate::spec::CompiledSpec;
use crate::store::{ConnectionRecord, StoreError};

/// What a connection's channel is, as its creator is told.
#[derive(Debug, Clone, Serialize)]
pub struct ChannelSetup {
    /// Where deliveries go, for a provider where the tenant registers it by hand (it
    /// holds the hook token: shown once, to whoever created the connection; never shown
    /// when Tributary registered it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Registered with the provider (the spec says how).
    pub registered: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscription_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SubscribeError {
    #[error("connection `{0}` does not exist")]
    UnknownConnection(String),
    #[error("connection `{connection}`: {message}")]
    Spec { connection: String, message: String },
    #[error(
        "registering the webhooks of connection `{connection}` failed at \
         `webhooks.subscribe.{step}` of {spec}: {message}; the connection still syncs by \
         polling, and the scheduler tries again"
    )]
    Provider {
        connection: String,
        spec: String,
        step: &'static str,
        message: String,
        /// The provider's HTTP status, when it answered with an error.
        status: Option<u16>,
    },
    #[error("state store: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Sync(#[from] SyncError),
}

/// The pieces every call of one connection needs.
struct Channel {
    conn: ConnectionRecord,
    spec: std::sync::Arc<CompiledSpec>,
}

impl Channel {
    fn subscribe(&self) -> Option<&CompiledSubscribe> {
        self.spec.webhooks.as_ref()?.subscribe.as_ref()
    }

    fn provider_error(&self, step: SubscribeStep, message: String) -> SubscribeError {
        SubscribeError::Provider {
            connection: self.conn.id.clone(),
            spec: self.spec.file.display().to_string(),
            step: step.name(),
            message,
            status: None,
        }
    }

    /// An engine error of one step, its HTTP status kept for the caller to decide on.
    fn engine_error(&self, step: SubscribeStep, e: &EngineError) -> SubscribeError {
        let status = match &*e.kind {
            ErrorKind::Status { status, .. } | ErrorKind::Unauthorized { status, .. } => {
                Some(*status)
            }
            _ => None,
        };
        let message = match &*e.kind {
            ErrorKind::Config(m) => m.clone(),
            kind => kind.to_string(),
        };
        SubscribeError::Provider {
            connection: self.conn.id.clone(),
            spec: self.spec.file.display().to_string(),
            step: step.name(),
            message,
            status,
        }
    }
}

impl Syncer {
    /// Open a connection's webhook channel: a URL, and the subscription where the spec
    /// says how to make one. None when the spec has no per-connection delivery.
    pub async fn open_webhooks(
        &self,
        connection: &str,
        public_base: &str,
    ) -> Result<Option<ChannelSetup>, SubscribeError> {
        let Some(ch) = self.channel(connection).await? else {
            return Ok(None);
        };
        let token = Alphanumeric.sample_string(&mut rand::rng(), 43);
        let url = format!(
            "{}/webhooks/{}/{token}",
            public_base.trim_end_matches('/'),
            ch.conn.provider
        );
        let Some(sub) = ch.subscribe() else {
            self.store
                .open_channel(
                    &ch.conn.id,
                    &ch.conn.provider,
                    Some(&token),
                    None,
                    None,
                    None,
                )
                .await?;
            return Ok(Some(ChannelSetup {
                url: Some(url),
                registered: false,
                subscription_id: None,
                expires_at: None,
            }));
        };
        let generated = sub
            .generate_secret
            .then(|| Alphanumeric.sample_string(&mut rand::rng(), 48));
        let store = &self.store;
        store
            .open_channel(
                &ch.conn.id,
                &ch.conn.provider,
                Some(&token),
                None,
                generated.as_deref(),
                None,
            )
            .await?;
        match self.register(&ch, sub, &url, generated).await {
            Ok((id, secret, expires_at)) => {
                store
                    .open_channel(
                        &ch.conn.id,
                        &ch.conn.provider,
                        Some(&token),
                        Some(&id),
                        secret.as_deref(),
                        expires_at,
                    )
                    .await?;
                info!(connection = %ch.conn.id, subscription = %id, "webhooks registered");
                Ok(Some(ChannelSetup {
                    url: None,
                    registered: true,
                    subscription_id: Some(id),
                    expires_at: expires_at.map(crate::domain::time::stamp),
                }))
            }
            Err(e) => {
                store
                    .record_delivery_failure(&ch.conn.id, &e.to_string())
                    .await?;
                Err(e)
            }
        }
    }

    /// Create the subscription and read its secret and expiry.
    async fn register(
        &self,
        ch: &Channel,
        sub: &CompiledSubscribe,
        url: &str,
        generated: Option<String>,
    ) -> Result<(String, Option<String>, Option<DateTime<Utc>>), SubscribeError> {
        let asked = asked_expiry(sub);
        let mut vars = SubscribeVars {
            webhook_url: url.to_string(),
            connection_id: ch.conn.id.clone(),
            subscription_id: None,
            secret: generated.clone(),
            expires_at: asked.map(crate::domain::time::stamp),
        };
        let step = SubscribeStep::Create;
        let answer = self.call(ch, step, &vars).await?;
        let id = read_text(&sub.create_id, &answer)
            .map_err(|m| ch.provider_error(step, format!("`create.id`: {m}")))?
            .ok_or_else(|| {
                ch.provider_error(step, "`create.id` found no id in the answer".into())
            })?;
        vars.subscription_id = Some(id.clone());
        let secret = match (&sub.create_secret, &sub.secret) {
            (Some(path), _) => read_text(path, &answer)
                .map_err(|m| ch.provider_error(step, format!("`create.secret`: {m}")))?,
            (None, Some((_, value))) => {
                let step = SubscribeStep::Secret;
                let read = match self.call(ch, step, &vars).await {
                    Ok(answer) => read_text(value, &answer)
                        .map_err(|m| ch.provider_error(step, format!("`secret.value`: {m}"))),
                    Err(e) => Err(e),
                };
                match read {
                    Ok(secret) => secret,
                    Err(e) => {
                        // A subscription whose secret is unknown cannot be verified: remove it.
                        self.remove(ch, &vars).await.ok();
                        return Err(e);
                    }
                }
            }
            (None, None) => generated,
        };
        let expires_at = match &sub.create_expires_at {
            Some(path) => read_time(path, &answer).or(asked),
            None => asked,
        };
        Ok((id, secret, expires_at))
    }

    /// Renew, or register again, the channels that need it before `horizon` from now
    /// (each spec's `renew.before_seconds` decides within that). Returns how many were
    /// handled; failures are logged and recorded on the channel, and tried again later.
    pub async fn upkeep_webhooks(
        &self,
        public_base: &str,
        horizon: std::time::Duration,
    ) -> Result<usize, SubscribeError> {
        let due = self
            .store
            .channels_due(Utc::now() + ChronoDuration::from_std(horizon).unwrap_or_default())
            .await?;
        let mut handled = 0;
        for connection in due {
            match self.upkeep_one(&connection, public_base).await {
                Ok(true) => handled += 1,
                Ok(false) => {}
                Err(e) => warn!(connection = %connection, error = %e, "webhook upkeep failed"),
            }
        }
        Ok(handled)
    }

    async fn upkeep_one(
        &self,
        connection: &str,
        public_base: &str,
    ) -> Result<bool, SubscribeError> {
        let Some(ch) = self.channel(connection).await? else {
            return Ok(false);
        };
        let Some(sub) = ch.subscribe() else {
            return Ok(false);
        };
        let Some(reg) = self.store.channel_registration(connection).await? else {
            return Ok(false);
        };
        let Some(id) = reg.subscription_id else {
            return self
                .open_webhooks(connection, public_base)
                .await
                .map(|_| true);
        };
        let Some(renew) = &sub.renew else {
            return Ok(false);
        };
        let lead = ChronoDuration::seconds(renew.before_seconds as i64);
        if reg.expires_at.is_some_and(|at| at - lead > Utc::now()) {
            return Ok(false);
        }
        let asked = asked_expiry(sub);
        let vars = SubscribeVars {
            webhook_url: String::new(),
            connection_id: connection.to_string(),
            subscription_id: Some(id),
            secret: reg.secret,
            expires_at: asked.map(crate::domain::time::stamp),
        };
        match self.call(&ch, SubscribeStep::Renew, &vars).await {
            Ok(answer) => {
                let at = renew
                    .expires_at
                    .as_ref()
                    .and_then(|p| read_time(p, &answer))
                    .or(asked);
                self.store.renew_channel(connection, at).await?;
                info!(connection = %connection, "webhook subscription renewed");
                Ok(true)
            }
            // The provider no longer has it (expired, removed): register anew.
            Err(SubscribeError::Provider {
                status: Some(404), ..
            }) => self
                .open_webhooks(connection, public_base)
                .await
                .map(|_| true),
            Err(e) => {
                self.store
                    .record_delivery_failure(connection, &e.to_string())
                    .await?;
                Err(e)
            }
        }
    }

    /// Remove a connection's subscription at the provider and forget its channel (a
    /// subscription the provider no longer has counts as removed).
    pub async fn close_webhooks(&self, connection: &str) -> Result<(), SubscribeError> {
        let Some(ch) = self.channel(connection).await? else {
            return Ok(());
        };
        let reg = self.store.channel_registration(connection).await?;
        if let (Some(_), Some(reg)) = (ch.subscribe(), reg) {
            if let Some(id) = reg.subscription_id {
                let vars = SubscribeVars {
                    connection_id: connection.to_string(),
                    subscription_id: Some(id),
                    secret: reg.secret,
                    ..SubscribeVars::default()
                };
                self.remove(&ch, &vars).await?;
            }
        }
        self.store.close_channel(connection).await?;
        Ok(())
    }

    async fn remove(&self, ch: &Channel, vars: &SubscribeVars) -> Result<(), SubscribeError> {
        if ch.subscribe().and_then(|s| s.delete.as_ref()).is_none() {
            return Ok(());
        }
        match self.call(ch, SubscribeStep::Delete, vars).await {
            Ok(_) => Ok(()),
            Err(SubscribeError::Provider {
                status: Some(404), ..
            }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The connection and its effective spec, when that spec delivers per connection.
    async fn channel(&self, connection: &str) -> Result<Option<Channel>, SubscribeError> {
        let conn = match self.store.connection(connection).await {
            Ok(c) => c,
            Err(StoreError::NotFound { .. }) => {
                return Err(SubscribeError::UnknownConnection(connection.to_string()))
            }
            Err(e) => return Err(e.into()),
        };
        let spec = self
            .effective_spec(&conn)
            .await?
            .map_err(|message| SubscribeError::Spec {
                connection: connection.to_string(),
                message,
            })?;
        let per_connection = spec
            .webhooks
            .as_ref()
            .is_some_and(|w| w.delivery == Delivery::Connection);
        Ok(per_connection.then_some(Channel { conn, spec }))
    }

    /// One of `subscribe`'s requests, with the connection's auth and budgets.
    async fn call(
        &self,
        ch: &Channel,
        step: SubscribeStep,
        vars: &SubscribeVars,
    ) -> Result<Value, SubscribeError> {
        let mut options = self.settings.engine.clone();
        options.tenant = ch.conn.tenant.clone();
        let (spec, connection, runtime, options) = self
            .runtime_of(ch.spec.clone(), &ch.conn, options)
            .map_err(|m| ch.provider_error(step, m))?;
        let run = ResourceRun::subscribe_call(
            spec,
            step,
            vars.clone(),
            &connection,
            &runtime,
            options,
            ignore_events(),
        )
        .map_err(|e| ch.engine_error(step, &e))?;
        run.answer().await.map_err(|e| ch.engine_error(step, &e))
    }
}

/// The expiry a subscription asks for: now + `lifetime_seconds`.
fn asked_expiry(sub: &CompiledSubscribe) -> Option<DateTime<Utc>> {
    sub.lifetime_seconds
        .map(|s| Utc::now() + ChronoDuration::seconds(s as i64))
}

/// A string (or number) an expression finds in an answer.
fn read_text(path: &Jsonata, answer: &Value) -> Result<Option<String>, String> {
    Ok(match path.eval_json(answer)? {
        Some(Value::String(s)) if !s.is_empty() => Some(s),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    })
}

fn read_time(path: &Jsonata, answer: &Value) -> Option<DateTime<Utc>> {
    let text = read_text(path, answer).ok()??;
    DateTime::parse_from_rfc3339(&text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}
