//! Jobs as dataflow graphs: operators and sinks name their `inputs`, a stream read by several
//! feeds each whole, partitionings forward, hash, rebalance and broadcast. Outputs are compared
//! line by line with what the test computes from the input, after kills, through savepoints and
//! on `weir serve`; bad graphs are refused naming the vertex at fault.
use std::path::Path;
use std::time::Duration;

use weir_e2e::{
    Running, Server, assert_failed_with, completed_checkpoints, counts_by_version, expected_counts, expected_join,
    expected_lines, expected_lines_after, expected_rules, file_sink, file_source, generated_clicks, job,
    kill_repeatedly, operator, rules_file, rules_job, saved_counts, sink_lines, spread_job, wasm_operator, weir,
    write_job,
};

const CLICKS: usize = 6000;

/// The input lines of `clicks`, sorted; only the logged-in ones with `logged_in`.
fn clicks_lines(clicks: &Path, logged_in: bool) -> Vec<String> {
    let text = std::fs::read_to_string(clicks).unwrap();
    let mut lines: Vec<String> =
        text.lines().filter(|l| !logged_in || l.contains("\"logged_in\":true")).map(str::to_string).collect();
    lines.sort();
    lines
}

/// A branching job: the clicks feed a sink as they are and a filter; the logged-in clicks feed a
/// sink and, keyed by user, a count, which feeds a third sink. `rate` limits the source.
fn branching_job(dir: &Path, parallelism: u32, rate: Option<u32>, checkpointing: &str) -> String {
    let clicks = dir.join("clicks.jsonl");
    if !clicks.exists() {
        generated_clicks(&clicks, CLICKS, 50);
    }
    let mut source = file_source("clicks", &clicks);
    if let Some(rate) = rate {
        source.push_str(&format!("rate = {rate}\n"));
    }
    let text = job(
        "branches",
        parallelism,
        &[
            source,
            wasm_operator(
                "logged-in",
                "filter",
                &["config = { field = \"logged_in\" }", "inputs = [{ from = \"clicks\" }]"],
            ),
            wasm_operator(
                "by-user",
                "key_by",
                &["config = { field = \"user\" }", "inputs = [{ from = \"logged-in\" }]"],
            ),
            wasm_operator("count", "count", &["inputs = [{ from = \"by-user\", partitioning = \"hash\" }]"]),
            format!("{}inputs = [{{ from = \"clicks\" }}]\n", file_sink("all", &dir.join("all"))),
            format!(
                "{}inputs = [{{ from = \"logged-in\", partitioning = \"rebalance\" }}]\n",
                file_sink("logged", &dir.join("logged"))
            ),
            format!("{}inputs = [{{ from = \"count\" }}]\n", file_sink("counts", &dir.join("counts"))),
        ],
    );
    write_job(dir, &format!("{text}\n{checkpointing}"))
}

/// Every sink of the branching job holds exactly what the input makes it.
fn assert_branches_exact(dir: &Path, what: &str) {
    let clicks = dir.join("clicks.jsonl");
    assert_eq!(sink_lines(&dir.join("all")), clicks_lines(&clicks, false), "{what}: sink 'all'");
    assert_eq!(sink_lines(&dir.join("logged")), clicks_lines(&clicks, true), "{what}: sink 'logged'");
    assert_eq!(sink_lines(&dir.join("counts")), expected_lines(&expected_counts(&clicks)), "{what}: sink 'counts'");
}

#[test]
fn a_branching_job_writes_each_sink_what_its_branch_makes() {
    for parallelism in [1, 2] {
        let dir = tempfile::tempdir().unwrap();
        let job = branching_job(dir.path(), parallelism, None, "");
        let run = weir(&["run", &job, "--listen", "none"]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert_branches_exact(dir.path(), &format!("parallelism {parallelism}"));
        // `weir run` reports every sink's count.
        let logged = clicks_lines(&dir.path().join("clicks.jsonl"), true).len();
        assert!(run.stderr.contains(&format!("events in {logged}")), "{}", run.stderr);
    }
}

/// The checkpointing of the jobs the tests kill: every 100 ms, the last three kept, in `chk/`.
const KILLED_CHECKPOINTING: &str = "[checkpointing]\ninterval = \"100ms\"\nretained = 3\nstorage = \"file://chk\"\n";

/// Runs `job` (named `name`, with [`KILLED_CHECKPOINTING`] in `dir`) and kills it at random
/// moments, three times once it has completed a checkpoint, then resumes it from its latest
/// checkpoint to the end.
fn killed_then_resumed(dir: &Path, name: &str, job: &str) {
    let checkpointed = || !completed_checkpoints(&dir.join("chk").join(name)).is_empty();
    let kills = kill_repeatedly(job, &[], 3, checkpointed);
    assert!(kills >= 2, "the job was killed {kills} times of 3");
    let resumed = weir(&["run", job, "--listen", "none", "--from-checkpoint", "latest"]);
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
}

#[test]
fn killed_again_and_again_every_branch_commits_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let job = branching_job(dir.path(), 2, Some(3000), KILLED_CHECKPOINTING);
    killed_then_resumed(dir.path(), "branches", &job);
    assert_branches_exact(dir.path(), "after kills");
}

