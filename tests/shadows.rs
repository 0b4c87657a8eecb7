//! Shadow runs (`weir shadow`): a new module beside the running `count`, on its live input and a
//! copy-on-write view of its state, compared line by line, its output reaching no sink; on
//! `weir serve` and on `weir run`, with the default settings and configured ones.
use std::path::Path;
use std::time::Duration;

use weir_e2e::{
    Running, Server, assert_lines, every_count_once, expected_counts, expected_lines, file_sink, file_source,
    generated_clicks, job, operator, sink_lines, wait_until, wasm_operator, write_job,
};

/// The clicks job counting with `count` at parallelism 2, reading 16000 clicks at 4000 a second
/// (4 s), `extra` appended (checkpointing, say).
fn slow_clicks_job(dir: &Path, extra: &str) -> String {
    slow_clicks_counted_by(dir, wasm_operator("count-per-user", "count", &["input = \"hash\""]), extra)
}

/// The same job, counting with `counter` (an `[[operator]]` table).
fn slow_clicks_counted_by(dir: &Path, counter: String, extra: &str) -> String {
    let input = dir.join("clicks.jsonl");
    generated_clicks(&input, 16000, 40);
    let text = job(
        "clicks-per-user",
        2,
        &[
            format!("{}rate = 4000\n", file_source("clicks", &input)),
            wasm_operator("logged-in", "filter", &["config = { field = \"logged_in\" }"]),
            wasm_operator("by-user", "key_by", &["config = { field = \"user\" }"]),
            counter,
            file_sink("counts", &dir.join("out")),
        ],
    );
    write_job(dir, &format!("{text}\n{extra}"))
}

const CHECKPOINTING: &str = "[checkpointing]\ninterval = \"200ms\"\nstorage = \"file://chk\"\n";

/// `count-per-user=<path of module>`.
fn count_per_user(module: &str) -> String {
    format!("count-per-user={}", operator(module).display())
}

/// The committed output is exactly that of the job without a shadow: every user's counts from
/// 1 to their total, once each, written by `count`.
fn assert_output_untouched(dir: &Path) {
    let expected = expected_lines(&expected_counts(&dir.join("clicks.jsonl")));
    assert_lines(&sink_lines(&dir.join("out")), &expected, "committed output with a shadow beside it");
}

/// The job's one shadow report, once it has compared at least `calls` calls (or stopped).
fn report_after(status: impl Fn() -> serde_json::Value, calls: u64) -> serde_json::Value {
    let compared = |answer: &serde_json::Value| {
        let report = &answer["shadows"][0];
        report["calls"].as_u64().unwrap_or(0) >= calls || report["status"] == "stopped"
    };
    wait_until(status, compared)["shadows"][0].clone()
}

