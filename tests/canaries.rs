//! Canaries by key range (`weir upgrade --canary`): a new module serves the first share of the
//! key groups beside the old one in the same job, exactly once, through share changes, a killed
//! server, a rescale, a promotion and both kinds of abort; on `weir serve` and on `weir run`,
//! with and without checkpointing.
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use weir_e2e::{
    Running, Server, every_count_once, expected_counts, file_sink, file_source, generated_clicks, job, operator,
    sink_lines, versions_by_user, wait_until, wasm_operator, weir, write_job,
};

/// Key groups of the clicks job (the default max parallelism).
const KEY_GROUPS: u64 = 128;

const CHECKPOINTING: &str = "[checkpointing]\ninterval = \"200ms\"\nstorage = \"file://chk\"\n";

/// The key group of `key`, as weir computes it (XXH3-64, seed 0).
fn key_group(key: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key.as_bytes()) % KEY_GROUPS
}

/// The clicks job counting with `count` at `parallelism`, reading `clicks` clicks of 40 users
/// at 4000 a second, `extra` appended (checkpointing, say).
fn clicks_job(dir: &Path, parallelism: u32, clicks: usize, extra: &str) -> String {
    let input = dir.join("clicks.jsonl");
    if !input.exists() {
        generated_clicks(&input, clicks, 40);
    }
    let text = job(
        "clicks-per-user",
        parallelism,
        &[
            format!("{}rate = 4000\n", file_source("clicks", &input)),
            wasm_operator("logged-in", "filter", &["config = { field = \"logged_in\" }"]),
            wasm_operator("by-user", "key_by", &["config = { field = \"user\" }"]),
            wasm_operator("count-per-user", "count", &["input = \"hash\""]),
            file_sink("counts", &dir.join("out")),
        ],
    );
    write_job(dir, &format!("{text}\n{extra}"))
}

/// `count-per-user=<path of module>`.
fn count_per_user(module: &str) -> String {
    format!("count-per-user={}", operator(module).display())
}

/// The module versions of operator `count-per-user` in job status `job`: (role, key groups,
/// events in).
fn versions(job: &serde_json::Value) -> Vec<(String, String, u64)> {
    let vertices = job["vertices"].as_array().cloned().unwrap_or_default();
    let counter = vertices.iter().find(|v| v["uid"] == "count-per-user").cloned().unwrap_or_default();
    let versions = counter["versions"].as_array().cloned().unwrap_or_default();
    versions
        .iter()
        .map(|v| {
            let range = format!("{}..{}", v["key-groups"]["start"], v["key-groups"]["end"]);
            (v["role"].as_str().unwrap_or_default().to_string(), range, v["events-in"].as_u64().unwrap_or(0))
        })
        .collect()
}

/// The clicks job (`clicks` clicks, checkpointing) submitted to a `weir serve` of its own and,
/// after 0.6 s, given a canary: `weir upgrade JOB canary…`. Returns the test's directory, the
/// server, the job's id and what the upgrade printed.
fn submitted_with_canary(clicks: usize, canary: &[&str]) -> (tempfile::TempDir, Server, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let job = clicks_job(dir.path(), 2, clicks, CHECKPOINTING);
    let id = server.cli(&["submit", &job]).stdout.trim().to_string();
    std::thread::sleep(Duration::from_millis(600));
    let mut args = vec!["upgrade", id.as_str()];
    args.extend(canary);
    let started = server.cli(&args);
    assert_eq!(started.code, 0, "{}", started.stderr);
    (dir, server, id, started.stdout)
}

