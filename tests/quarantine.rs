//! Quarantine (`on-error = "quarantine"`): the events that make an operator's guest calls fail
//! are set aside on its `quarantine` side output, every other event is processed exactly once,
//! under kills too, and a later run with a fixed module takes the set-aside events back
//! (`format = "quarantine"`).
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use weir_e2e::{
    Server, assert_failed_with, file_sink, file_source, job, kill_repeatedly, sink_lines, wasm_operator, weir,
    weir_with_limit, write_job,
};

/// `n` clicks `{"ts":i,"user":…,"page":…}` by 40 users, every `every`th by `mallory`.
fn poison_clicks(path: &Path, n: usize, every: usize) {
    let mut text = String::new();
    for i in 0..n {
        let user = if i % every == every / 2 { "mallory".to_string() } else { format!("u{}", (i * 31) % 40) };
        text.push_str(&format!("{{\"ts\":{i},\"user\":\"{user}\",\"page\":\"/p{}\"}}\n", i % 7));
    }
    std::fs::write(path, text).unwrap();
}

/// The lines of `input` whose user is `user`.
fn lines_of(input: &Path, user: &str) -> Vec<String> {
    let text = std::fs::read_to_string(input).unwrap();
    text.lines().filter(|l| l.contains(&format!("\"user\":\"{user}\""))).map(str::to_string).collect()
}

/// The job: clicks keyed by user into `module` (with `operator` lines: config, on-error, limits),
/// its output to `out/counts` and its quarantine side output to `out/quarantine`, with
/// `tail` appended (checkpointing, restart).
fn poison_job(dir: &Path, input: &Path, module: &str, operator: &[&str], tail: &str) -> String {
    let mut lines = vec!["input = \"hash\""];
    lines.extend_from_slice(operator);
    let quarantines = operator.iter().any(|l| l.contains("quarantine"));
    let quarantine = format!(
        "{}inputs = [{{ from = \"count-per-user.quarantine\" }}]\n",
        file_sink("quarantine", &dir.join("out/quarantine"))
    );
    let text = job(
        "poisoned-clicks",
        2,
        &[
            file_source("clicks", input),
            wasm_operator("by-user", "key_by", &["config = { field = \"user\" }"]),
            wasm_operator("count-per-user", module, &lines),
            format!("{}inputs = [{{ from = \"count-per-user\" }}]\n", file_sink("counts", &dir.join("out/counts"))),
            if quarantines { quarantine } else { String::new() },
        ],
    );
    write_job(dir, &format!("{text}\n{tail}"))
}

/// `n` clicks, every `every`th by mallory, in `dir/clicks.jsonl`, and the poison job over them with
/// mallory poisoned and `on-error = "quarantine"`, `tail` appended: the input and the job.
fn quarantined_clicks(dir: &Path, (n, every): (usize, usize), tail: &str) -> (PathBuf, String) {
    let input = dir.join("clicks.jsonl");
    poison_clicks(&input, n, every);
    let operator = ["config = { key = \"mallory\" }", "on-error = \"quarantine\""];
    let job = poison_job(dir, &input, "test/poison", &operator, tail);
    (input, job)
}

