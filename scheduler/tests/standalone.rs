//! The README's first command: standalone mode shows events flowing within a minute.

use std::process::Command;

use tributary_e2e::repo_root;

#[test]
fn standalone_shows_events_flowing_within_a_minute() {
    let data =
        std::env::temp_dir().join(format!("tributary-standalone-test-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_tributary-scheduler"))
        .current_dir(repo_root())
        .args([
            "standalone",
            "--duration-seconds",
            "12",
            "--api-addr",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(&data)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("Kafka (librdkafka mock cluster): 127.0.0.1:"),
        "{stdout}"
    );
    let last = stdout
        .lines()
        .rfind(|l| l.starts_with('['))
        .unwrap_or_default();
    // The demo's providers also create a record every 10 s, so counts can exceed the seeded data.
    let count = |kind: &str| -> u64 {
        let counters = last.split_once("] ").map_or("", |(_, rest)| rest);
        counters
            .split("  ")
            .find_map(|part| {
                part.trim()
                    .strip_prefix(kind)?
                    .strip_prefix(": ")?
                    .parse()
                    .ok()
            })
            .unwrap_or(0)
    };
    for (kind, seeded) in [
        ("crm.contact.created", 120),
        ("ticketing.ticket.created", 120),
        ("hris.employee.created", 90),
        ("run.completed", 1),
    ] {
        assert!(
            count(kind) >= seeded,
            "the progress line shows at least {seeded} {kind}: {last}\n{stdout}"
        );
    }
}
