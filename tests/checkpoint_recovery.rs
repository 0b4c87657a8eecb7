//! Recovery with exactly-once output. A job killed with SIGKILL, again and again at random
//! moments, and resumed each time with `weir run --from-checkpoint latest`, commits exactly the
//! output of an undisturbed run; so does a job whose guest traps and that restarts in-process.
use std::path::{Path, PathBuf};

use weir_e2e::{
    clicks_job, completed_checkpoints, expected_counts, expected_lines, file_sink, file_source, generated_clicks, job,
    kill_repeatedly, read_metadata, run_and_kill, sink_lines, wasm_operator, weir, write_job,
};

const CLICKS: usize = 8000;

/// The clicks job at parallelism 2, its source limited to 4000 events/s (about 2 s in all), with
/// checkpoints every 100 ms; `checkpointing` adds settings. Returns the job file.
fn job_file(dir: &Path, checkpointing: &str) -> String {
    clicks_job_file(dir, (CLICKS, 40), 4000, 2, checkpointing)
}

/// The clicks job over `clicks.0` clicks by `clicks.1` users, at `rate` events/s and
/// `parallelism`, with checkpoints every 100 ms.
fn clicks_job_file(dir: &Path, clicks: (usize, usize), rate: u64, parallelism: u32, checkpointing: &str) -> String {
    let input = dir.join("clicks.jsonl");
    if !input.exists() {
        generated_clicks(&input, clicks.0, clicks.1);
    }
    let job = with_rate(clicks_job(&input, "count", parallelism, &dir.join("out")), rate);
    write_job(
        dir,
        &format!(
            "{job}\n[checkpointing]\ninterval = \"100ms\"\nretained = 3\nstorage = \"file://chk\"\n{checkpointing}\n"
        ),
    )
}

fn with_rate(job: String, rate: u64) -> String {
    job.replacen("type = \"file\"\npath = ", &format!("type = \"file\"\nrate = {rate}\npath = "), 1)
}

/// Completed checkpoints of the test's job, oldest first.
fn completed(dir: &Path) -> Vec<PathBuf> {
    completed_checkpoints(&dir.join("chk/clicks-per-user"))
}

/// What an undisturbed run of the clicks job commits.
fn undisturbed_output(dir: &Path) -> Vec<String> {
    expected_lines(&expected_counts(&dir.join("clicks.jsonl")))
}

/// Files the file sink has not committed (in progress or pending) in `out`.
fn uncommitted(out: &Path) -> Vec<String> {
    let names = std::fs::read_dir(out).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned());
    names.filter(|n| n.starts_with(".part-")).collect()
}

/// Resumes the job from checkpoint `from` and waits until it has finished.
fn resume(job: &str, from: &str) -> weir_e2e::Output {
    let resumed = weir(&["run", job, "--listen", "none", "--from-checkpoint", from]);
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    resumed
}

#[test]
fn killed_again_and_again_the_job_commits_exactly_the_undisturbed_output() {
    let dir = tempfile::tempdir().unwrap();
    // About 4 s of input: four kills at up to 750 ms each (and a start each) fit in it, so
    // that the fourth run, too, is still running at its moment.
    let job = clicks_job_file(dir.path(), (CLICKS, 40), 2000, 2, "");
    let kills = kill_repeatedly(&job, &[], 4, || !completed(dir.path()).is_empty());
    assert!(kills >= 3, "the job was killed {kills} times of 4");
    let resumed = resume(&job, "latest");
    assert!(resumed.stderr.contains("resuming job 'clicks-per-user' from checkpoint"), "{}", resumed.stderr);

    let out = dir.path().join("out");
    assert_eq!(sink_lines(&out), undisturbed_output(dir.path()), "every expected line once, none twice");
    assert_eq!(uncommitted(&out), Vec::<String>::new(), "the final checkpoint commits everything");
    // The final checkpoint covers the whole input: resuming from it adds nothing.
    resume(&job, "latest");
    assert_eq!(sink_lines(&out), undisturbed_output(dir.path()));
}

/// A state too large to copy at a barrier (over 8 MiB in memory: 300,000 users) is frozen
/// instead and written on over an overlay while the uploader stores it; killed at random moments
/// and resumed, the job still commits exactly the undisturbed output.
#[test]
fn a_state_frozen_at_its_checkpoints_stays_exactly_once_through_kills() {
    let dir = tempfile::tempdir().unwrap();
    let job = clicks_job_file(dir.path(), (600_000, 300_000), 200_000, 1, "");
    let kills = kill_repeatedly(&job, &[], 4, || !completed(dir.path()).is_empty());
    assert!(kills >= 2, "the job was killed {kills} times of 4");
    resume(&job, "latest");
    // A state file of over 3.5 MB holds over 218,000 users (16 bytes each), which take 40 bytes
    // each in memory: over 8 MiB.
    let file_size = |chk: &PathBuf| read_metadata(&chk.join("_metadata"))["states"][0]["size"].as_u64();
    let sizes: Vec<Option<u64>> = completed(dir.path()).iter().map(file_size).collect();
    assert!(sizes.iter().flatten().any(|&s| s > 3_500_000), "a checkpoint held over 8 MiB in memory: {sizes:?}");
    assert_eq!(sink_lines(&dir.path().join("out")), undisturbed_output(dir.path()), "every expected line once");
}