#[test]
fn a_straight_line_savepoint_restores_into_a_job_with_a_branch_added() {
    let dir = tempfile::tempdir().unwrap();
    let clicks = dir.path().join("clicks.jsonl");
    generated_clicks(&clicks, CLICKS, 50);
    let line = |extra: &[String]| {
        let mut sections = vec![
            format!("{}rate = 3000\n", file_source("clicks", &clicks)),
            wasm_operator("logged-in", "filter", &["config = { field = \"logged_in\" }"]),
            wasm_operator("by-user", "key_by", &["config = { field = \"user\" }"]),
            wasm_operator("count", "count", &["input = \"hash\""]),
            file_sink("counts", &dir.path().join("counts")),
        ];
        sections.extend_from_slice(extra);
        write_job(dir.path(), &job("branches", 2, &sections))
    };
    let running = Running::start(&line(&[]), &[]);
    std::thread::sleep(Duration::from_millis(700));
    let savepoint = running.cli(&["stop", &running.id, "--savepoint"]);
    drop(running);
    let before = sink_lines(&dir.path().join("counts")).len();
    assert!(before > 0 && before < expected_lines(&expected_counts(&clicks)).len(), "stopped midway: {before} lines");

    // The same job with a branch: the logged-in clicks also go to a sink of their own, which
    // starts empty and sees only what comes after the savepoint.
    let branched =
        line(&[format!("{}inputs = [{{ from = \"logged-in\" }}]\n", file_sink("logged", &dir.path().join("logged")))]);
    // Its counts sink names its input, and it runs at another parallelism: a graph rescales from
    // the savepoint as a straight line does.
    let text = std::fs::read_to_string(&branched).unwrap();
    let text =
        text.replace("[[sink]]\nuid = \"counts\"", "[[sink]]\nuid = \"counts\"\ninputs = [{ from = \"count\" }]");
    let branched = write_job(dir.path(), &text.replace("parallelism = 2", "parallelism = 3"));
    let run = weir(&["run", &branched, "--listen", "none", "--from-savepoint", &savepoint]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        sink_lines(&dir.path().join("counts")),
        expected_lines(&expected_counts(&clicks)),
        "counts exactly once"
    );
    let logged = sink_lines(&dir.path().join("logged"));
    let all_logged = clicks_lines(&clicks, true);
    assert!(!logged.is_empty() && logged.len() < all_logged.len(), "{} of {}", logged.len(), all_logged.len());
    assert!(logged.iter().all(|l| all_logged.binary_search(l).is_ok()));

    // Without the count, its state has nowhere to go.
    let no_count = write_job(
        dir.path(),
        &job("branches", 2, &[file_source("clicks", &clicks), file_sink("other", &dir.path().join("other"))]),
    );
    let refused = weir(&["run", &no_count, "--listen", "none", "--from-savepoint", &savepoint]);
    assert_failed_with(&refused, &["holds state of operator 'count'", "--allow-non-restored-state"]);
}

