//! Bad input gets a clear error naming the thing at fault, exit code 1, and no panic.
use std::path::Path;

use weir_e2e::{
    Output, Server, clicks_job, file_sink, file_source, job, operator, repo, toml_path, wasm_operator, weir, write_job,
};

fn run_job(toml: &str) -> (tempfile::TempDir, Output) {
    let dir = tempfile::tempdir().unwrap();
    let job = write_job(dir.path(), toml);
    let out = weir(&["run", &job]);
    (dir, out)
}

/// Runs a job and checks it failed with every one of `needles` in its message.
fn assert_fails(toml: &str, needles: &[&str]) {
    let (_dir, out) = run_job(toml);
    assert_eq!(out.code, 1, "expected exit code 1, got {}:\n{}", out.code, out.stderr);
    for needle in needles {
        assert!(out.stderr.contains(needle), "stderr lacks {needle:?}:\n{}", out.stderr);
    }
}

fn clicks() -> std::path::PathBuf {
    repo().join("examples/clicks/clicks.jsonl")
}

/// The clicks job with its counting operator's module replaced by `module`.
fn clicks_with_count_module(module: &Path) -> String {
    clicks_job(&clicks(), "count", 1, Path::new("/tmp/weir-never-written"))
        .replace(&toml_path(&operator("count")), &toml_path(module))
}

#[test]
fn unknown_key_is_named_with_its_line() {
    let job = clicks_job(&clicks(), "count", 1, Path::new("out")).replace("parallelism = 1", "paralelism = 1");
    assert_fails(&job, &["job.toml", "line 2", "unknown field `paralelism`", "expected one of"]);
}

#[test]
fn malformed_toml_is_reported() {
    assert_fails("name = \"x\"\n[[source]\nuid = 1", &["job.toml", "TOML parse error", "line 2"]);
}

#[test]
fn duplicate_uid_is_refused() {
    let job = clicks_job(&clicks(), "count", 1, Path::new("out")).replace("uid = \"by-user\"", "uid = \"logged-in\"");
    assert_fails(&job, &["uid 'logged-in' is used twice"]);
}

#[test]
fn missing_module_file_is_named() {
    let missing = Path::new("/nonexistent/count.wasm");
    assert_fails(
        &clicks_with_count_module(missing),
        &["operator 'count-per-user'", "/nonexistent/count.wasm", "cannot be read"],
    );
}

#[test]
fn a_file_that_is_not_wasm_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.wasm");
    std::fs::write(&text, "this is not wasm").unwrap();
    assert_fails(&clicks_with_count_module(&text), &["notes.wasm is not a WebAssembly file"]);
}

#[test]
fn a_core_module_is_refused_as_not_a_component() {
    let dir = tempfile::tempdir().unwrap();
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    assert_fails(
        &clicks_with_count_module(&core),
        &["core.wasm is a core WebAssembly module, not a component", "wasm32-wasip2"],
    );
}

#[test]
fn a_truncated_component_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(operator("count")).unwrap();
    let truncated = dir.path().join("truncated.wasm");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    assert_fails(&clicks_with_count_module(&truncated), &["truncated.wasm is not a valid WebAssembly component"]);
}

#[test]
fn another_contract_version_names_both_versions() {
    let future = operator("test/future_contract");
    assert_fails(
        &clicks_with_count_module(&future),
        &[
            "future_contract.wasm was built against weir:operator@0.9.0",
            "this weir supports weir:operator@0.4.0, @0.3.0 and @0.2.0",
        ],
    );
}

#[test]
fn config_rejected_in_open_fails_the_job_with_the_guest_message() {
    let job = clicks_job(&clicks(), "count", 1, Path::new("out")).replace("config = { field = \"logged_in\" }", "");
    assert_fails(
        &job,
        &["operator 'logged-in' subtask 1/1", "open refused the configuration {}", "missing field `field`"],
    );
}

/// What a JavaScript operator throws, an `Error` of any kind included, fails the job (or refuses
/// it, from the constructor) with its message: componentize-js would turn a thrown `Error` into a
/// trap without one.
#[test]
fn a_javascript_operator_that_throws_fails_the_job_with_its_message() {
    let job = clicks_with_count_module(&operator("test/throws"));
    assert_fails(&job, &["operator 'count-per-user' subtask 1/1", "config needs `after`, a number of events"]);
    let job = job.replace("input = \"hash\"", "input = \"hash\"\nconfig = { after = 5 }");
    assert_fails(
        &job,
        &[
            "operator 'count-per-user' subtask 1/1",
            "the operator failed: TypeError: event 6 of key ",
            // Its stack through the operator's own code follows, the SDK's frames left out.
            "is one too many\n  at process@throws.js:",
        ],
    );
}

