//! State time-to-live: entries not written for their state's time-to-live are never read again,
//! not saved in savepoints, and a key starts afresh (`examples/recent_count`: a one-second TTL).
use std::path::{Path, PathBuf};
use std::time::Duration;

use weir_e2e::*;

/// 100 events of key "a", 2,500 of key "b", 100 of "a" again (2,700 lines, read at 1,000 a
/// second: "a" is idle for 2.5 s in between).
fn events(dir: &Path) -> PathBuf {
    let path = dir.join("events.jsonl");
    let user = |i: usize| if (100..2600).contains(&i) { "b" } else { "a" };
    let lines: Vec<String> = (0..2700).map(|i| format!("{{\"user\":\"{}\"}}", user(i))).collect();
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

/// What the counts must be: "a" counts 1 to 100 twice (its count expired in between), "b" 1 to
/// 2,500.
fn expected() -> Vec<String> {
    let line = |key: &str, n: usize| format!("{{\"key\":\"{key}\",\"count\":{n}}}");
    let mut lines: Vec<String> = (1..=100).flat_map(|n| [line("a", n), line("a", n)]).collect();
    lines.extend((1..=2500).map(|n| line("b", n)));
    lines.sort();
    lines
}

const CHECKPOINTS: &str =
    "[checkpointing]\ninterval = \"200ms\"\nstorage = \"file://chk\"\nsavepoint-dir = \"savepoints\"\n";

fn job_file(dir: &Path, input: &Path, out: &Path) -> String {
    job_file_with(dir, input, out, CHECKPOINTS)
}

/// The same job, with `tables` (`[checkpointing]`, `[state]`) appended.
fn job_file_with(dir: &Path, input: &Path, out: &Path, tables: &str) -> String {
    let sections = [
        file_source("events", input) + "rate = 1000\n",
        wasm_operator("by-user", "key_by", &["config = { field = \"user\" }"]),
        wasm_operator("recent", "recent_count", &["input = \"hash\""]),
        file_sink("counts", out),
    ];
    write_job(dir, &format!("{}\n{tables}", job("recent-users", 2, &sections)))
}

#[test]
fn an_entry_expires_after_its_time_to_live_and_the_key_starts_afresh() {
    let rocksdb = format!("{CHECKPOINTS}[state]\nbackend = \"rocksdb\"\n");
    // The default configuration (no checkpointing), then checkpoints on both backends.
    let configurations = [("memory, no checkpoints", ""), ("memory", CHECKPOINTS), ("rocksdb", rocksdb.as_str())];
    for (backend, state) in configurations {
        let dir = tempfile::tempdir().unwrap();
        let input = events(dir.path());
        let out = dir.path().join("out");
        let run = weir(&["run", &job_file_with(dir.path(), &input, &out, state), "--listen", "none"]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert_eq!(sink_lines(&out), expected(), "{backend} backend");
    }
}

#[test]
fn expired_entries_are_left_out_of_savepoints_and_a_restore_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let input = events(dir.path());
    let out = dir.path().join("out");
    let job = job_file(dir.path(), &input, &out);
    let mut running = Running::start(&job, &[]);
    // After "a" expired (its last write at 0.1 s, a second to live), while "b" is being counted.
    std::thread::sleep(Duration::from_millis(1800));
    let savepoint = running.cli(&["stop", &running.id, "--savepoint"]);
    assert!(running.child.wait().unwrap().success());
    let inspected = weir(&["savepoint", "inspect", &savepoint, "--operator", "recent"]);
    assert_eq!(inspected.code, 0, "{}", inspected.stderr);
    let entries: Vec<serde_json::Value> = inspected.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(entries.len(), 1, "only b's count: {}", inspected.stdout);
    assert_eq!(entries[0]["key"], "b");
    assert!(entries[0]["expires-at"].as_i64().is_some_and(|t| t > 0), "{}", inspected.stdout);
    let resumed = weir(&["run", &job, "--listen", "none", "--from-savepoint", &savepoint]);
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    assert_eq!(sink_lines(&out), expected(), "b counts on from the savepoint; a starts afresh");
}

#[test]
fn a_time_to_live_cannot_be_added_to_saved_state() {
    let dir = tempfile::tempdir().unwrap();
    let input = events(dir.path());
    let out = dir.path().join("out");
    let job = job_file(dir.path(), &input, &out);
    let with_count = std::fs::read_to_string(&job).unwrap().replace("recent_count.wasm", "count.wasm");
    std::fs::write(&job, &with_count).unwrap();
    let mut running = Running::start(&job, &[]);
    std::thread::sleep(Duration::from_millis(500));
    let savepoint = running.cli(&["stop", &running.id, "--savepoint"]);
    assert!(running.child.wait().unwrap().success());
    std::fs::write(&job, with_count.replace("count.wasm", "recent_count.wasm")).unwrap();
    let refused = weir(&["run", &job, "--listen", "none", "--from-savepoint", &savepoint]);
    assert_failed_with(
        &refused,
        &["state 'count' was saved without a time-to-live", "declares it with a time-to-live"],
    );
}
