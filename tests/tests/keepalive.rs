//! Idle OAuth connections are refreshed in the background before the provider
//! expires their unused refresh token (the spec's `refresh_token_idle_days`).

use serde_json::json;
use tributary::store::{NewConnection, Store};
use tributary::sync::keepalive::refresh_idle;
use tributary_e2e::{fresh_databases, repo_root, test_cipher, SandboxControl};
use tributary_sandbox::{self as sandbox, Profile};

#[tokio::test]
async fn idle_connections_are_refreshed_at_half_the_idle_limit() {
    for (backend, url) in fresh_databases().await {
        let profile =
            Profile::load(&repo_root().join("provider-specs/sandbox/quickbooks.yaml")).unwrap();
        let sbx = sandbox::start(profile, "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let control = SandboxControl::new(sbx.base_url());
        let store = Store::connect(&url, test_cipher()).await.unwrap();
        store.create_tenant("acme").await.unwrap();
        let new = |id: &str| {
            NewConnection {
            id: Some(id.into()),
            tenant: "acme".into(),
            provider: "quickbooks".into(),
            config: json!({"base_url": sbx.base_url(), "token_url": format!("{}/oauth2/v1/tokens/bearer", sbx.base_url()), "realm_id": "1"})
                .as_object()
                .unwrap()
                .clone(),
            credentials: serde_json::from_value(json!({"refresh_token": "sandbox-quickbooks-refresh", "client_id": "sandbox-client", "client_secret": "sandbox-client-secret"})).unwrap(),
            resources: vec!["customers".into()],
            schedule: None,
            full_schedule: None,
            timezone: "UTC".into(),
            external_id: None,
        }
        };
        store.create_connection(&new("idle")).await.unwrap();
        store.create_connection(&new("fresh")).await.unwrap();
        // "idle" was created 60 days ago and never refreshed: past half of QuickBooks' 100 days.
        sqlx::query(
            "UPDATE connections SET created_at = '2000-01-01T00:00:00.000Z' WHERE id = 'idle'",
        )
        .execute(store.pool())
        .await
        .unwrap();
        let specs = repo_root().join("provider-specs");
        assert_eq!(
            refresh_idle(&store, &specs, None, true).await.unwrap(),
            1,
            "{backend}"
        );
        let stats = control.stats().await.unwrap();
        assert_eq!(stats.refreshes, 1, "{backend}");
        let creds = store.connection("idle").await.unwrap().credentials;
        assert_ne!(
            creds.get("refresh_token"),
            Some("sandbox-quickbooks-refresh"),
            "{backend}: the rotated token is stored"
        );
        assert!(creds.get("access_token").is_some());
        // Now recently refreshed: nothing to do.
        assert_eq!(
            refresh_idle(&store, &specs, None, true).await.unwrap(),
            0,
            "{backend}"
        );
    }
}