/// On `weir serve` with checkpointing: `count_v2` serves 10% of the key groups, then 50%; the
/// server is killed and resumes the job with its canary; a savepoint taken then holds the canary's
/// key groups in v2's layout and the rest in v1's, `inspect` saying which; the canary is
/// promoted. Every count is committed once, each user switching from v1 to v2 once, and no user
/// of the first 10% after one of the rest.
#[test]
fn a_canary_grows_survives_a_killed_server_and_is_promoted_exactly_once() {
    let v2 = count_per_user("count_v2");
    let (dir, server, id, started) = submitted_with_canary(40000, &["--operator", &v2, "--canary", "10%"]);
    assert!(started.contains(&format!("job {id} runs its canaries on 10%: paused")), "{started}");
    let status = || server.http("GET", &format!("/v1/jobs/{id}"), b"", None).1;
    let running = wait_until(status, |job| versions(job).iter().all(|(_, _, events)| *events > 0));
    let found = versions(&running);
    assert_eq!(found.len(), 2, "{running}");
    assert_eq!((found[0].0.as_str(), found[0].1.as_str()), ("stable", "13..128"), "{running}");
    assert_eq!((found[1].0.as_str(), found[1].1.as_str()), ("canary", "0..13"), "{running}");
    let counter = running["vertices"].as_array().unwrap().iter().find(|v| v["uid"] == "count-per-user").unwrap();
    assert!(counter["versions"][1]["module"].as_str().unwrap().starts_with("count 2.0.0"), "{counter}");
    let (_, metrics) = server.get_text("/metrics", None);
    assert!(metrics.contains("weir_operator_version_numRecordsIn_total{") && metrics.contains("role=\"canary\""));

    // Grown to half: no operator named, the running canary's module is kept.
    let grown = server.cli(&["upgrade", &id, "--canary", "50%"]);
    assert_eq!(grown.code, 0, "{}", grown.stderr);
    wait_until(status, |job| versions(job).iter().any(|(role, range, _)| role == "canary" && range == "0..64"));
    std::thread::sleep(Duration::from_millis(400));
    server.kill();
    let server = Server::start(&dir.path().join("data"), &[]);
    let status = || server.http("GET", &format!("/v1/jobs/{id}"), b"", None).1;
    let resumed = wait_until(status, |job| job["state"] == "running" && !versions(job).is_empty());
    assert_eq!(versions(&resumed)[1].1, "0..64", "the canary survives the kill: {resumed}");
    let savepoint = server.cli(&["savepoint", &id]);
    assert_eq!(savepoint.code, 0, "{}", savepoint.stderr);
    let inspected =
        weir(&["savepoint", "inspect", savepoint.stdout.trim(), "--state", "count", "--operator", "count-per-user"]);
    assert_eq!(inspected.code, 0, "{}", inspected.stderr);
    assert!(inspected.stderr.contains("key groups 0..64 served by the canary count 2.0.0"), "{}", inspected.stderr);
    let mut seen = 0;
    for line in inspected.stdout.lines() {
        let entry: serde_json::Value = serde_json::from_str(line).unwrap();
        let canary = key_group(entry["key"].as_str().unwrap()) < 64;
        assert_eq!(entry["canary"].is_string(), canary, "{line}");
        // v2 keeps `{"count":n}`, v1 a bare number.
        assert_eq!(entry["value"].is_object(), canary, "{line}");
        seen += 1;
    }
    assert!(seen > 20, "{}", inspected.stdout);

    let promoted = server.cli(&["upgrade", &id, "--promote"]);
    assert_eq!(promoted.code, 0, "{}", promoted.stderr);
    assert!(promoted.stdout.contains("promoted its canaries"), "{}", promoted.stdout);
    let promoted = wait_until(status, |job| job["state"] != "upgrading");
    assert!(versions(&promoted).is_empty(), "one module runs again: {promoted}");
    let job = server.wait_for_job(&id);
    assert_eq!(job["state"], "finished", "{job}");
    assert!(!job["job"].as_str().unwrap().contains("canary"), "{}", job["job"]);
    let mut first_switches = Vec::new();
    for (user, versions) in versions_by_user(dir.path()) {
        assert!(versions.windows(2).all(|w| w[0] <= w[1]), "{user}: v1, then v2 only: {versions:?}");
        let switched = versions.iter().position(|&v| v == 2);
        first_switches.push((key_group(&user), user, switched, versions.len()));
    }
    // Users of the first 10% switched at the canary's start, long before the promotion: some of
    // their counts came from v2 even though later users' did not.
    let early: Vec<_> = first_switches.iter().filter(|(kg, ..)| *kg < 13).collect();
    assert!(!early.is_empty() && early.iter().all(|(_, _, switched, _)| switched.is_some()), "{first_switches:?}");
}

