//! Hot-swapping an operator's module under a running job on `weir serve`: the counts go on
//! across each swap, the committed output stays exactly-once, and a module that cannot read the
//! state is refused while the job runs on untouched.
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use weir_e2e::{
    Running, Server, every_count_once, file_sink, file_source, generated_clicks, job, operator, sink_lines,
    wasm_operator, weir, write_job,
};

/// The clicks job at parallelism 2 reading 16000 clicks at 4000 per second (4 s), checkpointing.
fn slow_clicks_job(dir: &Path) -> String {
    let text = slow_clicks(dir);
    write_job(dir, &format!("{text}\n[checkpointing]\ninterval = \"200ms\"\nstorage = \"file://chk\"\n"))
}

/// The same job without checkpointing (savepoints still go to `savepoints/`).
fn slow_clicks_job_without_checkpoints(dir: &Path) -> String {
    let text = slow_clicks(dir);
    write_job(dir, &format!("{text}\n[checkpointing]\ninterval = \"0s\"\nsavepoint-dir = \"savepoints\"\n"))
}

/// The slow clicks job's text, without `[checkpointing]`.
fn slow_clicks(dir: &Path) -> String {
    slow_clicks_counted_by(dir, "count")
}

/// The same, counting with `count_module`.
fn slow_clicks_counted_by(dir: &Path, count_module: &str) -> String {
    let input = dir.join("clicks.jsonl");
    generated_clicks(&input, 16000, 40);
    let source = paced_clicks(&input, 4000);
    job(
        "clicks-per-user",
        2,
        &[
            source,
            wasm_operator("logged-in", "filter", &["config = { field = \"logged_in\" }"]),
            wasm_operator("by-user", "key_by", &["config = { field = \"user\" }"]),
            wasm_operator("count-per-user", count_module, &["input = \"hash\""]),
            file_sink("counts", &dir.join("out")),
        ],
    )
}

/// A file source `clicks` reading `input` at `rate` events a second.
fn paced_clicks(input: &Path, rate: u32) -> String {
    format!("{}rate = {rate}\n", file_source("clicks", input))
}

/// Checks that every count is committed once and that both v1 and v2 emitted some; returns, per
/// user, the version that emitted each of their counts, in count order.
fn versions_by_user(dir: &Path) -> BTreeMap<String, Vec<u64>> {
    let by_user = weir_e2e::versions_by_user(dir);
    let (v2, all) = (by_user.values().flatten().filter(|&&v| v == 2).count(), by_user.values().flatten().count());
    assert!(v2 > 0 && v2 < all, "{v2} of {all} lines came from v2");
    by_user
}

/// The slow clicks job, submitted to a server of its own: the test's directory, the server and
/// the job's id.
fn submitted() -> (tempfile::TempDir, Server, String) {
    submitted_with("")
}

/// The same, with `extra` (a `[state]` table) appended to the job file.
fn submitted_with(extra: &str) -> (tempfile::TempDir, Server, String) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let job = slow_clicks_job(dir.path());
    let text = std::fs::read_to_string(&job).unwrap();
    std::fs::write(&job, format!("{text}\n{extra}")).unwrap();
    let id = server.cli(&["submit", &job]).stdout.trim().to_string();
    (dir, server, id)
}

/// The slow clicks job, submitted to a server of its own, its clicks led by 820 that give user
/// `uK` K + 1 more: counts that differ from user to user, odd and even alike, whenever the state
/// is taken.
fn submitted_skewed() -> (tempfile::TempDir, Server, String) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let job = slow_clicks_job(dir.path());
    let input = dir.path().join("clicks.jsonl");
    let mut text = String::new();
    for k in 0..40 {
        text.push_str(&format!("{{\"ts\":0,\"user\":\"u{k}\",\"logged_in\":true}}\n").repeat(k + 1));
    }
    text.push_str(&std::fs::read_to_string(&input).unwrap());
    std::fs::write(&input, text).unwrap();
    let id = server.cli(&["submit", &job]).stdout.trim().to_string();
    (dir, server, id)
}

