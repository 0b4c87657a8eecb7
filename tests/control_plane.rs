//! `weir serve`, its REST API and the client verbs, end to end on loopback.
use std::path::Path;

use weir_e2e::{
    Server, clicks_job, expected_counts, expected_lines, job, operator, repo, sink_lines, wasm_operator, weir,
    write_job,
};

fn sha256_of(output: &str) -> String {
    let line = output.lines().next().unwrap_or_default();
    line.strip_prefix("sha256:").and_then(|rest| rest.split_whitespace().next()).expect("sha256 line").to_string()
}

/// An unbounded, slow job: it runs until canceled.
fn forever_job() -> String {
    let source = "[[source]]\nuid = \"events\"\ntype = \"generator\"\nkeys = 10\nrate = 200\n".to_string();
    job(
        "forever",
        1,
        &[source, wasm_operator("count", "count", &["input = \"hash\""]), weir_e2e::blackhole_sink("out")],
    )
}

#[test]
fn upload_submit_watch_cancel_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &[]);

    // Uploading the same bytes twice gives the same hash; the listing shows the module once.
    let count = operator("count").to_string_lossy().into_owned();
    let first = server.cli(&["modules", "upload", &count]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    let second = server.cli(&["modules", "upload", &count]);
    assert_eq!(sha256_of(&first.stdout), sha256_of(&second.stdout));
    let hash = sha256_of(&first.stdout);
    assert_eq!(hash.len(), 64);
    let (status, list) = server.http("GET", "/v1/modules", b"", None);
    assert_eq!(status, 200);
    let modules = list["modules"].as_array().unwrap();
    assert_eq!(modules.len(), 1);
    assert_eq!((modules[0]["sha256"].as_str(), modules[0]["name"].as_str()), (Some(hash.as_str()), Some("count")));

    // `weir submit` uploads the job's modules and submits it; the job finishes with the counts.
    let out = dir.path().join("out");
    let text = clicks_job(&repo().join("examples/clicks/clicks.jsonl"), "count", 2, &out);
    // Written with comments, a relative sink path and the module by path: the server keeps the
    // file as written but for the module reference and the paths, rewritten in place.
    let text =
        format!("# Clicks per user.\n{}", text.replace(&weir_e2e::toml_path(&out), "\"out\"   # beside the job file"));
    let job_file = write_job(dir.path(), &text);
    let submitted = server.cli(&["submit", &job_file]);
    assert_eq!(submitted.code, 0, "{}", submitted.stderr);
    let id = submitted.stdout.trim().to_string();
    assert_eq!(id.len(), 32, "{id}");
    let done = server.wait_for_job(&id);
    assert_eq!(done["state"], "finished", "{done}");
    let stored = done["job"].as_str().unwrap();
    assert!(stored.starts_with("# Clicks per user.\nname = \"clicks-per-user\"\n"), "{stored}");
    let sink_path = format!("path = {}   # beside the job file", weir_e2e::toml_path(&out));
    assert!(stored.contains(&sink_path) && stored.contains(&format!("module = \"sha256:{hash}\"")), "{stored}");
    let [submitted, first, ended] = ["submitted-at", "first-event-at", "ended-at"].map(|k| done[k].as_u64().unwrap());
    assert!(submitted <= first && first <= ended, "{done}");
    let counts = &done["vertices"][3];
    assert_eq!((counts["uid"].as_str(), counts["events-in"].as_u64()), (Some("count-per-user"), Some(42)));
    assert_eq!(counts["subtasks"].as_array().map(Vec::len), Some(2));
    let clicks = repo().join("examples/clicks/clicks.jsonl");
    assert_eq!(sink_lines(&out), expected_lines(&expected_counts(&clicks)));
    let status = server.cli(&["status", &id]);
    assert!(status.stdout.contains("finished") && status.stdout.contains("count-per-user"), "{}", status.stdout);

    // A running unbounded job is canceled; canceling it again is a conflict.
    let forever = dir.path().join("forever");
    std::fs::create_dir_all(&forever).unwrap();
    let running = server.cli(&["submit", &write_job(&forever, &forever_job())]);
    let running_id = running.stdout.trim().to_string();
    let (status, job) = server.http("GET", &format!("/v1/jobs/{running_id}"), b"", None);
    assert_eq!((status, job["state"].as_str()), (200, Some("running")), "{job}");
    assert_eq!(server.cli(&["cancel", &running_id]).code, 0);
    assert_eq!(server.wait_for_job(&running_id)["state"], "canceled");
    let again = server.cli(&["cancel", &running_id]);
    assert_eq!(again.code, 1);
    assert!(again.stderr.contains("already canceled") && again.stderr.contains("HTTP 409"), "{}", again.stderr);

    // A job without checkpoints still running when the server dies comes back as failed; everything
    // else as it was.
    let orphan = server.cli(&["submit", &write_job(&forever, &forever_job())]).stdout.trim().to_string();
    server.kill();
    let server = Server::start(&data, &[]);
    let listed = server.cli(&["--json", "jobs"]);
    let jobs: serde_json::Value = serde_json::from_str(&listed.stdout).unwrap();
    let states: Vec<(&str, &str)> = jobs["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| (j["id"].as_str().unwrap(), j["state"].as_str().unwrap()))
        .collect();
    assert_eq!(states, vec![(id.as_str(), "finished"), (running_id.as_str(), "canceled"), (orphan.as_str(), "failed")]);
    let (_, orphan_job) = server.http("GET", &format!("/v1/jobs/{orphan}"), b"", None);
    assert_eq!(
        orphan_job["failure"],
        "the server stopped while the job was running; it has no [checkpointing], so it cannot be resumed without \
         repeating its output"
    );
    let (_, list) = server.http("GET", "/v1/modules", b"", None);
    assert_eq!(list["modules"].as_array().map(Vec::len), Some(3), "count, filter and key_by: {list}");
}

/// Submits a job naming `count` by hash after uploading it over HTTP.
fn upload(server: &Server, path: &Path) -> (u16, serde_json::Value) {
    server.http("POST", "/v1/modules", &std::fs::read(path).unwrap(), None)
}

#[test]
fn bad_requests_get_their_status_and_message_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &["--body-limit", "64KiB"]);
    let expect = |(status, body): (u16, serde_json::Value), want: u16, needle: &str| {
        assert_eq!(status, want, "{body}");
        let message = body["error"].as_str().unwrap_or_else(|| panic!("no error message: {body}"));
        assert!(message.contains(needle), "{message:?} lacks {needle:?}");
    };
    expect(server.http("POST", "/v1/modules", b"not wasm at all", None), 400, "is not a WebAssembly file");
    expect(
        server.http("POST", "/v1/modules", b"\0asm\x01\0\0\0", None),
        400,
        "core WebAssembly module, not a component",
    );
    expect(upload(&server, &operator("test/other_world")), 400, "is not a weir operator");
    expect(upload(&server, &operator("test/future_contract")), 400, "built against weir:operator@0.9.0");
    let count = std::fs::read(operator("count")).unwrap();
    expect(server.http("POST", "/v1/modules", &count[..30_000], None), 400, "not a valid WebAssembly component");
    expect(server.http("POST", "/v1/modules", &vec![0u8; 100 << 10], None), 413, "larger than this server accepts");
    let unknown = format!("sha256:{}", "ab".repeat(32));
    let job = clicks_job(&repo().join("examples/clicks/clicks.jsonl"), "count", 1, &dir.path().join("out"));
    let by_unknown_hash = job.replace(&weir_e2e::toml_path(&operator("count")), &format!("\"{unknown}\""));
    let by_unknown_hash = by_unknown_hash
        .replace(&weir_e2e::toml_path(&operator("filter")), &format!("\"{unknown}\""))
        .replace(&weir_e2e::toml_path(&operator("key_by")), &format!("\"{unknown}\""));
    expect(server.http("POST", "/v1/jobs", by_unknown_hash.as_bytes(), None), 400, "no module sha256:abab");
    expect(server.http("POST", "/v1/jobs", job.as_bytes(), None), 400, "is a path, and a submitted job may only name");
    expect(server.http("POST", "/v1/jobs", b"name = [unclosed", None), 400, "TOML parse error");
    expect(server.http("GET", "/v1/jobs/0123456789abcdef0123456789abcdef", b"", None), 404, "no job with id");
    expect(server.http("POST", "/v1/jobs/nope/cancel", b"", None), 404, "no job with id nope");
    expect(server.http("GET", "/v1/nothing", b"", None), 404, "no such endpoint");
    // Still serving.
    assert_eq!(server.http("GET", "/v1/modules", b"", None).0, 200);
    let (status, openapi) = server.http("GET", "/v1/openapi.json", b"", None);
    assert_eq!(status, 200);
    for path in ["/v1/modules", "/v1/jobs", "/v1/jobs/{id}", "/v1/jobs/{id}/cancel", "/v1/jobs/{id}/checkpoints"] {
        assert!(openapi["paths"].get(path).is_some(), "openapi.json lacks {path}");
    }
}

