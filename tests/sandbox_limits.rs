//! The sandbox: a guest that runs forever, allocates without bound or reaches for another key's
//! state is stopped, and the job fails with a message naming the operator, subtask and cause; an
//! instance whose memory only grows is replaced by a fresh one, and nothing is lost.
use std::time::Duration;

use weir_e2e::{
    assert_failed_with, blackhole_sink, completed_checkpoints, file_sink, file_source, generator_source, job, repo,
    sink_lines, wasm_operator, weir, weir_bin, weir_with_limit, write_job,
};

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
fn a_guest_cannot_emit_an_event_over_the_event_limit() {
    let over = "value 17825792), over the 16 MiB an event may have: emit smaller events";
    assert_stopped("emit-huge", "", &["the operator emitted an event of", over]);
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

/// A module that sleeps in `describe` is refused at its deadline, by `weir run` and by a server's
/// upload (which keeps answering other requests meanwhile); one that describes itself with a
/// 20 MiB name and 200,000 states is refused at once, saying what is too large.
#[test]
fn modules_that_misbehave_in_describe_are_refused_in_bounded_time() {
    let dir = tempfile::tempdir().unwrap();
    let job = |module: &str| {
        job(
            "describing",
            1,
            &[
                file_source("clicks", &repo().join("examples/clicks/clicks.jsonl")),
                wasm_operator("odd", module, &[]),
                blackhole_sink("out"),
            ],
        )
    };
    let run = weir_with_limit(&["run", &write_job(dir.path(), &job("test/sleepy_describe"))], Duration::from_secs(60));
    let waited = "sleepy_describe.wasm failed in describe(): the guest waited in wasi:io/pollable.block";
    assert_failed_with(&run, &[waited, "call deadline of 10s"]);
    let run = weir(&["run", &write_job(dir.path(), &job("test/huge_describe"))]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("it describes itself with a name of 20971520 bytes (\"nnnnnnnnnnnnnnnnnnnnnnnn…\"); at most 128"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.len() < 10_000, "the name is not repeated in full: {} bytes", run.stderr.len());

    let server = weir_e2e::Server::start(&dir.path().join("data"), &[]);
    let sleepy = std::fs::read(weir_e2e::operator("test/sleepy_describe")).unwrap();
    let url = server.url.clone();
    let upload = std::thread::spawn(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        let started = std::time::Instant::now();
        let upload = agent.post(format!("{url}/v1/modules")).header("Content-Type", "application/wasm");
        let response = upload.send(&sleepy[..]).unwrap();
        (response.status().as_u16(), started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(500));
    let (status, _) = server.http("GET", "/v1/jobs", b"", None);
    assert_eq!(status, 200, "the server answers while an upload is being checked");
    let (status, elapsed) = upload.join().unwrap();
    assert_eq!(status, 400);
    assert!(elapsed < Duration::from_secs(30), "took {elapsed:?}");
    let huge = std::fs::read(weir_e2e::operator("test/huge_describe")).unwrap();
    let started = std::time::Instant::now();
    let (status, body) = server.http("POST", "/v1/modules", &huge, None);
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("at most 128 bytes"), "{body}");
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    let (_, modules) = server.http("GET", "/v1/modules", b"", None);
    assert_eq!(modules["modules"].as_array().unwrap().len(), 0, "{modules}");
}

/// Batches are bounded by bytes as well as by count: 1,100 events of 160 KB pass through an
/// operator that hands each one back (`key_by`) and a counting one, with exact counts. A line
/// longer than the largest event (16 MiB) is refused, naming the source and the size.
#[test]
fn large_events_pass_and_oversized_ones_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("large.jsonl");
    let pad = "x".repeat(160 * 1024);
    let lines: Vec<String> = (0..1100).map(|i| format!("{{\"user\":\"u{}\",\"pad\":\"{pad}\"}}", i % 10)).collect();
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let out = dir.path().join("out");
    let text = job(
        "large",
        1,
        &[
            file_source("big", &input),
            wasm_operator("by-user", "key_by", &["config = { field = \"user\" }"]),
            wasm_operator("count", "count", &["input = \"hash\""]),
            weir_e2e::file_sink("counts", &out),
        ],
    );
    let run = weir(&["run", &write_job(dir.path(), &text), "--listen", "none"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let lines = weir_e2e::sink_lines(&out);
    assert_eq!(lines.len(), 1100);
    for user in 0..10 {
        assert!(lines.contains(&format!("{{\"key\":\"u{user}\",\"count\":110}}")), "u{user} counted to 110");
    }

    std::fs::write(&input, "y".repeat((16 << 20) + 10)).unwrap();
    let run = weir(&["run", &write_job(dir.path(), &text), "--listen", "none"]);
    let longer = "is longer than 16 MiB, the largest event weir passes on";
    assert_failed_with(&run, &["source 'big' subtask 1/1: the line at byte 0 of", longer]);
}

/// A guest that writes 100 MB of map state per event is stopped at its `state-limit`; on a
/// server, its job fails and the server goes on running other jobs.
#[test]
fn host_state_is_bounded_by_the_state_limit() {
    assert_stopped("hoard-state", "state-limit = \"64MiB\"", &["its keyed state grew past `state-limit` (64.0 MiB)"]);

    let dir = tempfile::tempdir().unwrap();
    let server = weir_e2e::Server::start(&dir.path().join("data"), &[]);
    let hoarding = write_job(dir.path(), &misbehaving_job("hoard-state", "state-limit = \"64MiB\""));
    let id = server.cli(&["submit", &hoarding]).stdout.trim().to_string();
    let record = server.wait_for_job(&id);
    assert_eq!(record["state"], "failed", "{record}");
    assert!(record["failure"].as_str().unwrap().contains("grew past `state-limit`"), "{record}");
    let other = tempfile::tempdir().unwrap();
    let clicks = repo().join("examples/clicks/clicks.jsonl");
    let fine = write_job(other.path(), &weir_e2e::clicks_job(&clicks, "count", 2, &other.path().join("out")));
    let id = server.cli(&["submit", &fine]).stdout.trim().to_string();
    assert_eq!(server.wait_for_job(&id)["state"], "finished", "the server goes on running jobs");
    let expected = weir_e2e::expected_lines(&weir_e2e::expected_counts(&clicks));
    assert_eq!(weir_e2e::sink_lines(&other.path().join("out")), expected);
}

/// A guest that fails with a 20 MiB message, restarted again and again: the job's record and
/// the listings keep a few KiB of each failure, not megabytes.
#[test]
fn huge_guest_errors_are_clipped_in_records_and_listings() {
    let dir = tempfile::tempdir().unwrap();
    let server = weir_e2e::Server::start(&dir.path().join("data"), &[]);
    let restarts = "\n[restart]\nstrategy = \"fixed-delay\"\nattempts = 3\ndelay = \"10ms\"\n";
    let job = write_job(dir.path(), &format!("{}{restarts}", misbehaving_job("huge-error", "")));
    let id = server.cli(&["submit", &job]).stdout.trim().to_string();
    let record = server.wait_for_job(&id);
    assert_eq!(record["state"], "failed", "{}", &record.to_string()[..2000.min(record.to_string().len())]);
    assert_eq!(record["failures"].as_array().unwrap().len(), 4);
    assert!(record.to_string().len() < 64 << 10, "the record is {} bytes", record.to_string().len());
    assert!(record["failure"].as_str().unwrap().contains("more bytes left out"), "the cut is said");
    let (_, jobs) = server.http("GET", "/v1/jobs", b"", None);
    assert!(jobs.to_string().len() < 64 << 10, "the listing is {} bytes", jobs.to_string().len());
    assert!(server.log().len() < 1 << 20, "the server's log is {} bytes", server.log().len());
}

/// A server restarted while a job's guest sleeps in a long call answers at once (it resumes
/// jobs beside serving), and cancelling the job ends it without waiting for the guest.
#[test]
fn a_restarted_server_answers_while_it_resumes_a_stuck_job() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = weir_e2e::Server::start(&data, &[]);
    let checkpoints = "\n[checkpointing]\ninterval = \"100ms\"\nstorage = \"file://chk\"\n";
    let job = write_job(dir.path(), &format!("{}{checkpoints}", misbehaving_job("sleep", "call-deadline = \"1h\"")));
    let id = server.cli(&["submit", &job]).stdout.trim().to_string();
    std::thread::sleep(Duration::from_millis(500));
    server.kill();
    let server = weir_e2e::Server::start(&data, &[]);
    let started = std::time::Instant::now();
    let (status, _) = server.http("GET", "/v1/jobs", b"", None);
    assert_eq!(status, 200);
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    std::thread::sleep(Duration::from_millis(500));
    let (status, body) = server.http("POST", &format!("/v1/jobs/{id}/cancel"), b"", None);
    assert_eq!(status, 202, "{body}");
    let started = std::time::Instant::now();
    let record = server.wait_for_job(&id);
    assert_eq!(record["state"], "canceled", "{record}");
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
}

/// componentize-py 0.25.1 keeps every output frame it returns, so a Python operator's memory
/// grows with the events it handles (about 60 MiB per million for `count_py`) and used to fail
/// at its memory limit. The host replaces an instance whose memory nears the limit by a fresh
/// one between batches (all state being the host's): with a limit that 2,000,000 events pass
/// twice, every key's running count still comes out once per event, in order, from 1 up; on
/// `weir run` and on `weir serve`, without checkpoints and with them across a crash.
fn growing_job(dir: &std::path::Path, checkpointing: bool) -> (String, std::path::PathBuf) {
    let out_dir = dir.join("out");
    let mut text = job(
        "growing",
        1,
        &[
            generator_source("events", GROWING_EVENTS, GROWING_KEYS),
            wasm_operator("count", "count_py", &["input = \"hash\"", "memory-limit = \"72MiB\""]),
            file_sink("out", &out_dir),
        ],
    );
    if checkpointing {
        text.push_str("\n[checkpointing]\ninterval = \"200ms\"\nstorage = \"file://chk\"\n");
    }
    (write_job(dir, &text), out_dir)
}

const GROWING_EVENTS: u64 = 2_000_000;
const GROWING_KEYS: u64 = 1000;
const RENEWED: &str = "continuing in a fresh instance";

/// Asserts that the instance was renewed at least `times` (per `log`) and the output holds each
/// key's counts from 1 up, exactly once each.
fn assert_renewed_without_losing_a_count(log: &str, times: usize, out_dir: &std::path::Path) {
    let renewals = log.matches(RENEWED).count();
    assert!(renewals >= times, "expected the instance to be renewed at least {times} times:\n{log}");
    let lines = sink_lines(out_dir);
    let mut expected: Vec<String> = (0..GROWING_EVENTS)
        .map(|i| format!("{{\"key\":\"k{}\",\"count\":{}}}", i % GROWING_KEYS, i / GROWING_KEYS + 1))
        .collect();
    expected.sort();
    assert_eq!(lines.len(), expected.len());
    assert!(lines == expected, "the counts differ from one per event");
}

/// Waits, at most five minutes, until `log` shows a renewal and then a checkpoint of the job in
/// `dir` completes: a crash now restores state a renewed instance updated.
fn wait_for_a_checkpoint_after_a_renewal(log: impl Fn() -> String, dir: &std::path::Path) {
    let latest = || completed_checkpoints(&dir.join("chk/growing")).pop();
    let started = std::time::Instant::now();
    let mut before_renewal = None;
    loop {
        assert!(started.elapsed() < Duration::from_secs(300), "no checkpoint after a renewal:\n{}", log());
        match &before_renewal {
            None if log().contains(RENEWED) => before_renewal = Some(latest()),
            Some(before) if latest().is_some() && latest() != *before => return,
            _ => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

#[test]
fn a_guest_whose_memory_grows_continues_in_a_fresh_instance_on_weir_run() {
    let dir = tempfile::tempdir().unwrap();
    let (job_file, out_dir) = growing_job(dir.path(), false);
    let out = weir_with_limit(&["run", &job_file], Duration::from_secs(300));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_renewed_without_losing_a_count(&out.stderr, 2, &out_dir);
}

#[test]
fn a_guest_whose_memory_grows_continues_in_a_fresh_instance_on_weir_serve() {
    let dir = tempfile::tempdir().unwrap();
    let (job_file, out_dir) = growing_job(dir.path(), false);
    let server = weir_e2e::Server::start(&dir.path().join("data"), &[]);
    let id = server.cli(&["submit", &job_file]).stdout.trim().to_string();
    // Longer than `wait_for_job`'s minute: two million events through Python, beside other tests.
    let record = server.wait_for_job_within(&id, Duration::from_secs(300));
    assert_eq!(record["state"], "finished", "{record}");
    assert_renewed_without_losing_a_count(&server.log(), 2, &out_dir);
}

/// Killed after a renewal and a checkpoint after it, `weir run --from-checkpoint latest` resumes
/// from state a renewed instance left, renews again, and commits every count exactly once.
#[test]
fn a_renewed_guest_killed_and_resumed_from_a_checkpoint_loses_no_count_on_weir_run() {
    let dir = tempfile::tempdir().unwrap();
    let (job_file, out_dir) = growing_job(dir.path(), true);
    let log = dir.path().join("first-run.log");
    let mut first = std::process::Command::new(weir_bin())
        .args(["run", &job_file, "--listen", "none"])
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_for_a_checkpoint_after_a_renewal(|| std::fs::read_to_string(&log).unwrap_or_default(), dir.path());
    first.kill().unwrap();
    first.wait().unwrap();
    let resumed = weir_with_limit(
        &["run", &job_file, "--listen", "none", "--from-checkpoint", "latest"],
        Duration::from_secs(300),
    );
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    assert!(resumed.stderr.contains("resuming job 'growing' from checkpoint"), "{}", resumed.stderr);
    assert_renewed_without_losing_a_count(&resumed.stderr, 1, &out_dir);
}

/// The same on `weir serve`: the server is killed (SIGKILL) after a renewal and a checkpoint
/// after it, and the restarted server resumes the job.
#[test]
fn a_renewed_guest_resumed_by_a_restarted_server_loses_no_count() {
    let dir = tempfile::tempdir().unwrap();
    let (job_file, out_dir) = growing_job(dir.path(), true);
    let data = dir.path().join("data");
    let server = weir_e2e::Server::start(&data, &[]);
    let id = server.cli(&["submit", &job_file]).stdout.trim().to_string();
    wait_for_a_checkpoint_after_a_renewal(|| server.log(), dir.path());
    server.kill();
    let server = weir_e2e::Server::start(&data, &[]);
    let record = server.wait_for_job_within(&id, Duration::from_secs(300));
    assert_eq!(record["state"], "finished", "{record}");
    assert!(server.log().contains("('growing') from checkpoint"), "{}", server.log());
    assert_renewed_without_losing_a_count(&server.log(), 1, &out_dir);
}