/// Damages the newest of three checkpoints with `damage`, resumes, and checks that the job warned
/// with `warning` and resumed from the one before, with exactly-once output.
fn falls_back_to_the_previous_checkpoint(damage: impl Fn(&Path), warning: &str) {
    let dir = tempfile::tempdir().unwrap();
    let job = job_file(dir.path(), "");
    assert!(run_and_kill(&job, &[], &[], |_| completed(dir.path()).len() >= 3));
    let done = completed(dir.path());
    damage(&done[done.len() - 1]);
    let previous = read_metadata(&done[done.len() - 2].join("_metadata"))["checkpoint"].as_u64().unwrap();

    let resumed = resume(&job, "latest");
    assert!(resumed.stderr.contains(warning), "a warning names the damaged file: {}", resumed.stderr);
    assert!(resumed.stderr.contains(&format!("from checkpoint {previous}")), "{}", resumed.stderr);
    // Output committed with the damaged checkpoint is written again, not twice.
    assert_eq!(sink_lines(&dir.path().join("out")), undisturbed_output(dir.path()));
}

#[test]
fn a_corrupt_newest_checkpoint_falls_back_to_the_one_before() {
    let flip = |checkpoint: &Path| {
        let mut metadata = std::fs::read(checkpoint.join("_metadata")).unwrap();
        metadata[20] ^= 0x20;
        std::fs::write(checkpoint.join("_metadata"), metadata).unwrap();
    };
    falls_back_to_the_previous_checkpoint(flip, "_metadata does not match its checksum");
}

#[test]
fn a_torn_state_file_falls_back_to_the_checkpoint_before() {
    let tear = |checkpoint: &Path| {
        let state = checkpoint.join("count-per-user-1.state");
        let bytes = std::fs::read(&state).unwrap();
        std::fs::write(&state, &bytes[..bytes.len() / 2]).unwrap();
    };
    falls_back_to_the_previous_checkpoint(tear, "count-per-user-1.state does not match the checksum in _metadata");
}

#[test]
fn a_checkpoint_directory_can_be_named() {
    let dir = tempfile::tempdir().unwrap();
    let job = job_file(dir.path(), "");
    assert!(run_and_kill(&job, &[], &[], |_| completed(dir.path()).len() >= 2));
    let chosen = completed(dir.path()).remove(0);
    resume(&job, &chosen.to_string_lossy());
    assert_eq!(sink_lines(&dir.path().join("out")), undisturbed_output(dir.path()));
}

#[test]
fn at_least_once_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let job = job_file(dir.path(), "mode = \"at-least-once\"");
    assert!(run_and_kill(&job, &[], &[], |_| completed(dir.path()).len() >= 3));
    resume(&job, "latest");
    let lines = sink_lines(&dir.path().join("out"));
    for line in undisturbed_output(dir.path()) {
        assert!(lines.binary_search(&line).is_ok(), "{line} is missing");
    }
}

#[test]
fn resuming_without_a_checkpoint_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let job = job_file(dir.path(), "");
    let run = weir(&["run", &job, "--listen", "none", "--from-checkpoint", "latest"]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("no completed checkpoint of job 'clicks-per-user' in file://chk"), "{}", run.stderr);
    let run = weir(&["run", &job, "--listen", "none", "--from-checkpoint", "/tmp/not-a-checkpoint"]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("not \"latest\" nor a checkpoint directory"), "{}", run.stderr);
}

/// The clicks job with `flaky_count` counting, checkpointing every `interval`: it traps when a
/// user's count reaches 60 in attempts below `trap_attempts`; `restart` is the `[restart]` table.
fn flaky_job(dir: &Path, trap_attempts: u32, restart: &str, interval: &str) -> String {
    let input = dir.join("clicks.jsonl");
    generated_clicks(&input, CLICKS, 40);
    let config = format!("config = {{ trap-at = 60, attempts = {trap_attempts} }}");
    let job = job(
        "clicks-per-user",
        2,
        &[
            file_source("clicks", &input),
            wasm_operator("logged-in", "filter", &["config = { field = \"logged_in\" }"]),
            wasm_operator("by-user", "key_by", &["config = { field = \"user\" }"]),
            wasm_operator("count-per-user", "test/flaky_count", &["input = \"hash\"", &config]),
            file_sink("counts", &dir.join("out")),
        ],
    );
    let checkpointing = format!("[checkpointing]\ninterval = \"{interval}\"\nstorage = \"file://chk\"");
    write_job(dir, &format!("{}\n{checkpointing}\n[restart]\n{restart}\n", with_rate(job, 4000)))
}