#[test]
fn rebalance_and_broadcast_spread_a_stream_as_they_say() {
    let dir = tempfile::tempdir().unwrap();
    let clicks = dir.path().join("clicks.jsonl");
    generated_clicks(&clicks, 2000, 20);
    let spread =
        |partitioning: &str| write_job(dir.path(), &spread_job(&clicks, partitioning, &dir.path().join(partitioning)));
    for partitioning in ["rebalance", "broadcast"] {
        let run = weir(&["run", &spread(partitioning), "--listen", "none"]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        let copies = if partitioning == "broadcast" { 3 } else { 1 };
        let mut expected: Vec<String> =
            clicks_lines(&clicks, true).into_iter().flat_map(|l| std::iter::repeat_n(l, copies)).collect();
        expected.sort();
        assert_eq!(sink_lines(&dir.path().join(partitioning)), expected, "{partitioning}");
    }
}

#[test]
fn a_server_runs_a_branching_job() {
    let dir = tempfile::tempdir().unwrap();
    let job = branching_job(dir.path(), 2, None, "");
    let server = Server::start(&dir.path().join("server"), &[]);
    let submitted = server.cli(&["submit", &job]);
    assert_eq!(submitted.code, 0, "{}", submitted.stderr);
    let ended = server.wait_for_job(submitted.stdout.trim());
    assert_eq!(ended["state"], "finished", "{ended}");
    assert_branches_exact(dir.path(), "on weir serve");
}

#[test]
fn bad_graphs_are_refused_naming_the_vertex_at_fault() {
    let dir = tempfile::tempdir().unwrap();
    let clicks = dir.path().join("clicks.jsonl");
    generated_clicks(&clicks, 10, 2);
    let source = file_source("clicks", &clicks);
    let filter = |uid: &str, inputs: &str| {
        wasm_operator(uid, "filter", &["config = { field = \"logged_in\" }", &format!("inputs = {inputs}")])
    };
    let sink = |inputs: &str| format!("{}inputs = {inputs}\n", file_sink("out", &dir.path().join("out")));
    let cases: Vec<(Vec<String>, Vec<&str>)> = vec![
        (
            vec![
                source.clone(),
                filter("a", "[{ from = \"clicks\" }, { from = \"b\" }]"),
                filter("b", "[{ from = \"a\" }]"),
                sink("[{ from = \"b\" }]"),
            ],
            vec!["cycle", "a → b → a"],
        ),
        (
            vec![source.clone(), filter("a", "[{ from = \"click\" }]"), sink("[{ from = \"a\" }]")],
            vec!["operator 'a'", "'click'", "no source or operator", "known: 'a', 'clicks'"],
        ),
        (
            vec![source.clone(), filter("a", "[{ from = \"clicks.late\" }]"), sink("[{ from = \"a\" }]")],
            vec!["operator 'a'", "side output 'late' of 'clicks'"],
        ),
        (
            vec![source.clone(), filter("a", "[{ from = \"out\" }]"), sink("[{ from = \"clicks\" }]")],
            vec!["operator 'a'", "'out', which is a sink"],
        ),
        (
            vec![source.clone(), filter("a", "[{ from = \"clicks\" }]"), sink("[{ from = \"clicks\" }]")],
            vec!["operator 'a' feeds nothing"],
        ),
        (
            vec![source.clone(), filter("a", "[]"), sink("[{ from = \"clicks\" }]")],
            vec!["operator 'a'", "`inputs` is empty"],
        ),
        (
            vec![
                source.clone(),
                filter("a", "[{ from = \"clicks\" }]"),
                wasm_operator(
                    "c",
                    "count",
                    &["inputs = [{ from = \"clicks\", partitioning = \"hash\" }, { from = \"a\" }]"],
                ),
                sink("[{ from = \"c\" }]"),
            ],
            vec!["operator 'c'", "reads 'clicks' by hash and 'a' by forward", "partitioning = \"hash\" on 'a'"],
        ),
        (
            vec![source.clone(), sink("[{ from = \"clicks\", partitioning = \"broadcast\" }]")],
            vec!["sink 'out'", "by broadcast"],
        ),
        (
            vec![source.clone(), filter("a", "[{ from = \"clicks\" }]"), sink("[{ from = \"a.late\" }]")],
            vec!["sink 'out'", "side output 'late' of operator 'a'", "it declares none in its `describe`"],
        ),
        (
            vec![
                source.clone(),
                wasm_operator("e", "enrich", &["inputs = [{ from = \"clicks\", partitioning = \"hash\" }]"]),
                sink("[{ from = \"e.unmatch\" }]"),
            ],
            vec!["operator 'e'", "declares 2 inputs ('clicks', 'profiles')", "gives it 1 ('clicks')"],
        ),
        (
            vec![
                source.clone(),
                filter("a", "[{ from = \"clicks\" }]"),
                wasm_operator(
                    "c",
                    "test/count-0.3.0",
                    &["inputs = [{ from = \"clicks\", partitioning = \"hash\" }, { from = \"a\", partitioning = \
                       \"broadcast\" }]"],
                ),
                sink("[{ from = \"c\" }]"),
            ],
            vec!["operator 'c'", "reads 'a' by broadcast", "built against weir:operator@0.3.0", "0.4.0"],
        ),
        (
            vec![
                source.clone(),
                wasm_operator(
                    "c",
                    "count",
                    &["input = \"hash\"", "inputs = [{ from = \"clicks\", partitioning = \"hash\" }]"],
                ),
                sink("[{ from = \"c\" }]"),
            ],
            vec!["operator 'c'", "set `input` or `inputs`, not both"],
        ),
        (
            vec![
                source.clone(),
                filter("a", "[{ from = \"clicks\" }, { from = \"clicks\" }]"),
                sink("[{ from = \"a\" }]"),
            ],
            vec!["operator 'a'", "reads 'clicks' twice"],
        ),
        (
            vec![
                source,
                filter("a", "[{ from = \"clicks\", partitioning = \"sideways\" }]"),
                sink("[{ from = \"a\" }]"),
            ],
            vec!["unknown variant `sideways`", "forward", "broadcast"],
        ),
    ];
    for (sections, needles) in cases {
        let job = write_job(dir.path(), &job("bad", 1, &sections));
        let run = weir(&["run", &job, "--listen", "none"]);
        assert_failed_with(&run, &needles);
        assert!(!dir.path().join("out").exists(), "a refused job opened its sink: {needles:?}");
    }
}

#[test]
fn an_upgrade_of_one_branch_under_load_leaves_the_others_untouched_and_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let checkpointing = "[checkpointing]\ninterval = \"100ms\"\nstorage = \"file://chk\"\n";
    let job = branching_job(dir.path(), 2, Some(3000), checkpointing);
    let server = Server::start(&dir.path().join("data"), &[]);
    let id = server.cli(&["submit", &job]).stdout.trim().to_string();
    std::thread::sleep(Duration::from_millis(700));
    let count_v2 = format!("count={}", operator("count_v2").display());
    let swapped = server.cli(&["upgrade", &id, "--operator", &count_v2]);
    assert_eq!(swapped.code, 0, "{}", swapped.stderr);
    let ended = server.wait_for_job(&id);
    assert_eq!(ended["state"], "finished", "{ended}");
    let history: Vec<&str> =
        ended["history"].as_array().unwrap().iter().map(|h| h["event"].as_str().unwrap()).collect();
    assert_eq!(history, ["started", "upgraded"], "{ended}");

    // The other branches wrote their streams exactly once, as if nothing had happened.
    let clicks = dir.path().join("clicks.jsonl");
    assert_eq!(sink_lines(&dir.path().join("all")), clicks_lines(&clicks, false), "sink 'all'");
    assert_eq!(sink_lines(&dir.path().join("logged")), clicks_lines(&clicks, true), "sink 'logged'");
    // The upgraded branch: every count once, v1's before the swap and v2's after.
    let emitted = counts_by_version(&sink_lines(&dir.path().join("counts")));
    let expected: Vec<(String, u64)> =
        expected_counts(&clicks).iter().flat_map(|(user, &n)| (1..=n).map(move |c| (user.clone(), c))).collect();
    assert_eq!(emitted.keys().cloned().collect::<Vec<_>>(), expected, "every count of every user");
    assert!(emitted.values().all(|versions| versions.len() == 1), "a count emitted twice");
    let v2 = emitted.values().filter(|versions| versions[0] == 2).count();
    assert!(v2 > 0 && v2 < emitted.len(), "{v2} of {} counts from v2", emitted.len());
}