/// Every verb that names a job, a module or a savepoint takes the start of its id, as lists and
/// the dashboard show them; an ambiguous start is refused with the candidates.
#[test]
fn ids_may_be_shortened_to_any_unique_start() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    // Seventeen jobs: two of them share the first of their 16 possible hex digits.
    let bounded = "[[source]]\nuid = \"events\"\ntype = \"generator\"\ncount = 10\nkeys = 2\n".to_string();
    let bounded = write_job(dir.path(), &job("short", 1, &[bounded, weir_e2e::blackhole_sink("out")]));
    let ids: Vec<String> = (0..17).map(|_| server.cli(&["submit", &bounded]).stdout.trim().to_string()).collect();
    for id in &ids {
        server.wait_for_job(id);
    }
    let shared =
        (0..17).find_map(|i| ids[i + 1..].iter().find(|o| o[..1] == ids[i][..1]).map(|_| &ids[i][..1])).unwrap();
    let ambiguous = server.cli(&["status", shared]);
    assert_eq!(ambiguous.code, 1);
    assert!(ambiguous.stderr.contains(&format!("{shared} is the start of ")), "{}", ambiguous.stderr);
    let listed = ids.iter().filter(|id| id.starts_with(shared)).count();
    assert_eq!(
        ambiguous.stderr.lines().filter(|l| l.contains("(short, finished)")).count(),
        listed,
        "{}",
        ambiguous.stderr
    );
    let unique = &ids[0][..8];
    let status = server.cli(&["status", unique]);
    assert_eq!(status.code, 0, "{}", status.stderr);
    assert!(status.stdout.starts_with(&format!("job {} 'short': finished", ids[0])), "{}", status.stdout);

    // A running job upgraded by short ids: the job's, and the stored module's.
    let forever = server.cli(&["submit", &write_job(dir.path(), &forever_job())]).stdout.trim().to_string();
    let count = server.cli(&["modules", "upload", &operator("count").to_string_lossy()]);
    let module = format!("count=sha256:{}", &sha256_of(&count.stdout)[..10]);
    let upgraded = server.cli(&["upgrade", &forever[..8], "--operator", &module]);
    assert_eq!(upgraded.code, 0, "{}", upgraded.stderr);
    assert!(upgraded.stdout.starts_with(&format!("upgraded job {forever}")), "{}", upgraded.stdout);
    let unknown = server.cli(&["upgrade", &forever[..8], "--operator", "count=sha256:ffffffffff"]);
    assert!(unknown.stderr.contains("no module with an id starting with ffffffffff"), "{}", unknown.stderr);

    // A savepoint by the start of the hex its directory name ends with.
    let savepoint = server.cli(&["stop", &forever[..6]]).stdout.trim().to_string();
    let hex = savepoint.rsplit('-').next().unwrap();
    let inspected = server.cli(&["savepoint", "inspect", &hex[..6]]);
    assert_eq!(inspected.code, 0, "{}", inspected.stderr);
    assert!(inspected.stdout.lines().count() >= 10, "{}", inspected.stdout);
}

