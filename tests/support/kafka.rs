//! A real Kafka-compatible broker for the tests (`tansu`, linked into `.venv/bin` by `cargo
//! xtask build`), on loopback behind an [`OutageProxy`] (clients reach it through the proxy
//! only: it is the address the broker advertises), killed when dropped. Records are produced and
//! read back with confluent-kafka (`kafka_client.py`), a client independent of weir's.
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::proxy::OutageProxy;
use crate::{free_port, repo};

/// A running broker that keeps its topics in memory.
pub struct Kafka {
    child: Child,
    /// The proxy every client goes through, if any.
    proxy: Option<OutageProxy>,
    /// The port clients connect to (the proxy's, if any).
    port: u16,
}

impl Kafka {
    /// A broker behind an outage proxy.
    pub fn start() -> Kafka {
        Kafka::start_with(true, false)
    }

    /// A broker clients reach directly (for benchmarks).
    pub fn start_direct() -> Kafka {
        Kafka::start_with(false, false)
    }

    /// A broker that requires SASL authentication (and knows no user).
    pub fn start_authenticating() -> Kafka {
        Kafka::start_with(false, true)
    }

    fn start_with(proxied: bool, authentication: bool) -> Kafka {
        let tansu = repo().join(".venv/bin/tansu");
        assert!(tansu.exists(), "{} is missing: run `cargo xtask build` first", tansu.display());
        let port = free_port();
        let proxy = proxied.then(|| OutageProxy::start(port));
        let advertised = proxy.as_ref().map_or(port, |p| p.port);
        let child = Command::new(tansu)
            .args(["broker", "--silent", "--storage-engine", "memory://tansu/"])
            .args(["--listener-url", &format!("tcp://127.0.0.1:{port}")])
            .args(["--advertised-listener-url", &format!("tcp://127.0.0.1:{advertised}")])
            .args(authentication.then_some("--authentication"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tansu starts");
        let started = Instant::now();
        while !answers(port) {
            assert!(started.elapsed() < Duration::from_secs(30), "tansu did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Kafka { child, proxy, port: advertised }
    }

    /// `bootstrap-servers` for weir and the test client.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts or ends an outage of a proxied broker.
    pub fn set_up(&self, up: bool) {
        self.proxy.as_ref().expect("a broker started behind a proxy").set_up(up);
    }

    /// Creates `topic` with `partitions` partitions. Retried for a few seconds: a broker that
    /// has just opened its port may still close a first connection (seen on a loaded machine).
    pub fn create_topic(&self, topic: &str, partitions: u32) {
        let started = Instant::now();
        for attempt in 0.. {
            let out = Command::new(repo().join(".venv/bin/tansu"))
                .args(["topic", "create", topic, "--partitions", &partitions.to_string()])
                .args(["--broker", &format!("tcp://{}", self.bootstrap())])
                .output()
                .expect("tansu topic create runs");
            let error = String::from_utf8_lossy(&out.stderr);
            // An attempt whose answer was lost may have created it.
            let retried = attempt > 0 && error.contains("already exists");
            if out.status.success() || retried {
                return;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "creating topic {topic}: {error}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Produces each line of `file` to `topic` (of `partitions` partitions), line i to partition
    /// i mod `partitions`, keyed by its JSON `user`.
    pub fn produce_lines(&self, topic: &str, partitions: u32, file: &Path) {
        let out = client(&["produce", &self.bootstrap(), topic, &partitions.to_string(), &file.to_string_lossy()]);
        assert!(out.status.success(), "producing to {topic}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Produces one record to partition 0 of `topic`: a key of `key` bytes and a value of `value`
    /// bytes (`None`: a tombstone).
    pub fn produce_sized(&self, topic: &str, key: usize, value: Option<usize>) {
        let value = value.map_or("none".to_string(), |v| v.to_string());
        let out = client(&["sized", &self.bootstrap(), topic, &key.to_string(), &value]);
        assert!(out.status.success(), "producing to {topic}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Every record value of `topic`, partition by partition.
    pub fn consume(&self, topic: &str) -> Vec<String> {
        let out = client(&["consume", &self.bootstrap(), topic]);
        assert!(out.status.success(), "reading {topic}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
    }
}

/// Runs the test client with `args` (see `kafka_client.py`).
pub fn client(args: &[&str]) -> std::process::Output {
    Command::new(repo().join(".venv/bin/python"))
        .arg(repo().join("tests/support/kafka_client.py"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("the kafka test client runs")
}

/// Whether the broker on `port` answers a Kafka request (ApiVersions v0, which needs no
/// authentication): an open port alone is not enough, a broker just started may still close a
/// first connection, which a client then reports as a transport failure.
fn answers(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    // size 10: api key 18 (ApiVersions), version 0, correlation id 1, no client id.
    let request = [0, 0, 0, 10, 0, 18, 0, 0, 0, 0, 0, 1, 0xff, 0xff];
    let mut size = [0u8; 4];
    stream.write_all(&request).is_ok() && stream.read_exact(&mut size).is_ok() && u32::from_be_bytes(size) > 0
}

impl Drop for Kafka {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