#[test]
fn a_fork_of_a_branching_job_goes_on_in_every_branch_from_the_savepoint() {
    let dir = tempfile::tempdir().unwrap();
    let job = branching_job(dir.path(), 2, Some(3000), "");
    let running = Running::start(&job, &[]);
    std::thread::sleep(Duration::from_millis(700));
    let savepoint = running.cli(&["savepoint", &running.id]);
    drop(running);
    let saved = saved_counts(&savepoint, "count");
    assert!(!saved.is_empty());

    // The fork: a job of its own name, writing elsewhere, without a rate limit.
    let fork_dir = dir.path().join("fork");
    std::fs::create_dir_all(&fork_dir).unwrap();
    std::fs::copy(dir.path().join("clicks.jsonl"), fork_dir.join("clicks.jsonl")).unwrap();
    let fork = branching_job(&fork_dir, 2, None, "");
    let text = std::fs::read_to_string(&fork).unwrap().replace("name = \"branches\"", "name = \"branches-fork\"");
    std::fs::write(&fork, text).unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let forked = server.cli(&["fork", &savepoint, &fork, "--submit"]);
    assert_eq!(forked.code, 0, "{}", forked.stderr);
    let ended = server.wait_for_job(forked.stdout.trim());
    assert_eq!(ended["state"], "finished", "{ended}");
    assert_eq!(ended["lineage"]["job"], "branches");

    // The count branch goes on from the saved counts: each user's counts after them, once.
    let clicks = dir.path().join("clicks.jsonl");
    let expected = expected_lines_after(&expected_counts(&clicks), &saved);
    assert_eq!(sink_lines(&fork_dir.join("counts")), expected, "the fork's counts");
    // The other branches go on from the same source position: the clicks after it, once each.
    let all = sink_lines(&fork_dir.join("all"));
    let every = clicks_lines(&clicks, false);
    assert!(!all.is_empty() && all.len() < every.len(), "{} of {}", all.len(), every.len());
    assert!(all.iter().all(|l| every.binary_search(l).is_ok()));
    let logged = sink_lines(&fork_dir.join("logged"));
    let logged_after: Vec<String> = all.iter().filter(|l| l.contains("\"logged_in\":true")).cloned().collect();
    assert_eq!(logged, logged_after, "the fork's logged-in clicks are those of its clicks");
}

#[test]
fn backpressure_is_told_per_edge() {
    let dir = tempfile::tempdir().unwrap();
    // One stream to a slow operator (100 ms an event) and to a sink that keeps up.
    let text = job(
        "pressure",
        1,
        &[
            weir_e2e::generator_source("events", 1_000_000, 10),
            wasm_operator(
                "slow",
                "test/misbehave",
                &["config = { do = \"dawdle\" }", "inputs = [{ from = \"events\" }]"],
            ),
            format!("{}inputs = [{{ from = \"slow\" }}]\n", weir_e2e::blackhole_sink("after-slow")),
            format!("{}inputs = [{{ from = \"events\" }}]\n", weir_e2e::blackhole_sink("raw")),
        ],
    );
    let running = Running::start(&write_job(dir.path(), &text), &[]);
    let edge = |vertex: &str| {
        let (_, job) = weir_e2e::get_text(&format!("{}/v1/jobs/{}", running.server, running.id), None);
        let job: serde_json::Value = serde_json::from_str(&job).unwrap();
        let v = job["vertices"].as_array().unwrap().iter().find(|v| v["uid"] == vertex).unwrap().clone();
        v["inputs"][0].clone()
    };
    let started = std::time::Instant::now();
    while edge("slow")["backpressured-ms"].as_u64().unwrap() < 500 {
        assert!(started.elapsed() < Duration::from_secs(20), "{}", edge("slow"));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(edge("raw"), serde_json::json!({ "from": "events", "partitioning": "forward", "backpressured-ms": 0 }));
    let chained = edge("after-slow");
    assert_eq!(chained["backpressured-ms"], 0, "a chained sink's edge has no channel: {chained}");
}

#[test]
fn compare_takes_the_sink_of_a_branch() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    // Two runs of the branching job, the second counting with count_v2 (`"v":2` on each line).
    let submit = |name: &str, count: &str| {
        let jobs = dir.path().join(name);
        std::fs::create_dir_all(&jobs).unwrap();
        let job = branching_job(&jobs, 2, None, "");
        let text = std::fs::read_to_string(&job).unwrap().replace("name = \"branches\"", &format!("name = \"{name}\""));
        let text = text.replace("operators/count.wasm", &format!("operators/{count}.wasm"));
        std::fs::write(&job, text).unwrap();
        let id = server.cli(&["submit", &job]).stdout.trim().to_string();
        assert_eq!(server.wait_for_job(&id)["state"], "finished");
        id
    };
    let (v1, v2) = (submit("branches-v1", "count"), submit("branches-v2", "count_v2"));
    let users = expected_counts(&dir.path().join("branches-v1/clicks.jsonl")).len();
    let compare = |sink: &str| server.cli(&["compare", &v1, &v2, "--sink", sink]);
    let counts = compare("counts");
    assert_eq!(counts.code, 0, "{}", counts.stderr);
    assert!(counts.stdout.starts_with(&format!("0 keys match, {users} differ")), "{}", counts.stdout);
    let all = compare("all");
    assert_eq!(all.code, 0, "{}", all.stderr);
    assert!(all.stdout.starts_with("1 keys match, 0 differ"), "the clicks have no key: {}", all.stdout);
    let unknown = compare("nope");
    assert_failed_with(&unknown, &["has no file sink 'nope'", "its file sinks: 'all', 'logged', 'counts'"]);
    // The API takes it as a parameter.
    let (status, api) = server.http("GET", &format!("/v1/compare?a={v1}&b={v2}&sink=counts"), b"", None);
    assert_eq!((status, api["differing-keys"].as_u64()), (200, Some(users as u64)), "{api}");
}

