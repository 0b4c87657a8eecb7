//! Savepoints: taken while a job runs and when it stops, restored at other parallelisms, moved,
//! refused when they do not fit the job, inspected and disposed of, all through the real binary.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use weir_e2e::{
    Running, Server, expected_counts, expected_lines, expected_lines_after, file_sink, file_source, generated_clicks,
    generator_source, job, position_number, read_metadata, saved_counts, sink_lines, wasm_operator, weir, write_job,
    write_metadata,
};

const CLICKS: usize = 16000;

/// The clicks job at `parallelism`, with `count_module` counting and writing to `out`; the
/// source limited to `rate` events per second when given.
fn clicks_job(dir: &Path, parallelism: u32, count_module: &str, count_uid: &str, out: &Path, rate: bool) -> String {
    let mut source = file_source("clicks", &dir.join("clicks.jsonl"));
    if rate {
        source = source.replacen("type = \"file\"\n", "type = \"file\"\nrate = 4000\n", 1);
    }
    let job = job(
        "clicks-per-user",
        parallelism,
        &[
            source,
            wasm_operator("logged-in", "filter", &["config = { field = \"logged_in\" }"]),
            wasm_operator("by-user", "key_by", &["config = { field = \"user\" }"]),
            wasm_operator(count_uid, count_module, &["input = \"hash\""]),
            file_sink("counts", out),
        ],
    );
    format!("{job}\n[checkpointing]\ninterval = \"200ms\"\nstorage = \"file://chk\"\nsavepoint-dir = \"savepoints\"\n")
}

/// Runs the slow clicks job at parallelism 2, takes a savepoint after a while, then stops it
/// with a savepoint; returns both savepoints' paths.
fn take_savepoints(dir: &Path) -> (PathBuf, PathBuf) {
    generated_clicks(&dir.join("clicks.jsonl"), CLICKS, 40);
    let job = write_job(dir, &clicks_job(dir, 2, "count", "count-per-user", &dir.join("out"), true));
    let mut running = Running::start(&job, &[]);
    std::thread::sleep(Duration::from_millis(700));
    let during = PathBuf::from(running.cli(&["savepoint", &running.id]));
    let listed = running.cli(&["savepoints"]);
    assert!(listed.contains(&during.display().to_string()), "{listed}");
    std::thread::sleep(Duration::from_millis(500));
    let stopped = PathBuf::from(running.cli(&["stop", &running.id, "--savepoint"]));
    assert!(running.child.wait().unwrap().success(), "the stopped job finishes");
    for savepoint in [&during, &stopped] {
        assert!(savepoint.join("_metadata").is_file(), "{}", savepoint.display());
        assert!(savepoint.starts_with(dir.join("savepoints")), "{}", savepoint.display());
    }
    (during, stopped)
}

/// Restores `savepoint` into a copy of the first run's output, at `parallelism` (the counting
/// operator, running `module`, at `count_parallelism` when given), without a rate limit; returns
/// the copy's lines.
fn restore(
    dir: &Path,
    savepoint: &Path,
    module: &str,
    parallelism: u32,
    count_parallelism: Option<u32>,
    name: &str,
) -> Vec<String> {
    let out = dir.join(name);
    std::fs::create_dir_all(&out).unwrap();
    for part in std::fs::read_dir(dir.join("out")).unwrap().flatten() {
        std::fs::copy(part.path(), out.join(part.file_name())).unwrap();
    }
    let mut job = clicks_job(dir, parallelism, module, "count-per-user", &out, false);
    if let Some(p) = count_parallelism {
        job = job.replacen("input = \"hash\"\n", &format!("input = \"hash\"\nparallelism = {p}\n"), 1);
    }
    let job = write_job(dir, &job);
    let run = weir(&["run", &job, "--listen", "none", "--from-savepoint", &savepoint.to_string_lossy()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains("from savepoint"), "{}", run.stderr);
    sink_lines(&out)
}

/// For each user, the highest count in `lines`.
fn final_counts(lines: &[String]) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for line in lines {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let n = counts.entry(v["key"].as_str().unwrap().to_string()).or_insert(0);
        *n = (*n).max(v["count"].as_u64().unwrap());
    }
    counts
}

