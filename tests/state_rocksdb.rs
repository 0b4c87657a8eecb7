//! The RocksDB state backend through the real binary: a job killed again and again commits
//! exactly the undisturbed output; savepoints move state between the memory backend and RocksDB
//! at other parallelisms with every count once; `weir serve` keeps the databases under its data
//! directory; state larger than the managed memory spills to disk with exact counts; bad `[state]`
//! tables are refused; no database outlives its job.
use std::path::{Path, PathBuf};
use std::time::Duration;

use weir_e2e::{
    Running, Server, clicks_job, completed_checkpoints, expected_counts, expected_lines, file_sink, generated_clicks,
    generator_source, job, kill_repeatedly, sink_lines, wasm_operator, weir, weir_with_limit, write_job,
};

const CLICKS: usize = 8000;
const ROCKSDB: &str = "[state]\nbackend = \"rocksdb\"\nmanaged-memory = \"32MiB\"\n";

/// The clicks job at `parallelism`, its source limited to 4000 events/s (2 s in all), with
/// checkpoints every 100 ms into `chk/`, and `state` (a `[state]` table, or nothing).
fn job_file(dir: &Path, parallelism: u32, state: &str) -> String {
    let input = dir.join("clicks.jsonl");
    if !input.exists() {
        generated_clicks(&input, CLICKS, 40);
    }
    let job = clicks_job(&input, "count", parallelism, &dir.join("out")).replacen(
        "type = \"file\"\npath = ",
        "type = \"file\"\nrate = 4000\npath = ",
        1,
    );
    let checkpointing = "[checkpointing]\ninterval = \"100ms\"\nretained = 3\nstorage = \"file://chk\"\n";
    write_job(dir, &format!("{job}\n{checkpointing}\n{state}"))
}

fn undisturbed_output(dir: &Path) -> Vec<String> {
    expected_lines(&expected_counts(&dir.join("clicks.jsonl")))
}

/// The databases left in `local_dir` (one directory per job inside it).
fn databases(local_dir: &Path) -> Vec<PathBuf> {
    let Ok(jobs) = std::fs::read_dir(local_dir) else { return Vec::new() };
    jobs.flatten()
        .flat_map(|job| std::fs::read_dir(job.path()).into_iter().flatten().flatten())
        .map(|e| e.path())
        .collect()
}

#[test]
fn killed_again_and_again_a_rocksdb_job_commits_exactly_the_undisturbed_output() {
    let dir = tempfile::tempdir().unwrap();
    let job = job_file(dir.path(), 2, ROCKSDB);
    let checkpointed = || !completed_checkpoints(&dir.path().join("chk/clicks-per-user")).is_empty();
    let kills = kill_repeatedly(&job, &[], 4, checkpointed);
    // Later runs have less left to read: one may end before its moment.
    assert!(kills >= 2, "the job was killed {kills} times of 4");
    let resumed = weir(&["run", &job, "--listen", "none", "--from-checkpoint", "latest"]);
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    assert!(resumed.stderr.contains("resuming job 'clicks-per-user' from checkpoint"), "{}", resumed.stderr);
    assert_eq!(sink_lines(&dir.path().join("out")), undisturbed_output(dir.path()), "every line once, none twice");
    // Killed processes leave their databases behind; the next run deletes those of processes that
    // are gone, and a finished run leaves none of its own.
    assert_eq!(databases(&dir.path().join("weir-data/rocksdb")), Vec::<PathBuf>::new());
}

