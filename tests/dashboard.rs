//! The web dashboard, driven in Debian's headless Chromium by `tests/dashboard/drive.mjs`
//! (playwright-core from the lockfile): token, job list, operator graph, live checkpoints, a
//! savepoint from the savepoints page and a fork from it. Screenshots of each page go to
//! `target/dashboard-screenshots/`. Also the API the dashboard adds: disposing of savepoints,
//! comparing two jobs, the jobs running each module; and the page on `weir run`.
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use weir_e2e::{
    Running, Server, blackhole_sink, file_sink, generator_source, get_text, job, operator, repo, wasm_operator,
    write_job,
};

const CHROMIUM: &str = "/usr/bin/chromium";

/// A generated job of `events` events at 2,000 events/s, counted at parallelism 2, into
/// `sink`, checkpointing every 300 ms.
fn slow_job(dir: &Path, name: &str, events: u64, sink: String) -> String {
    let source = generator_source("events", events, 50).replace("keys = 50\n", "keys = 50\nrate = 2000\n");
    let text = job(name, 2, &[source, wasm_operator("count", "count", &["input = \"hash\""]), sink]);
    let text = format!("{text}\n[checkpointing]\ninterval = \"300ms\"\nstorage = \"file://chk\"\n");
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn a_user_watches_savepoints_and_forks_a_job_in_the_browser() {
    assert!(Path::new(CHROMIUM).exists(), "{CHROMIUM} is missing: `cargo xtask build` installs Debian's chromium");
    let dir = tempfile::tempdir().unwrap();
    let token = "d4shboard";
    let allowed = dir.path().to_string_lossy().into_owned();
    let server = Server::start(&dir.path().join("data"), &["--token", token, "--allow-dir", &allowed]);
    let job = slow_job(dir.path(), "clickstream", 1_000_000, blackhole_sink("out"));
    // A comment the restore dialog must keep: `weir submit` sends the job file as written.
    let text = std::fs::read_to_string(&job).unwrap();
    std::fs::write(&job, format!("# clickstream: events counted per key\n{text}")).unwrap();
    let submitted = server.cli(&["--token", token, "submit", &job]);
    assert_eq!(submitted.code, 0, "{}", submitted.stderr);
    let id = submitted.stdout.trim().to_string();
    // A job that fails twice (once, then its one restart), what its guest wrote in each cause.
    let failing = weir_e2e::job(
        "chatter",
        1,
        &[
            generator_source("events", 10, 2),
            wasm_operator("chatter", "test/misbehave", &["input = \"hash\"", "config = { do = \"chatter\" }"]),
            blackhole_sink("out"),
        ],
    );
    let failing = write_job(
        dir.path(),
        &format!("{failing}\n[restart]\nstrategy = \"fixed-delay\"\nattempts = 1\ndelay = \"10ms\"\n"),
    );
    let failed = server.cli(&["--token", token, "submit", &failing]).stdout.trim().to_string();
    let record = wait_for_job(&server, &failed, token);
    assert_eq!(record["failures"].as_array().map(Vec::len), Some(2), "{record}");

    // Without the token, the API refuses; the page itself holds no data and asks for it.
    assert_eq!(server.get_text("/v1/jobs", None).0, 401);
    let (status, page) = server.get_text("/", None);
    assert_eq!(status, 200);
    assert!(page.contains("/dashboard/app.js") && !page.contains(&id), "{page}");

    let result = drive("serve", &server.url, Some(token), &[("JOB_ID", &id), ("FAILED_ID", &failed)], "clickstream");
    // What the browser did, as the API sees it.
    let (_, library) = server.http("GET", "/v1/savepoints", b"", Some(token));
    let savepoints = library["savepoints"].as_array().unwrap();
    // The one taken in the browser, and the upgrade's and the rollback's.
    let reasons: Vec<&str> = savepoints.iter().map(|s| s["reason"].as_str().unwrap()).collect();
    assert_eq!(reasons, ["user", "upgrade", "rollback"], "{library}");
    assert_eq!(savepoints[0]["location"], result["savepoint"]);
    assert_eq!(savepoints[0]["job-id"], id.as_str());
    assert_eq!(savepoints[0]["format"], "canonical");
    let fork = result["fork"].as_str().unwrap();
    assert_eq!(savepoints[0]["forks"], serde_json::json!([fork]));
    let (_, forked) = server.http("GET", &format!("/v1/jobs/{fork}"), b"", Some(token));
    assert_eq!(forked["name"], "clickstream-fork");
    assert_eq!(forked["state"], "running");
    assert_eq!(forked["lineage"]["job"], "clickstream");
    assert_eq!(forked["lineage"]["savepoint"], result["savepoint"]);
    screenshots_taken(
        "serve",
        &["jobs", "job", "subtasks", "exceptions", "checkpoints", "savepoints", "restored", "modules", "upgrades"],
    );
    // The savepoint is the fork's way back until it checkpoints on its own: not disposed of yet.
    let location = result["savepoint"].as_str().unwrap();
    let query = format!("/v1/savepoints?location={}", location.replace('/', "%2F"));
    let (status, refused) = server.http("DELETE", &query, b"", Some(token));
    assert_eq!(status, 409, "{refused}");
    assert!(refused["error"].as_str().unwrap().contains(&format!("job {fork} (clickstream-fork) is running")));
    for job in [&id, fork] {
        assert_eq!(server.cli(&["--token", token, "cancel", job]).code, 0);
    }
}

/// Polls job `id` until it ends; returns its record.
fn wait_for_job(server: &Server, id: &str, token: &str) -> serde_json::Value {
    let started = std::time::Instant::now();
    loop {
        let (_, record) = server.http("GET", &format!("/v1/jobs/{id}"), b"", Some(token));
        if ["finished", "canceled", "failed"].contains(&record["state"].as_str().unwrap_or("")) {
            return record;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "job {id} did not end: {record}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Where the browser runs leave their screenshots.
fn screenshots() -> std::path::PathBuf {
    repo().join("target/dashboard-screenshots")
}

/// Runs `tests/dashboard/drive.mjs`'s `flow` against the server at `url` (job `id`, named
/// `name`); returns what it printed of what it did.
fn drive(flow: &str, url: &str, token: Option<&str>, ids: &[(&str, &str)], name: &str) -> serde_json::Value {
    let screenshots = screenshots();
    std::fs::create_dir_all(&screenshots).unwrap();
    for stale in std::fs::read_dir(&screenshots).unwrap().flatten() {
        if stale.file_name().to_string_lossy().starts_with(&format!("{flow}-")) {
            let _ = std::fs::remove_file(stale.path());
        }
    }
    let driven = Command::new("node")
        .arg(repo().join("tests/dashboard/drive.mjs"))
        .env("FLOW", flow)
        .env("WEIR_URL", url)
        .env("WEIR_TOKEN", token.unwrap_or_default())
        .envs(ids.iter().copied())
        .env("JOB_NAME", name)
        .env("SCREENSHOTS", &screenshots)
        .env("CHROMIUM", CHROMIUM)
        .env("COUNT_V2", operator("count_v2"))
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&driven.stdout);
    assert!(driven.status.success(), "the browser run failed:\n{stdout}\n{}", String::from_utf8_lossy(&driven.stderr));
    serde_json::from_str(stdout.trim()).expect("the driver's result")
}

/// Checks that flow `flow` left a screenshot of each of `pages`.
fn screenshots_taken(flow: &str, pages: &[&str]) {
    for name in pages {
        let shot = screenshots().join(format!("{flow}-{name}.png"));
        assert!(std::fs::metadata(&shot).map(|m| m.len() > 10_000).unwrap_or(false), "{}", shot.display());
    }
}

#[test]
fn the_api_behind_the_dashboard_disposes_compares_and_lists_module_users() {
    let dir = tempfile::tempdir().unwrap();
    let allowed = dir.path().to_string_lossy().into_owned();
    let server = Server::start(&dir.path().join("data"), &["--allow-dir", &allowed]);
    let (a_out, b_out) = (dir.path().join("a-out"), dir.path().join("b-out"));
    let a = slow_job(dir.path(), "blue", 200_000, file_sink("out", &a_out));
    let a = server.cli(&["submit", &a]).stdout.trim().to_string();

    // The module store says which jobs run each module.
    let (_, modules) = server.http("GET", "/v1/modules", b"", None);
    assert_eq!(modules["modules"][0]["jobs"], serde_json::json!([a]), "{modules}");

    let (status, answer) = server.http("POST", &format!("/v1/jobs/{a}/savepoints"), b"", None);
    assert_eq!(status, 202, "{answer}");
    let location = loop {
        let trigger = answer["request-id"].as_str().unwrap();
        let (_, status) = server.http("GET", &format!("/v1/jobs/{a}/savepoints/{trigger}"), b"", None);
        match status["status"].as_str().unwrap() {
            "in-progress" => std::thread::sleep(Duration::from_millis(50)),
            "completed" => break status["location"].as_str().unwrap().to_string(),
            _ => panic!("{status}"),
        }
    };
    assert!(Path::new(&location).join("_metadata").exists());
    server.cli(&["cancel", &a]);
    server.wait_for_job(&a);

    // Two finished jobs of different lengths compared: the shorter's keys differ.
    let a_done = slow_job(dir.path(), "green", 3_000, file_sink("out", &a_out.with_extension("done")));
    let b_done = slow_job(dir.path(), "red", 2_000, file_sink("out", &b_out));
    let x = server.cli(&["submit", &a_done]).stdout.trim().to_string();
    let y = server.cli(&["submit", &b_done]).stdout.trim().to_string();
    assert_eq!(server.wait_for_job(&x)["state"], "finished");
    assert_eq!(server.wait_for_job(&y)["state"], "finished");
    let (status, comparison) = server.http("GET", &format!("/v1/compare?a={x}&b={y}"), b"", None);
    assert_eq!(status, 200, "{comparison}");
    assert_eq!(comparison["matching-keys"].as_u64().unwrap() + comparison["differing-keys"].as_u64().unwrap(), 50);
    assert_eq!(comparison["differing-keys"], 50, "every key counted further in green: {comparison}");
    let (status, same) = server.http("GET", &format!("/v1/compare?a={x}&b={x}"), b"", None);
    assert_eq!((status, same["differing-keys"].as_u64()), (200, Some(0)));
    let (status, error) = server.http("GET", &format!("/v1/compare?a={x}&b=0123"), b"", None);
    assert_eq!(status, 404, "{error}");
    assert!(error["error"].as_str().unwrap().contains("no job with id 0123"));
    let (status, error) = server.http("GET", "/v1/compare?a=1", b"", None);
    assert_eq!(status, 400, "{error}");

    // Disposing: an unknown location is refused and nothing is deleted; a listed one goes.
    let (status, error) = server.http("DELETE", "/v1/savepoints?location=/etc", b"", None);
    assert_eq!(status, 404, "{error}");
    assert!(error["error"].as_str().unwrap().contains("no savepoint of this server's jobs is at /etc"));
    let query = format!("/v1/savepoints?location={}", location.replace('/', "%2F"));
    let (status, disposed) = server.http("DELETE", &query, b"", None);
    assert_eq!(status, 200, "{disposed}");
    assert!(!Path::new(&location).exists(), "{location} is gone");
    let (_, library) = server.http("GET", "/v1/savepoints", b"", None);
    assert_eq!(library["savepoints"], serde_json::json!([]));
    let (status, _) = server.http("DELETE", &query, b"", None);
    assert_eq!(status, 404, "disposed of once");
}

#[test]
fn weir_run_serves_the_dashboard_for_its_job() {
    let dir = tempfile::tempdir().unwrap();
    let job = write_job(
        dir.path(),
        &job(
            "solo",
            1,
            &[
                generator_source("events", 1_000_000, 10).replace("keys = 10\n", "keys = 10\nrate = 10000\n"),
                wasm_operator("count", "count", &["input = \"hash\""]),
                blackhole_sink("out"),
            ],
        ),
    );
    let running = Running::start(&job, &[]);
    let (status, page) = get_text(&format!("{}/", running.server), None);
    assert_eq!(status, 200);
    assert!(page.contains("<script type=\"module\" src=\"/dashboard/app.js\">"), "{page}");
    for asset in [
        "app.js",
        "api.js",
        "ui.js",
        "jobs.js",
        "checkpoints.js",
        "savepoints.js",
        "upgrades.js",
        "modules.js",
        "compare.js",
        "style.css",
    ] {
        let (status, text) = get_text(&format!("{}/dashboard/{asset}", running.server), None);
        assert_eq!(status, 200, "{asset}: {text}");
    }
    let (status, missing) = get_text(&format!("{}/dashboard/nope.js", running.server), None);
    assert_eq!(status, 404);
    assert!(missing.contains("the dashboard has no file nope.js"), "{missing}");
    let (_, jobs) = get_text(&format!("{}/v1/jobs", running.server), None);
    assert!(jobs.contains("\"events-written\""), "{jobs}");

    // In the browser: an upgrade of the one job, and a restore `weir run` refuses as its API says.
    assert!(Path::new(CHROMIUM).exists(), "{CHROMIUM} is missing: `cargo xtask build` installs Debian's chromium");
    drive("run", &running.server, None, &[("JOB_ID", &running.id)], "solo");
    screenshots_taken("run", &["jobs", "shadow", "canary", "upgrades", "refused"]);
    let (_, job) = get_text(&format!("{}/v1/jobs/{}", running.server, running.id), None);
    let job: serde_json::Value = serde_json::from_str(&job).unwrap();
    let history: Vec<&str> = job["history"].as_array().unwrap().iter().map(|h| h["event"].as_str().unwrap()).collect();
    // The canary's start, its abort by rollback, then the upgrade.
    assert_eq!(history, ["started", "upgraded", "rolled-back", "upgraded"], "{job}");
    assert!(job["history"][3]["pause-ms"].as_f64().is_some(), "the pause is recorded: {job}");
    assert_eq!(job["state"], "running");
}

#[test]
fn the_dashboard_draws_a_branching_job_in_topological_order_with_labelled_edges() {
    let dir = tempfile::tempdir().unwrap();
    let source = generator_source("events", 10_000_000, 10).replace(
        "keys = 10\n",
        "keys = 10\nrate = 5000\nevent-time-step = \"1ms\"\nwatermarks = { out-of-orderness = \"0s\" }\n",
    );
    // Written out of order: the graph is drawn by what reads what, not by the file's order.
    let text = job(
        "branches",
        2,
        &[
            source,
            wasm_operator("count", "count", &["inputs = [{ from = \"filtered\", partitioning = \"hash\" }]"]),
            wasm_operator(
                "filtered",
                "filter",
                &["config = { field = \"seq\" }", "inputs = [{ from = \"events\", partitioning = \"rebalance\" }]"],
            ),
            wasm_operator(
                "windows",
                "window_count",
                &["config = { size = \"10s\" }", "inputs = [{ from = \"events\", partitioning = \"hash\" }]"],
            ),
            format!("{}inputs = [{{ from = \"count\" }}]\n", blackhole_sink("counts")),
            format!("{}inputs = [{{ from = \"events\" }}]\n", blackhole_sink("raw")),
            format!("{}inputs = [{{ from = \"windows.late\" }}]\n", blackhole_sink("late")),
        ],
    );
    let running = Running::start(&write_job(dir.path(), &text), &[]);
    let (_, job) = get_text(&format!("{}/v1/jobs/{}", running.server, running.id), None);
    let job: serde_json::Value = serde_json::from_str(&job).unwrap();
    let count = job["vertices"].as_array().unwrap().iter().find(|v| v["uid"] == "count").unwrap().clone();
    assert_eq!(
        count["inputs"],
        serde_json::json!([{ "from": "filtered", "partitioning": "hash", "backpressured-ms": 0 }]),
        "{job}"
    );

    let late = job["vertices"].as_array().unwrap().iter().find(|v| v["uid"] == "late").unwrap().clone();
    assert_eq!(
        late["inputs"],
        serde_json::json!([{ "from": "windows", "output": "late", "partitioning": "forward", "backpressured-ms": 0 }]),
        "{job}"
    );

    let drawn = drive("graph", &running.server, None, &[("JOB_ID", &running.id)], "branches");
    assert_eq!(
        drawn["columns"],
        serde_json::json!([["events"], ["filtered", "windows", "raw"], ["count", "late"], ["counts"]]),
        "{drawn}"
    );
    assert_eq!(
        drawn["edges"],
        serde_json::json!({
            "events": [],
            "filtered": ["events REBALANCE"],
            "windows": ["events HASH"],
            "raw": ["events FORWARD"],
            "late": ["windows.late FORWARD"],
            "count": ["filtered HASH"],
            "counts": ["count FORWARD"],
        }),
        "{drawn}"
    );
    screenshots_taken("graph", &["job"]);
}

#[test]
fn the_dashboard_shows_the_events_an_operator_set_aside() {
    let dir = tempfile::tempdir().unwrap();
    let source = generator_source("events", 10_000_000, 10).replace("keys = 10\n", "keys = 10\nrate = 2000\n");
    let on_error = "on-error = { action = \"quarantine\", max-per-minute = 100000 }";
    let text = job(
        "poisoned",
        1,
        &[
            source,
            wasm_operator("count", "test/poison", &["input = \"hash\"", "config = { key = \"k3\" }", on_error]),
            format!("{}inputs = [{{ from = \"count\" }}]\n", blackhole_sink("counts")),
            format!("{}inputs = [{{ from = \"count.quarantine\" }}]\n", blackhole_sink("set-aside")),
        ],
    );
    let running = Running::start(&write_job(dir.path(), &text), &[]);
    let shown = drive("quarantine", &running.server, None, &[("JOB_ID", &running.id)], "poisoned");
    assert!(shown["quarantined"].as_u64().is_some_and(|n| n > 0), "{shown}");
    assert_eq!(shown["edge"], "count.quarantine FORWARD", "{shown}");
    screenshots_taken("quarantine", &["quarantine"]);
}
