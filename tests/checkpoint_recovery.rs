//! Resuming from checkpoints: after kill -9, `weir run --from-checkpoint` continues every count
//! from the checkpoint's state and its sources from the checkpoint's positions.
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use weir_e2e::{
    clicks_job, completed_checkpoints, counts_before, generated_clicks, read_metadata, sink_lines, weir, weir_bin,
    write_job,
};

/// The slow clicks job with checkpoints every 50 ms, written into `dir`.
fn job_file(dir: &Path) -> String {
    let input = dir.join("clicks.jsonl");
    generated_clicks(&input, 8000, 40);
    let job = clicks_job(&input, "count", 2, &dir.join("out")).replacen(
        "type = \"file\"\npath = ",
        "type = \"file\"\nrate = 4000\npath = ",
        1,
    );
    write_job(dir, &format!("{job}\n[checkpointing]\ninterval = \"50ms\"\nretained = 3\nstorage = \"file://chk\"\n"))
}

/// Completed checkpoints of the test's job, oldest first.
fn completed(dir: &Path) -> Vec<PathBuf> {
    completed_checkpoints(&dir.join("chk/clicks-per-user"))
}

/// Starts the job, waits for `checkpoints` completed checkpoints (at most `retained` = 3 exist at
/// a time), and kills it with SIGKILL.
fn run_and_kill(dir: &Path, job: &str, checkpoints: usize) {
    let mut child = std::process::Command::new(weir_bin())
        .args(["run", job, "--listen", "none"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while completed(dir).len() < checkpoints {
        assert!(started.elapsed() < Duration::from_secs(30), "no checkpoints");
        assert!(child.try_wait().unwrap().is_none(), "the job ended before it was killed");
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

/// For each user, the counts a run resumed at `position` emits: from the checkpoint's count + 1
/// to the final count.
fn lines_after(input: &Path, position: u64) -> Vec<String> {
    let before = counts_before(input, position);
    let total = counts_before(input, std::fs::metadata(input).unwrap().len());
    let mut lines: Vec<String> = total
        .iter()
        .flat_map(|(user, &n)| {
            let from = before.get(user).copied().unwrap_or(0) + 1;
            (from..=n).map(move |c| format!(r#"{{"key":"{user}","count":{c}}}"#))
        })
        .collect();
    lines.sort();
    lines
}

#[test]
fn after_kill_9_the_job_resumes_from_its_latest_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let job = job_file(dir.path());
    run_and_kill(dir.path(), &job, 3);
    let latest = completed(dir.path()).pop().unwrap();
    let metadata = read_metadata(&latest.join("_metadata"));
    let (id, position) =
        (metadata["checkpoint"].as_u64().unwrap(), metadata["sources"][0]["position"].as_u64().unwrap());

    let resumed = weir(&["run", &job, "--listen", "none", "--from-checkpoint", "latest"]);
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    assert!(
        resumed.stderr.contains(&format!("resuming job 'clicks-per-user' from checkpoint {id}")),
        "{}",
        resumed.stderr
    );
    assert_eq!(sink_lines(&dir.path().join("out")), lines_after(&dir.path().join("clicks.jsonl"), position));
    // Checkpoint ids go on from the restored one.
    let newest = completed(dir.path()).pop().unwrap();
    assert!(read_metadata(&newest.join("_metadata"))["checkpoint"].as_u64().unwrap() > id);
}

#[test]
fn a_corrupt_newest_checkpoint_falls_back_to_the_one_before() {
    let dir = tempfile::tempdir().unwrap();
    let job = job_file(dir.path());
    run_and_kill(dir.path(), &job, 3);
    let done = completed(dir.path());
    let (newest, previous) = (&done[done.len() - 1], &done[done.len() - 2]);
    let mut metadata = std::fs::read(newest.join("_metadata")).unwrap();
    metadata[20] ^= 0x20;
    std::fs::write(newest.join("_metadata"), metadata).unwrap();
    let previous = read_metadata(&previous.join("_metadata"));

    let resumed = weir(&["run", &job, "--listen", "none", "--from-checkpoint", "latest"]);
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    assert!(
        resumed.stderr.contains("does not match its checksum"),
        "a warning names the corrupt file: {}",
        resumed.stderr
    );
    let id = previous["checkpoint"].as_u64().unwrap();
    assert!(resumed.stderr.contains(&format!("from checkpoint {id}")), "{}", resumed.stderr);
    let position = previous["sources"][0]["position"].as_u64().unwrap();
    assert_eq!(sink_lines(&dir.path().join("out")), lines_after(&dir.path().join("clicks.jsonl"), position));
}

#[test]
fn a_checkpoint_directory_can_be_named() {
    let dir = tempfile::tempdir().unwrap();
    let job = job_file(dir.path());
    run_and_kill(dir.path(), &job, 2);
    let chosen = completed(dir.path()).remove(0);
    let position = read_metadata(&chosen.join("_metadata"))["sources"][0]["position"].as_u64().unwrap();
    let resumed = weir(&["run", &job, "--listen", "none", "--from-checkpoint", &chosen.to_string_lossy()]);
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    assert_eq!(sink_lines(&dir.path().join("out")), lines_after(&dir.path().join("clicks.jsonl"), position));
}

#[test]
fn resuming_without_a_checkpoint_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let job = job_file(dir.path());
    let run = weir(&["run", &job, "--listen", "none", "--from-checkpoint", "latest"]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("no completed checkpoint of job 'clicks-per-user' in file://chk"), "{}", run.stderr);
    let run = weir(&["run", &job, "--listen", "none", "--from-checkpoint", "/tmp/not-a-checkpoint"]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("not \"latest\" nor a checkpoint directory"), "{}", run.stderr);
}