/// A Rust operator's panic fails the job with the panic's message and where in the source it
/// was, not a wasm trap and unnamed wasm functions.
#[test]
fn a_rust_panic_fails_the_job_with_its_message_and_location() {
    let (_dir, out) = run_job(&clicks_job(&clicks(), "count_broken", 1, Path::new("out")));
    assert_eq!(out.code, 1, "{}", out.stderr);
    let cause = out.stderr.lines().find(|l| l.starts_with("error: ")).unwrap_or_default();
    assert_eq!(
        cause,
        "error: job 'clicks-per-user' failed: operator 'count-per-user' subtask 1/1: the guest trapped in \
         process-batch: panicked at count_broken/src/lib.rs:40:21: count_broken traps on every event, as it was built to"
    );
    assert!(out.stderr.contains("guest backtrace:\n  at weir:operator/operator@0.4.0#process-batch"), "{}", out.stderr);
    assert!(!out.stderr.contains("<wasm function"), "{}", out.stderr);
}

/// Pages viewed per site, counted by `tests/guests/py/pages.py`, which fails on the third page
/// (a null one) with a TypeError of its own.
fn pages_job(dir: &Path, restart: &str) -> String {
    let input = dir.join("pages.jsonl");
    let pages = ["\"a\"", "\"b\"", "null", "\"c\""];
    let lines: Vec<String> = pages.iter().map(|p| format!("{{\"site\":\"x\",\"page\":{p}}}\n")).collect();
    std::fs::write(&input, lines.concat()).unwrap();
    job(
        "pages",
        1,
        &[
            restart.to_string(),
            file_source("views", &input),
            wasm_operator("by-site", "key_by", &["config = { field = \"site\" }"]),
            wasm_operator("pages", "test/pages_py", &["input = \"hash\""]),
            file_sink("out", &dir.join("out")),
        ],
    )
}

/// What a Python operator's exception fails the job with: its type, message and traceback
/// through the operator's own file, and the lines it printed before; on `weir run` and, for each
/// failed attempt, in `weir status` and the API of `weir serve`.
#[test]
fn a_python_exception_fails_the_job_with_its_traceback_on_run_and_serve() {
    let expected = ["the operator failed: TypeError: can only concatenate str (not \"NoneType\") to str\n\
         Traceback (most recent call last):\n  File \"/0/pages.py\", line 24, in process\n  File \"/0/pages.py\", \
         line 8, in path_length\nthe guest's last output:\n  | page 'a'\n  | page 'b'\n  | page None"];
    let dir = tempfile::tempdir().unwrap();
    let out = weir(&["run", &write_job(dir.path(), &pages_job(dir.path(), ""))]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains(expected[0]), "{}", out.stderr);

    let server = Server::start(&dir.path().join("data"), &[]);
    let restart = "[restart]\nstrategy = \"fixed-delay\"\nattempts = 1\ndelay = \"10ms\"\n";
    let submitted = server.cli(&["submit", &write_job(dir.path(), &pages_job(dir.path(), restart))]);
    assert_eq!(submitted.code, 0, "{}", submitted.stderr);
    let id = submitted.stdout.trim().to_string();
    let record = server.wait_for_job(&id);
    assert_eq!(record["state"], "failed", "{record}");
    let failures = record["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 2, "both attempts are in the history: {record}");
    for (attempt, failure) in failures.iter().enumerate() {
        assert_eq!(failure["attempt"], attempt as u64);
        let cause = failure["cause"].as_str().unwrap();
        assert!(cause.starts_with("operator 'pages' subtask 1/1: "), "{cause}");
        assert!(cause.ends_with(expected[0]), "{cause}");
    }
    let status = server.cli(&["status", &id]);
    assert!(status.stdout.contains(expected[0]), "{}", status.stdout);
    assert!(status.stdout.contains("attempt 1 (2 failures):"), "{}", status.stdout);
}

/// What a guest writes to stdout and stderr before it fails is in the failure's cause (and only
/// what it wrote since the last failure).
#[test]
fn what_a_guest_wrote_before_it_failed_is_in_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("one.jsonl");
    std::fs::write(&input, "{\"user\":\"u7\"}\n").unwrap();
    let (_dir, out) = run_job(&job(
        "chatter",
        1,
        &[
            file_source("one", &input),
            wasm_operator("by-user", "key_by", &["config = { field = \"user\" }"]),
            wasm_operator("chatter", "test/misbehave", &["input = \"hash\"", "config = { do = \"chatter\" }"]),
            file_sink("out", &dir.path().join("out")),
        ],
    ));
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains(
            "operator 'chatter' subtask 1/1: the operator failed: gave up on this key\nthe guest's last output:\n  \
             | looking at key u7\n  | this key looks wrong"
        ),
        "{}",
        out.stderr
    );
}

#[test]
fn keyed_operator_without_keys_upstream_says_what_to_do() {
    // Drop the key_by operator: events reach the hash edge without a key.
    let job = clicks_job(&clicks(), "count", 2, Path::new("out"));
    let start = job.find("[[operator]]\nuid = \"by-user\"").unwrap();
    let end = start + job[start..].find("\n\n").unwrap();
    let job = format!("{}{}", &job[..start], &job[end + 2..]);
    assert_fails(&job, &["an event without a key reached 'count-per-user'", "key_by"]);
}

