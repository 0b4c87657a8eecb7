//! Checkpoints seen from the control plane: statistics (`GET /v1/jobs/{id}/checkpoints`,
//! `weir checkpoints`), `weir serve` resuming the jobs it was running when it died, and what
//! canceling does to a job's checkpoints.
use std::path::Path;
use std::time::{Duration, Instant};

use weir_e2e::{
    Server, clicks_job, completed_checkpoints, expected_counts, expected_lines, generated_clicks, job, read_metadata,
    sink_lines, wasm_operator, write_job,
};

/// The clicks job at parallelism 2 reading 8000 clicks at 4000 per second, checkpointing every
/// 100 ms into `<dir>/chk`.
fn slow_clicks_job(dir: &Path) -> String {
    let input = dir.join("clicks.jsonl");
    generated_clicks(&input, 8000, 40);
    let job = clicks_job(&input, "count", 2, &dir.join("out")).replacen(
        "type = \"file\"\npath = ",
        "type = \"file\"\nrate = 4000\npath = ",
        1,
    );
    let storage = format!("file://{}", dir.join("chk").display());
    write_job(dir, &format!("{job}\n[checkpointing]\ninterval = \"100ms\"\nretained = 2\nstorage = \"{storage}\"\n"))
}

fn wait_until(what: &str, done: impl Fn() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < Duration::from_secs(30), "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn statistics_count_checkpoints_and_show_the_latest_and_a_history() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let id = server.cli(&["submit", &slow_clicks_job(dir.path())]).stdout.trim().to_string();
    assert_eq!(server.wait_for_job(&id)["state"], "finished");

    let (status, stats) = server.http("GET", &format!("/v1/jobs/{id}/checkpoints"), b"", None);
    assert_eq!(status, 200, "{stats}");
    let counts = &stats["counts"];
    let completed = counts["completed"].as_u64().unwrap();
    assert!(completed >= 5, "{stats}");
    assert_eq!((counts["total"].as_u64(), counts["failed"].as_u64()), (Some(completed), Some(0)), "{stats}");
    assert_eq!((counts["in-progress"].as_u64(), counts["restored"].as_u64()), (Some(0), Some(0)));
    let history = stats["history"].as_array().unwrap();
    assert_eq!(history.len() as u64, completed.min(10));
    let latest = &stats["latest"]["completed"];
    assert_eq!(latest["id"], history[0]["id"], "the history is newest first");
    // A source, three operators at parallelism 2, a sink at 2.
    assert_eq!((latest["num-subtasks"].as_u64(), latest["num-acknowledged-subtasks"].as_u64()), (Some(9), Some(9)));
    assert!(latest["end-to-end-duration-ms"].as_f64().unwrap() > 0.0);
    let count = &latest["tasks"]["count-per-user"];
    assert_eq!(count["num-acknowledged-subtasks"], 2);
    assert!(count["sync-duration-ms"].as_f64().unwrap() > 0.0 && count["async-duration-ms"].as_f64().unwrap() > 0.0);
    // The size is what the checkpoint's _metadata records for its state files.
    let checkpoint = completed_checkpoints(&dir.path().join("chk/clicks-per-user")).pop().unwrap();
    let metadata = read_metadata(&checkpoint.join("_metadata"));
    assert_eq!(metadata["checkpoint"], latest["id"]);
    let size: u64 = metadata["states"].as_array().unwrap().iter().map(|s| s["size"].as_u64().unwrap()).sum();
    assert_eq!((count["state-size"].as_u64(), latest["state-size"].as_u64()), (Some(size), Some(size)));

    let shown = server.cli(&["checkpoints", &id]);
    assert_eq!(shown.code, 0, "{}", shown.stderr);
    assert!(shown.stdout.starts_with(&format!("checkpoints: {completed} triggered, {completed} completed, 0 failed")));
    let row = format!("{:>10}  completed", latest["id"]);
    assert!(shown.stdout.contains(&row), "{}", shown.stdout);
    let missing = server.cli(&["checkpoints", "0123"]);
    assert_eq!(missing.code, 1);
    assert!(
        missing.stderr.contains("no job with an id starting with 0123 (`weir jobs` lists them)"),
        "{}",
        missing.stderr
    );
}

#[test]
fn serve_resumes_the_jobs_it_was_running_when_it_died() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &[]);
    let id = server.cli(&["submit", &slow_clicks_job(dir.path())]).stdout.trim().to_string();
    wait_until("two checkpoints completed", || {
        completed_checkpoints(&dir.path().join("chk/clicks-per-user")).len() >= 2
    });
    server.kill();

    let server = Server::start(&data, &[]);
    let job = server.wait_for_job(&id);
    assert_eq!((job["state"].as_str(), job["attempt"].as_u64()), (Some("finished"), Some(1)), "{job}");
    let expected = expected_lines(&expected_counts(&dir.path().join("clicks.jsonl")));
    assert_eq!(sink_lines(&dir.path().join("out")), expected, "exactly once across the crash");
    let (_, stats) = server.http("GET", &format!("/v1/jobs/{id}/checkpoints"), b"", None);
    assert_eq!(stats["counts"]["restored"], 1, "{stats}");
    assert!(stats["latest"]["restored"]["external-path"].as_str().unwrap().contains("/clicks-per-user/chk-"));
}

/// An unbounded job checkpointing every 50 ms with `retention`.
fn forever_job(dir: &Path, retention: &str) -> String {
    let source = "[[source]]\nuid = \"events\"\ntype = \"generator\"\nkeys = 10\nrate = 500\n".to_string();
    let job = job(
        "forever",
        1,
        &[source, wasm_operator("count", "count", &["input = \"hash\""]), weir_e2e::blackhole_sink("out")],
    );
    let storage = format!("file://{}", dir.join("chk").display());
    let checkpointing = format!("interval = \"50ms\"\nstorage = \"{storage}\"\nretention = \"{retention}\"");
    write_job(dir, &format!("{job}\n[checkpointing]\n{checkpointing}\n"))
}

#[test]
fn canceling_deletes_checkpoints_unless_they_are_retained() {
    for (retention, kept) in [("delete-on-cancellation", false), ("retain-on-cancellation", true)] {
        let dir = tempfile::tempdir().unwrap();
        let server = Server::start(&dir.path().join("data"), &[]);
        let id = server.cli(&["submit", &forever_job(dir.path(), retention)]).stdout.trim().to_string();
        let checkpoints = dir.path().join("chk/forever");
        wait_until("a checkpoint completed", || !completed_checkpoints(&checkpoints).is_empty());
        assert_eq!(server.cli(&["cancel", &id]).code, 0);
        assert_eq!(server.wait_for_job(&id)["state"], "canceled");
        assert_eq!(!completed_checkpoints(&checkpoints).is_empty(), kept, "{retention}");
    }
}
