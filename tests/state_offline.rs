//! Working with state offline: `weir replay` (one key of a savepoint through the module, event by
//! event, deterministic) and `weir savepoint write` (bootstrap, set, delete; the result restores
//! at any parallelism, the source savepoint unchanged).
use std::collections::BTreeMap;

use weir_e2e::{
    Running, assert_failed_with, clicks_job, expected_counts, expected_lines_after, file_sink, file_source,
    generated_clicks, job, saved_counts, sink_lines, wait_until, wasm_operator, weir, write_job,
};

/// The JSON lines of a replay's stdout.
fn replayed(args: &[&str]) -> (String, Vec<serde_json::Value>) {
    let out = weir(&[&["replay"], args].concat());
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines = out.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    (out.stdout, lines)
}

#[test]
fn a_replayed_key_ends_at_the_jobs_count_and_replays_print_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("clicks.jsonl");
    generated_clicks(&input, 16_000, 40);
    let text = clicks_job(&input, "count", 2, &dir.path().join("out")).replacen(
        "type = \"file\"",
        "type = \"file\"\nrate = 8000",
        1,
    );
    let job =
        write_job(dir.path(), &format!("{text}\n[checkpointing]\ninterval = \"0s\"\nsavepoint-dir = \"savepoints\"\n"));
    let running = Running::start(&job, &[]);
    // Stopped once some of its input is counted (without checkpointing, output is written at
    // once).
    let out_dir = dir.path().join("out");
    wait_until(|| serde_json::json!(sink_lines(&out_dir).len()), |n| n.as_u64() > Some(2_000));
    let savepoint = running.cli(&["stop", &running.id]);
    drop(running);
    let saved = saved_counts(&savepoint, "count-per-user")["u5"];
    // The job goes on from the savepoint to the end of its input.
    let resumed = weir(&["run", &job, "--from-savepoint", &savepoint, "--listen", "none"]);
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    let job_final = sink_lines(&dir.path().join("out"))
        .iter()
        .filter(|l| l.contains("\"key\":\"u5\""))
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["count"].as_u64().unwrap())
        .max()
        .unwrap();
    let all = expected_counts(&input)["u5"];
    assert_eq!(job_final, all);

    // u5's logged-in clicks after the savepoint, as count-per-user received them.
    let clicks: Vec<String> = std::fs::read_to_string(&input)
        .unwrap()
        .lines()
        .filter(|l| l.contains("\"user\":\"u5\"") && l.contains("\"logged_in\":true"))
        .map(str::to_string)
        .collect();
    let events = dir.path().join("u5.jsonl");
    std::fs::write(&events, clicks[saved as usize..].join("\n") + "\n").unwrap();
    let args = ["--operator", "count-per-user", "--key", "u5", "--events", events.to_str().unwrap(), "--job", &job];
    let (first, lines) = replayed(&[&[savepoint.as_str()][..], &args].concat());
    assert_eq!(lines[0], serde_json::json!({ "restored": { "count": saved }, "timers": [] }));
    let last = lines.last().unwrap();
    assert_eq!(last["after"]["count"], job_final, "{last}");
    assert_eq!(last["output"][0], format!("{{\"key\":\"u5\",\"count\":{job_final}}}"));
    assert_eq!(lines.len() as u64, 1 + all - saved);
    for (n, step) in lines[1..].iter().enumerate() {
        assert_eq!(step["before"]["count"], saved + n as u64, "{step}");
        assert_eq!(step["value"], clicks[saved as usize + n], "{step}");
    }
    let (second, _) = replayed(&[&[savepoint.as_str()][..], &args].concat());
    assert_eq!(first, second, "two replays print the same bytes");
    // The same events read from the job's own source, from where the savepoint left it, through
    // logged-in and by-user.
    let from_source = ["--operator", "count-per-user", "--key", "u5", "--events-from", "clicks", "--job", &job];
    let (third, _) = replayed(&[&[savepoint.as_str()][..], &from_source].concat());
    assert_eq!(third, first, "the job's source gives the same events");
    let none = [&from_source[..], &["--from-byte", "0", "--to-byte", "0"]].concat();
    let (_, lines) = replayed(&[&[savepoint.as_str()][..], &none].concat());
    assert_eq!(lines.len(), 1, "an empty range: the restored state only");
    let whole = [&from_source[..], &["--from-byte", "0"]].concat();
    let (_, lines) = replayed(&[&[savepoint.as_str()][..], &whole].concat());
    assert_eq!(lines.len() as u64, 1 + all, "from the file's start: every click of u5");
    let unknown = weir(
        &[&["replay", savepoint.as_str()][..], &from_source[..4], &["--events-from", "nope", "--job", &job]].concat(),
    );
    assert_failed_with(&unknown, &["the job has no source 'nope'"]);
    // The savepoint is as it was.
    assert_eq!(saved_counts(&savepoint, "count-per-user")["u5"], saved);
}