/// Swaps `module` in under a running job: it fails right after the swap, the upgrade is rolled
/// back with a cause holding `cause`, and the output is exactly-once, all from v1, the job's
/// record naming the modules it ran before.
fn rolled_back(module: &str, cause: &str, args: &[&str]) {
    let (dir, server, id) = submitted_skewed();
    std::thread::sleep(Duration::from_millis(700));
    let before = server.http("GET", &format!("/v1/jobs/{id}"), b"", None).1["job"].clone();
    let swapped = server.cli(&[&["upgrade", id.as_str(), "--operator", &count_per_user(module)], args].concat());
    assert_eq!(swapped.code, 1, "{}", swapped.stderr);
    assert!(
        swapped.stderr.contains(&format!("the upgrade of job {id} was rolled back: the new module failed"))
            && swapped.stderr.contains(cause)
            && swapped.stderr.contains("the job runs its previous modules again, from savepoint"),
        "{}",
        swapped.stderr
    );
    let job = server.wait_for_job(&id);
    assert_eq!(job["state"], "finished", "{job}");
    assert_eq!(job["job"], before, "the record names the modules it runs again");
    let history: Vec<&str> = job["history"].as_array().unwrap().iter().map(|h| h["event"].as_str().unwrap()).collect();
    assert_eq!(history, ["started", "upgraded", "rolled-back"], "{job}");
    assert!(job["history"][2]["cause"].as_str().unwrap().contains(cause), "{job}");
    let traps = u64::from(cause.contains("trapped"));
    assert_eq!(job["guest-traps"].as_u64(), Some(traps), "{job}");
    let (_, metrics) = server.get_text("/metrics", None);
    let counted = metrics.lines().find(|l| l.starts_with(&format!("weir_job_numGuestTraps_total{{job_id=\"{id}\"")));
    assert!(counted.is_some_and(|l| l.ends_with(&format!("}} {traps}"))), "{counted:?} in\n{metrics}");
    let emitted = every_count_once(dir.path());
    assert!(emitted.values().all(|versions| versions == &[1]), "exactly once, all from v1");
}

/// `count-per-user=<path of module>`, an `--operator` argument.
fn count_per_user(module: &str) -> String {
    format!("count-per-user={}", operator(module).display())
}

fn upgrade(server: &Server, id: &str, module: &str) -> weir_e2e::Output {
    server.cli(&["upgrade", id, "--operator", &count_per_user(module)])
}

/// Swaps in each `uid=module` of `targets` at one stop and checks the report; returns the
/// savepoint taken before the swap.
fn swap(server: &Server, id: &str, targets: &[&str]) -> String {
    let mut args = vec!["upgrade", id];
    targets.iter().for_each(|target| args.extend(["--operator", target]));
    let swapped = server.cli(&args);
    assert_eq!(swapped.code, 0, "{}", swapped.stderr);
    assert!(swapped.stdout.contains("paused"), "{}", swapped.stdout);
    let savepoint = swapped.stdout.lines().find_map(|l| l.strip_prefix("savepoint before the swap: ")).unwrap();
    // It is stored behind the new run: there within moments.
    let started = std::time::Instant::now();
    while !Path::new(savepoint).join("_metadata").is_file() {
        assert!(started.elapsed() < Duration::from_secs(10), "{}", swapped.stdout);
        std::thread::sleep(Duration::from_millis(20));
    }
    savepoint.to_string()
}

/// v1 stores each count as a JSON number (schema 1), v2 as `{"count":n}` (schema 2) with a
/// migration from schema 1: each swap to v2 migrates the handed-over counts in place; v1 cannot
/// read v2's state, so going back is a rollback to the savepoint before the swap.
#[test]
fn upgrades_under_a_running_job_migrate_the_state_and_keep_counts_and_exactly_once_output() {
    let (dir, server, id) = submitted();
    std::thread::sleep(Duration::from_millis(700));
    swap(&server, &id, &[&count_per_user("count_v2")]);
    std::thread::sleep(Duration::from_millis(500));
    let downgrade = upgrade(&server, &id, "count");
    assert_eq!(downgrade.code, 1, "{}", downgrade.stderr);
    assert!(
        downgrade.stderr.contains("state 'count' was saved as value state, schema version 2 by count 2.0.0 (sha256:")
            && downgrade.stderr.contains("declares it as value state, schema version 1; that code cannot read it")
            && downgrade.stderr.contains("list schema version 2 in the state's `migrates-from`"),
        "{}",
        downgrade.stderr
    );
    let rolled = server.cli(&["upgrade", &id, "--rollback"]);
    assert_eq!(rolled.code, 0, "{}", rolled.stderr);
    std::thread::sleep(Duration::from_millis(500));
    // v2 again, named by the hash of an uploaded module, with the filter deployed anew at the
    // same stop.
    let uploaded = server.cli(&["modules", "upload", &operator("count_v2").to_string_lossy()]);
    let sha = uploaded.stdout.split_whitespace().next().unwrap();
    assert!(sha.starts_with("sha256:"), "{}", uploaded.stdout);
    let filter = format!("logged-in={}", operator("filter").display());
    swap(&server, &id, &[&format!("count-per-user={sha}"), &filter]);
    let job = server.wait_for_job(&id);
    assert_eq!(job["state"], "finished", "{job}");
    assert!(job["job"].as_str().unwrap().contains("sha256:"), "the record names the module it runs now");
    let history: Vec<&str> = job["history"].as_array().unwrap().iter().map(|h| h["event"].as_str().unwrap()).collect();
    assert_eq!(history, ["started", "upgraded", "rolled-back", "upgraded"], "{job}");
    let modules = |i: usize| job["history"][i]["modules"][2][1].as_str().unwrap().to_string();
    assert!(modules(0).starts_with("count 1.0.0") && modules(1).starts_with("count 2.0.0"), "{job}");
    assert!(modules(2).starts_with("count 1.0.0") && modules(3).starts_with("count 2.0.0"), "{job}");
    assert!(job["history"][1]["savepoint"].as_str().is_some_and(|s| s.contains("savepoint-clicks-per-user-")));

    // Each user's counts go v1, then v2, v1, v2 after the swaps: never back to 1.
    for (user, versions) in versions_by_user(dir.path()) {
        let changes = versions.windows(2).filter(|w| w[0] != w[1]).count();
        assert!(versions[0] == 1 && changes <= 3, "{user}: {versions:?}");
    }
}