#[test]
fn an_undisturbed_rocksdb_job_leaves_no_database_behind() {
    let dir = tempfile::tempdir().unwrap();
    let job = job_file(dir.path(), 3, ROCKSDB);
    let run = weir(&["run", &job, "--listen", "none"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(sink_lines(&dir.path().join("out")), undisturbed_output(dir.path()));
    let local = dir.path().join("weir-data/rocksdb");
    assert!(local.is_dir(), "the databases were under the default local-dir");
    assert_eq!(databases(&local), Vec::<PathBuf>::new());
}

/// Runs `job` until about `after`, then stops it with a savepoint; returns the savepoint.
fn stop_with_savepoint(job: &str, args: &[&str], after: Duration) -> String {
    let mut running = Running::start(job, args);
    std::thread::sleep(after);
    let savepoint = running.cli(&["stop", &running.id, "--savepoint"]);
    assert!(running.child.wait().unwrap().success());
    assert!(Path::new(&savepoint).join("_metadata").is_file(), "{savepoint}");
    savepoint
}

#[test]
fn savepoints_move_state_between_memory_and_rocksdb_at_other_parallelisms() {
    let dir = tempfile::tempdir().unwrap();
    // Memory at parallelism 2, stopped early; RocksDB at 3 from its savepoint, stopped again;
    // memory at 1 from that savepoint to the end. All three write into the same directory.
    let memory = job_file(dir.path(), 2, "");
    let first = stop_with_savepoint(&memory, &[], Duration::from_millis(600));
    let rocksdb = job_file(dir.path(), 3, ROCKSDB);
    let second = stop_with_savepoint(&rocksdb, &["--from-savepoint", &first], Duration::from_millis(600));
    assert!(sink_lines(&dir.path().join("out")).len() < undisturbed_output(dir.path()).len(), "stopped early");
    let memory = job_file(dir.path(), 1, "");
    let last = weir(&["run", &memory, "--listen", "none", "--from-savepoint", &second]);
    assert_eq!(last.code, 0, "{}", last.stderr);
    assert_eq!(sink_lines(&dir.path().join("out")), undisturbed_output(dir.path()), "every count once, in order");
    // The savepoint RocksDB wrote holds the same state the memory backend reads.
    let inspected = weir(&["savepoint", "inspect", &second, "--operator", "count-per-user"]);
    assert_eq!(inspected.code, 0, "{}", inspected.stderr);
    assert!(inspected.stdout.lines().count() > 0, "{}", inspected.stdout);
}

#[test]
fn a_server_keeps_rocksdb_databases_under_its_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &[]);
    let job = job_file(dir.path(), 2, "[state]\nbackend = \"rocksdb\"\n");
    let id = server.cli(&["submit", &job]).stdout.trim().to_string();
    std::thread::sleep(Duration::from_millis(500));
    // A checkpoint being stored has its directory beside its database for a moment.
    let live: Vec<PathBuf> =
        databases(&data.join("rocksdb")).into_iter().filter(|db| !db.to_string_lossy().contains(".chk-")).collect();
    assert_eq!(live.len(), 2, "one database per count-per-user subtask while it runs: {live:?}");
    assert!(live.iter().all(|db| db.parent().unwrap().ends_with(&id)), "{live:?}");
    let finished = server.wait_for_job(&id);
    assert_eq!(finished["state"], "finished", "{finished}");
    assert_eq!(sink_lines(&dir.path().join("out")), undisturbed_output(dir.path()));
    assert_eq!(databases(&data.join("rocksdb")), Vec::<PathBuf>::new(), "none outlives the job");
}

#[test]
fn bad_state_tables_are_refused_with_the_key_at_fault() {
    let dir = tempfile::tempdir().unwrap();
    for (state, message) in [
        (
            "[state]\nbackend = \"rocksdb\"\nmanaged-memory = \"1KiB\"\n",
            "[state] managed-memory \"1KiB\" is not a size of at least 16MiB",
        ),
        ("[state]\nlocal-dir = \"db\"\n", "[state] local-dir is a setting of the rocksdb backend"),
        ("[state]\nbackend = \"leveldb\"\n", "unknown variant `leveldb`, expected `memory` or `rocksdb`"),
        ("[state]\nbackend = \"rocksdb\"\nincremental-checkpoints = true\n", "unknown field `incremental-checkpoints`"),
    ] {
        let job = job_file(dir.path(), 1, state);
        let run = weir(&["run", &job, "--listen", "none"]);
        assert_eq!(run.code, 1, "{state}: {}", run.stderr);
        assert!(run.stderr.contains(message), "{state}: {}", run.stderr);
        assert!(!dir.path().join("out").exists() || sink_lines(&dir.path().join("out")).is_empty(), "nothing ran");
    }
}

#[test]
fn state_larger_than_managed_memory_spills_to_disk_with_exact_counts() {
    // 1,000,000 keys, one event each: about 25 MB of records against 16 MiB of managed memory (8
    // MiB of it for write buffers), so most of the state lives in SST files on disk. Slow today
    // (tens of seconds: see BENCHMARKS.md), hence the longer limit.
    let dir = tempfile::tempdir().unwrap();
    let keys = 1_000_000;
    let text = job(
        "many-keys",
        1,
        &[
            generator_source("events", keys, keys),
            wasm_operator("count", "count", &["input = \"hash\""]),
            file_sink("counts", &dir.path().join("out")),
        ],
    );
    let job = write_job(dir.path(), &format!("{text}\n[state]\nbackend = \"rocksdb\"\nmanaged-memory = \"16MiB\"\n"));
    let run = weir_with_limit(&["run", &job, "--listen", "none"], Duration::from_secs(300));
    assert_eq!(run.code, 0, "{}", run.stderr);
    let lines = sink_lines(&dir.path().join("out"));
    assert_eq!(lines.len() as u64, keys);
    let mut per_key = std::collections::HashMap::new();
    for line in &lines {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        per_key
            .entry(v["key"].as_str().unwrap().to_string())
            .or_insert_with(Vec::new)
            .push(v["count"].as_u64().unwrap());
    }
    assert_eq!(per_key.len() as u64, keys, "every key");
    assert!(per_key.values().all(|counts| counts == &[1]), "each key counted once");
}