/// `n` clicks by `users` users at 10 ms apart (`{"ts":…,"user":…,"page":…}`), and the profile
/// versions of those users (`{"ts":…,"user":…,"plan":…}`): most users have one from the start,
/// every third only from halfway, every second a newer one from halfway. Returns both paths.
fn join_data(dir: &Path, n: usize, users: usize) -> (std::path::PathBuf, std::path::PathBuf) {
    let (clicks, profiles) = (dir.join("join-clicks.jsonl"), dir.join("profiles.jsonl"));
    let mut text = String::new();
    for i in 0..n {
        text.push_str(&format!("{{\"ts\":{},\"user\":\"u{}\",\"page\":\"/p{}\"}}\n", i * 10, (i * 31) % users, i % 7));
    }
    std::fs::write(&clicks, text).unwrap();
    let half = (n * 5) as i64;
    let mut versions: Vec<(i64, usize, &str)> = Vec::new();
    for k in 0..users {
        versions.push(if k % 3 == 0 { (half, k, "late") } else { (k as i64, k, "free") });
        if k % 2 == 0 {
            versions.push((half + k as i64, k, "pro"));
        }
    }
    versions.sort();
    let text: String = versions
        .iter()
        .map(|(ts, k, plan)| format!("{{\"ts\":{ts},\"user\":\"u{k}\",\"plan\":\"{plan}\"}}\n"))
        .collect();
    std::fs::write(&profiles, text).unwrap();
    (clicks, profiles)
}

/// The `enrich` example's job over `join_data`, at `parallelism`, with extra lines for the
/// clicks source (a rate) and the job (checkpointing).
fn join_job(dir: &Path, parallelism: u32, clicks_extra: &str, job_extra: &str) -> String {
    let (clicks, profiles) = join_data(dir, 3000, 40);
    let timed = "timestamp-field = \"ts\"\nwatermarks = { out-of-orderness = \"0s\" }\n";
    let text = job(
        "enrich",
        parallelism,
        &[
            format!("{}{timed}{clicks_extra}", file_source("clicks", &clicks)),
            format!("{}{timed}", file_source("profiles", &profiles)),
            wasm_operator(
                "clicks-by-user",
                "key_by",
                &["config = { field = \"user\" }", "inputs = [{ from = \"clicks\" }]"],
            ),
            wasm_operator(
                "profiles-by-user",
                "key_by",
                &["config = { field = \"user\" }", "inputs = [{ from = \"profiles\" }]"],
            ),
            wasm_operator(
                "enrich",
                "enrich",
                &["inputs = [{ from = \"clicks-by-user\", partitioning = \"hash\" }, { from = \"profiles-by-user\", \
                   partitioning = \"hash\" }]"],
            ),
            format!("{}inputs = [{{ from = \"enrich\" }}]\n", file_sink("enriched", &dir.join("enriched"))),
            format!("{}inputs = [{{ from = \"enrich.unmatched\" }}]\n", file_sink("unmatched", &dir.join("unmatched"))),
        ],
    );
    write_job(dir, &format!("{text}\n{job_extra}"))
}

fn assert_join_exact(dir: &Path, what: &str) {
    let (enriched, unmatched) = expected_join(&dir.join("join-clicks.jsonl"), &dir.join("profiles.jsonl"));
    assert!(!enriched.is_empty() && !unmatched.is_empty());
    weir_e2e::assert_lines(&sink_lines(&dir.join("enriched")), &enriched, &format!("{what}: sink 'enriched'"));
    let side = format!("{what}: sink 'unmatched' (the side output)");
    weir_e2e::assert_lines(&sink_lines(&dir.join("unmatched")), &unmatched, &side);
}