/// After an in-place upgrade, the job's counts go on: the totals over its runs sum the old run's
/// and the new one's (which `weir status` shows beside them), and with nothing replayed, the
/// sink's total is exactly the lines it committed.
#[test]
fn counts_go_on_across_an_upgrade() {
    let (dir, server, id) = submitted();
    std::thread::sleep(Duration::from_millis(700));
    swap(&server, &id, &[&count_per_user("count_v2")]);
    let job = server.wait_for_job(&id);
    assert_eq!(job["state"], "finished", "{job}");
    let sink = job["vertices"].as_array().unwrap().iter().find(|v| v["kind"] == "sink").unwrap().clone();
    let (total, run) = (sink["total-events-out"].as_u64().unwrap(), sink["events-out"].as_u64().unwrap());
    assert_eq!(total as usize, sink_lines(&dir.path().join("out")).len(), "{sink}");
    assert!(run > 0 && run < total, "the new run wrote {run} of {total}");
    let source = &job["vertices"][0];
    assert_eq!(source["total-events-out"], 16000, "{source}");
    let (_, listed) = server.http("GET", "/v1/jobs", b"", None);
    assert_eq!(listed["jobs"][0]["events-written"], total);
    let status = server.cli(&["status", &id]).stdout;
    let row = status.lines().find(|l| l.starts_with("sink")).unwrap_or_default();
    let numbers: Vec<&str> = row.split_whitespace().skip(3).take(4).collect();
    assert_eq!(numbers, [total.to_string(), total.to_string(), run.to_string(), run.to_string()], "{status}");
}

/// `weir serve` killed right after a swap to v2 (its savepoint possibly not stored yet, no
/// checkpoint of the new run yet) resumes the job with v2 from whatever it has: v2's checkpoint,
/// the upgrade's savepoint, or the last checkpoint of v1, whose counts v2 migrates. Either way the
/// committed output has every count exactly once, and the counts go on.
#[test]
fn a_server_killed_right_after_a_swap_resumes_the_upgraded_job_exactly_once() {
    let (dir, server, id) = submitted();
    std::thread::sleep(Duration::from_millis(700));
    swap(&server, &id, &[&count_per_user("count_v2")]);
    server.kill();

    let server = Server::start(&dir.path().join("data"), &[]);
    let job = server.wait_for_job(&id);
    assert_eq!((job["state"].as_str(), job["attempt"].as_u64()), (Some("finished"), Some(1)), "{job}");
    let history: Vec<&str> = job["history"].as_array().unwrap().iter().map(|h| h["event"].as_str().unwrap()).collect();
    assert_eq!(history, ["started", "upgraded"], "{job}");
    assert!(job["history"][1]["modules"][2][1].as_str().unwrap().starts_with("count 2.0.0"), "{job}");
    for (user, versions) in versions_by_user(dir.path()) {
        assert!(versions.windows(2).all(|w| w[0] <= w[1]), "{user}: v1, then v2 only: {versions:?}");
    }
}

