//! RocksDB checkpoints and savepoints in the backend's own files, through the real binary:
//! incremental checkpoints survive SIGKILLs with exactly-once output and keep exactly the shared
//! files their retained checkpoints reference; a job that then touches few keys uploads few
//! bytes; a torn shared file makes the restore fall back to the checkpoint before; native
//! savepoints restore into RocksDB at another parallelism, moved to another directory, and are
//! refused by the memory backend.
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use weir_e2e::{
    Running, Server, clicks_job, completed_checkpoints, counts_before, expected_counts, expected_lines,
    generated_clicks, kill_repeatedly, position_number, read_metadata, sink_lines, weir, write_job,
};

const INCREMENTAL: &str = "[state]\nbackend = \"rocksdb\"\nincremental = true\nmanaged-memory = \"32MiB\"\n";

/// The clicks job at `parallelism` over `input` (8000 clicks of 40 users unless it exists), its
/// source limited to `rate` events/s, checkpoints every 100 ms into `chk/` (3 retained), and
/// `state` (a `[state]` table, or nothing).
fn job_file(dir: &Path, parallelism: u32, rate: u32, state: &str) -> String {
    let input = dir.join("clicks.jsonl");
    if !input.exists() {
        generated_clicks(&input, 8000, 40);
    }
    let job = clicks_job(&input, "count", parallelism, &dir.join("out")).replacen(
        "type = \"file\"\npath = ",
        &format!("type = \"file\"\nrate = {rate}\npath = "),
        1,
    );
    let checkpointing = "[checkpointing]\ninterval = \"100ms\"\nretained = 3\nstorage = \"file://chk\"\n";
    write_job(dir, &format!("{job}\n{checkpointing}\n{state}"))
}

fn undisturbed_output(dir: &Path) -> Vec<String> {
    expected_lines(&expected_counts(&dir.join("clicks.jsonl")))
}

/// The shared files a checkpoint's `_metadata` references.
fn referenced(checkpoint: &Path) -> BTreeSet<String> {
    let metadata = read_metadata(&checkpoint.join("_metadata"));
    let files = metadata["states"].as_array().unwrap().iter().flat_map(|s| s["files"].as_array().unwrap().clone());
    files.filter_map(|f| f["shared"].as_str().map(str::to_string)).collect()
}

/// The files in a job's `shared/` directory.
fn shared_files(job_dir: &Path) -> BTreeSet<String> {
    let entries = std::fs::read_dir(job_dir.join("shared")).into_iter().flatten().flatten();
    entries.map(|e| e.file_name().to_string_lossy().into_owned()).collect()
}

/// Every shared file is referenced by a retained checkpoint, and every referenced one is there.
fn assert_shared_files_are_exactly_the_referenced(job_dir: &Path) {
    let referenced: BTreeSet<String> = completed_checkpoints(job_dir).iter().flat_map(|c| referenced(c)).collect();
    assert!(!referenced.is_empty(), "incremental checkpoints reference shared files");
    assert_eq!(shared_files(job_dir), referenced);
}