#[test]
fn a_replayed_window_count_sets_and_fires_its_timers_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("clicks.jsonl");
    std::fs::write(&input, "").unwrap();
    let source = file_source("clicks", &input) + "timestamp-field = \"ts\"\n";
    let sections = [
        source,
        wasm_operator("by-user", "key_by", &["config = { field = \"user\" }"]),
        wasm_operator("windows", "window_count", &["input = \"hash\"", "config = { size = \"10s\" }"]),
        file_sink("counts", &dir.path().join("out")),
    ];
    let job = write_job(dir.path(), &job("window-clicks", 2, &sections));
    // A savepoint written for the job, with one other key's (empty) windows.
    let savepoint = dir.path().join("sp");
    let sp = savepoint.to_str().unwrap();
    let written = savepoint_write(sp, &["--job", &job, "--operator", "windows", "--set", "bob", "windows=[]"]);
    assert_eq!(written.code, 0, "{}", written.stderr);
    let events = dir.path().join("alice.jsonl");
    let clicks: Vec<String> =
        [1000, 5000, 12000, 25000].iter().map(|ts| format!("{{\"user\":\"alice\",\"ts\":{ts}}}")).collect();
    std::fs::write(&events, clicks.join("\n") + "\n").unwrap();
    let (_, lines) = replayed(&[
        sp,
        "--operator",
        "windows",
        "--key",
        "alice",
        "--events",
        events.to_str().unwrap(),
        "--job",
        &job,
        "--timestamp-field",
        "ts",
    ]);
    let timer = |time: i64| serde_json::json!([{ "timer": "event-time", "time": time }]);
    let window = |start: i64, count: u64| {
        serde_json::json!([format!(
            "{{\"key\":\"alice\",\"start\":{start},\"end\":{},\"count\":{count}}}",
            start + 10_000
        )])
    };
    // The steps in order: each event, and the watermark passing a window's end.
    let shape: Vec<(serde_json::Value, serde_json::Value, serde_json::Value, serde_json::Value)> = lines[1..]
        .iter()
        .map(|l| (l["event"].clone(), l["timers-set"].clone(), l["timers-fired"].clone(), l["output"].clone()))
        .collect();
    let none = serde_json::Value::Null;
    let nothing = serde_json::json!([]);
    assert_eq!(
        shape,
        [
            (serde_json::json!(1), timer(9999), none.clone(), nothing.clone()),
            (serde_json::json!(2), none.clone(), none.clone(), nothing.clone()),
            (serde_json::json!(3), timer(19999), none.clone(), nothing.clone()),
            (none.clone(), none.clone(), timer(9999), window(0, 2)),
            (serde_json::json!(4), timer(29999), none.clone(), nothing.clone()),
            (none.clone(), none.clone(), timer(19999), window(10_000, 1)),
            (none.clone(), none.clone(), timer(29999), window(20_000, 1)),
        ],
        "{lines:?}"
    );
    assert_eq!(lines.last().unwrap()["watermark"], i64::MAX);
}

