//! Checkpoints on S3: a real S3-compatible server (moto) on loopback, reached through a proxy
//! that can be taken down. Kill-and-resume keeps the output exactly-once; an outage shorter
//! than `tolerable-failures` checkpoints does not fail the job, a longer one does, saying why.
use std::path::Path;
use std::time::{Duration, Instant};

use weir_e2e::s3::{BUCKET, S3Server};
use weir_e2e::{
    clicks_job, expected_counts, expected_lines, generated_clicks, kill_repeatedly, sink_lines, weir_with_env,
    write_job,
};

/// The clicks job at parallelism 2 reading `clicks` clicks at 4000 per second, checkpointing
/// every 100 ms into the test bucket; `settings` adds to the job.
fn s3_job(dir: &Path, clicks: usize, settings: &str) -> String {
    let input = dir.join("clicks.jsonl");
    generated_clicks(&input, clicks, 40);
    let job = clicks_job(&input, "count", 2, &dir.join("out")).replacen(
        "type = \"file\"\npath = ",
        "type = \"file\"\nrate = 4000\npath = ",
        1,
    );
    let storage = format!("s3://{BUCKET}/checkpoints");
    write_job(dir, &format!("{job}\n[checkpointing]\ninterval = \"100ms\"\nstorage = \"{storage}\"\n{settings}\n"))
}

/// Completed checkpoints of the clicks job in the bucket.
fn completed(s3: &S3Server) -> usize {
    s3.keys("checkpoints/clicks-per-user/").iter().filter(|k| k.ends_with("/_metadata")).count()
}

fn run(job: &str, s3: &S3Server, args: &[&str]) -> weir_e2e::Output {
    let mut all = vec!["run", job, "--listen", "none"];
    all.extend_from_slice(args);
    weir_with_env(&all, &s3.env(), Duration::from_secs(120))
}

fn undisturbed_output(dir: &Path) -> Vec<String> {
    expected_lines(&expected_counts(&dir.join("clicks.jsonl")))
}

/// Runs the job with `settings` on S3, kills it three times at random moments, resumes it, and
/// checks the output is the undisturbed one; returns the keys left in the bucket.
fn killed_and_resumed(s3: &S3Server, settings: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let job = s3_job(dir.path(), 8000, settings);
    let killed = kill_repeatedly(&job, &s3.env(), 3, || completed(s3) > 0);
    assert!(killed >= 2, "the job was killed {killed} times of 3");
    let resumed = run(&job, s3, &["--from-checkpoint", "latest"]);
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    assert!(resumed.stderr.contains("resuming job 'clicks-per-user' from checkpoint"), "{}", resumed.stderr);
    assert_eq!(sink_lines(&dir.path().join("out")), undisturbed_output(dir.path()));
    s3.keys("checkpoints/clicks-per-user/")
}

#[test]
fn killed_and_resumed_from_s3_the_output_is_exactly_once() {
    let s3 = S3Server::start();
    let keys = killed_and_resumed(&s3, "");
    // Each checkpoint is a _metadata and one state file per count subtask; one is retained.
    assert_eq!(keys.len(), 3, "{keys:?}");
    assert!(keys[0].ends_with("/_metadata") && keys[1].ends_with("/count-per-user-0.state"), "{keys:?}");
}

#[test]
fn an_incremental_rocksdb_job_killed_and_resumed_from_s3_is_exactly_once() {
    let s3 = S3Server::start();
    let keys = killed_and_resumed(&s3, "retained = 2\n[state]\nbackend = \"rocksdb\"\nincremental = true\n");
    // Two checkpoints of each count subtask's database files, their SST files shared.
    assert_eq!(keys.iter().filter(|k| k.ends_with("/_metadata")).count(), 2, "{keys:?}");
    assert!(keys.iter().any(|k| k.contains("/shared/") && k.ends_with(".sst")), "{keys:?}");
    assert!(keys.iter().any(|k| k.contains("/count-per-user-1/MANIFEST-")), "{keys:?}");
    assert!(!keys.iter().any(|k| k.ends_with(".state")), "{keys:?}");
}

/// Starts the job, waits for a completed checkpoint, then takes the storage down for `outage`
/// (until the job ends when `None`); returns the finished run.
fn run_through_outage(s3: &S3Server, job: &str, outage: Option<Duration>) -> weir_e2e::Output {
    let (s3_env, job) = (s3.env(), job.to_string());
    let run = std::thread::spawn(move || {
        weir_with_env(&["run", &job, "--listen", "none"], &s3_env, Duration::from_secs(120))
    });
    let started = Instant::now();
    while completed(s3) == 0 {
        assert!(started.elapsed() < Duration::from_secs(30), "no checkpoint completed");
        std::thread::sleep(Duration::from_millis(10));
    }
    s3.proxy.set_up(false);
    if let Some(outage) = outage {
        std::thread::sleep(outage);
        s3.proxy.set_up(true);
    }
    run.join().unwrap()
}

#[test]
fn an_outage_within_tolerable_failures_does_not_fail_the_job() {
    let s3 = S3Server::start();
    let dir = tempfile::tempdir().unwrap();
    let job = s3_job(dir.path(), 16000, "tolerable-failures = 100");
    let run = run_through_outage(&s3, &job, Some(Duration::from_millis(1500)));
    assert_eq!(run.code, 0, "{}", run.stderr);
    let warning = format!("failed: checkpoint storage s3://{BUCKET}/checkpoints:");
    assert!(run.stderr.contains(&warning), "each failed checkpoint is logged with its cause: {}", run.stderr);
    assert!(run.stderr.contains("tolerable failures in a row"), "{}", run.stderr);
    assert_eq!(sink_lines(&dir.path().join("out")), undisturbed_output(dir.path()));
}

#[test]
fn a_longer_outage_fails_the_job_with_its_cause() {
    let s3 = S3Server::start();
    let dir = tempfile::tempdir().unwrap();
    let job = s3_job(dir.path(), 16000, "tolerable-failures = 2\n[restart]\nstrategy = \"none\"");
    let run = run_through_outage(&s3, &job, None);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("job 'clicks-per-user' failed: checkpoint "), "{}", run.stderr);
    assert!(run.stderr.contains(&format!("checkpoint storage s3://{BUCKET}/checkpoints:")), "{}", run.stderr);
    assert!(run.stderr.contains("(3 checkpoints in a row failed; tolerable-failures is 2)"), "{}", run.stderr);
}