#[test]
fn killed_again_and_again_an_incremental_job_commits_exactly_once_and_keeps_only_referenced_files() {
    let dir = tempfile::tempdir().unwrap();
    let job = job_file(dir.path(), 2, 4000, INCREMENTAL);
    let job_dir = dir.path().join("chk/clicks-per-user");
    let kills = kill_repeatedly(&job, &[], 4, || !completed_checkpoints(&job_dir).is_empty());
    assert!(kills >= 3, "the job was killed {kills} times of 4");
    let resumed = weir(&["run", &job, "--listen", "none", "--from-checkpoint", "latest"]);
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    assert!(resumed.stderr.contains("resuming job 'clicks-per-user' from checkpoint"), "{}", resumed.stderr);
    assert_eq!(sink_lines(&dir.path().join("out")), undisturbed_output(dir.path()), "every line once, none twice");
    let checkpoints = completed_checkpoints(&job_dir);
    assert_eq!(checkpoints.len(), 3, "{checkpoints:?}");
    let entries = std::fs::read_dir(&job_dir).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned());
    let left: Vec<String> = entries.filter(|name| !name.starts_with('.')).collect();
    assert_eq!(left.len(), 4, "the retained checkpoints and shared/, no directory of a deleted one: {left:?}");
    // Native: each count subtask's database files, no canonical state file.
    let own: Vec<String> = std::fs::read_dir(&checkpoints[2])
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(own.iter().filter(|f| f.ends_with(".state")).count(), 0, "{own:?}");
    assert!(own.contains(&"count-per-user-0".to_string()) && own.contains(&"count-per-user-1".to_string()), "{own:?}");
    assert_shared_files_are_exactly_the_referenced(&job_dir);
    // The same job switched to the memory backend cannot read RocksDB's files, and says so.
    let memory = job_file(dir.path(), 2, 4000, "");
    let refused = weir(&["run", &memory, "--listen", "none", "--from-checkpoint", "latest"]);
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(refused.stderr.contains("cannot restore operator 'count-per-user'"), "{}", refused.stderr);
    assert!(refused.stderr.contains("set [state] backend = \"rocksdb\""), "{}", refused.stderr);
}

#[test]
fn a_job_that_touches_few_keys_after_many_uploads_few_bytes_per_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    // 20,000 users once each, then 20,000 clicks of two users, at 10,000 clicks/s.
    let mut text = String::new();
    for i in 0..40_000 {
        let user = if i < 20_000 { i } else { i % 2 };
        text.push_str(&format!("{{\"ts\":{i},\"user\":\"u{user}\",\"logged_in\":true}}\n"));
    }
    std::fs::write(dir.path().join("clicks.jsonl"), text).unwrap();
    let job = job_file(dir.path(), 1, 10_000, INCREMENTAL);
    let server = Server::start(&dir.path().join("data"), &[]);
    let id = server.cli(&["submit", &job]).stdout.trim().to_string();
    let finished = server.wait_for_job(&id);
    assert_eq!(finished["state"], "finished", "{finished}");
    assert_eq!(sink_lines(&dir.path().join("out")), undisturbed_output(dir.path()));
    let (status, stats) = server.http("GET", &format!("/v1/jobs/{id}/checkpoints"), b"", None);
    assert_eq!(status, 200, "{stats}");
    // The newest checkpoints are of the two-user phase: most upload under a tenth of what they
    // hold (a compaction now and then rewrites the files it merges, and those go up again).
    let history: Vec<&serde_json::Value> =
        stats["history"].as_array().unwrap().iter().filter(|r| r["status"] == "completed").collect();
    assert!(history.len() >= 6, "{stats}");
    let small = history
        .iter()
        .filter(|r| r["checkpointed-size"].as_u64().unwrap() * 10 < r["state-size"].as_u64().unwrap())
        .count();
    assert!(small * 2 >= history.len(), "{small} of {} uploaded under a tenth: {stats}", history.len());
    let largest = stats["summary"]["checkpointed-size"]["max"].as_f64().unwrap();
    let full = history[0]["state-size"].as_f64().unwrap();
    assert!(largest >= full / 2.0, "some checkpoint uploaded most of the state once: {largest} of {full}");
    let listed = server.cli(&["checkpoints", &id]).stdout;
    assert!(listed.contains("UPLOADED"), "{listed}");
    assert_shared_files_are_exactly_the_referenced(&dir.path().join("chk/clicks-per-user"));
}

