//! Jobs as dataflow graphs: operators and sinks name their `inputs`, a stream read by several
//! feeds each whole, partitionings forward, hash, rebalance and broadcast. Outputs are compared
//! line by line with what the test computes from the input, after kills, through savepoints and
//! on `weir serve`; bad graphs are refused naming the vertex at fault.
use std::path::Path;
use std::time::Duration;

use weir_e2e::{
    Running, Server, assert_failed_with, completed_checkpoints, counts_by_version, expected_counts, expected_lines,
    expected_lines_after, file_sink, file_source, generated_clicks, job, kill_repeatedly, operator, saved_counts,
    sink_lines, wasm_operator, weir, write_job,
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

#[test]
fn killed_again_and_again_every_branch_commits_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let checkpointing = "[checkpointing]\ninterval = \"100ms\"\nretained = 3\nstorage = \"file://chk\"\n";
    let job = branching_job(dir.path(), 2, Some(3000), checkpointing);
    let checkpointed = || !completed_checkpoints(&dir.path().join("chk/branches")).is_empty();
    let kills = kill_repeatedly(&job, &[], 3, checkpointed);
    assert!(kills >= 2, "the job was killed {kills} times of 3");
    let resumed = weir(&["run", &job, "--listen", "none", "--from-checkpoint", "latest"]);
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
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
    let spread = |partitioning: &str| {
        write_job(
            dir.path(),
            &job(
                "spread",
                3,
                &[
                    file_source("clicks", &clicks),
                    wasm_operator(
                        "logged-in",
                        "filter",
                        &[
                            "config = { field = \"logged_in\" }",
                            &format!("inputs = [{{ from = \"clicks\", partitioning = \"{partitioning}\" }}]"),
                        ],
                    ),
                    file_sink(partitioning, &dir.path().join(partitioning)),
                ],
            ),
        )
    };
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