/// The quarantined clicks job (20,000 clicks, 50 of them mallory's) run to its end with
/// checkpoints, and its quarantine records gathered into `dir/requeue.jsonl`: the input, the job
/// and that file.
fn quarantined_then_gathered(dir: &Path) -> (PathBuf, String, PathBuf) {
    let (input, job) = quarantined_clicks(dir, (20_000, 400), CHECKPOINTS);
    let out = weir(&["run", &job]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(assert_quarantined_mallory(dir, &input, "poisoned by key mallory").len(), 50);
    let requeue = dir.join("requeue.jsonl");
    std::fs::write(&requeue, sink_lines(&dir.join("out/quarantine")).join("\n") + "\n").unwrap();
    (input, job, requeue)
}

const CHECKPOINTS: &str = "[checkpointing]\ninterval = \"100ms\"\nstorage = \"file://chk\"\n";

/// Checks the `poison` module's output in `out/counts`: per user, every count from 1 to the
/// number of their clicks in `input` once, and per user and page every page count once (a
/// failed call's map writes applied twice would repeat or skip some); nothing for `mallory`.
fn assert_counted_once_but_mallory(dir: &Path, input: &Path) {
    assert!(!sink_lines(&dir.join("out/counts")).iter().any(|l| l.contains("\"mallory\"")), "a count for mallory");
    assert_others_counted_once(dir, input);
}

/// The same, for every user but mallory, whatever mallory's lines.
fn assert_others_counted_once(dir: &Path, input: &Path) {
    let mut expected: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut pages: BTreeMap<(String, String), u64> = BTreeMap::new();
    for line in std::fs::read_to_string(input).unwrap().lines() {
        let click: serde_json::Value = serde_json::from_str(line).unwrap();
        let user = click["user"].as_str().unwrap().to_string();
        if user == "mallory" {
            continue;
        }
        let n = expected.get(&user).map_or(0, Vec::len) as u64 + 1;
        expected.entry(user.clone()).or_default().push(n);
        *pages.entry((user, click["page"].as_str().unwrap().to_string())).or_default() += 1;
    }
    let mut counts: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut page_counts: BTreeMap<(String, String), Vec<u64>> = BTreeMap::new();
    for line in sink_lines(&dir.join("out/counts")).iter().filter(|l| !l.contains("\"mallory\"")) {
        let out: serde_json::Value = serde_json::from_str(line).unwrap();
        let user = out["key"].as_str().unwrap().to_string();
        counts.entry(user.clone()).or_default().push(out["count"].as_u64().unwrap());
        let page = out["page"].as_str().unwrap().to_string();
        page_counts.entry((user, page)).or_default().push(out["page-count"].as_u64().unwrap());
    }
    counts.values_mut().for_each(|c| c.sort_unstable());
    page_counts.values_mut().for_each(|c| c.sort_unstable());
    assert_eq!(counts, expected, "every count once");
    let pages: BTreeMap<(String, String), Vec<u64>> = pages.into_iter().map(|(k, n)| (k, (1..=n).collect())).collect();
    assert_eq!(page_counts, pages, "every page count once");
}

/// Checks `out/quarantine`: exactly mallory's clicks of `input`, each once, with an error that
/// holds `error`; returns the records.
fn assert_quarantined_mallory(dir: &Path, input: &Path, error: &str) -> Vec<serde_json::Value> {
    let records: Vec<serde_json::Value> =
        sink_lines(&dir.join("out/quarantine")).iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    let mut values: Vec<String> = records.iter().map(|r| r["value"].as_str().unwrap().to_string()).collect();
    values.sort();
    let mut expected = lines_of(input, "mallory");
    expected.sort();
    assert_eq!(values, expected, "exactly mallory's clicks, once each");
    for record in &records {
        assert_eq!(record["operator"], "count-per-user", "{record}");
        assert_eq!(record["key"], "mallory", "{record}");
        assert!(record["error"].as_str().unwrap().contains(error), "{record}");
        assert!(record["module"].as_str().unwrap().starts_with("sha256:"), "{record}");
    }
    records
}

#[test]
fn a_poisoned_keys_events_are_set_aside_and_the_rest_counted_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let (input, job) = quarantined_clicks(dir.path(), (100_000, 2_000), CHECKPOINTS);
    let out = weir_with_limit(&["run", &job], Duration::from_secs(120));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains(", 50 quarantined"), "{}", out.stderr);
    assert_counted_once_but_mallory(dir.path(), &input);
    let records = assert_quarantined_mallory(dir.path(), &input, "poisoned by key mallory");
    assert_eq!(records.len(), 50);
    assert!(records.iter().all(|r| r["timestamp"].is_null() && r["subtask"].is_u64()), "{records:?}");
}