#[test]
fn a_module_that_cannot_read_the_state_is_refused_and_the_job_runs_on() {
    let (dir, server, id) = submitted();
    std::thread::sleep(Duration::from_millis(500));
    let refused = upgrade(&server, &id, "test/count_schema2");
    assert_eq!(refused.code, 1);
    assert!(
        refused.stderr.contains("operator 'count-per-user': state 'count' was saved as value state, schema version 1")
            && refused.stderr.contains("declares it as value state, schema version 2")
            && refused.stderr.contains("HTTP 400"),
        "{}",
        refused.stderr
    );
    let unknown = server.cli(&["upgrade", &id, "--operator", &format!("nope={}", operator("count").display())]);
    assert_eq!(unknown.code, 1);
    assert!(unknown.stderr.contains("the job has no operator 'nope'"), "{}", unknown.stderr);
    let job = server.wait_for_job(&id);
    assert_eq!((job["state"].as_str(), job["attempt"].as_u64()), (Some("finished"), Some(0)), "{job}");
    let emitted = every_count_once(dir.path());
    assert!(emitted.values().all(|versions| versions == &[1]), "only v1 ran");
}

/// Without its trial (which would refuse it: see below).
#[test]
fn a_module_that_fails_right_after_the_swap_is_rolled_back() {
    rolled_back("count_broken", "the guest trapped", &["--no-trial"]);
}

/// Without its trial (`--no-trial`), an upgrade whose migration fails fails at the restore, and is
/// rolled back.
#[test]
fn a_failing_migration_is_rolled_back_with_its_message() {
    let cause = "cannot migrate state 'count' from schema version 1: this build cannot read ";
    rolled_back("test/bad_migration", cause, &["--no-trial"]);
}

/// A module whose migration fails on some entries (`bad_migration`: on odd counts): its trial,
/// while the job runs on, names the entries it fails on, and an upgrade to it is refused by its
/// trial before anything changes.
#[test]
fn a_trial_names_the_entries_a_migration_fails_on_and_refuses_the_upgrade() {
    let (dir, server, id) = submitted_skewed();
    std::thread::sleep(Duration::from_millis(700));
    let bad = count_per_user("test/bad_migration");
    let tried = server.cli(&["--json", "upgrade", &id, "--trial", "--sample", "64", "--operator", &bad]);
    assert_eq!(tried.code, 1, "{}", tried.stderr);
    assert!(tried.stderr.contains("the new modules failed their trial; the job runs on untouched"), "{}", tried.stderr);
    let report: serde_json::Value = serde_json::from_str(&tried.stdout).unwrap();
    assert_eq!(report["passed"], false, "{report}");
    assert!(report["state-from"].as_str().unwrap().contains("chk"), "from the latest checkpoint: {report}");
    let op = &report["operators"][0];
    assert_eq!(op["key-groups"].as_array().unwrap().len(), 128, "64 key groups of each of 2 subtasks: {op}");
    let failures = op["failures"].as_array().unwrap();
    assert!(!failures.is_empty() && failures.len() <= 5, "{op}");
    for failure in failures {
        let count: u64 = failure["entry"].as_str().unwrap().parse().unwrap();
        assert_eq!(count % 2, 1, "only odd counts fail: {failure}");
        assert!(failure["key"].as_str().unwrap().starts_with('u'), "{failure}");
        assert_eq!(failure["error"], format!("this build cannot read {count}"), "{failure}");
    }
    let refused = server.cli(&["upgrade", &id, "--operator", &bad]);
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("the new modules failed their trial: operator 'count-per-user': count 2.0.0-bad")
            && refused.stderr.contains("this build cannot read")
            && refused.stderr.contains("HTTP 400"),
        "{}",
        refused.stderr
    );
    // A module that traps on events: the trial replays recent input through it and refuses it.
    let broken = server.cli(&["upgrade", &id, "--operator", &count_per_user("count_broken")]);
    assert_eq!(broken.code, 1, "{}", broken.stderr);
    assert!(
        broken.stderr.contains("the new modules failed their trial: operator 'count-per-user': count 2.0.1")
            && broken.stderr.contains("fails on event {\"ts\":")
            && broken.stderr.contains("count_broken traps on every event"),
        "{}",
        broken.stderr
    );
    let job = server.wait_for_job(&id);
    let history: Vec<&str> = job["history"].as_array().unwrap().iter().map(|h| h["event"].as_str().unwrap()).collect();
    assert_eq!((job["state"].as_str(), history), (Some("finished"), vec!["started"]), "{job}");
    assert!(every_count_once(dir.path()).values().all(|versions| versions == &[1]), "only v1 ran");
}

