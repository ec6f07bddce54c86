//! Events on RabbitMQ, at the publisher (this machine's RabbitMQ, a virtual host of the
//! test's own): a page is confirmed as a whole; an event no queue is bound for fails its
//! page when publishing is mandatory (the default) and is dropped by the broker when not;
//! a wrong password is refused at connect without showing it.
#![cfg(feature = "process-tests")]

use std::time::Duration;

use tributary::bus::amqp::{events_exchange, AmqpEvents, AmqpSettings};
use tributary::bus::{OutMessage, Publisher, Topics};
use tributary_e2e::amqp::TestVhost;
use tributary_e2e::broker::TopicReader;

fn change(id: &str, kind: &str) -> OutMessage {
    OutMessage {
        topic: "t.crm.contact".into(),
        key: format!("acme:{id}"),
        payload: Some(format!(r#"{{"id":"{id}"}}"#).into_bytes()),
        headers: vec![
            ("tenant", "acme".into()),
            ("type", kind.into()),
            ("ce_id", id.into()),
        ],
    }
}

async fn publisher(vhost: &TestVhost, mandatory: bool) -> Publisher {
    let topics = Topics::new("t");
    let settings = AmqpSettings {
        url: vhost.url(),
        mandatory,
    };
    let events = AmqpEvents::connect(settings, &topics).await.unwrap();
    // No Kafka is reached: every message of these tests is an event.
    Publisher::new("127.0.0.1:1")
        .unwrap()
        .with_amqp_events(events, &topics)
}

#[tokio::test(flavor = "multi_thread")]
async fn mandatory_events_need_a_bound_queue_and_pages_are_confirmed_whole() {
    let vhost = TestVhost::new();
    let topics = Topics::new("t");
    let mut contacts =
        TopicReader::amqp(&vhost.url(), &events_exchange(&topics), &["crm.contact.*"]);
    let strict = publisher(&vhost, true).await;
    let page: Vec<OutMessage> = (0..50)
        .map(|i| change(&format!("evt_{i}"), "crm.contact.updated"))
        .collect();
    strict.publish_all(&page).await.unwrap();
    contacts.read_until(Duration::from_secs(10), "the page", |r| r.len() >= 50);
    assert_eq!(contacts.received[7].header("message_id"), Some("evt_7"));

    // Nobody bound `crm.company.*`: the page fails, saying what to do.
    let lost = vec![change("evt_x", "crm.company.created")];
    let err = strict.publish_all(&lost).await.unwrap_err().to_string();
    assert!(
        err.contains("crm.company.created") && err.contains("TRIBUTARY_AMQP_MANDATORY"),
        "{err}"
    );
    // The publisher recovers: the next page goes out.
    strict
        .publish_all(&[change("evt_50", "crm.contact.created")])
        .await
        .unwrap();
    contacts.read_until(Duration::from_secs(10), "after the refusal", |r| {
        r.len() >= 51
    });

    // Not mandatory: the broker drops what nobody wants, and the page succeeds.
    publisher(&vhost, false)
        .await
        .publish_all(&lost)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_password_is_refused_at_connect_and_never_shown() {
    let vhost = TestVhost::new();
    let url = vhost.url().replace("guest:guest", "guest:not-the-password");
    let settings = AmqpSettings {
        url,
        mandatory: true,
    };
    let err = AmqpEvents::connect(settings, &Topics::new("t"))
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(!err.contains("not-the-password"), "{err}");
    assert!(err.contains("guest:***@127.0.0.1"), "{err}");
}