#[test]
fn quarantine_is_exactly_once_across_kills() {
    let dir = tempfile::tempdir().unwrap();
    let (input, job) = quarantined_clicks(dir.path(), (100_000, 2_000), CHECKPOINTS);
    // 20,000 clicks a second: a run takes 5 s, and the kills land anywhere in it.
    let text = std::fs::read_to_string(&job).unwrap().replacen("type = \"file\"", "type = \"file\"\nrate = 20000", 1);
    std::fs::write(&job, text).unwrap();
    let chk = dir.path().join("chk/poisoned-clicks");
    let killed = kill_repeatedly(&job, &[], 4, || !weir_e2e::completed_checkpoints(&chk).is_empty());
    assert!(killed > 0, "no run was killed");
    let out = weir_with_limit(&["run", &job, "--from-checkpoint", "latest"], Duration::from_secs(120));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_counted_once_but_mallory(dir.path(), &input);
    assert_quarantined_mallory(dir.path(), &input, "poisoned by key mallory");
}

#[test]
fn without_on_error_a_poisoned_event_fails_the_job_after_its_restarts_and_limits_fail_it_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("clicks.jsonl");
    poison_clicks(&input, 5_000, 500);
    let restart = "[restart]\nstrategy = \"fixed-delay\"\nattempts = 2\ndelay = \"10ms\"\n";
    let config = "config = { key = \"mallory\" }";
    let job = poison_job(dir.path(), &input, "test/poison", &[config], &format!("{CHECKPOINTS}{restart}"));
    let out = weir(&["run", &job]);
    assert_failed_with(&out, &["poisoned by key mallory"]);
    assert_eq!(out.stderr.matches("restarting").count(), 2, "{}", out.stderr);

    // Past max-total: the job fails, naming the limit (its restarts meet it again).
    std::fs::remove_dir_all(dir.path().join("out")).unwrap();
    let on_error = "on-error = { action = \"quarantine\", max-total = 3 }";
    let job = poison_job(dir.path(), &input, "test/poison", &[config, on_error], "");
    let out = weir(&["run", &job]);
    assert_failed_with(
        &out,
        &[
            "operator 'count-per-user' set aside 4 events, over its `on-error` max-total of 3",
            "poisoned by key mallory",
        ],
    );

    // And past max-per-minute.
    let on_error = "on-error = { action = \"quarantine\", max-per-minute = 5 }";
    let job = poison_job(dir.path(), &input, "test/poison", &[config, on_error], "");
    let out = weir(&["run", &job]);
    assert_failed_with(&out, &["set aside 6 events within a minute, over its `on-error` max-per-minute of 5"]);
}

#[test]
fn a_quarantine_nothing_reads_and_bad_settings_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("clicks.jsonl");
    poison_clicks(&input, 10, 5);
    let unread = job(
        "unread",
        1,
        &[
            file_source("clicks", &input),
            wasm_operator("by-user", "key_by", &["config = { field = \"user\" }"]),
            wasm_operator("count-per-user", "count", &["input = \"hash\"", "on-error = \"quarantine\""]),
            file_sink("counts", &dir.path().join("out")),
        ],
    );
    let out = weir(&["run", &write_job(dir.path(), &unread)]);
    assert_failed_with(
        &out,
        &[
            "operator 'count-per-user': `on-error = \"quarantine\"` sets failing events aside on its side output 'quarantine', and nothing reads it: add a sink with `inputs = [{ from = \"count-per-user.quarantine\" }]`",
        ],
    );
    for (on_error, message) in [
        ("on-error = \"retry\"", "`on-error` \"retry\" is not \"fail\" or \"quarantine\""),
        (
            "on-error = { action = \"quarantine\", max-total = 0 }",
            "`on-error`'s `max-total` must be a whole number of events, at least 1",
        ),
        ("on-error = { max-total = 5 }", "`on-error` needs `action = \"quarantine\"`"),
        ("on-error = { action = \"quarantine\", per-hour = 5 }", "`on-error` has no setting `per-hour`"),
    ] {
        let job = poison_job(dir.path(), &input, "count", &[on_error], "");
        let out = weir(&["run", &job]);
        assert_failed_with(&out, &[message]);
    }
}

