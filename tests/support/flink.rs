//! A real Apache Flink cluster for the tests: `weir flink cluster start` (Flink 2.3 from PyPI, a
//! JobManager and TaskManagers on loopback) in a temporary directory on a free port, stopped when
//! dropped, also when the test fails. One cluster at a time ([`FlinkCluster::start`] holds a
//! lock): each is three JVMs on a machine of two cores.
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::{Output, free_port, weir_with_limit};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A running local Flink cluster.
pub struct FlinkCluster {
    dir: tempfile::TempDir,
    /// Its JobManager's REST endpoint.
    pub url: String,
    _lock: MutexGuard<'static, ()>,
}

impl FlinkCluster {
    /// Starts a JobManager and `taskmanagers` TaskManagers of two slots each.
    pub fn start(taskmanagers: u32) -> FlinkCluster {
        FlinkCluster::start_with(taskmanagers, 2)
    }

    /// Starts a JobManager and `taskmanagers` TaskManagers of `slots` slots each.
    pub fn start_with(taskmanagers: u32, slots: u32) -> FlinkCluster {
        let lock = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let cluster = FlinkCluster { url: format!("http://127.0.0.1:{port}"), dir, _lock: lock };
        let out = cluster.cli_with_limit(
            &[
                "flink",
                "cluster",
                "start",
                "--port",
                &port.to_string(),
                "--taskmanagers",
                &taskmanagers.to_string(),
                "--slots",
                &slots.to_string(),
            ],
            Duration::from_secs(1200),
        );
        assert_eq!(out.code, 0, "weir flink cluster start: {}{}", out.stdout, out.stderr);
        cluster
    }

    /// Its directory: configuration, logs, checkpoints, savepoints.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `weir ARGS` against it (`--jobmanager` and `--dir` given where the verb takes them).
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_with_limit(args, Duration::from_secs(300))
    }

    fn cli_with_limit(&self, args: &[&str], limit: Duration) -> Output {
        let mut all: Vec<&str> = args.to_vec();
        let dir = self.dir.path().to_string_lossy().into_owned();
        if args.get(1) == Some(&"cluster") {
            all.extend(["--dir", &dir]);
        } else {
            all.extend(["--jobmanager", &self.url]);
        }
        weir_with_limit(&all, limit)
    }

    /// Submits job file `job` with extra `args`; the Flink job id.
    pub fn run(&self, job: &str, args: &[&str]) -> String {
        let mut all = vec!["flink", "run", job];
        all.extend(args);
        let out = self.cli(&all);
        assert_eq!(out.code, 0, "weir flink run: {}{}", out.stdout, out.stderr);
        out.stdout.trim().to_string()
    }

    /// `GET path` of its REST API, as JSON.
    pub fn get(&self, path: &str) -> serde_json::Value {
        let (status, text) = crate::get_text(&format!("{}{path}", self.url), None);
        assert_eq!(status, 200, "GET {path}: {text}");
        serde_json::from_str(&text).expect("JSON")
    }

    /// The state of job `id` (RUNNING, FINISHED…).
    pub fn state(&self, id: &str) -> String {
        self.get(&format!("/jobs/{id}"))["state"].as_str().unwrap_or_default().to_string()
    }

    /// Waits until job `id` is in `state`, at most `limit`; its details. A job that fails, or
    /// reaches another end, fails the test with its exceptions.
    pub fn wait_for(&self, id: &str, state: &str, limit: Duration) -> serde_json::Value {
        let started = Instant::now();
        loop {
            let job = self.get(&format!("/jobs/{id}"));
            let now = job["state"].as_str().unwrap_or_default();
            if now == state {
                return job;
            }
            if ["FAILED", "CANCELED", "FINISHED"].contains(&now) || started.elapsed() > limit {
                let exceptions = self.get(&format!("/jobs/{id}/exceptions")).to_string();
                panic!("job {id} is {now}, not {state}: {}", exceptions.chars().take(4000).collect::<String>());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Completed checkpoints of job `id`.
    pub fn completed_checkpoints(&self, id: &str) -> u64 {
        self.get(&format!("/jobs/{id}/checkpoints"))["counts"]["completed"].as_u64().unwrap_or(0)
    }

    /// Waits until job `id` has completed `n` checkpoints (ten minutes at most).
    pub fn wait_for_checkpoints(&self, id: &str, n: u64) {
        let started = Instant::now();
        while self.completed_checkpoints(id) < n {
            assert!(started.elapsed() < Duration::from_secs(600), "job {id} completed no {n} checkpoints");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Process ids of its TaskManagers.
    pub fn taskmanager_pids(&self) -> Vec<u32> {
        pids_in(&self.dir.path().join("pid"), "taskexecutor")
    }
}

/// The pids in the pid files of `dir` whose name contains `what`.
fn pids_in(dir: &Path, what: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_name().to_string_lossy().contains(what) {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            pids.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
        }
    }
    pids.retain(|pid| Path::new(&format!("/proc/{pid}")).exists());
    pids
}

/// Process ids of the `weir worker` processes whose parent is one of `parents`.
pub fn worker_pids(parents: &[u32]) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        if args.len() < 2 || args[1] != b"worker" {
            continue;
        }
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let parent =
            stat.rsplit(')').next().and_then(|rest| rest.split_whitespace().nth(1)).and_then(|p| p.parse().ok());
        if parent.is_some_and(|p| parents.contains(&p)) {
            pids.push(pid);
        }
    }
    pids
}

impl Drop for FlinkCluster {
    fn drop(&mut self) {
        let _ = self.cli_with_limit(&["flink", "cluster", "stop"], Duration::from_secs(120));
        // The scripts stop what their pid files name; anything left (a TaskManager started
        // outside them) goes too.
        for pid in pids_in(&self.dir.path().join("pid"), "") {
            let _ = std::process::Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }
}

/// The Flink distribution the cluster runs: `$FLINK_HOME`, or the one weir installed.
pub fn flink_home() -> PathBuf {
    if let Some(home) = std::env::var_os("FLINK_HOME") {
        return PathBuf::from(home);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache"));
    cache.join("weir/flink/flink-2.3.0")
}