/// On `weir run` with the job file's defaults (no checkpointing): a canary of `off_by_one`
/// covering user u7 writes u7's counts one too high while it serves them; aborted, it hands
/// its key groups back to `count` with their state, and u7's count goes on from where the canary
/// left it. Refusals name what is wrong.
#[test]
fn an_aborted_canary_hands_its_key_groups_back_with_their_state() {
    let dir = tempfile::tempdir().unwrap();
    let mut running = Running::start(&clicks_job(dir.path(), 2, 24000, ""), &[]);
    let cli = |args: &[&str]| {
        let mut all = vec!["--server", &running.server];
        all.extend_from_slice(args);
        weir(&all)
    };
    let id = running.id.clone();
    let refused = cli(&["upgrade", &id, "--abort"]);
    assert!(refused.stderr.contains("the job runs no canary to abort"), "{}", refused.stderr);
    let refused = cli(&["upgrade", &id, "--operator", &count_per_user("count_v2"), "--canary", "110%"]);
    assert!(refused.stderr.contains("canary share \"110%\" is not a percentage"), "{}", refused.stderr);
    let filter = format!("logged-in={}", operator("filter").display());
    let refused = cli(&["upgrade", &id, "--operator", &filter, "--canary", "10%", "--no-trial"]);
    assert!(
        refused.stderr.contains("operator 'logged-in': a canary serves a share of the key groups"),
        "{}",
        refused.stderr
    );
    std::thread::sleep(Duration::from_millis(500));
    // A share whose key groups end just past u7's.
    let share = format!("{}%", (key_group("u7") + 1) as f64 * 100.0 / KEY_GROUPS as f64);
    let off = count_per_user("test/off_by_one");
    running.cli(&["upgrade", &id, "--operator", &off, "--canary", &share]);
    std::thread::sleep(Duration::from_millis(1500));
    let aborted = running.cli(&["upgrade", &id, "--abort"]);
    assert!(aborted.contains("aborted its canaries"), "{aborted}");
    assert!(running.child.wait().unwrap().success(), "the job finishes");
    let totals = expected_counts(&dir.path().join("clicks.jsonl"));
    let mut u7 = Vec::new();
    let mut others: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for line in sink_lines(&dir.path().join("out")) {
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let (user, count) = (v["key"].as_str().unwrap().to_string(), v["count"].as_u64().unwrap());
        match user.as_str() {
            "u7" => u7.push(count),
            _ => others.entry(user).or_default().push(count),
        }
    }
    for (user, mut counts) in others {
        counts.sort_unstable();
        assert_eq!(counts, (1..=totals[&user]).collect::<Vec<_>>(), "{user}: every count once");
    }
    // One line per click of u7; those the canary wrote are one too high, and the count after it
    // went on from the canary's state (its last line is the true total).
    u7.sort_unstable();
    let n = totals["u7"];
    assert_eq!(u7.len() as u64, n, "{u7:?}");
    assert!(u7.windows(2).any(|w| w[0] == w[1]), "the canary wrote some of u7's counts: {u7:?}");
    assert!(u7.iter().all(|&c| (1..=n + 1).contains(&c)), "{u7:?}");
    assert!(u7.contains(&n), "{u7:?}");
}

