//! One request of a spec's `webhooks.subscribe` (create, read the secret, renew, delete):
//! made like any page, through the connection's auth, budgets, throttles and retries,
//! its answer returned whole for the caller to read with the spec's expressions.

use std::sync::Arc;

use serde_json::Value;

use super::event::Observer;
use super::{
    Connection, ConnectionRuntime, EngineError, ErrorKind, Reads, ResourceRun, RunOptions,
};
use crate::spec::compile::Plan;
use crate::spec::compile_webhooks::SubscribeStep;
use crate::spec::CompiledSpec;

/// What `subscribe`'s templates see besides the connection's config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscribeVars {
    pub webhook_url: String,
    pub connection_id: String,
    pub subscription_id: Option<String>,
    pub secret: Option<String>,
    pub expires_at: Option<String>,
}

impl SubscribeVars {
    pub(super) fn context(&self) -> minijinja::Value {
        minijinja::context! {
            webhook_url => self.webhook_url.clone(),
            connection_id => self.connection_id.clone(),
            subscription_id => self.subscription_id.clone(),
            secret => self.secret.clone(),
            expires_at => self.expires_at.clone(),
        }
    }
}

impl ResourceRun {
    /// Prepare one of `subscribe`'s requests.
    pub fn subscribe_call(
        spec: Arc<CompiledSpec>,
        step: SubscribeStep,
        vars: SubscribeVars,
        connection: &Connection,
        runtime: &ConnectionRuntime,
        options: RunOptions,
        observer: Observer,
    ) -> Result<Self, EngineError> {
        let at = format!("webhooks.subscribe.{}", step.name());
        let fail = |kind: ErrorKind| EngineError {
            spec: spec.file.clone(),
            resource: at.clone(),
            page: 0,
            kind: Box::new(kind),
        };
        if subscribe_plan(&spec, step).is_none() {
            return Err(fail(ErrorKind::Config(format!("the spec has no `{at}`"))));
        }
        let reads = Reads::Subscribe(step, Box::new(vars));
        Self::outside_resources(
            spec, at, None, reads, connection, runtime, options, observer,
        )
    }

    /// Make the request; its answer (null for an empty 204).
    pub async fn answer(self) -> Result<Value, EngineError> {
        let state = self.first_state();
        let prepared =
            super::request::prepare(&self, &state).map_err(|kind| self.error(1, kind))?;
        let (_, body, _) = self
            .send(1, &prepared)
            .await
            .map_err(|kind| self.error(1, kind))?;
        Ok(body)
    }

    /// The variables of a subscribe request (empty for other runs).
    pub(super) fn subscribe_vars(&self) -> minijinja::Value {
        match &self.reads {
            Reads::Subscribe(_, vars) => vars.context(),
            _ => SubscribeVars::default().context(),
        }
    }
}

pub(super) fn subscribe_plan(spec: &CompiledSpec, step: SubscribeStep) -> Option<&Plan> {
    spec.webhooks.as_ref()?.subscribe.as_ref()?.plan(step)
}