#[test]
fn a_bootstrapped_savepoint_restores_at_parallelism_3_and_deleted_keys_start_again() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("clicks.jsonl");
    generated_clicks(&input, 8_000, 40);
    let job = write_job(dir.path(), &clicks_job(&input, "count", 3, &dir.path().join("out")));
    let boot = dir.path().join("counts.jsonl");
    let lines: Vec<String> = (0..10_000).map(|i| format!("{{\"key\":\"u{i}\",\"count\":{}}}", 1000 + i)).collect();
    std::fs::write(&boot, lines.join("\n") + "\n").unwrap();
    let bootstrapped = dir.path().join("bootstrapped");
    let written = savepoint_write(
        bootstrapped.to_str().unwrap(),
        &["--job", &job, "--operator", "count-per-user", "--bootstrap", boot.to_str().unwrap()],
    );
    assert_eq!(written.code, 0, "{}", written.stderr);
    let saved = saved_counts(bootstrapped.to_str().unwrap(), "count-per-user");
    assert_eq!(saved.len(), 10_000);

    // From it, one key deleted: a new savepoint; the first stays as it was.
    let edited = dir.path().join("edited");
    let deleted = savepoint_write(
        edited.to_str().unwrap(),
        &["--from", bootstrapped.to_str().unwrap(), "--operator", "count-per-user", "--delete", "u7"],
    );
    assert_eq!(deleted.code, 0, "{}", deleted.stderr);
    assert_eq!(saved_counts(bootstrapped.to_str().unwrap(), "count-per-user").len(), 10_000);
    let mut counts: BTreeMap<String, u64> = saved.clone();
    counts.remove("u7");
    assert_eq!(saved_counts(edited.to_str().unwrap(), "count-per-user"), counts);

    let run = weir(&["run", &job, "--from-savepoint", edited.to_str().unwrap(), "--listen", "none"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let clicked = expected_counts(&input);
    let totals: BTreeMap<String, u64> =
        clicked.iter().map(|(user, n)| (user.clone(), n + counts.get(user).copied().unwrap_or(0))).collect();
    let mut got = sink_lines(&dir.path().join("out"));
    got.sort();
    let mut expected = expected_lines_after(&totals, &counts);
    expected.sort();
    assert_eq!(got, expected, "counts go on from the bootstrapped values; u7 starts at 1");
    assert!(got.contains(&"{\"key\":\"u7\",\"count\":1}".to_string()));
    assert!(got.contains(&"{\"key\":\"u8\",\"count\":1009}".to_string()));
}

#[test]
fn state_an_operator_does_not_declare_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("clicks.jsonl");
    std::fs::write(&input, "").unwrap();
    let sections = [
        file_source("clicks", &input),
        wasm_operator("by-user", "key_by", &["config = { field = \"user\" }"]),
        wasm_operator("count-per-user", "test/poison", &["input = \"hash\"", "config = { key = \"nobody\" }"]),
        file_sink("counts", &dir.path().join("out")),
    ];
    let job = write_job(dir.path(), &job("poisoned", 2, &sections));
    let boot = dir.path().join("boot.jsonl");
    for (line, message) in [
        (
            "{\"key\":\"bob\",\"pages\":7}",
            "line 2: operator 'count-per-user', key 'bob': state 'pages' is a map state: give its entries as a JSON object",
        ),
        (
            "{\"key\":\"bob\",\"counts\":7}",
            "line 2: operator 'count-per-user', key 'bob': operator 'count-per-user' has no state 'counts' (it has: count, pages, weir.timers)",
        ),
        ("{\"key\":\"bob\",\"weir.timers\":{}}", "key 'bob': timers are the operator's to set"),
    ] {
        std::fs::write(&boot, format!("{{\"key\":\"alice\",\"count\":3,\"pages\":{{\"/a\":3}}}}\n{line}\n")).unwrap();
        let out_dir = dir.path().join("refused");
        let out = savepoint_write(
            out_dir.to_str().unwrap(),
            &["--job", &job, "--operator", "count-per-user", "--bootstrap", boot.to_str().unwrap()],
        );
        assert_failed_with(&out, &[message]);
        assert!(!out_dir.exists(), "nothing written");
    }
    // Writing over a savepoint is refused.
    let written = dir.path().join("written");
    let args = [
        "savepoint",
        "write",
        written.to_str().unwrap(),
        "--job",
        &job,
        "--operator",
        "count-per-user",
        "--set",
        "alice",
        "count=3",
    ];
    assert_eq!(weir(&args).code, 0);
    assert_failed_with(&weir(&args), &["is not empty: write a new savepoint into a new directory"]);
    // An operator the savepoint lacks.
    let missing = weir(&[
        "replay",
        written.to_str().unwrap(),
        "--operator",
        "nope",
        "--key",
        "a",
        "--events",
        boot.to_str().unwrap(),
        "--job",
        &job,
    ]);
    assert_failed_with(&missing, &["the savepoint has no operator 'nope' (it has: count-per-user)"]);
}

/// Runs `weir savepoint write OUT ARGS…`.
fn savepoint_write(out: &str, args: &[&str]) -> weir_e2e::Output {
    weir(&[&["savepoint", "write", out][..], args].concat())
}