#[test]
fn a_temporal_join_of_two_keyed_streams_enriches_every_click_once() {
    for (module, parallelism) in [("enrich", 1), ("enrich", 2), ("enrich", 4), ("enrich_py", 2)] {
        let dir = tempfile::tempdir().unwrap();
        let job = join_job(dir.path(), parallelism, "", "");
        let job = write_job(dir.path(), &in_module(&job, module));
        let run = weir(&["run", &job, "--listen", "none"]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert_join_exact(dir.path(), &format!("{module} at parallelism {parallelism}"));
    }
}

/// The job file at `job` with its join done by `module`.
fn in_module(job: &str, module: &str) -> String {
    std::fs::read_to_string(job).unwrap().replace("operators/enrich.wasm", &format!("operators/{module}.wasm"))
}

/// The join stopped with a savepoint midway at parallelism 2 and resumed at 3 with the join in
/// Python: its pending clicks and profile versions (the same layout in both) go on, and every
/// click is enriched or set aside once.
#[test]
fn a_join_stopped_with_a_savepoint_goes_on_rescaled_and_in_python() {
    let dir = tempfile::tempdir().unwrap();
    let job = join_job(dir.path(), 2, "rate = 1500\n", "");
    let running = Running::start(&job, &[]);
    std::thread::sleep(Duration::from_millis(700));
    let savepoint = running.cli(&["stop", &running.id, "--savepoint"]);
    drop(running);
    let before = sink_lines(&dir.path().join("enriched")).len();
    assert!(before > 0, "stopped midway: {before} lines");
    let resumed =
        in_module(&job, "enrich_py").replace("parallelism = 2", "parallelism = 3").replace("rate = 1500\n", "");
    let run = weir(&["run", &write_job(dir.path(), &resumed), "--listen", "none", "--from-savepoint", &savepoint]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_join_exact(dir.path(), "resumed in Python at parallelism 3");
}

#[test]
fn killed_again_and_again_a_join_and_its_side_output_commit_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let job = join_job(dir.path(), 2, "rate = 1500\n", KILLED_CHECKPOINTING);
    killed_then_resumed(dir.path(), "enrich", &job);
    assert_join_exact(dir.path(), "after kills");
}

#[test]
fn a_server_runs_a_join_and_shows_its_side_output_edge() {
    let dir = tempfile::tempdir().unwrap();
    let job = join_job(dir.path(), 2, "", "");
    let server = Server::start(&dir.path().join("server"), &[]);
    let submitted = server.cli(&["submit", &job]);
    assert_eq!(submitted.code, 0, "{}", submitted.stderr);
    let ended = server.wait_for_job(submitted.stdout.trim());
    assert_eq!(ended["state"], "finished", "{ended}");
    assert_join_exact(dir.path(), "on weir serve");
    let vertex = |uid: &str| ended["vertices"].as_array().unwrap().iter().find(|v| v["uid"] == uid).unwrap().clone();
    let inputs = |uid: &str| -> Vec<String> {
        let v = vertex(uid);
        v["inputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| format!("{} {} {}", i["from"], i["output"], i["partitioning"]))
            .collect()
    };
    assert_eq!(inputs("unmatched"), ["\"enrich\" \"unmatched\" \"forward\""], "{ended}");
    assert_eq!(inputs("enriched"), ["\"enrich\" null \"forward\""]);
    assert_eq!(inputs("enrich"), ["\"clicks-by-user\" null \"hash\"", "\"profiles-by-user\" null \"hash\""]);
}

#[test]
fn broadcast_rules_reach_every_subtask_and_are_restored_into_each_at_another_parallelism() {
    const N: usize = 6000;
    let dir = tempfile::tempdir().unwrap();
    generated_clicks(&dir.path().join("clicks.jsonl"), N, 50);
    let rules = rules_file(dir.path(), N);
    let (counts, alerts) = expected_rules(&dir.path().join("clicks.jsonl"), "user", &rules);
    assert!(!alerts.is_empty());
    // All at once, at parallelism 1 and 3, and in Python at 2: every subtask applies the rules it
    // was broadcast.
    for (module, parallelism) in [("rules", 1), ("rules", 3), ("rules_py", 2)] {
        let sub = dir.path().join(format!("{module}-p{parallelism}"));
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::copy(dir.path().join("clicks.jsonl"), sub.join("clicks.jsonl")).unwrap();
        let job = std::fs::read_to_string(rules_job(&sub, N, parallelism, None)).unwrap();
        let job = write_job(&sub, &job.replace("operators/rules.wasm", &format!("operators/{module}.wasm")));
        let run = weir(&["run", &job, "--listen", "none"]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        let what = |sink: &str| format!("{module} at parallelism {parallelism}: {sink}");
        weir_e2e::assert_lines(&sink_lines(&sub.join("counts")), &counts, &what("counts"));
        weir_e2e::assert_lines(&sink_lines(&sub.join("alerts")), &alerts, &what("alerts"));
    }
    // Stopped with a savepoint at parallelism 2 once the rules were read, and resumed at 3: the
    // third subtask never read a rule, and applies them from the savepoint's broadcast state.
    rescaled_from_a_savepoint(dir.path(), "", &[], (&counts, &alerts));
}

/// The same with RocksDB state and a native savepoint: the broadcast state is beside the
/// database's files, once for the operator.
#[test]
fn broadcast_state_is_restored_from_a_native_savepoint_of_rocksdb_at_another_parallelism() {
    const N: usize = 6000;
    let dir = tempfile::tempdir().unwrap();
    generated_clicks(&dir.path().join("clicks.jsonl"), N, 50);
    let rules = rules_file(dir.path(), N);
    let expected = expected_rules(&dir.path().join("clicks.jsonl"), "user", &rules);
    let rocksdb = "[state]\nbackend = \"rocksdb\"\n";
    rescaled_from_a_savepoint(dir.path(), rocksdb, &["--format", "native"], (&expected.0, &expected.1));
}

/// Runs the rules job over 6,000 clicks in `dir` at parallelism 2 (with `extra` after its
/// tables), stops it with a savepoint (`stop_args` added) once the rules were read, checks that
/// the savepoint holds them once, and resumes it at parallelism 3: every count and alert once.
fn rescaled_from_a_savepoint(dir: &Path, extra: &str, stop_args: &[&str], (counts, alerts): (&[String], &[String])) {
    const N: usize = 6000;
    let text = std::fs::read_to_string(rules_job(dir, N, 2, Some(3000))).unwrap();
    let job = write_job(dir, &format!("{text}\n{extra}"));
    let running = Running::start(&job, &[]);
    std::thread::sleep(Duration::from_millis(800));
    let savepoint = running.cli(&[&["stop", running.id.as_str(), "--savepoint"][..], stop_args].concat());
    drop(running);
    let before = sink_lines(&dir.join("counts")).len();
    assert!(before > 0 && before < counts.len(), "stopped midway: {before} lines");
    // The savepoint holds the rules once, for every subtask.
    let inspected = weir(&["savepoint", "inspect", &savepoint, "--operator", "count", "--state", "rules"]);
    assert_eq!(inspected.code, 0, "{}", inspected.stderr);
    let entry = |key: &str, from: usize, max: u64| {
        format!(r#"{{"operator":"count","state":"rules","key":null,"map-key":"[\"{key}\",{from}]","value":{max}}}"#)
    };
    assert_eq!(
        inspected.stdout.lines().collect::<Vec<_>>(),
        [entry("*", 0, 20), entry("*", N / 2, 40), entry("u3", N / 3, 10), entry("u7", 0, 5)]
    );
    let rescaled =
        write_job(dir, &std::fs::read_to_string(&job).unwrap().replace("parallelism = 2", "parallelism = 3"));
    let run = weir(&["run", &rescaled, "--listen", "none", "--from-savepoint", &savepoint]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    weir_e2e::assert_lines(&sink_lines(&dir.join("counts")), counts, "restored: counts exactly once");
    weir_e2e::assert_lines(&sink_lines(&dir.join("alerts")), alerts, "restored: alerts exactly once");
}

#[test]
fn a_module_built_against_0_3_0_runs_unchanged_and_upgrades_to_0_4_0_through_a_savepoint() {
    let dir = tempfile::tempdir().unwrap();
    let clicks = dir.path().join("clicks.jsonl");
    generated_clicks(&clicks, CLICKS, 50);
    let out = dir.path().join("counts");
    let line = |count: &str, rate: &str| {
        let text = weir_e2e::clicks_job(&clicks, count, 2, &out);
        write_job(dir.path(), &text.replacen("path = ", &format!("{rate}path = "), 1))
    };
    let old = weir(&["run", &line("test/count-0.3.0", ""), "--listen", "none"]);
    assert_eq!(old.code, 0, "{}", old.stderr);
    assert_eq!(sink_lines(&out), expected_lines(&expected_counts(&clicks)), "0.3.0 count");
    std::fs::remove_dir_all(&out).unwrap();

    let running = Running::start(&line("test/count-0.3.0", "rate = 3000\n"), &[]);
    std::thread::sleep(Duration::from_millis(700));
    let savepoint = running.cli(&["stop", &running.id, "--savepoint"]);
    drop(running);
    let new = weir(&["run", &line("count", ""), "--listen", "none", "--from-savepoint", &savepoint]);
    assert_eq!(new.code, 0, "{}", new.stderr);
    assert_eq!(sink_lines(&out), expected_lines(&expected_counts(&clicks)), "0.3.0, then 0.4.0 from its savepoint");
}

#[test]
fn broadcast_state_is_written_only_from_a_broadcast_input_and_only_so_much() {
    let dir = tempfile::tempdir().unwrap();
    let misbehaving = |uid: &str, partitioning: &str| {
        let inputs = format!("inputs = [{{ from = \"events\", partitioning = \"{partitioning}\" }}]");
        let text = job(
            uid,
            2,
            &[
                weir_e2e::generator_source("events", 100, 10),
                wasm_operator("shared", "test/misbehave", &["config = { do = \"hoard-broadcast\" }", &inputs]),
                format!("{}inputs = [{{ from = \"shared\" }}]\n", weir_e2e::blackhole_sink("out")),
            ],
        );
        weir(&["run", &write_job(dir.path(), &text), "--listen", "none"])
    };
    // A stream each subtask reads a part of would leave the subtasks' copies different.
    let forward = misbehaving("forward", "forward");
    assert_failed_with(
        &forward,
        &["operator 'shared'", "wrote broadcast state #1 while processing an input that is not broadcast"],
    );
    // Every subtask holds a copy: 16 MiB at most.
    let broadcast = misbehaving("broadcast", "broadcast");
    assert_failed_with(&broadcast, &["operator 'shared'", "broadcast state would grow past 16 MiB"]);
}

/// The rules job on `weir serve`, its two-input operator tried (recent input replayed through both
/// modules), swapped for a copy of its module under load and then rolled back by hand: its broadcast state (read once, before the swap, from a
/// source that has ended) goes over with the keyed state each time, and every count and alert
/// is committed once.
#[test]
fn a_two_input_operator_upgraded_and_rolled_back_keeps_its_broadcast_state() {
    const N: usize = 6000;
    let dir = tempfile::tempdir().unwrap();
    let job = rules_job(dir.path(), N, 2, Some(2000));
    let text = std::fs::read_to_string(&job).unwrap();
    let job =
        write_job(dir.path(), &format!("{text}\n[checkpointing]\ninterval = \"200ms\"\nstorage = \"file://chk\"\n"));
    let (counts, alerts) = expected_rules(&dir.path().join("clicks.jsonl"), "user", &dir.path().join("rules.jsonl"));
    let copy = dir.path().join("rules-copy.wasm");
    std::fs::copy(operator("rules"), &copy).unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let id = server.cli(&["submit", &job]).stdout.trim().to_string();
    std::thread::sleep(Duration::from_millis(700));
    // The trial replays recent clicks through both modules on their key groups' state, the
    // rules (broadcast state) included: the same module does the same (the counts come out
    // with the watermark, which the replay does not advance).
    let operator = format!("count={}", copy.display());
    let tried = server.cli(&["--json", "upgrade", &id, "--trial", "--operator", &operator]);
    assert_eq!(tried.code, 0, "{}", tried.stderr);
    let trial: serde_json::Value = serde_json::from_str(&tried.stdout).unwrap();
    assert_eq!(trial["passed"], true, "{trial}");
    let replayed = trial["operators"][0]["replayed"].as_array().unwrap();
    assert!(!replayed.is_empty(), "{trial}");
    assert!(replayed.iter().all(|r| r["old"] == r["new"] && r["error"].is_null()), "{trial}");
    let swapped = server.cli(&["upgrade", &id, "--operator", &operator]);
    assert_eq!(swapped.code, 0, "{}", swapped.stderr);
    std::thread::sleep(Duration::from_millis(500));
    let rolled = server.cli(&["upgrade", &id, "--rollback"]);
    assert_eq!(rolled.code, 0, "{}", rolled.stderr);
    let ended = server.wait_for_job(&id);
    assert_eq!(ended["state"], "finished", "{ended}");
    let history: Vec<&str> =
        ended["history"].as_array().unwrap().iter().map(|h| h["event"].as_str().unwrap()).collect();
    assert_eq!(history, ["started", "upgraded", "rolled-back"], "{ended}");
    weir_e2e::assert_lines(&sink_lines(&dir.path().join("counts")), &counts, "counts");
    weir_e2e::assert_lines(&sink_lines(&dir.path().join("alerts")), &alerts, "alerts");
}

/// A second run of the enrich job into the same directories adds its output beside the first's,
/// which stays as it was; the side output's sink too.
#[test]
fn a_second_run_of_a_join_adds_to_each_sink_beside_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let job = join_job(dir.path(), 2, "", "");
    let first = weir(&["run", &job, "--listen", "none"]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    let parts = |sink: &str| weir_e2e::part_files(&dir.path().join(sink));
    let (enriched, unmatched) = (parts("enriched"), parts("unmatched"));
    let second = weir(&["run", &job, "--listen", "none"]);
    assert_eq!(second.code, 0, "{}", second.stderr);
    let (expected_enriched, expected_unmatched) =
        expected_join(&dir.path().join("join-clicks.jsonl"), &dir.path().join("profiles.jsonl"));
    for (sink, before, expected) in
        [("enriched", enriched, expected_enriched), ("unmatched", unmatched, expected_unmatched)]
    {
        let after = parts(sink);
        assert!(before.iter().all(|p| after.contains(p)), "{sink}: the first run's files stay");
        let twice: Vec<String> = expected.iter().flat_map(|l| [l.clone(), l.clone()]).collect();
        weir_e2e::assert_lines(&sink_lines(&dir.path().join(sink)), &twice, &format!("{sink}: both runs"));
    }
}

/// The rules job killed again and again, its keyed state in RocksDB with incremental checkpoints
/// and its broadcast state beside them, then resumed from its latest checkpoint: every count and
/// alert once.
#[test]
fn killed_again_and_again_broadcast_rules_in_rocksdb_commit_exactly_once() {
    const N: usize = 6000;
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(rules_job(dir.path(), N, 2, Some(2000))).unwrap();
    let rocksdb = "[state]\nbackend = \"rocksdb\"\nincremental = true\n";
    let job = write_job(dir.path(), &format!("{text}\n{KILLED_CHECKPOINTING}\n{rocksdb}"));
    killed_then_resumed(dir.path(), "rules", &job);
    let (counts, alerts) = expected_rules(&dir.path().join("clicks.jsonl"), "user", &dir.path().join("rules.jsonl"));
    weir_e2e::assert_lines(&sink_lines(&dir.path().join("counts")), &counts, "counts after kills");
    weir_e2e::assert_lines(&sink_lines(&dir.path().join("alerts")), &alerts, "alerts after kills");
}