#[test]
fn a_python_operators_bad_events_are_set_aside_with_its_exception() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("clicks.jsonl");
    let mut text = String::new();
    for i in 0..3_000 {
        let page = if i % 1000 == 500 { "null".to_string() } else { format!("\"/p{}\"", i % 3) };
        text.push_str(&format!("{{\"ts\":{i},\"user\":\"u{}\",\"page\":{page}}}\n", i % 5));
    }
    std::fs::write(&input, &text).unwrap();
    let job = poison_job(dir.path(), &input, "test/pages_py", &["on-error = \"quarantine\""], CHECKPOINTS);
    let out = weir_with_limit(&["run", &job], Duration::from_secs(120));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains(", 3 quarantined"), "{}", out.stderr);
    // Views per user count the clicks with a page, once each: u0 lost its three clicks with a
    // null page, each other user has 600.
    let mut views: BTreeMap<u64, u64> = BTreeMap::new();
    for line in sink_lines(&dir.path().join("out/counts")) {
        let out: serde_json::Value = serde_json::from_str(&line).unwrap();
        *views.entry(out["views"].as_u64().unwrap()).or_default() += 1;
    }
    let expected: BTreeMap<u64, u64> = (1..=600).map(|v| (v, if v <= 597 { 5 } else { 4 })).collect();
    assert_eq!(views, expected);
    let records: Vec<serde_json::Value> =
        sink_lines(&dir.path().join("out/quarantine")).iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(records.len(), 3);
    for record in &records {
        assert!(record["value"].as_str().unwrap().contains("\"page\":null"), "{record}");
        assert!(record["error"].as_str().unwrap().contains("TypeError"), "{record}");
    }
}