#[test]
fn a_token_is_required_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &["--token", "s3cret"]);
    let (status, body) = server.http("GET", "/v1/jobs", b"", None);
    assert_eq!(status, 401, "{body}");
    assert!(body["error"].as_str().unwrap().contains("needs a token"));
    assert_eq!(server.http("GET", "/v1/jobs", b"", Some("wrong")).0, 401);
    assert_eq!(server.http("GET", "/v1/jobs", b"", Some("s3cret")).0, 200);
    let without = server.cli(&["jobs"]);
    assert_eq!(without.code, 1, "{}", without.stderr);
    assert!(without.stderr.contains("HTTP 401"), "{}", without.stderr);
    assert_eq!(server.cli(&["--token", "s3cret", "jobs"]).code, 0);
}

#[test]
fn serving_beyond_loopback_without_a_token_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = weir(&["serve", "--listen", "0.0.0.0:0", "--data-dir", &dir.path().to_string_lossy()]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("refusing to serve on 0.0.0.0:0 without a token"), "{}", out.stderr);
}

#[test]
fn an_unreachable_server_exits_3() {
    let out = weir(&["--server", &format!("http://127.0.0.1:{}", weir_e2e::free_port()), "jobs"]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(out.stderr.contains("cannot reach the weir server"), "{}", out.stderr);
}

#[test]
fn weir_run_serves_its_job_and_can_be_canceled_from_outside() {
    let dir = tempfile::tempdir().unwrap();
    let port = weir_e2e::free_port();
    let job = write_job(dir.path(), &forever_job());
    let bin = weir_e2e::weir_bin();
    let listen = format!("127.0.0.1:{port}");
    let run = std::thread::spawn(move || {
        std::process::Command::new(bin).args(["run", &job, "--listen", &listen]).output().expect("weir run")
    });
    let server = format!("http://127.0.0.1:{port}");
    let started = std::time::Instant::now();
    let id = loop {
        let listed = weir(&["--server", &server, "--json", "jobs"]);
        if listed.code == 0 {
            let jobs: serde_json::Value = serde_json::from_str(&listed.stdout).unwrap();
            break jobs["jobs"][0]["id"].as_str().unwrap().to_string();
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(30), "no API: {}", listed.stderr);
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(weir(&["--server", &server, "cancel", &id]).code, 0);
    let output = run.join().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("job {id} API at http://127.0.0.1:{port}")), "{stderr}");
    assert!(stderr.contains("job 'forever' was canceled"), "{stderr}");
}