/// `count_v2` writes `count`'s line with `"v":2` added and keeps its count in another layout
/// (migrated in the shadow's view of the state): every line differs, only in that field; with
/// `--ignore v` none does. Promoting it is an ordinary upgrade, which ends the shadow.
#[test]
fn a_shadow_of_count_v2_differs_only_in_its_added_field_and_the_job_output_is_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let job = slow_clicks_job(dir.path(), CHECKPOINTING);
    let id = server.cli(&["submit", &job]).stdout.trim().to_string();
    std::thread::sleep(Duration::from_millis(600));
    let v2 = count_per_user("count_v2");
    let started = server.cli(&["shadow", &id, "--operator", &v2]);
    assert_eq!(started.code, 0, "{}", started.stderr);
    assert!(started.stdout.contains("operator 'count-per-user': shadow count 2.0.0"), "{}", started.stdout);
    let status = || {
        let (code, answer) = server.http("GET", &format!("/v1/jobs/{id}/shadow"), b"", None);
        assert_eq!(code, 200, "{answer}");
        answer
    };
    let report = report_after(status, 20);
    assert_eq!(report["status"], "running", "{report}");
    assert_eq!(report["subtasks"], 2, "both subtasks joined: {report}");
    assert!(report["differing"].as_u64().unwrap() > 0, "{report}");
    assert_eq!((&report["equal"], &report["missing"], &report["extra"]), (&0.into(), &0.into(), &0.into()), "{report}");
    for d in report["differences"].as_array().unwrap() {
        let live = d["live"].as_str().unwrap();
        assert_eq!(d["shadow"].as_str().unwrap(), format!("{},\"v\":2}}", live.trim_end_matches('}')), "{d}");
    }
    // Asked again, ignoring the added field: it replaces the first, and nothing differs.
    let ignoring = server.cli(&["shadow", &id, "--operator", &v2, "--ignore", "v"]);
    assert_eq!(ignoring.code, 0, "{}", ignoring.stderr);
    let report = report_after(status, 20);
    assert_eq!(report["status"], "running", "{report}");
    assert!(report["equal"].as_u64().unwrap() > 0, "{report}");
    let (differing, missing, extra) = (&report["differing"], &report["missing"], &report["extra"]);
    assert_eq!((differing, missing, extra), (&0.into(), &0.into(), &0.into()), "{report}");
    assert!(report["memory-bytes"].as_u64().unwrap() > 0, "{report}");
    let human = server.cli(&["shadow", "status", &id]);
    assert!(human.stdout.contains(" differing, 0 missing, 0 extra (ignoring v)"), "{}", human.stdout);
    // The job's status and /metrics show it too.
    let (_, info) = server.http("GET", &format!("/v1/jobs/{id}"), b"", None);
    assert_eq!(info["shadows"][0]["uid"], "count-per-user", "{info}");
    let (_, metrics) = server.get_text("/metrics", None);
    let equal = format!(
        "weir_shadow_lines_total{{job_id=\"{id}\",job_name=\"clicks-per-user\",operator=\"count-per-user\",result=\"equal\"}}"
    );
    assert!(metrics.contains(&equal), "{equal} in\n{metrics}");
    // Promoted by an upgrade: the shadow ends, the job goes on with v2.
    let upgraded = server.cli(&["upgrade", &id, "--operator", &v2]);
    assert_eq!(upgraded.code, 0, "{}", upgraded.stderr);
    let report = &status()["shadows"][0];
    assert_eq!(report["status"], "stopped", "{report}");
    assert_eq!(report["stopped-because"], "the operator was upgraded", "{report}");
    let job = server.wait_for_job(&id);
    assert_eq!(job["state"], "finished", "{job}");
    every_count_once(dir.path());
}

/// A module with a deliberate off-by-one on user `u7`: exactly u7's lines differ, by one; the
/// shadow stops on request, and the output is that of the job alone. On `weir run` without
/// checkpointing (the default).
#[test]
fn a_shadow_with_an_off_by_one_on_one_user_names_exactly_that_users_lines() {
    let dir = tempfile::tempdir().unwrap();
    let mut running = Running::start(&slow_clicks_job(dir.path(), ""), &[]);
    std::thread::sleep(Duration::from_millis(600));
    let started = running.cli(&["shadow", &running.id, "--operator", &count_per_user("test/off_by_one")]);
    assert!(started.contains("shadow count 1.0.1-off-by-one"), "{started}");
    let status = || serde_json::from_str(&running.cli(&["--json", "shadow", "status", &running.id])).unwrap();
    let report = report_after(status, 40);
    let stopped: serde_json::Value =
        serde_json::from_str(&running.cli(&["--json", "shadow", &running.id, "--stop"])).unwrap();
    let report = if stopped["shadows"][0]["calls"].as_u64() >= report["calls"].as_u64() {
        &stopped["shadows"][0]
    } else {
        &report
    };
    assert_eq!(report["status"], "stopped", "{report}");
    assert_eq!(report["stopped-because"], "stopped on request", "{report}");
    assert!(report["equal"].as_u64().unwrap() > 0, "{report}");
    assert!(report["differing"].as_u64().unwrap() > 0, "u7 clicked meanwhile: {report}");
    assert_eq!((&report["missing"], &report["extra"]), (&0.into(), &0.into()), "{report}");
    for d in report["differences"].as_array().unwrap() {
        let live: serde_json::Value = serde_json::from_str(d["live"].as_str().unwrap()).unwrap();
        let shadow: serde_json::Value = serde_json::from_str(d["shadow"].as_str().unwrap()).unwrap();
        assert_eq!(live["key"], "u7", "{d}");
        assert_eq!(shadow["key"], "u7", "{d}");
        assert_eq!(shadow["count"].as_u64().unwrap(), live["count"].as_u64().unwrap() + 1, "{d}");
    }
    assert!(running.child.wait().unwrap().success(), "the job finishes");
    assert_output_untouched(dir.path());
}