#[test]
fn an_event_past_its_deadline_or_memory_limit_is_set_aside() {
    for (how, limit, error) in [
        ("spin", "call-deadline = \"100ms\"", "exceeded its call deadline of 100ms"),
        ("hog", "memory-limit = \"32MiB\"", "memory limit of 32 MiB exceeded"),
        ("error", "call-deadline = \"1s\"", "refused key mallory"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("clicks.jsonl");
        poison_clicks(&input, 3_000, 1_000);
        let config = format!("config = {{ key = \"mallory\", how = \"{how}\" }}");
        let operator = [config.as_str(), limit, "on-error = \"quarantine\""];
        let job = poison_job(dir.path(), &input, "test/poison", &operator, CHECKPOINTS);
        let out = weir_with_limit(&["run", &job], Duration::from_secs(120));
        assert_eq!(out.code, 0, "{how}: {}", out.stderr);
        assert_counted_once_but_mallory(dir.path(), &input);
        assert_eq!(assert_quarantined_mallory(dir.path(), &input, error).len(), 3, "{how}");
    }
}

#[test]
fn requeued_events_are_counted_exactly_once_after_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let (_, job, requeue) = quarantined_then_gathered(dir.path());
    // The fix (here: the module no longer poisoned by mallory) reads the set-aside events back,
    // from where the first run's final checkpoint left the job.
    let fixed = fixed_with_requeue(&std::fs::read_to_string(&job).unwrap(), &requeue);
    let fixed_job = dir.path().join("fixed.toml");
    std::fs::write(&fixed_job, &fixed).unwrap();
    let out = weir(&["run", fixed_job.to_str().unwrap(), "--from-checkpoint", "latest"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    // mallory's counts are 1 to 50, once each, and every other count stays once.
    assert_eq!(mallory_counts(dir.path()), (1..=50).collect::<Vec<u64>>());
    assert_eq!(sink_lines(&dir.path().join("out/quarantine")).len(), 50, "nothing more set aside");
}

#[test]
fn a_requeue_killed_again_and_again_counts_each_event_once() {
    let dir = tempfile::tempdir().unwrap();
    let (input, job, requeue) = quarantined_then_gathered(dir.path());
    // The set-aside events come back at 25 a second (2 s): the kills land among them.
    let fixed = fixed_with_requeue(&std::fs::read_to_string(&job).unwrap(), &requeue).replacen(
        "format = \"quarantine\"",
        "format = \"quarantine\"\nrate = 25",
        1,
    );
    let fixed_job = dir.path().join("fixed.toml");
    std::fs::write(&fixed_job, &fixed).unwrap();
    let fixed_job = fixed_job.to_str().unwrap();
    let killed = kill_repeatedly(fixed_job, &[], 3, || true);
    assert!(killed > 0, "no run was killed");
    let out = weir(&["run", fixed_job, "--from-checkpoint", "latest"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(mallory_counts(dir.path()), (1..=50).collect::<Vec<u64>>(), "each requeued event counted once");
    assert_others_counted_once(dir.path(), &input);
}

#[test]
fn weir_serve_counts_quarantined_events_in_its_api_metrics_and_status() {
    let dir = tempfile::tempdir().unwrap();
    let (input, job) = quarantined_clicks(dir.path(), (10_000, 1_000), CHECKPOINTS);
    let server = Server::start(&dir.path().join("data"), &[]);
    let id = server.cli(&["submit", &job]).stdout.trim().to_string();
    let done = server.wait_for_job(&id);
    assert_eq!(done["state"], "finished", "{done}");
    let vertices = done["vertices"].as_array().unwrap();
    let op = vertices.iter().find(|v| v["uid"] == "count-per-user").unwrap();
    assert_eq!(op["quarantined"], 10, "{op}");
    let status = server.cli(&["status", &id]);
    assert!(status.stdout.contains("operator 'count-per-user': 10 quarantined events"), "{}", status.stdout);
    let (code, metrics) = server.get_text("/metrics", None);
    assert_eq!(code, 200);
    let quarantined: u64 = metrics
        .lines()
        .filter(|l| {
            l.starts_with("weir_task_numRecordsQuarantined_total{") && l.contains("operator=\"count-per-user\"")
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(quarantined, 10, "{metrics}");
    assert_counted_once_but_mallory(dir.path(), &input);
    assert_eq!(assert_quarantined_mallory(dir.path(), &input, "poisoned by key mallory").len(), 10);
}

/// The poison job's text after the fix: the module no longer poisoned (by nobody), and a source
/// `requeue` reading the quarantine records in `requeue`, feeding the operator directly.
fn fixed_with_requeue(text: &str, requeue: &Path) -> String {
    let fixed = text.replace("config = { key = \"mallory\" }", "config = { key = \"nobody\" }").replace(
        "[[operator]]\nuid = \"count-per-user\"",
        &format!(
            "{}format = \"quarantine\"\n\n[[operator]]\nuid = \"count-per-user\"\ninputs = [{{ from = \"by-user\", \
             partitioning = \"hash\" }}, {{ from = \"requeue\", partitioning = \"hash\" }}]",
            file_source("requeue", requeue)
        ),
    );
    // by-user reads the clicks only (without `inputs` it would read every source).
    fixed.replacen("input = \"hash\"\n", "", 1).replacen(
        "uid = \"by-user\"\n",
        "uid = \"by-user\"\ninputs = [{ from = \"clicks\" }]\n",
        1,
    )
}

/// mallory's counts in `out/counts`, sorted.
fn mallory_counts(dir: &Path) -> Vec<u64> {
    let mut counts: Vec<u64> = sink_lines(&dir.join("out/counts"))
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["key"] == "mallory")
        .map(|v| v["count"].as_u64().unwrap())
        .collect();
    counts.sort_unstable();
    counts
}

#[test]
fn on_weir_serve_a_stopped_jobs_quarantine_is_requeued_after_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let tail = "[checkpointing]\ninterval = \"100ms\"\nstorage = \"file://chk\"\nsavepoint-dir = \"savepoints\"\n";
    let (_, job) = quarantined_clicks(dir.path(), (20_000, 400), tail);
    let paced = std::fs::read_to_string(&job).unwrap().replacen("type = \"file\"", "type = \"file\"\nrate = 10000", 1);
    std::fs::write(&job, paced).unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let id = server.cli(&["submit", &job]).stdout.trim().to_string();
    let quarantined = |job: &serde_json::Value| {
        let vertices = job["vertices"].as_array().cloned().unwrap_or_default();
        vertices.iter().find(|v| v["uid"] == "count-per-user").and_then(|v| v["quarantined"].as_u64()).unwrap_or(0)
    };
    weir_e2e::wait_until(|| server.http("GET", &format!("/v1/jobs/{id}"), b"", None).1, |job| quarantined(job) >= 5);
    let stopped = server.cli(&["stop", &id]);
    assert_eq!(stopped.code, 0, "{}", stopped.stderr);
    let savepoint = stopped.stdout.trim().to_string();
    let done = server.wait_for_job(&id);
    let set_aside = sink_lines(&dir.path().join("out/quarantine"));
    assert_eq!(set_aside.len() as u64, quarantined(&done), "what the API counted is what the sink committed");
    assert!(set_aside.len() < 50, "stopped midway: {}", set_aside.len());

    let requeue = dir.path().join("requeue.jsonl");
    std::fs::write(&requeue, set_aside.join("\n") + "\n").unwrap();
    let fixed_job = dir.path().join("fixed.toml");
    std::fs::write(&fixed_job, fixed_with_requeue(&std::fs::read_to_string(&job).unwrap(), &requeue)).unwrap();
    let submitted = server.cli(&["submit", fixed_job.to_str().unwrap(), "--from-savepoint", &savepoint]);
    assert_eq!(submitted.code, 0, "{}", submitted.stderr);
    let fixed_id = submitted.stdout.trim().to_string();
    let fixed = server.wait_for_job(&fixed_id);
    assert_eq!(fixed["state"], "finished", "{fixed}");
    assert_eq!(mallory_counts(dir.path()), (1..=50).collect::<Vec<u64>>(), "every mallory click counted once");
    assert_eq!(sink_lines(&dir.path().join("out/quarantine")).len(), set_aside.len(), "nothing more set aside");
}

#[test]
fn quarantine_takes_back_map_writes_in_rocksdb_state_too() {
    let dir = tempfile::tempdir().unwrap();
    let rocksdb = format!("{CHECKPOINTS}[state]\nbackend = \"rocksdb\"\n");
    let (input, job) = quarantined_clicks(dir.path(), (20_000, 400), &rocksdb);
    let out = weir(&["run", &job]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_counted_once_but_mallory(dir.path(), &input);
    assert_eq!(assert_quarantined_mallory(dir.path(), &input, "poisoned by key mallory").len(), 50);
}

#[test]
fn a_timer_whose_firing_fails_is_set_aside_and_the_others_fire() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("clicks.jsonl");
    poison_clicks(&input, 5_000, 100);
    let config = "config = { key = \"mallory\", how = \"timer\" }";
    let job = poison_job(dir.path(), &input, "test/poison", &[config, "on-error = \"quarantine\""], CHECKPOINTS);
    let text = std::fs::read_to_string(&job).unwrap().replacen(
        "type = \"file\"",
        "type = \"file\"\ntimestamp-field = \"ts\"",
        1,
    );
    std::fs::write(&job, text).unwrap();
    let out = weir(&["run", &job]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    // Every event is counted (mallory's too); every timer fires but mallory's.
    let mut counts: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut fired: Vec<(String, i64)> = Vec::new();
    for line in sink_lines(&dir.path().join("out/counts")) {
        let out: serde_json::Value = serde_json::from_str(&line).unwrap();
        let key = out["key"].as_str().unwrap().to_string();
        match out["timer"].as_i64() {
            Some(time) => fired.push((key, time)),
            None => counts.entry(key).or_default().push(out["count"].as_u64().unwrap()),
        }
    }
    let clicks: Vec<serde_json::Value> =
        std::fs::read_to_string(&input).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let user = |c: &serde_json::Value| c["user"].as_str().unwrap().to_string();
    assert_eq!(counts.values().map(Vec::len).sum::<usize>(), 5_000);
    assert_eq!(counts["mallory"].len(), 50);
    fired.sort();
    let mut expected: Vec<(String, i64)> =
        clicks.iter().filter(|c| user(c) != "mallory").map(|c| (user(c), c["ts"].as_i64().unwrap())).collect();
    expected.sort();
    assert_eq!(fired, expected, "every timer but mallory's fired once");
    let records: Vec<serde_json::Value> =
        sink_lines(&dir.path().join("out/quarantine")).iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    let mut times: Vec<i64> = records.iter().map(|r| r["timer"]["time"].as_i64().unwrap()).collect();
    times.sort_unstable();
    let mallory: Vec<i64> = clicks.iter().filter(|c| user(c) == "mallory").map(|c| c["ts"].as_i64().unwrap()).collect();
    assert_eq!(times, mallory, "exactly mallory's timers set aside");
    for record in &records {
        assert_eq!(
            (&record["key"], &record["timer"]["domain"]),
            (&serde_json::json!("mallory"), &serde_json::json!("event-time"))
        );
        assert!(
            record["value"].is_null() && record["error"].as_str().unwrap().contains("poisoned timer of key mallory")
        );
    }
}

/// `examples/count_broken/quarantine.toml`, run from a copy of the repository's layout: alice's
/// logged-in clicks set aside, every other user's counted once.
#[test]
fn the_quarantine_example_sets_alices_clicks_aside() {
    let dir = tempfile::tempdir().unwrap();
    let examples = dir.path().join("examples");
    std::fs::create_dir_all(examples.join("clicks")).unwrap();
    std::fs::create_dir_all(examples.join("count_broken")).unwrap();
    std::fs::create_dir_all(dir.path().join("target")).unwrap();
    let operators = weir_e2e::operator("count").parent().unwrap().to_path_buf();
    std::os::unix::fs::symlink(&operators, dir.path().join("target/operators")).unwrap();
    let clicks = weir_e2e::repo().join("examples/clicks/clicks.jsonl");
    std::fs::copy(&clicks, examples.join("clicks/clicks.jsonl")).unwrap();
    let job = examples.join("count_broken/quarantine.toml");
    std::fs::copy(weir_e2e::repo().join("examples/count_broken/quarantine.toml"), &job).unwrap();
    let out = weir(&["run", job.to_str().unwrap(), "--listen", "none"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let mut counts = weir_e2e::expected_counts(&clicks);
    let alice = counts.remove("alice").unwrap();
    let mut lines = weir_e2e::expected_lines(&counts);
    lines.sort();
    assert_eq!(sink_lines(&examples.join("count_broken/out/counts")), lines);
    let set_aside = sink_lines(&examples.join("count_broken/out/quarantine"));
    assert_eq!(set_aside.len() as u64, alice);
    assert!(set_aside.iter().all(|l| l.contains("count_broken traps on the events of key alice")), "{set_aside:?}");
}

/// Without `[checkpointing]` (sinks write directly): the same events set aside, the rest counted.
#[test]
fn without_checkpointing_bad_events_are_set_aside_too() {
    let dir = tempfile::tempdir().unwrap();
    let (input, job) = quarantined_clicks(dir.path(), (20_000, 400), "");
    let out = weir(&["run", &job]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains(", 50 quarantined"), "{}", out.stderr);
    assert_counted_once_but_mallory(dir.path(), &input);
    assert_eq!(assert_quarantined_mallory(dir.path(), &input, "poisoned by key mallory").len(), 50);
}