#[test]
fn a_torn_shared_file_makes_the_restore_use_the_checkpoint_before() {
    let dir = tempfile::tempdir().unwrap();
    let job = job_file(dir.path(), 2, 4000, INCREMENTAL);
    let job_dir = dir.path().join("chk/clicks-per-user");
    let killed = weir_e2e::run_and_kill(&job, &[], &[], |_| completed_checkpoints(&job_dir).len() >= 3);
    assert!(killed, "the job ran to its end before three checkpoints");
    let checkpoints = completed_checkpoints(&job_dir);
    let (before, latest) = (&checkpoints[checkpoints.len() - 2], &checkpoints[checkpoints.len() - 1]);
    let only_latest: Vec<String> = referenced(latest).difference(&referenced(before)).cloned().collect();
    assert!(!only_latest.is_empty(), "the latest checkpoint stored a shared file of its own");
    let torn = job_dir.join("shared").join(&only_latest[0]);
    let mut bytes = std::fs::read(&torn).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&torn, bytes).unwrap();
    let resumed = weir(&["run", &job, "--listen", "none", "--from-checkpoint", "latest"]);
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    let latest_id =
        latest.file_name().unwrap().to_string_lossy().trim_start_matches("chk-").trim_start_matches('0').to_string();
    let before_id =
        before.file_name().unwrap().to_string_lossy().trim_start_matches("chk-").trim_start_matches('0').to_string();
    assert!(resumed.stderr.contains(&format!("skipping checkpoint {latest_id}")), "{}", resumed.stderr);
    assert!(resumed.stderr.contains("does not match the checksum"), "{}", resumed.stderr);
    assert!(
        resumed.stderr.contains(&format!("resuming job 'clicks-per-user' from checkpoint {before_id}")),
        "{}",
        resumed.stderr
    );
    assert_eq!(sink_lines(&dir.path().join("out")), undisturbed_output(dir.path()), "every line once, none twice");
}

#[test]
fn a_native_savepoint_moves_to_rocksdb_at_another_parallelism_and_the_memory_backend_refuses_it() {
    let dir = tempfile::tempdir().unwrap();
    let rocksdb = "[state]\nbackend = \"rocksdb\"\n";
    let job = job_file(dir.path(), 2, 4000, rocksdb);
    let mut running = Running::start(&job, &[]);
    std::thread::sleep(Duration::from_millis(700));
    let taken = running.cli(&["stop", &running.id, "--savepoint", "--format", "native"]);
    assert!(running.child.wait().unwrap().success());
    let metadata = read_metadata(&Path::new(&taken).join("_metadata"));
    assert_eq!(metadata["state-format"], "native", "{metadata}");
    let files = &metadata["operators"][0]["files"];
    assert!(files.as_array().unwrap().iter().all(|f| f["native"] == "rocksdb" && f["dir"].is_string()), "{files}");
    // Savepoints are relocatable: moved and renamed, it is still one.
    let savepoint = dir.path().join("moved/native-one");
    std::fs::create_dir_all(savepoint.parent().unwrap()).unwrap();
    std::fs::rename(&taken, &savepoint).unwrap();
    let savepoint = savepoint.to_string_lossy().into_owned();
    // What inspect reads of it is exactly the counts at its source position.
    let position = position_number(&metadata["sources"][0]["position"]);
    let expected = counts_before(&dir.path().join("clicks.jsonl"), position);
    let inspected = weir(&["savepoint", "inspect", &savepoint, "--operator", "count-per-user"]);
    assert_eq!(inspected.code, 0, "{}", inspected.stderr);
    let mut read: Vec<(String, u64)> = inspected
        .stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|v| (v["key"].as_str().unwrap().to_string(), v["value"].as_u64().unwrap()))
        .collect();
    read.sort();
    assert_eq!(read, expected.into_iter().collect::<Vec<_>>());
    // The memory backend refuses it before anything runs.
    let memory = job_file(dir.path(), 1, 4000, "");
    let refused = weir(&["run", &memory, "--listen", "none", "--from-savepoint", &savepoint]);
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(refused.stderr.contains("only the rocksdb backend restores"), "{}", refused.stderr);
    // RocksDB at parallelism 3 goes on from it to the end: every count once.
    let job = job_file(dir.path(), 3, 4000, rocksdb);
    let resumed = weir(&["run", &job, "--listen", "none", "--from-savepoint", &savepoint]);
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    assert_eq!(sink_lines(&dir.path().join("out")), undisturbed_output(dir.path()), "every line once, none twice");
    // Disposing of it deletes its files, the databases' directories and itself.
    let disposed = weir(&["savepoint", "dispose", "--force", &savepoint]);
    assert_eq!(disposed.code, 0, "{}", disposed.stderr);
    assert!(!Path::new(&savepoint).exists(), "{}", disposed.stderr);
}
