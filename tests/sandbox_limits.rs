//! The sandbox: a guest that runs forever, allocates without bound or reaches for another key's
//! state is stopped, and the job fails with a message naming the operator, subtask and cause.
use std::time::Duration;

use weir_e2e::{blackhole_sink, file_source, job, repo, wasm_operator, weir_with_limit, write_job};

fn misbehaving_job(what: &str, limits: &str) -> String {
    let config = format!("config = {{ do = \"{what}\" }}");
    job(
        "misbehaving",
        1,
        &[
            file_source("clicks", &repo().join("examples/clicks/clicks.jsonl")),
            wasm_operator("by-user", "key_by", &["config = { field = \"user\" }"]),
            wasm_operator("bad", "test/misbehave", &["input = \"hash\"", &config, limits]),
            blackhole_sink("out"),
        ],
    )
}

fn assert_stopped(what: &str, limits: &str, needles: &[&str]) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let job = write_job(dir.path(), &misbehaving_job(what, limits));
    let out = weir_with_limit(&["run", &job], Duration::from_secs(60));
    assert_eq!(out.code, 1, "{}", out.stderr);
    for needle in ["job 'misbehaving' failed", "operator 'bad' subtask 1/1"].iter().chain(needles) {
        assert!(out.stderr.contains(needle), "stderr lacks {needle:?}:\n{}", out.stderr);
    }
    out.elapsed
}

#[test]
fn a_guest_that_loops_forever_is_stopped_by_its_deadline() {
    let elapsed = assert_stopped("spin", "call-deadline = \"300ms\"", &["exceeded its call deadline of 300ms"]);
    assert!(elapsed < Duration::from_secs(30), "took {elapsed:?}");
}

#[test]
fn a_guest_that_allocates_without_bound_is_stopped_by_its_memory_limit() {
    assert_stopped("hog", "memory-limit = \"32MiB\"", &["memory limit of 32 MiB exceeded"]);
}

#[test]
fn a_guest_cannot_address_state_of_a_key_it_was_not_given() {
    assert_stopped("foreign-slot", "", &["the guest used state slot 99, but the batch has"]);
}

/// A sleep is a WASI wait in the host, where epoch interruption cannot reach: the wait itself
/// ends at the call deadline.
#[test]
fn a_guest_that_sleeps_is_stopped_by_its_deadline() {
    let elapsed = assert_stopped(
        "sleep",
        "call-deadline = \"500ms\"",
        &["the guest waited in wasi:io/pollable.block (a sleep or a blocking read) until its call deadline of 500ms"],
    );
    assert!(elapsed < Duration::from_secs(30), "took {elapsed:?}");
}

/// Cancelling a job whose guest sleeps ends it within the call deadline, and the server goes on
/// answering meanwhile.
#[test]
fn a_sleeping_guest_does_not_keep_its_job_from_being_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let server = weir_e2e::Server::start(&dir.path().join("data"), &[]);
    let job = write_job(dir.path(), &misbehaving_job("sleep", "call-deadline = \"2s\""));
    let submitted = server.cli(&["submit", &job]);
    assert_eq!(submitted.code, 0, "{}", submitted.stderr);
    let id = submitted.stdout.trim().to_string();
    std::thread::sleep(Duration::from_millis(300));
    let started = std::time::Instant::now();
    let (status, _) = server.http("POST", &format!("/v1/jobs/{id}/cancel"), b"", None);
    assert!([202, 409].contains(&status), "cancel answered {status}");
    let record = server.wait_for_job(&id);
    assert!(["canceled", "failed"].contains(&record["state"].as_str().unwrap()), "{record}");
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
}