/// Under `weir run`, without checkpoints: the trial of `count_v2` takes a savepoint of its own
/// (disposed of after), migrates every count of the sample, and the upgrade, tried first by
/// default, goes ahead.
#[test]
fn a_trial_on_weir_run_without_checkpoints_passes_and_the_upgrade_follows() {
    let dir = tempfile::tempdir().unwrap();
    let mut running = Running::start(&slow_clicks_job_without_checkpoints(dir.path()), &[]);
    std::thread::sleep(Duration::from_millis(700));
    let v2 = count_per_user("count_v2");
    let tried = running.cli(&["--json", "upgrade", &running.id, "--trial", "--sample", "64", "--operator", &v2]);
    let report: serde_json::Value = serde_json::from_str(&tried).unwrap();
    assert_eq!(report["passed"], true, "{report}");
    let op = &report["operators"][0];
    let (entries, migrated) = (op["entries"].as_u64().unwrap(), op["migrated"].as_u64().unwrap());
    assert!(entries > 0 && migrated == entries, "every count of the sample migrated: {op}");
    assert_eq!(op["projected-entries"], entries, "the whole state was sampled: {op}");
    assert!(op["memory-bytes"].as_u64().unwrap() > 0, "{op}");
    // Recent events of the sample's keys, through both: v2 writes v1's line with its version.
    let replayed = op["replayed"].as_array().unwrap();
    assert!(!replayed.is_empty(), "{op}");
    for r in replayed {
        let old = r["old"][0].as_str().unwrap();
        assert_eq!(r["new"][0].as_str().unwrap(), format!("{},\"v\":2}}", old.trim_end_matches('}')), "{r}");
        assert!(old.starts_with(&format!("{{\"key\":\"{}\",\"count\":", r["key"].as_str().unwrap())), "{r}");
    }
    let scratch = report["state-from"].as_str().unwrap();
    assert!(scratch.contains("savepoints"), "{scratch}");
    assert!(
        !Path::new(scratch.trim_start_matches("file://")).exists(),
        "the trial's savepoint {scratch} is disposed of"
    );
    let human = running.cli(&["upgrade", &running.id, "--trial", "--operator", &v2]);
    assert!(human.contains("operator 'count-per-user': count 2.0.0"), "{human}");
    let upgraded = running.cli(&["upgrade", &running.id, "--operator", &v2]);
    assert!(upgraded.contains("paused"), "{upgraded}");
    assert!(running.child.wait().unwrap().success());
    versions_by_user(dir.path());
}

#[test]
fn a_rollback_by_hand_goes_back_to_the_savepoint_before_the_swap() {
    let (dir, server, id) = submitted();
    let nothing = server.cli(&["upgrade", &id, "--rollback"]);
    assert_eq!(nothing.code, 1);
    assert!(nothing.stderr.contains(&format!("job {id} has no upgrade to roll back")), "{}", nothing.stderr);
    std::thread::sleep(Duration::from_millis(600));
    swap_then_roll_back(&server, &id);
    assert_eq!(server.wait_for_job(&id)["state"], "finished");
    // What v2 committed after the savepoint was dropped and counted again by v1.
    let emitted = every_count_once(dir.path());
    assert!(emitted.values().all(|versions| versions == &[1]), "exactly once, all from v1 in the end");
}

/// Swaps count_v2 in, and 600 ms later rolls it back by hand, checking that the rollback goes
/// back to the savepoint taken before the swap.
fn swap_then_roll_back(server: &Server, id: &str) {
    let savepoint = swap(server, id, &[&count_per_user("count_v2")]);
    std::thread::sleep(Duration::from_millis(600));
    let rolled = server.cli(&["upgrade", id, "--rollback"]);
    assert_eq!(rolled.code, 0, "{}", rolled.stderr);
    assert!(rolled.stdout.contains(&format!("from savepoint: {savepoint}")), "{}", rolled.stdout);
}