/// A shadow past its memory limit stops with a message and the job goes on, and so do one whose
/// `--abort-if` condition holds and one whose module traps; a module that cannot read the live
/// state is refused, naming the operator and the module.
#[test]
fn a_shadow_past_its_memory_limit_stops_and_the_job_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut running = Running::start(&slow_clicks_job(dir.path(), CHECKPOINTING), &[]);
    std::thread::sleep(Duration::from_millis(500));
    let id = running.id.clone();
    let status = || serde_json::from_str(&running.cli(&["--json", "shadow", "status", &id])).unwrap();
    running.cli(&["shadow", &id, "--operator", &count_per_user("count"), "--memory-limit", "64KiB"]);
    let report = report_after(status, u64::MAX);
    assert_eq!(report["status"], "stopped", "{report}");
    let why = report["stopped-because"].as_str().unwrap();
    assert!(why.contains("over its limit of 64") && why.contains("; the job goes on"), "{why}");
    // Judged by itself: the first line that differs stops it.
    let off = count_per_user("test/off_by_one");
    running.cli(&["shadow", &id, "--operator", &off, "--abort-if", "differing>0"]);
    let report = report_after(status, u64::MAX);
    let why = report["stopped-because"].as_str().unwrap();
    assert!(why.starts_with("`differing>0` held (") && why.ends_with("; the job goes on"), "{report}");
    assert_eq!(report["differences"][0]["live"].as_str().map(|l| l.contains("\"u7\"")), Some(true), "{report}");
    // A module that traps (`count_broken`, on its first event).
    running.cli(&["shadow", &id, "--operator", &count_per_user("count_broken")]);
    let report = report_after(status, u64::MAX);
    let why = report["stopped-because"].as_str().unwrap();
    assert!(why.starts_with("its module failed in subtask ") && why.ends_with("; the job goes on"), "{why}");
    assert!(why.contains("count_broken traps on every event"), "{why}");
    let refused =
        weir_e2e::weir(&["--server", &running.server, "shadow", &id, "--operator", &off, "--abort-if", "lots>1"]);
    assert!(refused.stderr.contains("abort condition `lots>1` is not MEASURE>NUMBER"), "{}", refused.stderr);
    let refused =
        weir_e2e::weir(&["--server", &running.server, "shadow", &id, "--operator", &count_per_user("window_count")]);
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("operator 'count-per-user'") && refused.stderr.contains("window_count"),
        "{}",
        refused.stderr
    );
    assert!(running.child.wait().unwrap().success(), "the job finishes");
    assert_output_untouched(dir.path());
}

/// The live module traps once (`flaky_count`, when a user's count reaches 150) and the job
/// restarts from its latest checkpoint: the shadow (`count`, which writes the same lines) forks
/// the restored state again and goes on, nothing differing; it ends with the job, and the
/// output is exactly once.
#[test]
fn a_shadow_follows_the_job_through_a_restart_from_its_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let flaky = wasm_operator(
        "count-per-user",
        "test/flaky_count",
        &["input = \"hash\"", "config = { trap-at = 150, attempts = 1 }"],
    );
    let restart = "[restart]\nstrategy = \"fixed-delay\"\nattempts = 2\ndelay = \"10ms\"\n";
    let job = slow_clicks_counted_by(dir.path(), flaky, &format!("{CHECKPOINTING}\n{restart}"));
    let id = server.cli(&["submit", &job]).stdout.trim().to_string();
    std::thread::sleep(Duration::from_millis(300));
    let started = server.cli(&["shadow", &id, "--operator", &count_per_user("count")]);
    assert_eq!(started.code, 0, "{}", started.stderr);
    let job = server.wait_for_job(&id);
    assert_eq!((&job["state"], &job["attempt"]), (&"finished".into(), &1.into()), "one restart: {job}");
    let report = &job["shadows"][0];
    assert_eq!(report["status"], "stopped", "{report}");
    assert_eq!(report["stopped-because"], "the job ended", "{report}");
    assert_eq!(report["subtasks"], 4, "both subtasks joined in both attempts: {report}");
    assert!(report["equal"].as_u64().unwrap() > 0, "{report}");
    let (differing, missing, extra) = (&report["differing"], &report["missing"], &report["extra"]);
    assert_eq!((differing, missing, extra), (&0.into(), &0.into(), &0.into()), "{report}");
    assert_output_untouched(dir.path());
}