#[test]
fn savepoints_restore_at_any_parallelism_with_exactly_once_output() {
    let dir = tempfile::tempdir().unwrap();
    let (during, stopped) = take_savepoints(dir.path());
    let expected = expected_lines(&expected_counts(&dir.path().join("clicks.jsonl")));
    assert!(sink_lines(&dir.path().join("out")).len() < expected.len(), "the job was stopped early");
    for (savepoint, which) in [(&stopped, "stopped"), (&during, "during")] {
        for parallelism in [1, 2, 4] {
            let lines =
                restore(dir.path(), savepoint, "count", parallelism, None, &format!("out-{which}-{parallelism}"));
            assert_same(
                &lines,
                &expected,
                &format!("restored from the {which} savepoint at parallelism {parallelism}"),
            );
        }
    }
    // Only the counting operator rescaled, to 3: its key groups are redistributed.
    let lines = restore(dir.path(), &stopped, "count", 2, Some(3), "out-operator-3");
    assert_same(&lines, &expected, "restored with the counting operator alone at parallelism 3");
    // The Rust count's state restored into its JavaScript twin: the counts go on identically.
    let lines = restore(dir.path(), &stopped, "count_js", 2, None, "out-js");
    assert_same(&lines, &expected, "restored into count_js");
    // A savepoint directory moved elsewhere still restores.
    let moved = dir.path().join("elsewhere").join(stopped.file_name().unwrap());
    std::fs::create_dir_all(moved.parent().unwrap()).unwrap();
    std::fs::rename(&stopped, &moved).unwrap();
    assert_same(&restore(dir.path(), &moved, "count", 2, None, "out-moved"), &expected, "restored after a move");
}

#[test]
fn a_savepoint_of_format_version_1_still_restores() {
    // Version 1 stored a source position as a number; version 2 as the hex of the source's bytes.
    let dir = tempfile::tempdir().unwrap();
    let (_, stopped) = take_savepoints(dir.path());
    let mut metadata = read_metadata(&stopped.join("_metadata"));
    metadata["format-version"] = 1.into();
    for source in metadata["sources"].as_array_mut().unwrap() {
        source["position"] = position_number(&source["position"]).into();
    }
    write_metadata(&stopped.join("_metadata"), &metadata);
    let expected = expected_lines(&expected_counts(&dir.path().join("clicks.jsonl")));
    assert_same(&restore(dir.path(), &stopped, "count", 2, None, "out-v1"), &expected, "restored from version 1");
    let inspected = weir(&["savepoint", "inspect", &stopped.to_string_lossy()]);
    assert_eq!(inspected.code, 0, "{}", inspected.stderr);
}

/// Asserts two sorted line lists are equal, showing only where they first differ.
fn assert_same(actual: &[String], expected: &[String], what: &str) {
    let first = actual.iter().zip(expected).position(|(a, e)| a != e);
    assert!(
        first.is_none() && actual.len() == expected.len(),
        "{what}: {} lines, {} expected; first difference at {first:?}: {:?} vs {:?}",
        actual.len(),
        expected.len(),
        first.map(|i| &actual[i]),
        first.map(|i| &expected[i]),
    );
}