/// With RocksDB state: the swap hands the live database over in place and v2 migrates every
/// count in it; a rollback by hand goes back to v1 from the savepoint; counts stay exactly once.
#[test]
fn a_rocksdb_job_is_upgraded_with_a_migration_and_rolled_back() {
    let (dir, server, id) = submitted_with("[state]\nbackend = \"rocksdb\"\nmanaged-memory = \"32MiB\"\n");
    std::thread::sleep(Duration::from_millis(700));
    swap_then_roll_back(&server, &id);
    std::thread::sleep(Duration::from_millis(500));
    swap(&server, &id, &[&count_per_user("count_v2")]);
    let job = server.wait_for_job(&id);
    assert_eq!(job["state"], "finished", "{job}");
    let history: Vec<&str> = job["history"].as_array().unwrap().iter().map(|h| h["event"].as_str().unwrap()).collect();
    assert_eq!(history, ["started", "upgraded", "rolled-back", "upgraded"], "{job}");
    for (user, versions) in versions_by_user(dir.path()) {
        let changes = versions.windows(2).filter(|w| w[0] != w[1]).count();
        assert!(versions[0] == 1 && changes <= 3, "{user}: {versions:?}");
    }
    let databases = std::fs::read_dir(dir.path().join("data/rocksdb").join(&id)).unwrap().count();
    assert_eq!(databases, 0, "no database outlives the job");
}

/// A server restarted after an upgrade still knows what a rollback goes back to.
#[test]
fn a_rollback_by_hand_works_after_the_server_restarted() {
    let (dir, server, id) = submitted();
    std::thread::sleep(Duration::from_millis(600));
    let savepoint = swap(&server, &id, &[&count_per_user("count_v2")]);
    server.kill();
    let server = Server::start(&dir.path().join("data"), &[]);
    std::thread::sleep(Duration::from_millis(300));
    let rolled = server.cli(&["upgrade", &id, "--rollback"]);
    assert_eq!(rolled.code, 0, "{}", rolled.stderr);
    assert!(rolled.stdout.contains(&format!("from savepoint: {savepoint}")), "{}", rolled.stdout);
    let job = server.wait_for_job(&id);
    assert_eq!(job["state"], "finished", "{job}");
    let history: Vec<&str> = job["history"].as_array().unwrap().iter().map(|h| h["event"].as_str().unwrap()).collect();
    assert_eq!(history, ["started", "upgraded", "rolled-back"], "{job}");
    let emitted = every_count_once(dir.path());
    assert!(emitted.values().all(|versions| versions == &[1]), "exactly once, all from v1 in the end");
}

/// `weir run` serves the same API for its job: another terminal upgrades it (uploading the
/// module to the run's own module store) and rolls it back, exactly as on `weir serve`.
#[test]
fn a_weir_run_job_is_upgraded_and_rolled_back_from_another_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let job = slow_clicks_job(dir.path());
    let mut running = Running::start(&job, &[]);
    std::thread::sleep(Duration::from_millis(600));
    let swapped = running.cli(&["upgrade", &running.id, "--operator", &count_per_user("count_v2")]);
    assert!(swapped.contains("paused"), "{swapped}");
    std::thread::sleep(Duration::from_millis(500));
    let rolled = running.cli(&["upgrade", &running.id, "--rollback"]);
    assert!(rolled.contains("rolled back job"), "{rolled}");
    assert!(running.child.wait().unwrap().success(), "the job finishes");
    let emitted = every_count_once(dir.path());
    assert!(emitted.values().all(|versions| versions == &[1]), "exactly once, all from v1 in the end");
    // A second terminal cannot submit jobs to `weir run`.
    assert!(dir.path().join("weir-data/modules").is_dir(), "the run keeps uploaded modules beside the job");
}

/// Without checkpointing, an upgrade keeps what the job wrote before it, on `weir serve` and on
/// `weir run`: every count once, v1's then v2's.
#[test]
fn an_upgrade_without_checkpointing_keeps_the_output_written_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let id = server.cli(&["submit", &slow_clicks_job_without_checkpoints(dir.path())]).stdout.trim().to_string();
    std::thread::sleep(Duration::from_millis(800));
    swap(&server, &id, &[&count_per_user("count_v2")]);
    assert_eq!(server.wait_for_job(&id)["state"], "finished");
    versions_by_user(dir.path());

    let dir = tempfile::tempdir().unwrap();
    let mut running = Running::start(&slow_clicks_job_without_checkpoints(dir.path()), &[]);
    std::thread::sleep(Duration::from_millis(800));
    let swapped = running.cli(&["upgrade", &running.id, "--operator", &count_per_user("count_v2")]);
    assert!(swapped.contains("paused"), "{swapped}");
    assert!(running.child.wait().unwrap().success(), "the job finishes");
    versions_by_user(dir.path());
}