/// With a token, jobs may use the data directory and the `--allow-dir`s only: a source, a sink or
/// a savepoint elsewhere is refused, saying the same whether the path exists or not, and nothing
/// is created or deleted there.
#[test]
fn a_server_with_a_token_confines_jobs_to_the_allowed_directories() {
    let dir = tempfile::tempdir().unwrap();
    let allowed = dir.path().join("allowed");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("part-precious"), "keep me\n").unwrap();
    let server =
        Server::start(&dir.path().join("data"), &["--token", "t0ken", "--allow-dir", &allowed.to_string_lossy()]);
    std::fs::create_dir_all(&allowed).unwrap();
    let clicks = allowed.join("clicks.jsonl");
    std::fs::copy(weir_e2e::repo().join("examples/clicks/clicks.jsonl"), &clicks).unwrap();
    let submit = |job: &str| server.cli(&["--token", "t0ken", "submit", &write_job(&allowed, job)]);

    for (input, out, what) in [
        (Path::new("/etc/passwd").to_path_buf(), allowed.join("out"), "source 'clicks': /etc/passwd"),
        (outside.join("missing.jsonl"), allowed.join("out"), "missing.jsonl"),
        (clicks.clone(), outside.clone(), "sink 'counts': "),
        (clicks.clone(), allowed.join("../outside"), "sink 'counts': "),
    ] {
        let refused = submit(&weir_e2e::clicks_job(&input, "count", 1, &out));
        assert_eq!(refused.code, 1, "{}", refused.stdout);
        assert!(
            refused.stderr.contains(what)
                && refused.stderr.contains("is outside the directories this server lets jobs use")
                && !refused.stderr.contains("does not exist")
                && !refused.stderr.contains("root:"),
            "{}",
            refused.stderr
        );
    }
    assert_eq!(std::fs::read_to_string(outside.join("part-precious")).unwrap(), "keep me\n");

    let job = weir_e2e::clicks_job(&clicks, "count", 1, &allowed.join("out"));
    let savepoint = outside.join("where/x").to_string_lossy().into_owned();
    let job_file = write_job(&allowed, &job);
    let refused = server.cli(&["--token", "t0ken", "submit", "--from-savepoint", &savepoint, &job_file]);
    assert_eq!(refused.code, 1, "{}", refused.stdout);
    assert!(
        refused.stderr.contains(&format!("from-savepoint: {savepoint} is outside the directories")),
        "{}",
        refused.stderr
    );
    assert!(!outside.join("where").exists(), "nothing is created outside");

    let accepted = submit(&format!("{job}\n[checkpointing]\ninterval = \"100ms\"\nstorage = \"file://chk\"\n"));
    assert_eq!(accepted.code, 0, "{}", accepted.stderr);
    let id = accepted.stdout.trim().to_string();
    let started = std::time::Instant::now();
    loop {
        let (_, record) = server.http("GET", &format!("/v1/jobs/{id}"), b"", Some("t0ken"));
        if record["state"] == "finished" {
            break;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(30), "{record}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let expected = weir_e2e::expected_lines(&weir_e2e::expected_counts(&clicks));
    assert_eq!(weir_e2e::sink_lines(&allowed.join("out")), expected);
}

/// Every error the API sends is JSON with the status that fits, also those of requests it cannot
/// parse; a finished job's refusals say what was asked; a client piped into `head` ends quietly.
#[test]
fn every_error_is_json_and_says_what_was_asked() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let (status, body) = server.http("POST", "/v1/jobs?fork=null", b"name = \"x\"", None);
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("fork"), "{body}");
    let (status, body) = server.http("DELETE", "/v1/jobs", b"", None);
    assert_eq!(status, 405, "{body}");
    assert!(body["error"].as_str().unwrap().contains("/v1/jobs does not take DELETE"), "{body}");
    let (status, body) = server.http("GET", "/v1/jobs/%FF%FE", b"", None);
    assert!(status == 400 || status == 404, "{status}: {body}");

    let out = dir.path().join("out");
    let job = write_job(dir.path(), &clicks_job(&repo().join("examples/clicks/clicks.jsonl"), "count", 1, &out));
    let id = server.cli(&["submit", &job]).stdout.trim().to_string();
    assert_eq!(server.wait_for_job(&id)["state"], "finished");
    let upgrade =
        server.cli(&["upgrade", &id, "--operator", &format!("count-per-user={}", operator("count_v2").display())]);
    assert!(upgrade.stderr.contains("only a running job can be upgraded"), "{}", upgrade.stderr);
    let rollback = server.cli(&["upgrade", &id, "--rollback"]);
    assert!(rollback.stderr.contains("only a running job can be rolled back"), "{}", rollback.stderr);

    let piped = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("'{}' --server {} status {id} | head -c 1", weir_e2e::weir_bin().display(), server.url))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&piped.stderr);
    assert!(!stderr.contains("panicked") && !stderr.contains("Broken pipe"), "{stderr}");
    assert_eq!(piped.stdout.len(), 1);
}