/// Sources rescale as operators do: a file source read by two subtasks and a generator whose
/// parallelism follows the job's, stopped with a savepoint at parallelism 2, go on at 3 and at 1
/// (their positions merged and cut anew), every event counted once.
#[test]
fn file_and_generator_sources_rescale_from_a_savepoint_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("clicks.jsonl");
    generated_clicks(&input, CLICKS, 40);
    let checkpointing =
        "\n[checkpointing]\ninterval = \"200ms\"\nstorage = \"file://chk\"\nsavepoint-dir = \"savepoints\"\n";
    let file_job = |parallelism: u32, rate: &str, out: &Path| {
        let job = clicks_job(dir.path(), parallelism, "count", "count-per-user", out, false);
        let source = format!("type = \"file\"\nparallelism = {parallelism}\n{rate}");
        job.replacen("type = \"file\"\n", &source, 1)
    };
    let generated = 20_000;
    let generator_job = |parallelism: u32, rate: &str, out: &Path| {
        let source = generator_source("events", generated, 50) + rate;
        let count = wasm_operator("count", "count", &["input = \"hash\""]);
        job("generated", parallelism, &[source, count, file_sink("out", out)]) + checkpointing
    };
    let expected_generated: Vec<String> = {
        let counts = (0..50).map(|k| (format!("k{k}"), generated / 50)).collect();
        expected_lines(&counts)
    };
    let expected_clicks = expected_lines(&expected_counts(&input));
    // Each job's text at a parallelism, with a `rate` line or none, writing to a directory.
    type MakeJob<'a> = &'a dyn Fn(u32, &str, &Path) -> String;
    let jobs: [(&str, MakeJob, &[String]); 2] =
        [("file", &file_job, &expected_clicks), ("generator", &generator_job, &expected_generated)];
    for (which, make, expected) in jobs {
        let first = dir.path().join(format!("{which}-out"));
        let mut running = Running::start(&write_job(dir.path(), &make(2, "rate = 4000\n", &first)), &[]);
        std::thread::sleep(Duration::from_millis(1500));
        let stopped = running.cli(&["stop", &running.id, "--savepoint"]);
        assert!(running.child.wait().unwrap().success(), "the stopped {which} job finishes");
        let before = sink_lines(&first);
        assert!(
            !before.is_empty() && before.len() < expected.len(),
            "{which}: stopped midway ({} lines)",
            before.len()
        );
        for parallelism in [3, 1] {
            let out = dir.path().join(format!("{which}-out-{parallelism}"));
            std::fs::create_dir_all(&out).unwrap();
            for part in std::fs::read_dir(&first).unwrap().flatten() {
                std::fs::copy(part.path(), out.join(part.file_name())).unwrap();
            }
            let job = write_job(dir.path(), &make(parallelism, "", &out));
            let run = weir(&["run", &job, "--listen", "none", "--from-savepoint", &stopped]);
            assert_eq!(run.code, 0, "{which} at parallelism {parallelism}: {}", run.stderr);
            assert!(run.stderr.contains("from savepoint"), "{}", run.stderr);
            assert_same(&sink_lines(&out), expected, &format!("the {which} source rescaled from 2 to {parallelism}"));
        }
    }
}

/// `count_v2` declares the `count` state with schema version 2 (`{"count":n}` instead of `n`)
/// and a migration from 1: restored from v1's savepoint, rescaled to 3 on the way, it migrates
/// every saved count and goes on from it. Its Python twin does exactly the same.
#[test]
fn a_new_schema_version_migrates_the_saved_state_on_restore() {
    let dir = tempfile::tempdir().unwrap();
    let (_, stopped) = take_savepoints(dir.path());
    let saved = saved_counts(&stopped.to_string_lossy(), "count-per-user");
    let lines = restore(dir.path(), &stopped, "count_v2", 2, Some(3), "out-v2");
    let python = restore(dir.path(), &stopped, "count_v2_py", 2, Some(3), "out-v2-py");
    assert_same(&python, &lines, "the Python count_v2 against the Rust one");
    let javascript = restore(dir.path(), &stopped, "count_v2_js", 2, Some(3), "out-v2-js");
    assert_same(&javascript, &lines, "the JavaScript count_v2 against the Rust one");
    let expected = expected_counts(&dir.path().join("clicks.jsonl"));
    let mut emitted: BTreeMap<String, Vec<(u64, Option<u64>)>> = BTreeMap::new();
    for line in &lines {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let key = v["key"].as_str().unwrap().to_string();
        emitted.entry(key).or_default().push((v["count"].as_u64().unwrap(), v["v"].as_u64()));
    }
    assert_eq!(emitted.keys().collect::<Vec<_>>(), expected.keys().collect::<Vec<_>>(), "every user");
    for (user, mut counts) in emitted {
        counts.sort();
        let before = saved.get(&user).copied().unwrap_or(0);
        let wanted: Vec<(u64, Option<u64>)> =
            (1..=expected[&user]).map(|n| (n, if n > before { Some(2) } else { None })).collect();
        assert_eq!(counts, wanted, "{user}: v1 up to the saved {before}, then v2 going on from it, each once");
    }
}