/// On `weir run` with checkpointing into RocksDB (incremental, native snapshots: each part's
/// database is stored apart): the run is killed while `count_v2` serves a quarter of the key
/// groups as a canary, and resumed from its checkpoint: it goes on with its canary (its
/// module found in the run's module store). `count_v2` changed the state's layout, so an abort
/// that hands back is refused, saying to roll back; the resumed run does not know where the
/// canary started, so that is refused too, saying why; promoted, every count is committed once.
#[test]
fn a_canary_that_changed_the_layout_is_not_handed_back_and_goes_on_after_a_killed_run() {
    let dir = tempfile::tempdir().unwrap();
    let rocksdb = "[state]\nbackend = \"rocksdb\"\nincremental = true\n";
    let job = clicks_job(dir.path(), 2, 32000, &format!("{CHECKPOINTING}{rocksdb}"));
    let running = Running::start(&job, &[]);
    std::thread::sleep(Duration::from_millis(600));
    let started = running.cli(&["upgrade", &running.id, "--operator", &count_per_user("count_v2"), "--canary", "25%"]);
    assert!(started.contains("runs its canaries on 25%"), "{started}");
    std::thread::sleep(Duration::from_millis(800));
    drop(running);
    let mut resumed = Running::start(&job, &["--from-checkpoint", "latest"]);
    let id = resumed.id.clone();
    let status = || serde_json::from_str(&resumed.cli(&["--json", "status", &id])).unwrap();
    let job_status = wait_until(status, |job| !versions(job).is_empty());
    assert_eq!(versions(&job_status)[1].1, "0..32", "the canary goes on: {job_status}");
    let refused = weir(&["--server", &resumed.server, "upgrade", &id, "--abort"]);
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("state 'count'") && refused.stderr.contains("abort it with `rollback` instead"),
        "{}",
        refused.stderr
    );
    // Not the savepoint of this run's start: the canary started in the killed one.
    let rolled = weir(&["--server", &resumed.server, "upgrade", &id, "--abort", "rollback"]);
    assert_eq!(rolled.code, 1, "{}", rolled.stderr);
    assert!(rolled.stderr.contains("does not know where its canary started"), "{}", rolled.stderr);
    let promoted = resumed.cli(&["upgrade", &id, "--promote"]);
    assert!(promoted.contains("promoted its canaries"), "{promoted}");
    assert!(resumed.child.wait().unwrap().success(), "the job finishes");
    for (user, versions) in versions_by_user(dir.path()) {
        assert!(versions.windows(2).all(|w| w[0] <= w[1]), "{user}: v1, then v2 only: {versions:?}");
    }
}

