//! Renewed credentials go to the state store (sealed) before they are used.

use futures::future::BoxFuture;

use crate::http::auth::TokenSink;
use crate::secrets::Credentials;
use crate::store::Store;

pub struct StoreTokens {
    store: Store,
    connection: String,
}

impl StoreTokens {
    pub fn new(store: Store, connection: String) -> Self {
        StoreTokens { store, connection }
    }
}

impl TokenSink for StoreTokens {
    fn store(&self, credentials: &Credentials) -> BoxFuture<'_, Result<(), String>> {
        let credentials = credentials.clone();
        Box::pin(async move {
            self.store
                .store_credentials(&self.connection, &credentials)
                .await
                .map_err(|e| e.to_string())
        })
    }
}