#[test]
fn state_that_does_not_fit_the_job_is_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (during, stopped) = take_savepoints(dir.path());
    let savepoint = stopped.to_string_lossy().into_owned();
    let before = sink_lines(&dir.path().join("out"));

    // The counting operator under a new uid: its state has nowhere to go.
    let renamed =
        write_job(dir.path(), &clicks_job(dir.path(), 2, "count", "count-v2", &dir.path().join("out"), false));
    // Refused from a savepoint the job went on after, the sink directory keeps what the job
    // committed since: a refused job opens no sink.
    let run = weir(&["run", &renamed, "--listen", "none", "--from-savepoint", &during.to_string_lossy()]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(sink_lines(&dir.path().join("out")), before, "nothing was set aside");
    let run = weir(&["run", &renamed, "--listen", "none", "--from-savepoint", &savepoint]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!(
            "savepoint {savepoint} holds state of operator 'count-per-user', which this job does not have; \
             pass --allow-non-restored-state to start without it"
        )),
        "{}",
        run.stderr
    );
    assert_eq!(sink_lines(&dir.path().join("out")), before, "nothing ran");

    // A module declaring the saved state with another schema version cannot read it.
    let other = clicks_job(dir.path(), 2, "test/count_schema2", "count-per-user", &dir.path().join("out"), false);
    let run = weir(&["run", &write_job(dir.path(), &other), "--listen", "none", "--from-savepoint", &savepoint]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains(
            "operator 'count-per-user': state 'count' was saved as value state, schema version 1 by count 1.0.0"
        ) && run.stderr.contains("count 2.0.0")
            && run.stderr.contains("declares it as value state, schema version 2; that code cannot read it"),
        "{}",
        run.stderr
    );
    assert_eq!(sink_lines(&dir.path().join("out")), before, "nothing ran");

    // Allowed, the renamed operator starts empty: its counts start again from 1.
    let renamed =
        write_job(dir.path(), &clicks_job(dir.path(), 2, "count", "count-v2", &dir.path().join("out"), false));
    let run =
        weir(&["run", &renamed, "--listen", "none", "--from-savepoint", &savepoint, "--allow-non-restored-state"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
}

#[test]
fn inspect_shows_the_state_and_dispose_deletes_it() {
    let dir = tempfile::tempdir().unwrap();
    let (during, stopped) = take_savepoints(dir.path());
    let savepoint = stopped.to_string_lossy().into_owned();
    let inspected = weir(&["savepoint", "inspect", &savepoint, "--operator", "count-per-user", "--state", "count"]);
    assert_eq!(inspected.code, 0, "{}", inspected.stderr);
    let mut counts = BTreeMap::new();
    for line in inspected.stdout.lines() {
        assert!(line.starts_with(r#"{"operator":"count-per-user","state":"count","key":""#), "{line}");
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        counts.insert(v["key"].as_str().unwrap().to_string(), v["value"].as_u64().unwrap());
    }
    assert_eq!(counts, final_counts(&sink_lines(&dir.path().join("out"))), "the counts the job emitted");
    let everything = weir(&["savepoint", "inspect", &savepoint]);
    assert_eq!(everything.stdout.lines().count(), counts.len(), "filter and key_by keep no state");
    let unknown = weir(&["savepoint", "inspect", &savepoint, "--operator", "nope"]);
    assert_eq!(unknown.code, 1);
    assert!(unknown.stderr.contains("the savepoint has no operator 'nope'"), "{}", unknown.stderr);

    let metadata = read_metadata(&stopped.join("_metadata"));
    assert_eq!((metadata["format"].as_str(), metadata["format-version"].as_u64()), (Some("weir-savepoint"), Some(3)));
    let ops: Vec<&str> = metadata["operators"].as_array().unwrap().iter().map(|o| o["uid"].as_str().unwrap()).collect();
    assert_eq!(ops, ["logged-in", "by-user", "count-per-user"]);
    assert_eq!(metadata["operators"][2]["module"]["name"], "count");

    let disposed = weir(&["savepoint", "dispose", "--force", &during.to_string_lossy()]);
    assert_eq!(disposed.code, 0, "{}", disposed.stderr);
    assert!(!during.exists());
    let refused = weir(&["savepoint", "dispose", "--force", &dir.path().join("out").to_string_lossy()]);
    assert_eq!(refused.code, 1);
    assert!(refused.stderr.contains("is not a savepoint directory"), "{}", refused.stderr);
}

#[test]
fn corrupt_savepoint_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let (_, stopped) = take_savepoints(dir.path());
    let savepoint = stopped.to_string_lossy().into_owned();
    let job =
        write_job(dir.path(), &clicks_job(dir.path(), 2, "count", "count-per-user", &dir.path().join("out"), false));
    let state = stopped.join("count-per-user-1.state");
    let mut bytes = std::fs::read(&state).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&state, &bytes).unwrap();
    let run = weir(&["run", &job, "--listen", "none", "--from-savepoint", &savepoint]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("count-per-user-1.state does not match the checksum in _metadata"), "{}", run.stderr);
    let inspected = weir(&["savepoint", "inspect", &savepoint]);
    assert_eq!(inspected.code, 1);
    assert!(inspected.stderr.contains("count-per-user-1.state does not match the checksum"), "{}", inspected.stderr);

    let metadata = std::fs::read(stopped.join("_metadata")).unwrap();
    std::fs::write(stopped.join("_metadata"), &metadata[..metadata.len() / 2]).unwrap();
    let run = weir(&["run", &job, "--listen", "none", "--from-savepoint", &savepoint]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("_metadata"), "the torn file is named: {}", run.stderr);
}

/// A server on `dir/data` running the slow clicks job (its clicks in `dir`, its output in
/// `dir/out`); the server and the job's id.
fn slow_job_on_a_server(dir: &Path) -> (Server, String) {
    generated_clicks(&dir.join("clicks.jsonl"), CLICKS, 40);
    let server = Server::start(&dir.join("data"), &[]);
    let job = write_job(dir, &clicks_job(dir, 2, "count", "count-per-user", &dir.join("out"), true));
    let id = server.cli(&["submit", &job]).stdout.trim().to_string();
    (server, id)
}

#[test]
fn a_server_takes_savepoints_and_starts_jobs_from_them() {
    let dir = tempfile::tempdir().unwrap();
    let (server, id) = slow_job_on_a_server(dir.path());
    std::thread::sleep(Duration::from_millis(700));
    let stop =
        server.cli(&["stop", &id, "--savepoint", "--drain", "--dir", &dir.path().join("mine").to_string_lossy()]);
    assert_eq!(stop.code, 0, "{}", stop.stderr);
    let savepoint = stop.stdout.trim().to_string();
    assert!(savepoint.starts_with(&dir.path().join("mine/savepoint-clicks-per-user-").to_string_lossy().into_owned()));
    assert_eq!(server.wait_for_job(&id)["state"], "finished");
    let (status, listed) = server.http("GET", "/v1/savepoints", b"", None);
    assert_eq!(status, 200);
    assert_eq!(listed["savepoints"][0]["location"], savepoint.as_str(), "{listed}");
    assert_eq!(listed["savepoints"][0]["stopped"], true);
    // A stopped job takes no more savepoints.
    let again = server.cli(&["savepoint", &id]);
    assert_eq!(again.code, 1);
    assert!(again.stderr.contains("only a running job can take a savepoint") && again.stderr.contains("HTTP 409"));

    let unlimited =
        write_job(dir.path(), &clicks_job(dir.path(), 4, "count", "count-per-user", &dir.path().join("out"), false));
    let resumed = server.cli(&["submit", &unlimited, "--from-savepoint", &savepoint]);
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    assert_eq!(server.wait_for_job(resumed.stdout.trim())["state"], "finished");
    let expected = expected_lines(&expected_counts(&dir.path().join("clicks.jsonl")));
    assert_same(&sink_lines(&dir.path().join("out")), &expected, "stopped on a server and resumed at parallelism 4");
}

/// A job file for a fork of the clicks job: its own `name`, `count_module` counting into `out`.
fn fork_job(dir: &Path, name: &str, count_module: &str, out: &Path) -> String {
    let job = clicks_job(dir, 2, count_module, "count-per-user", out, false).replacen(
        "name = \"clicks-per-user\"",
        &format!("name = \"{name}\""),
        1,
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, job).unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn a_savepoint_forks_into_two_jobs_whose_outputs_compare() {
    let dir = tempfile::tempdir().unwrap();
    let (during, _) = take_savepoints(dir.path());
    let savepoint = during.to_string_lossy().into_owned();
    let server = Server::start(&dir.path().join("data"), &[]);
    let (v1_out, v2_out) = (dir.path().join("out-v1"), dir.path().join("out-v2"));

    // A fork is a new job: under the savepoint's job name it is refused.
    let same = write_job(dir.path(), &clicks_job(dir.path(), 2, "count", "count-per-user", &v1_out, false));
    let refused = server.cli(&["fork", &savepoint, &same, "--submit"]);
    assert_eq!(refused.code, 1);
    assert!(refused.stderr.contains("a fork is a new job: give it a name of its own"), "{}", refused.stderr);

    let v1 = server.cli(&["fork", &savepoint, &fork_job(dir.path(), "clicks-v1", "count", &v1_out), "--submit"]);
    let v2 = server.cli(&["fork", &savepoint, &fork_job(dir.path(), "clicks-v2", "count_v2", &v2_out), "--submit"]);
    let (v1, v2) = (v1.stdout.trim().to_string(), v2.stdout.trim().to_string());
    for id in [&v1, &v2] {
        let job = server.wait_for_job(id);
        assert_eq!(job["state"], "finished", "{job}");
        assert_eq!(job["lineage"]["job"], "clicks-per-user");
        assert_eq!(job["lineage"]["savepoint"], savepoint.as_str());
        assert_eq!(job["history"][0]["event"], "started");
    }

    // Both went on from the savepoint's counts.
    let saved = saved_counts(&savepoint, "count-per-user");
    let first_counts = |out: &Path| {
        let mut first: BTreeMap<String, u64> = BTreeMap::new();
        for line in sink_lines(out) {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            let n = first.entry(v["key"].as_str().unwrap().to_string()).or_insert(u64::MAX);
            *n = (*n).min(v["count"].as_u64().unwrap());
        }
        first
    };
    let (first_v1, first_v2) = (first_counts(&v1_out), first_counts(&v2_out));
    assert_eq!(first_v1, first_v2);
    for (user, first) in &first_v1 {
        assert_eq!(*first, saved.get(user).copied().unwrap_or(0) + 1, "{user} goes on from the savepoint");
    }

    // v2 tags every line: every key differs. A job against a copy of its own output: all match.
    let compared = server.cli(&["compare", &v1, &v2]);
    assert_eq!(compared.code, 0, "{}", compared.stderr);
    let keys = first_v1.len();
    assert!(compared.stdout.starts_with(&format!("0 keys match, {keys} differ")), "{}", compared.stdout);
    assert!(compared.stdout.contains(r#"/ {"key":"#) && compared.stdout.contains(r#","v":2}"#), "{}", compared.stdout);
    let copy = dir.path().join("out-v1-copy");
    std::fs::create_dir_all(&copy).unwrap();
    for part in std::fs::read_dir(&v1_out).unwrap().flatten() {
        std::fs::copy(part.path(), copy.join(part.file_name())).unwrap();
    }
    let same = weir(&["compare", &v1_out.to_string_lossy(), &copy.to_string_lossy()]);
    assert!(same.stdout.starts_with(&format!("{keys} keys match, 0 differ")), "{}", same.stdout);
}

/// The library lists every savepoint a server's jobs took, tagged by why (asked for, stop,
/// upgrade, rollback, and the forks started from one); `weir savepoint dispose` goes through the
/// server's rules: it refuses a savepoint a running fork may go back to, disposes of a library's
/// savepoint through the server, deletes one the server does not know, and without a server to
/// ask only with --force. A savepoint deleted by hand leaves the library.
#[test]
fn the_library_lists_every_savepoint_and_dispose_follows_the_servers_rules() {
    let dir = tempfile::tempdir().unwrap();
    generated_clicks(&dir.path().join("clicks.jsonl"), 40_000, 40);
    let server = Server::start(&dir.path().join("data"), &[]);
    let job =
        write_job(dir.path(), &clicks_job(dir.path(), 2, "count", "count-per-user", &dir.path().join("out"), true));
    let submitted = server.cli(&["submit", &job]);
    let id = submitted.stdout.trim().to_string();
    std::thread::sleep(Duration::from_millis(500));
    let cli = |args: &[&str]| {
        let out = server.cli(args);
        assert_eq!(out.code, 0, "{args:?}: {}", out.stderr);
        out.stdout
    };
    let asked = cli(&["savepoint", &id]).trim().to_string();
    let v2 = weir_e2e::operator("count_v2").to_string_lossy().into_owned();
    cli(&["upgrade", &id, "--operator", &format!("count-per-user={v2}")]);
    cli(&["upgrade", &id, "--rollback"]);
    let stopped = cli(&["stop", &id, "--savepoint"]).trim().to_string();
    assert_eq!(server.wait_for_job(&id)["state"], "finished");

    let fork = clicks_job(dir.path(), 2, "count", "count-per-user", &dir.path().join("out-fork"), true).replacen(
        "name = \"clicks-per-user\"",
        "name = \"clicks-fork\"",
        1,
    );
    let fork = server.cli(&["fork", &asked, &write_job(dir.path(), &fork), "--submit"]);
    let fork = fork.stdout.trim().to_string();

    let library: serde_json::Value = serde_json::from_str(&cli(&["savepoints", "--json"])).unwrap();
    let library = library["savepoints"].as_array().unwrap().clone();
    let reasons: Vec<&str> = library.iter().map(|s| s["reason"].as_str().unwrap()).collect();
    assert_eq!(reasons, ["user", "upgrade", "rollback", "stop"], "{library:?}");
    assert_eq!(library[0]["location"], asked.as_str());
    assert_eq!(library[0]["forks"], serde_json::json!([fork]));
    assert_eq!(library[3]["location"], stopped.as_str());
    let listed = cli(&["savepoints"]);
    assert!(listed.lines().any(|l| l.contains(" user+fork ") && l.ends_with(&asked)), "{listed}");

    // The running fork may still go back to the savepoint it started from.
    let refused = server.cli(&["savepoint", "dispose", &asked]);
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(
        refused.stderr.contains(&format!("may still go back to savepoint {asked} (a restart)")),
        "{}",
        refused.stderr
    );
    assert!(std::path::Path::new(&asked).join("_metadata").is_file());
    cli(&["cancel", &fork]);
    assert_eq!(server.wait_for_job(&fork)["state"], "canceled");
    let disposed = server.cli(&["savepoint", "dispose", &asked]);
    assert!(disposed.stderr.contains("through the server"), "{}", disposed.stderr);
    assert!(!std::path::Path::new(&asked).exists());

    // Deleted by hand: the library drops it.
    std::fs::remove_dir_all(library[1]["location"].as_str().unwrap()).unwrap();
    let left: serde_json::Value = serde_json::from_str(&cli(&["savepoints", "--json"])).unwrap();
    let left: Vec<&str> =
        left["savepoints"].as_array().unwrap().iter().map(|s| s["reason"].as_str().unwrap()).collect();
    assert_eq!(left, ["rollback", "stop"]);

    // Without a server to ask, only with --force; one the server does not know, through it.
    std::fs::create_dir_all(dir.path().join("elsewhere")).unwrap();
    let (_, elsewhere) = take_savepoints(&dir.path().join("elsewhere"));
    let elsewhere = elsewhere.to_string_lossy().into_owned();
    let nobody = format!("http://127.0.0.1:{}", weir_e2e::free_port());
    let unreachable = weir(&["--server", &nobody, "savepoint", "dispose", &elsewhere]);
    assert_eq!(unreachable.code, 1);
    assert!(unreachable.stderr.contains("cannot reach the weir server") && unreachable.stderr.contains("--force"));
    let unknown = server.cli(&["savepoint", "dispose", &elsewhere]);
    assert_eq!(unknown.code, 0, "{}", unknown.stderr);
    assert!(!std::path::Path::new(&elsewhere).exists());
}

/// `weir compare` of a fork and the job it was forked from compares from the fork's savepoint
/// on: the parent's output before it is left out (each savepoint records what each sink had
/// committed), so the same code on the same input matches key for key.
#[test]
fn a_fork_compares_with_its_parent_from_the_fork_on() {
    let dir = tempfile::tempdir().unwrap();
    let (server, parent) = slow_job_on_a_server(dir.path());
    std::thread::sleep(Duration::from_millis(1500));
    let savepoint = server.cli(&["savepoint", &parent]).stdout.trim().to_string();
    let fork = server.cli(&[
        "fork",
        &savepoint,
        &fork_job(dir.path(), "clicks-fork", "count", &dir.path().join("out-fork")),
        "--submit",
    ]);
    let fork = fork.stdout.trim().to_string();
    for id in [&parent, &fork] {
        assert_eq!(server.wait_for_job(id)["state"], "finished");
    }
    let keys = expected_counts(&dir.path().join("clicks.jsonl")).len();
    let compared = server.cli(&["compare", &parent[..8], &fork[..8]]);
    assert_eq!(compared.code, 0, "{}", compared.stderr);
    assert!(compared.stdout.starts_with(&format!("{keys} keys match, 0 differ")), "{}", compared.stdout);
    assert!(compared.stdout.contains(&format!("from savepoint {savepoint} on")), "{}", compared.stdout);
    // The directories themselves: the whole outputs, the parent's before the fork included.
    let whole =
        weir(&["compare", &dir.path().join("out").to_string_lossy(), &dir.path().join("out-fork").to_string_lossy()]);
    assert!(whole.stdout.starts_with(&format!("0 keys match, {keys} differ")), "{}", whole.stdout);
}

#[test]
fn two_jobs_cannot_write_one_sink() {
    let dir = tempfile::tempdir().unwrap();
    generated_clicks(&dir.path().join("clicks.jsonl"), CLICKS, 40);
    let out = dir.path().join("out");
    let running =
        Running::start(&write_job(dir.path(), &clicks_job(dir.path(), 2, "count", "count-per-user", &out, true)), &[]);
    let other = fork_job(dir.path(), "intruder", "count", &out);
    let run = weir(&["run", &other, "--listen", "none"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains(&format!("another job is writing to {}", out.display())), "{}", run.stderr);
    drop(running);
}

#[test]
fn a_fork_that_fails_before_its_first_checkpoint_restarts_from_its_savepoint() {
    let dir = tempfile::tempdir().unwrap();
    let (during, _) = take_savepoints(dir.path());
    let savepoint = during.to_string_lossy().into_owned();
    let out = dir.path().join("out-flaky");
    // flaky_count traps on its first attempt when a user reaches 300; no checkpoint is taken
    // before (interval 1h), so the restart must go back to the savepoint, not to the start.
    let job = fork_job(dir.path(), "clicks-flaky", "test/flaky_count", &out);
    let text = std::fs::read_to_string(&job).unwrap();
    let text = text.replacen("input = \"hash\"\n", "input = \"hash\"\nconfig = { trap-at = 300, attempts = 1 }\n", 1);
    let text = text.replacen("interval = \"200ms\"", "interval = \"1h\"", 1);
    std::fs::write(&job, format!("{text}\n[restart]\nstrategy = \"fixed-delay\"\ndelay = \"10ms\"\n")).unwrap();

    let run = weir(&["fork", &savepoint, &job]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains(&format!("attempt 1 resumes from savepoint {savepoint}")), "{}", run.stderr);
    let saved = saved_counts(&savepoint, "count-per-user");
    let expected = expected_lines_after(&expected_counts(&dir.path().join("clicks.jsonl")), &saved);
    assert_same(&sink_lines(&out), &expected, "the fork's output: from the savepoint's counts on, once");
}