#[test]
fn missing_input_file_is_named() {
    let job = clicks_job(Path::new("/nonexistent/clicks.jsonl"), "count", 1, Path::new("out"));
    assert_fails(&job, &["source 'clicks'", "/nonexistent/clicks.jsonl does not exist"]);
}

#[test]
fn missing_job_file_is_named() {
    let out = weir(&["run", "/nonexistent/job.toml"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("cannot read job file /nonexistent/job.toml"), "{}", out.stderr);
}

#[test]
fn usage_errors_exit_2() {
    let out = weir(&["run"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("JOB"), "{}", out.stderr);
}

/// Values that once passed the checks and then took a job thread down (leaving the job
/// `running` forever) or overflowed a timer are refused when the job file is read.
#[test]
fn values_that_would_overflow_or_crash_are_refused_when_the_job_file_is_read() {
    let base = clicks_job(&clicks(), "count", 1, Path::new("out"));
    let checkpointed = format!("{base}\n[checkpointing]\ninterval = \"1s\"\n");
    let cases: Vec<(String, &[&str])> = vec![
        (
            base.replace("uid = \"by-user\"", "uid = \"by\\u0000user\""),
            &["uid \"by\\0user\" contains a control character"],
        ),
        (
            base.replace("uid = \"by-user\"", &format!("uid = \"{}\"", "u".repeat(300))),
            &["is too long: at most 100 bytes"],
        ),
        (
            base.replace("name = \"clicks-per-user\"", &format!("name = \"{}\"", "%".repeat(90))),
            &["`name`", "is too long"],
        ),
        (
            format!("{checkpointed}[restart]\nstrategy = \"exponential-delay\"\nbackoff-multiplier = 1e300\n"),
            &["[restart] backoff-multiplier must be at least 1 and at most 1000, not 1e300"],
        ),
        (
            format!("{checkpointed}[restart]\nstrategy = \"fixed-delay\"\ndelay = \"184467440737095517s\"\n"),
            &["[restart] delay \"184467440737095517s\" is not a duration of at most 365 days"],
        ),
        (
            base.replacen("type = \"file\"\n", "type = \"file\"\nrate = 1e-300\n", 1),
            &["source 'clicks': `rate` must be a number of events per second from 0.001 to 1e12"],
        ),
        (
            base.replace("input = \"hash\"", "input = \"hash\"\ncall-deadline = \"184467440737095517s\""),
            &["operator 'count-per-user': call-deadline \"184467440737095517s\" is not a duration between 1ms and 1h"],
        ),
    ];
    for (toml, needles) in cases {
        assert_fails(&toml, needles);
    }
}

/// A hash edge needs upstream × downstream channels: a parallelism one host cannot wire is
/// refused at once, naming the operator, instead of taking gigabytes to start.
#[test]
fn a_parallelism_the_host_cannot_run_is_refused() {
    let text = weir_e2e::job(
        "wide",
        1000,
        &[
            weir_e2e::generator_source("events", 100, 10),
            weir_e2e::wasm_operator("count", "count", &["input = \"hash\""]),
            weir_e2e::blackhole_sink("out"),
        ],
    )
    .replace("parallelism = 1000\n", "parallelism = 1000\nmax-parallelism = 4096\n");
    let started = std::time::Instant::now();
    assert_fails(
        &text,
        &["'count' at parallelism 1000 reads from 1000 upstream subtasks", "more than 131072 channels"],
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "took {:?}", started.elapsed());
}

/// Messages that once named the wrong thing, or none.
#[test]
fn errors_name_the_thing_at_fault() {
    // A module importing an interface the host does not provide: named once, with what the host
    // provides and what to do.
    let run = run_job(&clicks_with_count_module(&operator("test/extra_import"))).1;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("test:extra/vault")
            && run.stderr.contains("this host provides weir:operator/state and /log")
            && run.stderr.contains("build the module without that import")
            && run.stderr.matches("implementation is missing").count() <= 1,
        "{}",
        run.stderr
    );
    // A source path that is a directory, or a device.
    let dir = tempfile::tempdir().unwrap();
    let job = clicks_job(dir.path(), "count", 1, Path::new("out"));
    assert_fails(&job, &["source 'clicks': ", "is a directory; name a file"]);
    let job = clicks_job(Path::new("/dev/zero"), "count", 1, Path::new("out"));
    assert_fails(&job, &["source 'clicks': /dev/zero is not a regular file"]);
    // A value with a line break cannot be one line of a file sink: refused, not split in two.
    let job = weir_e2e::job(
        "breaking",
        1,
        &[
            weir_e2e::file_source("clicks", &clicks()),
            weir_e2e::wasm_operator("breaks", "test/misbehave", &["config = { do = \"line-break\" }"]),
            weir_e2e::file_sink("out", Path::new("out")),
        ],
    );
    assert_fails(&job, &["sink 'out' subtask 1/1: an event value contains a line break", "one event"]);
}
