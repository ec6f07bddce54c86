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
    for kind in [
        "crm.contact.created: 120",
        "ticketing.ticket.created: 120",
        "hris.employee.created: 90",
        "run.completed",
    ] {
        assert!(
            last.contains(kind),
            "the progress line shows {kind}: {last}\n{stdout}"
        );
    }
}
