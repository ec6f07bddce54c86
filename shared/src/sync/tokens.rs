//! Renewed credentials go to the state store (sealed) before they are used.

use futures::future::BoxFuture;

use crate::http::auth::TokenSink;
use crate::secrets::Credentials;
use crate::store::Store;

pub struct StoreTokens {
    store: Store,
    connection: String,
    /// Identifies this holder of the connection's refresh lock.
    holder: String,
}

impl StoreTokens {
    pub fn new(store: Store, connection: String) -> Self {
        StoreTokens {
            store,
            connection,
            holder: uuid::Uuid::new_v4().to_string(),
        }
    }
}

impl TokenSink for StoreTokens {
    fn store(&self, credentials: &Credentials) -> BoxFuture<'_, Result<(), String>> {
        let credentials = credentials.clone();
        Box::pin(async move {
            self.store
                .store_refreshed_credentials(&self.connection, &credentials)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn lock(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            self.store
                .lock_refresh(
                    &self.connection,
                    &self.holder,
                    std::time::Duration::from_secs(30),
                )
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn unlock(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Err(e) = self
                .store
                .unlock_refresh(&self.connection, &self.holder)
                .await
            {
                tracing::warn!(connection = %self.connection, "releasing the refresh lock failed (it expires by itself): {e}");
            }
        })
    }

    fn reload(&self) -> BoxFuture<'_, Result<Option<Credentials>, String>> {
        Box::pin(async move {
            self.store
                .connection(&self.connection)
                .await
                .map(|c| Some(c.credentials))
                .map_err(|e| e.to_string())
        })
    }
}