/// On `weir serve`: the canary's start is kept, so an abort by rollback returns the job to it
/// (the output since is written again by `count`: all of it from v1, exactly once); and a canary
/// stopped with a savepoint and started again at another parallelism goes on with its canary.
#[test]
fn a_canary_is_rolled_back_and_another_survives_a_rescale() {
    let v2 = count_per_user("count_v2");
    let (dir, server, id, _) = submitted_with_canary(24000, &["--operator", &v2, "--canary", "50%"]);
    std::thread::sleep(Duration::from_millis(600));
    let rolled = server.cli(&["upgrade", &id, "--abort", "rollback"]);
    assert_eq!(rolled.code, 0, "{}", rolled.stderr);
    assert!(rolled.stdout.contains("aborted its canaries: it runs from savepoint"), "{}", rolled.stdout);
    let status = || server.http("GET", &format!("/v1/jobs/{id}"), b"", None).1;
    wait_until(status, |job| job["state"] == "running" && versions(job).is_empty());
    // Again, then stopped with a savepoint.
    let started = server.cli(&["upgrade", &id, "--operator", &v2, "--canary", "50%"]);
    assert_eq!(started.code, 0, "{}", started.stderr);
    std::thread::sleep(Duration::from_millis(500));
    let stopped = server.cli(&["stop", &id, "--savepoint"]);
    assert_eq!(stopped.code, 0, "{}", stopped.stderr);
    let savepoint = stopped.stdout.trim().to_string();
    let rescaled = clicks_job(dir.path(), 3, 0, CHECKPOINTING);
    let again = server.cli(&["submit", &rescaled, "--from-savepoint", &savepoint]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    let id = again.stdout.trim().to_string();
    let status = || server.http("GET", &format!("/v1/jobs/{id}"), b"", None).1;
    let running = wait_until(status, |job| !versions(job).is_empty());
    assert_eq!(versions(&running)[1].1, "0..64", "{running}");
    assert!(running["job"].as_str().unwrap().contains("canary"), "{}", running["job"]);
    let job = server.wait_for_job(&id);
    assert_eq!(job["state"], "finished", "{job}");
    for (user, versions) in versions_by_user(dir.path()) {
        let canary = key_group(&user) < 64;
        assert!(versions.windows(2).all(|w| w[0] <= w[1]), "{user}: {versions:?}");
        assert_eq!(versions.last() == Some(&2), canary, "{user} (key group {}): {versions:?}", key_group(&user));
    }
}

/// On `weir serve`: a canary of `count_broken` (it traps on its first event) with `--abort-if
/// errors>0` is aborted by itself when it traps: its key groups go back to `count` with their
/// state, from the latest checkpoint, instead of a restart with it; the record says why, and the
/// committed output is that of `count` alone, exactly once.
#[test]
fn a_canary_that_traps_is_aborted_by_its_error_condition() {
    let broken = count_per_user("count_broken");
    let canary = ["--operator", &broken, "--canary", "10%", "--abort-if", "errors>0", "--no-trial"];
    let (dir, server, id, _) = submitted_with_canary(24000, &canary);
    let job = server.wait_for_job(&id);
    assert_eq!(job["state"], "finished", "{job}");
    let history: Vec<&str> = job["history"].as_array().unwrap().iter().map(|h| h["event"].as_str().unwrap()).collect();
    assert_eq!(history, ["started", "upgraded", "canary-aborted"], "{job}");
    let cause = job["history"][2]["cause"].as_str().unwrap();
    assert!(cause.starts_with("the canary was aborted: operator 'count-per-user': `errors>0` held (1.000)"), "{cause}");
    assert!(job["failures"][0]["cause"].as_str().unwrap().contains("count_broken traps on every event"), "{job}");
    assert!(!job["job"].as_str().unwrap().contains("canary"), "{}", job["job"]);
    let emitted = every_count_once(dir.path());
    assert!(emitted.values().all(|versions| versions == &[1]), "all from count");
}

/// On `weir serve`, the operator with `on-error = "quarantine"`: a canary of `count_broken` does
/// not fail the run, its events are set aside, and they count as its errors: `--abort-if
/// errors>0` aborts it. Every user's committed counts run from 1 once each, and with the events
/// committed to the quarantine sink they account for every click exactly once.
#[test]
fn a_canary_whose_events_are_set_aside_is_aborted_by_its_error_condition() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let job = clicks_job(dir.path(), 2, 24000, CHECKPOINTING);
    let quarantine = format!(
        "{}inputs = [{{ from = \"count-per-user.quarantine\" }}]\n",
        file_sink("quarantine", &dir.path().join("quarantine"))
    );
    let text = std::fs::read_to_string(&job).unwrap().replacen(
        "input = \"hash\"\n",
        "input = \"hash\"\non-error = \"quarantine\"\n",
        1,
    );
    std::fs::write(&job, format!("{text}\n{quarantine}")).unwrap();
    let id = server.cli(&["submit", &job]).stdout.trim().to_string();
    std::thread::sleep(Duration::from_millis(600));
    let broken = count_per_user("count_broken");
    let started =
        server.cli(&["upgrade", &id, "--operator", &broken, "--canary", "10%", "--abort-if", "errors>0", "--no-trial"]);
    assert_eq!(started.code, 0, "{}", started.stderr);
    let done = server.wait_for_job(&id);
    assert_eq!(done["state"], "finished", "{done}");
    let history: Vec<&str> = done["history"].as_array().unwrap().iter().map(|h| h["event"].as_str().unwrap()).collect();
    assert_eq!(history, ["started", "upgraded", "canary-aborted"], "{done}");
    let cause = done["history"][2]["cause"].as_str().unwrap();
    assert!(cause.contains("`errors>0` held"), "{cause}");
    let mut set_aside: BTreeMap<String, u64> = BTreeMap::new();
    for line in sink_lines(&dir.path().join("quarantine")) {
        let record: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert!(record["error"].as_str().unwrap().contains("count_broken traps on every event"), "{record}");
        *set_aside.entry(record["key"].as_str().unwrap().to_string()).or_default() += 1;
    }
    let mut counted: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for line in sink_lines(&dir.path().join("out")) {
        let out: serde_json::Value = serde_json::from_str(&line).unwrap();
        counted.entry(out["key"].as_str().unwrap().to_string()).or_default().push(out["count"].as_u64().unwrap());
    }
    for (user, clicks) in expected_counts(&dir.path().join("clicks.jsonl")) {
        let mut counts = counted.remove(&user).unwrap_or_default();
        counts.sort_unstable();
        let aside = set_aside.get(&user).copied().unwrap_or(0);
        assert_eq!(counts, (1..=clicks - aside).collect::<Vec<u64>>(), "{user}: {aside} set aside");
    }
}