/// While an upgrade waits for its stop's barrier, the job shows `upgrading` (and refuses a
/// second upgrade); once the new module runs, `running` again, and the output stays exactly once.
#[test]
fn a_job_shows_upgrading_until_the_new_module_runs() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("clicks.jsonl");
    generated_clicks(&input, 80, 10);
    let source = paced_clicks(&input, 20);
    // Barriers queue behind a slow operator: the stop takes several hundred milliseconds.
    let text = job(
        "dawdling-clicks",
        1,
        &[
            source,
            wasm_operator("slow", "test/misbehave", &["config = { do = \"dawdle\" }"]),
            wasm_operator("logged-in", "filter", &["config = { field = \"logged_in\" }"]),
            wasm_operator("by-user", "key_by", &["config = { field = \"user\" }"]),
            wasm_operator("count-per-user", "count", &["input = \"hash\""]),
            file_sink("counts", &dir.path().join("out")),
        ],
    );
    let job_file =
        write_job(dir.path(), &format!("{text}\n[checkpointing]\ninterval = \"200ms\"\nstorage = \"file://chk\"\n"));
    let server = Server::start(&dir.path().join("data"), &[]);
    let id = server.cli(&["submit", &job_file]).stdout.trim().to_string();
    std::thread::sleep(Duration::from_millis(1500));
    let mut states = Vec::new();
    let swapped = std::thread::scope(|scope| {
        let upgrade = scope.spawn(|| upgrade(&server, &id, "count_v2"));
        let mut refused = None;
        while !upgrade.is_finished() {
            let state =
                server.http("GET", &format!("/v1/jobs/{id}"), b"", None).1["state"].as_str().unwrap().to_string();
            if state == "upgrading" && refused.is_none() {
                refused = Some(server.cli(&["upgrade", &id, "--operator", &count_per_user("count_v2")]));
            }
            if states.last() != Some(&state) {
                states.push(state);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let refused = refused.expect("the job was seen upgrading");
        assert_eq!(refused.code, 1, "{}", refused.stderr);
        assert!(refused.stderr.contains("upgrading"), "{}", refused.stderr);
        upgrade.join().unwrap()
    });
    assert_eq!(swapped.code, 0, "{}", swapped.stderr);
    assert_eq!(states.first().map(String::as_str), Some("running"), "{states:?}");
    assert!(states.iter().any(|s| s == "upgrading"), "{states:?}");
    let after = server.http("GET", &format!("/v1/jobs/{id}"), b"", None).1;
    assert_eq!(after["state"], "running", "{after}");
    let job = server.wait_for_job(&id);
    assert_eq!(job["state"], "finished", "{job}");
    let emitted = every_count_once(dir.path());
    assert!(emitted.values().any(|v| v == &[2]), "v2 emitted some counts");
}

/// Upgrades back to back: the next one is asked for while the savepoint of the one before is
/// still being stored behind the new run (slow with many keys in RocksDB). It goes to the new
/// run, not to the one that is finishing its savepoint.
#[test]
fn upgrades_back_to_back_each_stop_the_run_that_is_running() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let text = job(
        "many-keys",
        1,
        &[
            weir_e2e::generator_source("events", 1_000_000_000, 300_000),
            wasm_operator("count-per-user", "count", &["input = \"hash\""]),
            weir_e2e::blackhole_sink("discard"),
            "[state]\nbackend = \"rocksdb\"\n".to_string(),
        ],
    );
    let id = server.cli(&["submit", &write_job(dir.path(), &text)]).stdout.trim().to_string();
    std::thread::sleep(Duration::from_millis(1500));
    let mut savepoints = Vec::new();
    for _ in 0..3 {
        let swapped = upgrade(&server, &id, "count_v2");
        assert_eq!(swapped.code, 0, "{}", swapped.stderr);
        let savepoint = swapped.stdout.lines().find_map(|l| l.strip_prefix("savepoint before the swap: "));
        savepoints.push(savepoint.unwrap().to_string());
    }
    // Each savepoint is stored behind the run after it.
    std::thread::sleep(Duration::from_secs(3));
    for savepoint in &savepoints {
        assert!(Path::new(savepoint).join("_metadata").is_file(), "{savepoint}");
    }
    let canceled = server.cli(&["cancel", &id]);
    assert_eq!(canceled.code, 0, "{}", canceled.stderr);
}