#[test]
fn a_trapping_guest_restarts_from_the_latest_checkpoint_with_exactly_once_output() {
    let dir = tempfile::tempdir().unwrap();
    let job = flaky_job(dir.path(), 1, "strategy = \"fixed-delay\"\nattempts = 3\ndelay = \"10ms\"", "100ms");
    let run = weir(&["run", &job, "--listen", "none"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains("traps at count 60"), "the trap's message is logged: {}", run.stderr);
    assert_eq!(run.stderr.matches("restarting in 10ms (attempt 1)").count(), 1, "{}", run.stderr);
    assert_eq!(run.stderr.matches("attempt 1 resumes from checkpoint").count(), 1, "{}", run.stderr);
    assert_eq!(sink_lines(&dir.path().join("out")), undisturbed_output(dir.path()));
}

#[test]
fn the_restart_strategy_decides_when_to_give_up() {
    let dir = tempfile::tempdir().unwrap();
    let job = flaky_job(dir.path(), 3, "strategy = \"fixed-delay\"\nattempts = 2\ndelay = \"10ms\"", "100ms");
    let run = weir(&["run", &job, "--listen", "none"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(run.stderr.matches("resumes from checkpoint").count(), 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("not restarted again: the fixed-delay restart strategy (attempts 2, delay 10ms)"),
        "{}",
        run.stderr
    );
    let job = flaky_job(dir.path(), 1, "strategy = \"none\"", "100ms");
    let run = weir(&["run", &job, "--listen", "none"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("traps at count 60") && !run.stderr.contains("restarting"), "{}", run.stderr);
}

#[test]
fn a_restart_never_resumes_from_an_earlier_run_of_the_job() {
    let dir = tempfile::tempdir().unwrap();
    let restart = "strategy = \"fixed-delay\"\nattempts = 1\ndelay = \"10ms\"";
    // A first run completes and leaves its final checkpoint, at the end of the input.
    let run = weir(&["run", &flaky_job(dir.path(), 0, restart, "100ms"), "--listen", "none"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    // A fresh run fails before its own first checkpoint: it restarts from the start. Its output
    // is written beside the first run's, which stays.
    let first = weir_e2e::part_files(&dir.path().join("out"));
    let run = weir(&["run", &flaky_job(dir.path(), 1, restart, "1h"), "--listen", "none"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains("attempt 1 resumes from the start"), "{}", run.stderr);
    let mut second: Vec<String> = weir_e2e::part_files(&dir.path().join("out"))
        .iter()
        .filter(|p| !first.contains(p))
        .flat_map(|p| std::fs::read_to_string(p).unwrap().lines().map(str::to_string).collect::<Vec<_>>())
        .collect();
    second.sort();
    assert_eq!(second, undisturbed_output(dir.path()));
}

/// One flipped byte in the only checkpoint kept (`retained = 1`, the default): the job refuses
/// to resume rather than start over and write its committed output again, naming the damaged
/// file and what to do; on `weir run --from-checkpoint latest` and on a restarted `weir serve`.
#[test]
fn a_damaged_only_checkpoint_is_refused_not_taken_for_no_checkpoint() {
    let flip = |checkpoint: &Path| {
        let mut metadata = std::fs::read(checkpoint.join("_metadata")).unwrap();
        metadata[20] ^= 0x20;
        std::fs::write(checkpoint.join("_metadata"), metadata).unwrap();
    };
    let dir = tempfile::tempdir().unwrap();
    let job = std::fs::read_to_string(job_file(dir.path(), "")).unwrap().replace("retained = 3", "retained = 1");
    let job = write_job(dir.path(), &job);
    assert!(run_and_kill(&job, &[], &[], |_| !completed(dir.path()).is_empty()));
    let done = completed(dir.path());
    assert_eq!(done.len(), 1, "one checkpoint kept");
    flip(&done[0]);
    let before = sink_lines(&dir.path().join("out"));
    let refused = weir(&["run", &job, "--listen", "none", "--from-checkpoint", "latest"]);
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    for needle in [
        "no intact checkpoint of job 'clicks-per-user'",
        "_metadata does not match its checksum",
        "--from-savepoint",
        "without --from-checkpoint",
    ] {
        assert!(refused.stderr.contains(needle), "{needle}: {}", refused.stderr);
    }
    assert_eq!(sink_lines(&dir.path().join("out")), before, "nothing written again");

    // The same job on a server killed after its first checkpoint, damaged, restarted.
    let dir = tempfile::tempdir().unwrap();
    let job = std::fs::read_to_string(job_file(dir.path(), "")).unwrap().replace("retained = 3", "retained = 1");
    let job = write_job(dir.path(), &job.replace("rate = 4000", "rate = 1000"));
    let data = dir.path().join("data");
    let server = weir_e2e::Server::start(&data, &[]);
    let id = server.cli(&["submit", &job]).stdout.trim().to_string();
    let started = std::time::Instant::now();
    while completed(dir.path()).is_empty() {
        assert!(started.elapsed() < std::time::Duration::from_secs(30), "no checkpoint completed");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    server.kill();
    let done = completed(dir.path());
    flip(&done[done.len() - 1]);
    let server = weir_e2e::Server::start(&data, &[]);
    let ended = server.wait_for_job(&id);
    assert_eq!(ended["state"], "failed", "{ended}");
    let failure = ended["failure"].as_str().unwrap_or_default();
    assert!(failure.contains("no intact checkpoint of job 'clicks-per-user'"), "{failure}");
}