/// On `weir run` with checkpointing (a rollback sets aside what was committed since only then:
/// without, files are written directly): a canary whose abort would hand back a layout the old
/// module cannot read is refused unless it rolls back; `count_v2` with `--abort-if out-ratio<2`
/// (it emits as much per event as `count`: the ratio is 1 once each processed 1000 events) and
/// `--abort-by rollback` rolls the job back to the canary's start by itself, and the committed
/// output is that of `count` alone, exactly once.
#[test]
fn a_canary_whose_output_ratio_condition_holds_rolls_the_job_back_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let mut running = Running::start(&clicks_job(dir.path(), 2, 32000, CHECKPOINTING), &[]);
    let id = running.id.clone();
    std::thread::sleep(Duration::from_millis(500));
    let v2 = count_per_user("count_v2");
    let refused = weir(&[
        "--server",
        &running.server,
        "upgrade",
        &id,
        "--operator",
        &v2,
        "--canary",
        "50%",
        "--abort-if",
        "errors>0",
    ]);
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(refused.stderr.contains("set `abort-by = \"rollback\"`"), "{}", refused.stderr);
    let refused = weir(&[
        "--server",
        &running.server,
        "upgrade",
        &id,
        "--operator",
        &v2,
        "--canary",
        "50%",
        "--abort-if",
        "speed>1",
    ]);
    assert!(refused.stderr.contains("canary abort condition `speed>1` is not MEASURE>NUMBER"), "{}", refused.stderr);
    let started = running.cli(&[
        "upgrade",
        &id,
        "--operator",
        &v2,
        "--canary",
        "50%",
        "--abort-if",
        "out-ratio<2",
        "--abort-by",
        "rollback",
    ]);
    assert!(started.contains("runs its canaries on 50%"), "{started}");
    let status = || serde_json::from_str(&running.cli(&["--json", "status", &id])).unwrap();
    let job = wait_until(status, |job| job["history"].as_array().is_some_and(|h| h.len() == 3));
    assert_eq!(job["history"][2]["event"], "rolled-back", "{job}");
    let cause = job["history"][2]["cause"].as_str().unwrap();
    assert!(cause.contains("`out-ratio<2` held (1.000)"), "{cause}");
    assert!(running.child.wait().unwrap().success(), "the job finishes");
    let emitted = every_count_once(dir.path());
    assert!(emitted.values().all(|versions| versions == &[1]), "all from count after the rollback");
}