/// A job running `count` as built against `weir:operator@0.2.0` is upgraded to its current build
/// (whose state gains the host's timers): the counts go on, every count once.
#[test]
fn a_module_built_against_contract_0_2_0_is_upgraded_to_its_current_build() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let text = slow_clicks_counted_by(dir.path(), "test/count-0.2.0");
    let job =
        write_job(dir.path(), &format!("{text}\n[checkpointing]\ninterval = \"200ms\"\nstorage = \"file://chk\"\n"));
    let id = server.cli(&["submit", &job]).stdout.trim().to_string();
    std::thread::sleep(Duration::from_millis(700));
    swap(&server, &id, &[&count_per_user("count")]);
    let job = server.wait_for_job(&id);
    assert_eq!(job["state"], "finished", "{job}");
    let history: Vec<&str> = job["history"].as_array().unwrap().iter().map(|h| h["event"].as_str().unwrap()).collect();
    assert_eq!(history, ["started", "upgraded"], "{job}");
    every_count_once(dir.path());
}

/// The JavaScript count upgraded under a running `weir run` job to its version 2, which migrates
/// the counts: every count once, v1's then v2's, none lost.
#[test]
fn a_javascript_operator_is_upgraded_with_a_migration_under_a_running_job() {
    let dir = tempfile::tempdir().unwrap();
    let text = slow_clicks_counted_by(dir.path(), "count_js");
    let job =
        write_job(dir.path(), &format!("{text}\n[checkpointing]\ninterval = \"200ms\"\nstorage = \"file://chk\"\n"));
    // Both modules compiled into the tests' module cache first: a first compile of a JS module
    // takes seconds, which the upgrade's check would spend while the 4 s job runs out.
    for module in ["count_js", "count_v2_js"] {
        assert_eq!(weir(&["check", &operator(module).to_string_lossy()]).code, 0);
    }
    let mut running = Running::start(&job, &[]);
    std::thread::sleep(Duration::from_millis(1500));
    let swapped = running.cli(&["upgrade", &running.id, "--operator", &count_per_user("count_v2_js")]);
    assert!(swapped.contains("paused"), "{swapped}");
    assert!(running.child.wait().unwrap().success(), "the job finishes");
    for (user, versions) in versions_by_user(dir.path()) {
        let changes = versions.windows(2).filter(|w| w[0] != w[1]).count();
        assert!(versions[0] == 1 && changes <= 1, "{user}: v1, then v2 once swapped: {versions:?}");
    }
}

/// The number after `before` and up to `after` in `text`.
fn number_between(text: &str, before: &str, after: &str) -> f64 {
    let start = text.find(before).unwrap_or_else(|| panic!("no '{before}' in {text}")) + before.len();
    let end = start + text[start..].find(after).unwrap_or_else(|| panic!("no '{after}' in {text}"));
    text[start..end].trim().parse().unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// With 100,000 keys in state, the pause a trial projects for `count_v2`'s migration is within
/// 3× of the pause the upgrade then takes.
#[test]
fn a_trials_projected_pause_is_within_three_times_the_upgrades() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("clicks.jsonl");
    let text: String = (0..600_000u64).map(|i| format!("{{\"user\":\"u{}\"}}\n", i * 7919 % 100_000)).collect();
    std::fs::write(&input, text).unwrap();
    let source = paced_clicks(&input, 60000);
    let text = job(
        "many-keys",
        2,
        &[
            source,
            wasm_operator("by-user", "key_by", &["config = { field = \"user\" }"]),
            wasm_operator("count-per-user", "count", &["input = \"hash\""]),
            "[[sink]]\nuid = \"out\"\ntype = \"blackhole\"\n".to_string(),
        ],
    );
    let job = write_job(dir.path(), &format!("{text}\n[checkpointing]\ninterval = \"1s\"\n"));
    let mut running = Running::start(&job, &[]);
    // Every user has a count by then (100,000 of the 600,000 clicks), and a checkpoint holds them.
    std::thread::sleep(Duration::from_millis(4000));
    let v2 = count_per_user("count_v2");
    let tried = running.cli(&["upgrade", &running.id, "--trial", "--sample", "8", "--operator", &v2]);
    let projected = number_between(&tried, "a pause of ", " ms");
    let upgraded = running.cli(&["upgrade", &running.id, "--no-trial", "--operator", &v2]);
    let paused = number_between(&upgraded, "paused ", " ms");
    eprintln!("projected {projected} ms, paused {paused} ms");
    assert!(
        projected * 3.0 >= paused && projected <= paused * 3.0,
        "projected {projected} ms, paused {paused} ms:\n{tried}\n{upgraded}"
    );
    assert!(running.child.wait().unwrap().success());
}
