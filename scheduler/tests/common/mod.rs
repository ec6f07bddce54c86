//! What the in-process webhook tests share: the scheduler's router (receiver and API) on a
//! loopback port, and the webhook intake beside the rig's worker.

// Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use tributary::connect::apps::Apps;
use tributary::connect::ConnectSettings;
use tributary::sync::worker::{StopSignal, WorkerOptions};
use tributary::sync::Syncer;
use tributary_e2e::inprocess::InProcess;
use tributary_scheduler::api::webhooks::WebhookState;
use tributary_scheduler::api::{router, ApiState, ConnectState};

/// The router serving and the intake consuming; both stop when this is dropped.
pub struct Receiving {
    /// `http://<addr>`: the API is under `/v1`, the receiver under `/webhooks`.
    pub base: String,
    pub syncer: Arc<Syncer>,
    pub stop: StopSignal,
}

impl Drop for Receiving {
    fn drop(&mut self) {
        self.stop.stop();
    }
}

/// Serve the router on the rig's lane (bearer `admin` for the API, `apps` for app keys)
/// and start the intake. With `public_url`, the server's own address is the deployment's
/// public URL (webhook registrations point at it).
pub async fn receiving(rig: &InProcess, admin: &str, apps: Apps, public_url: bool) -> Receiving {
    let lane = &rig.lane;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let syncer = Arc::new(Syncer::new(
        lane.store.clone(),
        lane.publisher.clone(),
        rig.settings(),
    ));
    let state = Arc::new(ApiState {
        store: lane.store.clone(),
        publisher: lane.publisher.clone(),
        topics: lane.topics.clone(),
        specs_dir: rig.settings().specs_dir.clone(),
        admin_token: admin.into(),
        syncer: syncer.clone(),
        connect: ConnectState {
            settings: ConnectSettings {
                public_url: public_url.then(|| base.clone()),
                ..Default::default()
            },
            apps,
        },
        webhooks: WebhookState {
            publisher: lane.publisher.clone(),
            ack_timeout: Duration::from_secs(2),
        },
    });
    tokio::spawn(async move { axum::serve(listener, router(state)).await });
    let stop = StopSignal::default();
    let options = WorkerOptions {
        brokers: lane.brokers.clone(),
        topics: lane.topics.clone(),
        session_timeout: Duration::from_secs(3),
        ..WorkerOptions::default()
    };
    tokio::spawn(tributary::webhooks::intake::intake(
        syncer.clone(),
        options,
        Duration::from_millis(200),
        stop.clone(),
    ));
    Receiving { base, syncer, stop }
}