/// After an upgrade, a shadow beside the new module; a rollback ends it, and a trial of the
/// module rolled back from passes on the state the job returned to. The output stays exactly
/// once.
#[test]
fn a_rollback_ends_the_shadow_and_a_trial_after_it_passes() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let id = server.cli(&["submit", &slow_clicks_job(dir.path(), CHECKPOINTING)]).stdout.trim().to_string();
    std::thread::sleep(Duration::from_millis(500));
    let v2 = count_per_user("count_v2");
    let upgraded = server.cli(&["upgrade", &id, "--operator", &v2]);
    assert_eq!(upgraded.code, 0, "{}", upgraded.stderr);
    let shadowed = server.cli(&["--json", "shadow", &id, "--operator", &v2]);
    let answer: serde_json::Value = serde_json::from_str(&shadowed.stdout).unwrap();
    assert_eq!(answer["shadows"][0]["subtasks"], 2, "the answer waits for the subtasks: {answer}");
    std::thread::sleep(Duration::from_millis(300));
    let rolled = server.cli(&["upgrade", &id, "--rollback"]);
    assert_eq!(rolled.code, 0, "{}", rolled.stderr);
    let (_, answer) = server.http("GET", &format!("/v1/jobs/{id}/shadow"), b"", None);
    let report = &answer["shadows"][0];
    assert_eq!(report["stopped-because"], "the job was rolled back", "{report}");
    let (differing, missing, extra) = (&report["differing"], &report["missing"], &report["extra"]);
    assert_eq!((differing, missing, extra), (&0.into(), &0.into(), &0.into()), "the same module: {report}");
    let tried = server.cli(&["--json", "upgrade", &id, "--trial", "--operator", &v2]);
    assert_eq!(tried.code, 0, "{}", tried.stderr);
    let trial: serde_json::Value = serde_json::from_str(&tried.stdout).unwrap();
    assert_eq!(trial["passed"], true, "{trial}");
    // The old module it replays events through is the one rolled back to.
    for r in trial["operators"][0]["replayed"].as_array().unwrap() {
        let (old, new) = (r["old"][0].as_str().unwrap(), r["new"][0].as_str().unwrap());
        assert_eq!(new, format!("{},\"v\":2}}", old.trim_end_matches('}')), "{trial}");
    }
    let job = server.wait_for_job(&id);
    assert_eq!(job["state"], "finished", "{job}");
    every_count_once(dir.path());
}

/// On `weir serve` with the job file's defaults (no checkpointing): a trial takes a savepoint of
/// its own, and a shadow runs beside the job as with checkpoints.
#[test]
fn a_job_without_checkpointing_on_weir_serve_is_tried_and_shadowed() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let id = server.cli(&["submit", &slow_clicks_job(dir.path(), "")]).stdout.trim().to_string();
    std::thread::sleep(Duration::from_millis(500));
    let v2 = count_per_user("count_v2");
    let tried = server.cli(&["--json", "upgrade", &id, "--trial", "--operator", &v2]);
    assert_eq!(tried.code, 0, "{}", tried.stderr);
    let trial: serde_json::Value = serde_json::from_str(&tried.stdout).unwrap();
    assert_eq!(trial["passed"], true, "{trial}");
    let shadowed = server.cli(&["shadow", &id, "--operator", &v2, "--ignore", "v"]);
    assert_eq!(shadowed.code, 0, "{}", shadowed.stderr);
    let status = || server.http("GET", &format!("/v1/jobs/{id}/shadow"), b"", None).1;
    let report = report_after(status, 20);
    assert!(report["equal"].as_u64().unwrap() > 0, "{report}");
    let (differing, missing, extra) = (&report["differing"], &report["missing"], &report["extra"]);
    assert_eq!((differing, missing, extra), (&0.into(), &0.into(), &0.into()), "{report}");
    let job = server.wait_for_job(&id);
    assert_eq!(job["state"], "finished", "{job}");
    assert_output_untouched(dir.path());
}
