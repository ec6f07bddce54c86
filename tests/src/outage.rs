//! Fault-test helpers: a private PostgreSQL cluster a test may stop and start without
//! disturbing anyone else's database, freezing a broker process, the worker binary, the
//! workers' readiness endpoints watched over time, and a group's committed offsets.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;

use crate::broker::free_port;
use crate::repo_root;

/// The `tributary-worker` binary beside this test's executable (`target/<profile>/`).
/// `cargo test -p tributary-e2e` does not build it: build it first (`.ci/run` does).
pub fn worker_binary() -> String {
    binary("tributary-worker")
}

/// A workspace binary beside this test's executable; see [`worker_binary`].
pub fn binary(name: &str) -> String {
    let exe = std::env::current_exe().expect("the test executable's path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps");
    let bin = dir.join(name);
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p {name}` first",
        bin.display()
    );
    bin.display().to_string()
}

/// A PostgreSQL cluster of the test's own (initdb in a temp dir, trust auth, a free port),
/// which the test may stop and start; removed on drop. Runs as the `postgres` user when
/// the test runs as root (PostgreSQL refuses root).
pub struct PrivatePostgres {
    dir: PathBuf,
    bin: PathBuf,
    pub port: u16,
}

fn postgres_bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("TRIBUTARY_TEST_PG_BIN") {
        return dir.into();
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.flatten().map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    found.retain(|p| p.join("initdb").exists());
    found.sort();
    found.pop().unwrap_or_else(|| {
        let out = Command::new("pg_config").arg("--bindir").output();
        let text = out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
        PathBuf::from(text.unwrap_or_default())
    })
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

impl PrivatePostgres {
    pub fn start() -> PrivatePostgres {
        let bin = postgres_bin_dir();
        let dir =
            std::env::temp_dir().join(format!("tributary-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let pg = PrivatePostgres {
            dir,
            bin,
            port: free_port(),
        };
        if running_as_root() {
            pg.run(Command::new("chown").args(["postgres", &pg.dir.display().to_string()]));
        }
        let initdb = pg.bin.join("initdb");
        pg.as_owner(&format!(
            "{} -D {} -U postgres --auth=trust -E UTF8 --no-sync",
            initdb.display(),
            pg.data().display()
        ));
        pg.resume();
        pg
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn run(&self, cmd: &mut Command) {
        let out = cmd.output().expect("run a PostgreSQL tool");
        assert!(
            out.status.success(),
            "{cmd:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Run a shell command line as the cluster's owner.
    fn as_owner(&self, line: &str) {
        self.run(&mut owner_command(line));
    }

    fn pg_ctl(&self, args: &str) {
        self.as_owner(&format!(
            "{} -D {} {args}",
            self.bin.join("pg_ctl").display(),
            self.data().display()
        ));
    }

    /// Start (again), waiting until it accepts connections.
    pub fn resume(&self) {
        self.pg_ctl(&format!(
            "-o '-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off' -l {} -w start",
            self.port,
            self.dir.display(),
            self.dir.join("log").display()
        ));
    }

    /// Stop now (open connections are cut, as in a crash or a failover).
    pub fn stop(&self) {
        self.pg_ctl("-m fast -w stop");
    }

    /// A new empty database on this cluster, as a `postgres://` URL.
    pub async fn fresh_database(&self) -> String {
        use sqlx::Connection;
        let admin = format!("postgres://postgres@127.0.0.1:{}/postgres", self.port);
        let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
        let name = format!("tributary_fault_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap();
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = owner_command(&format!(
            "{} -D {} -m immediate stop",
            self.bin.join("pg_ctl").display(),
            self.data().display()
        ))
        .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A shell command line run as the `postgres` user when this process is root.
fn owner_command(line: &str) -> Command {
    let mut cmd;
    if running_as_root() {
        cmd = Command::new("su");
        cmd.args(["postgres", "-c", line]);
    } else {
        cmd = Command::new("sh");
        cmd.args(["-c", line]);
    }
    cmd
}

/// Send a signal (`STOP`, `CONT`, ...) to a process.
pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill -{name} {pid}");
}

/// The HubSpot spec with `page_size` records a page (more pages: an outage lands mid-run).
pub fn small_page_specs(page_size: u64) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "tributary-fault-specs-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let text = std::fs::read_to_string(repo_root().join("provider-specs/hubspot.yaml")).unwrap();
    let mut doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    doc.as_mapping_mut()
        .unwrap()
        .insert("page_size".into(), page_size.into());
    std::fs::write(
        dir.join("hubspot.yaml"),
        serde_yaml_ng::to_string(&doc).unwrap(),
    )
    .unwrap();
    dir
}

/// One answer of a readiness endpoint.
#[derive(Debug, Clone)]
pub struct Probe {
    pub at: Instant,
    pub addr: String,
    /// 0 when the endpoint did not answer.
    pub status: u16,
    pub body: Value,
}

/// Polls `GET /readyz` of some workers every 250 ms on its own thread, keeping every
/// answer that differs from that worker's previous one.
pub struct ReadinessWatch {
    seen: Arc<Mutex<Vec<Probe>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl ReadinessWatch {
    pub fn start(addrs: Vec<String>) -> ReadinessWatch {
        let seen: Arc<Mutex<Vec<Probe>>> = Arc::default();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (s, done) = (seen.clone(), stop.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let http = reqwest::Client::new();
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    for addr in &addrs {
                        let answer = http
                            .get(format!("http://{addr}/readyz"))
                            .timeout(Duration::from_secs(2))
                            .send()
                            .await;
                        let (status, body) = match answer {
                            Ok(r) => {
                                let status = r.status().as_u16();
                                (status, r.json().await.unwrap_or(Value::Null))
                            }
                            Err(_) => (0, Value::Null),
                        };
                        let mut seen = s.lock().unwrap();
                        let last = seen.iter().rev().find(|p| &p.addr == addr);
                        if last.is_none_or(|l| l.status != status || l.body != body) {
                            seen.push(Probe {
                                at: Instant::now(),
                                addr: addr.clone(),
                                status,
                                body,
                            });
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            });
        });
        ReadinessWatch { seen, stop }
    }

    pub fn probes(&self) -> Vec<Probe> {
        self.seen.lock().unwrap().clone()
    }

    /// Whether `addr` answered 503 naming `dependency` as down at some point.
    pub fn saw_down(&self, addr: &str, dependency: &str) -> bool {
        self.probes().iter().any(|p| {
            p.addr == addr
                && p.status == 503
                && p.body["down"]
                    .as_array()
                    .is_some_and(|d| d.iter().any(|x| x == dependency))
        })
    }

    /// Wait until `addr`'s latest answer is 200 (ready).
    pub fn wait_ready(&self, addr: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let last = self
                .probes()
                .into_iter()
                .rev()
                .find(|p| p.addr == addr)
                .map(|p| (p.status, p.body));
            if last.as_ref().is_some_and(|(s, _)| *s == 200) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{addr} is not ready again after {timeout:?}: {last:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for ReadinessWatch {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// For each partition of `topic`: (the group's committed offset, or -1; the end of the
/// partition).
pub fn committed_and_end(brokers: &str, group: &str, topic: &str) -> Vec<(i64, i64)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let partitions: Vec<i32> = md.topics()[0].partitions().iter().map(|p| p.id()).collect();
    let mut list = TopicPartitionList::new();
    for p in &partitions {
        list.add_partition(topic, *p);
    }
    let committed = consumer
        .committed_offsets(list, Duration::from_secs(10))
        .unwrap();
    partitions
        .iter()
        .map(|p| {
            let at = match committed.find_partition(topic, *p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o,
                _ => -1,
            };
            let (_, high) = consumer
                .fetch_watermarks(topic, *p, Duration::from_secs(10))
                .unwrap();
            (at, high)
        })
        .collect()
}
