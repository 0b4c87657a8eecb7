//! The Flink runner end to end: a real Flink 2.3 cluster on loopback (`weir flink cluster start`,
//! two TaskManagers), job files submitted with `weir flink run`, each Wasm operator's subtasks
//! served by `weir worker` processes, output compared line by line with what the embedded runtime
//! (or arithmetic) says it must be.
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use weir_e2e::flink::{FlinkCluster, flink_home, worker_pids};
use weir_e2e::*;

const LONG: Duration = Duration::from_secs(600);

/// The job's output lines once it has finished on Flink.
fn finished_lines(cluster: &FlinkCluster, id: &str, out: &Path) -> Vec<String> {
    cluster.wait_for(id, "FINISHED", LONG);
    sink_lines(out)
}

/// `weir run` of `job`: its output lines.
fn embedded_lines(job: &str, out: &Path) -> Vec<String> {
    let run = weir_with_limit(&["run", job], LONG);
    assert_eq!(run.code, 0, "weir run: {}", run.stderr);
    sink_lines(out)
}

/// The window_count job of `examples/window_count` reading `input`, at `parallelism`.
fn window_job(input: &Path, parallelism: u32, out: &Path) -> String {
    let source = format!(
        "{}timestamp-field = \"ts\"\nwatermarks = {{ out-of-orderness = \"2s\" }}\n",
        file_source("clicks", input)
    );
    job(
        "window-count",
        parallelism,
        &[
            source,
            wasm_operator("by-user", "key_by", &["config = { field = \"user\" }"]),
            wasm_operator("windows", "window_count", &["input = \"hash\"", "config = { size = \"10s\" }"]),
            file_sink("out", out),
        ],
    )
}

/// A keyed count of `count` generated events over `keys` keys at `rate` events a second, with
/// checkpoints every 300 ms: long enough to be killed, stopped and moved while it runs.
fn generated_count_job(count: u64, keys: u64, rate: u64, parallelism: u32, out: &Path, backend: &str) -> String {
    let source = format!("{}rate = {rate}\n", generator_source("events", count, keys));
    let mut text = job(
        "generated-count",
        parallelism,
        &[source, wasm_operator("count", "count", &["input = \"hash\""]), file_sink("out", out)],
    );
    text.push_str(&format!("\n[checkpointing]\ninterval = \"300ms\"\n\n[state]\nbackend = \"{backend}\"\n"));
    text
}

/// What a keyed count of generator events 0..count over `keys` keys emits: each key's counts.
fn generated_count_lines(count: u64, keys: u64) -> Vec<String> {
    let mut counts = std::collections::BTreeMap::new();
    for i in 0..count {
        *counts.entry(format!("k{}", i % keys)).or_insert(0) += 1;
    }
    expected_lines(&counts)
}

#[test]
fn the_same_jobs_and_modules_on_flink_give_the_embedded_runtimes_output() {
    let cluster = FlinkCluster::start(2);
    let dir = tempfile::tempdir().unwrap();
    let clicks = repo().join("examples/clicks/clicks.jsonl");
    let expected = expected_lines(&expected_counts(&clicks));

    // The clicks job at parallelism 4 over two TaskManagers, with the count module in each
    // language, unchanged.
    for module in ["count", "count_py", "count_js"] {
        let out = dir.path().join(format!("out-{module}"));
        let job_dir = dir.path().join(module);
        std::fs::create_dir_all(&job_dir).unwrap();
        let job = write_job(&job_dir, &clicks_job(&clicks, module, 4, &out));
        let id = cluster.run(&job, &[]);
        assert_eq!(id.len(), 32, "a Flink job id: {id}");
        assert_lines(&finished_lines(&cluster, &id, &out), &expected, module);
    }
    let listed = cluster.cli(&["flink", "list"]);
    assert_eq!(listed.stdout.lines().filter(|l| l.contains("FINISHED") && l.contains("clicks-per-user")).count(), 3);

    // Event-time timers: window_count's windows, at parallelism 4 on Flink and 2 embedded.
    let (flink_out, embedded_out) = (dir.path().join("windows-flink"), dir.path().join("windows-embedded"));
    let on_flink = write_job(&dir.path().join("windows-flink-job").tap_mkdir(), &window_job(&clicks, 4, &flink_out));
    let embedded = write_job(&dir.path().join("windows-job").tap_mkdir(), &window_job(&clicks, 2, &embedded_out));
    let id = cluster.run(&on_flink, &[]);
    let windows = embedded_lines(&embedded, &embedded_out);
    assert_eq!(windows.len(), 30, "window_count's windows: {windows:?}");
    assert_lines(&finished_lines(&cluster, &id, &flink_out), &windows, "window_count on Flink");

    // Processing-time timers: idle_timeout over its paced sessions.
    let sessions = repo().join("examples/idle_timeout/sessions.jsonl");
    let idle_job = |out: &Path| {
        let source = format!("{}rate = 50\n", file_source("sessions", &sessions));
        job(
            "idle-sessions",
            1,
            &[
                source,
                wasm_operator("by-user", "key_by", &["config = { field = \"user\" }"]),
                wasm_operator("idle", "idle_timeout", &["input = \"hash\"", "config = { timeout = \"500ms\" }"]),
                file_sink("out", out),
            ],
        )
    };
    let (flink_out, embedded_out) = (dir.path().join("idle-flink"), dir.path().join("idle-embedded"));
    let id = cluster.run(&write_job(&dir.path().join("idle-flink-job").tap_mkdir(), &idle_job(&flink_out)), &[]);
    let idle =
        embedded_lines(&write_job(&dir.path().join("idle-job").tap_mkdir(), &idle_job(&embedded_out)), &embedded_out);
    assert!(!idle.is_empty(), "idle_timeout emitted nothing");
    assert_lines(&finished_lines(&cluster, &id, &flink_out), &idle, "idle_timeout on Flink");

    // Map and list state, asked of Flink's state by the worker during each guest call.
    let pages_job = |out: &Path| {
        job(
            "pages-seen",
            1,
            &[
                file_source("clicks", &clicks),
                wasm_operator("by-user", "key_by", &["config = { field = \"user\" }"]),
                wasm_operator("pages", "test/pages_seen", &["input = \"hash\""]),
                file_sink("out", out),
            ],
        )
    };
    let (flink_out, embedded_out) = (dir.path().join("pages-flink"), dir.path().join("pages-embedded"));
    let id = cluster.run(&write_job(&dir.path().join("pages-flink-job").tap_mkdir(), &pages_job(&flink_out)), &[]);
    let pages =
        embedded_lines(&write_job(&dir.path().join("pages-job").tap_mkdir(), &pages_job(&embedded_out)), &embedded_out);
    assert!(pages.iter().any(|l| l.contains(r#""distinct":3"#)), "pages_seen's map grew: {pages:?}");
    assert_lines(&finished_lines(&cluster, &id, &flink_out), &pages, "map and list state on Flink");

    // A worker binary that cannot start fails the task, naming it.
    let out = dir.path().join("no-worker-out");
    let job = write_job(&dir.path().join("no-worker").tap_mkdir(), &clicks_job(&clicks, "count", 1, &out));
    let id = cluster.run(&job, &["--worker", "/nonexistent/weir"]);
    let started = Instant::now();
    let exceptions = loop {
        let exceptions = cluster.get(&format!("/jobs/{id}/exceptions")).to_string();
        if exceptions.contains("cannot start the weir worker") || started.elapsed() > Duration::from_secs(120) {
            break exceptions;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(exceptions.contains("cannot start the weir worker '/nonexistent/weir'"), "{exceptions}");
    let canceled = cluster.cli(&["flink", "cancel", &id]);
    assert_eq!(canceled.code, 0, "{}", canceled.stderr);
}

#[test]
fn killed_taskmanager_and_killed_worker_leave_exactly_once_output() {
    let cluster = FlinkCluster::start(2);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let (count, keys) = (240_000, 100);
    let job = write_job(dir.path(), &generated_count_job(count, keys, 20_000, 4, &out, "memory"));
    let id = cluster.run(&job, &[]);
    let checkpoints = |n| cluster.wait_for_checkpoints(&id, n);
    cluster.wait_for(&id, "RUNNING", LONG);
    checkpoints(3);
    // A TaskManager killed mid-run, another started in its place.
    let taskmanagers = cluster.taskmanager_pids();
    assert_eq!(taskmanagers.len(), 2, "two TaskManagers: {taskmanagers:?}");
    let status = Command::new("kill").args(["-9", &taskmanagers[0].to_string()]).status().unwrap();
    assert!(status.success());
    let added = cluster.cli(&["flink", "cluster", "add-taskmanager"]);
    assert_eq!(added.code, 0, "{}", added.stderr);
    let after_kill = cluster.completed_checkpoints(&id);
    checkpoints(after_kill + 3);
    // A worker killed mid-run.
    let workers = worker_pids(&cluster.taskmanager_pids());
    assert!(!workers.is_empty(), "the count's workers run under the TaskManagers");
    let status = Command::new("kill").args(["-9", &workers[0].to_string()]).status().unwrap();
    assert!(status.success());
    let job_after = finished_lines(&cluster, &id, &out);
    let restarts =
        cluster.get(&format!("/jobs/{id}/exceptions"))["exceptionHistory"]["entries"].as_array().map_or(0, Vec::len);
    assert!(restarts >= 2, "Flink restarted the job after each kill: {restarts} exceptions");
    assert_lines(&job_after, &generated_count_lines(count, keys), "the count after two kills");
}

#[test]
fn a_job_stopped_with_a_savepoint_resumes_at_another_parallelism_and_backend() {
    let cluster = FlinkCluster::start(2);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let (count, keys) = (160_000, 50);
    let job =
        write_job(&dir.path().join("first").tap_mkdir(), &generated_count_job(count, keys, 20_000, 2, &out, "memory"));
    let id = cluster.run(&job, &[]);
    cluster.wait_for(&id, "RUNNING", LONG);
    std::thread::sleep(Duration::from_secs(3));
    let stopped = cluster.cli(&["flink", "stop", "--savepoint", &id]);
    assert_eq!(stopped.code, 0, "{}", stopped.stderr);
    let savepoint = stopped.stdout.lines().next().unwrap_or_default().to_string();
    assert!(savepoint.contains("savepoint-"), "a savepoint's location: {savepoint}");
    assert_eq!(cluster.state(&id), "FINISHED");
    let before = sink_lines(&out).len();
    assert!(before > 0 && before < count as usize, "stopped midway: {before} lines");
    // On RocksDB, at parallelism 3, into the same directory.
    let resumed = write_job(
        &dir.path().join("second").tap_mkdir(),
        &generated_count_job(count, keys, 40_000, 2, &out, "rocksdb"),
    );
    let id = cluster.run(&resumed, &["--parallelism", "3", "--from-savepoint", &savepoint]);
    let vertices = cluster.get(&format!("/jobs/{id}"))["vertices"].clone();
    assert!(
        vertices
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["name"].as_str().unwrap_or_default().contains("count") && v["parallelism"] == 3),
        "{vertices}"
    );
    assert_lines(&finished_lines(&cluster, &id, &out), &generated_count_lines(count, keys), "the count resumed");
}

#[test]
fn the_java_frame_codec_writes_the_frame_vectors_byte_for_byte() {
    let installed = weir_with_limit(&["flink", "cluster", "install"], Duration::from_secs(1200));
    assert_eq!(installed.code, 0, "{}", installed.stderr);
    let home = flink_home();
    let classes = tempfile::tempdir().unwrap();
    let sources: Vec<_> = std::fs::read_dir(repo().join("flink/runner/weir/flink"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .chain([repo().join("flink/test/FrameVectors.java")])
        .collect();
    let classpath = format!("{}/lib/*", home.display());
    let javac = Command::new("javac")
        .arg("-nowarn")
        .args(["-cp", &classpath, "-d"])
        .arg(classes.path())
        .args(&sources)
        .output()
        .unwrap();
    assert!(javac.status.success(), "javac: {}", String::from_utf8_lossy(&javac.stderr));
    for (vectors, contract, cases) in [("docs/frame-vectors.json", "4", 6), ("docs/frame-vectors-0.3.0.json", "3", 5)] {
        let run = Command::new("java")
            .arg("-cp")
            .arg(format!("{}:{classpath}", classes.path().display()))
            .args(["weir.flink.FrameVectors"])
            .arg(repo().join(vectors))
            .arg(contract)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&run.stdout);
        assert!(run.status.success(), "{vectors}: {stdout}{}", String::from_utf8_lossy(&run.stderr));
        assert_eq!(stdout.lines().filter(|l| l.starts_with("ok: ")).count(), cases, "{stdout}");
    }
}

#[test]
fn bad_input_is_refused_before_flink_sees_it() {
    let dir = tempfile::tempdir().unwrap();
    let clicks = repo().join("examples/clicks/clicks.jsonl");
    let out = dir.path().join("out");
    let unreachable = format!("http://127.0.0.1:{}", free_port());
    let clicks_file = write_job(dir.path(), &clicks_job(&clicks, "count", 1, &out));
    let refused = weir(&["flink", "run", &clicks_file, "--jobmanager", &unreachable]);
    assert_failed_with(&refused, &["cannot reach Flink's JobManager at", &unreachable, "weir flink cluster start"]);
    let refused = weir(&["flink", "list", "--jobmanager", &unreachable]);
    assert_failed_with(&refused, &["cannot reach Flink's JobManager at"]);

    let kafka = job(
        "from-kafka",
        1,
        &[
            "[[source]]\nuid = \"clicks\"\ntype = \"kafka\"\nbootstrap-servers = \"127.0.0.1:9\"\ntopic = \"t\"\n"
                .to_string(),
            wasm_operator("count", "count", &["input = \"hash\""]),
            file_sink("out", &out),
        ],
    );
    let kafka = write_job(&dir.path().join("kafka").tap_mkdir(), &kafka);
    let refused = weir(&["flink", "run", &kafka, "--jobmanager", &unreachable]);
    assert_failed_with(&refused, &["source 'clicks' is a kafka source", "`file` and `generator` sources", "weir run"]);

    let quarantined = clicks_job(&clicks, "count", 1, &out).replace(
        "input = \"hash\"\n",
        &format!("input = \"hash\"\non-error = \"quarantine\"\n\n{}", file_sink("set-aside", &out.join("q")))
            .replace("path =", "inputs = [{ from = \"count-per-user.quarantine\" }]\npath ="),
    );
    let quarantined = write_job(&dir.path().join("quarantined").tap_mkdir(), &quarantined);
    let refused = weir(&["flink", "run", &quarantined, "--jobmanager", &unreachable]);
    assert_failed_with(&refused, &["operator 'count-per-user' sets failing events aside", "weir run"]);

    let missing = clicks_job(&clicks, "count", 1, &out).replace("count.wasm", "no_such_module.wasm");
    let missing = write_job(&dir.path().join("missing").tap_mkdir(), &missing);
    let refused = weir(&["flink", "run", &missing, "--jobmanager", &unreachable]);
    assert_failed_with(&refused, &["operator 'count-per-user'", "no_such_module.wasm"]);
}

/// `path`, created.
trait TapMkdir {
    fn tap_mkdir(self) -> std::path::PathBuf;
}

impl TapMkdir for std::path::PathBuf {
    fn tap_mkdir(self) -> std::path::PathBuf {
        std::fs::create_dir_all(&self).unwrap();
        self
    }
}

#[test]
fn a_jobs_state_moves_from_weir_to_flink_and_back_keeping_every_count() {
    let cluster = FlinkCluster::start(2);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let (count, keys) = (150_000, 40);
    let expected = generated_count_lines(count, keys);
    // On one machine with `weir run`, stopped with a savepoint.
    let on_weir =
        write_job(&dir.path().join("weir").tap_mkdir(), &generated_count_job(count, keys, 15_000, 2, &out, "memory"));
    let mut running = Running::start(&on_weir, &[]);
    std::thread::sleep(Duration::from_secs(2));
    let first = running.cli(&["stop", &running.id, "--savepoint"]);
    assert!(running.child.wait().unwrap().success(), "the stopped job finishes");
    let after_weir = sink_lines(&out).len();
    assert!(after_weir > 0 && after_weir < expected.len(), "stopped midway: {after_weir} lines");

    // On Flink at parallelism 3 from that savepoint, stopped with a savepoint again.
    let on_flink =
        write_job(&dir.path().join("flink").tap_mkdir(), &generated_count_job(count, keys, 15_000, 2, &out, "memory"));
    let id = cluster.run(&on_flink, &["--from-savepoint", &first, "--parallelism", "3"]);
    cluster.wait_for(&id, "RUNNING", LONG);
    let started = Instant::now();
    while sink_lines(&out).len() < after_weir + 10_000 {
        assert!(started.elapsed() < LONG, "the job made no progress on Flink");
        std::thread::sleep(Duration::from_millis(200));
    }
    let stopped = cluster.cli(&["flink", "stop", "--savepoint", &id]);
    assert_eq!(stopped.code, 0, "{}", stopped.stderr);
    let locations: Vec<&str> = stopped.stdout.lines().collect();
    assert_eq!(locations.len(), 2, "Flink's savepoint, then weir's: {}", stopped.stdout);
    assert!(Path::new(locations[1]).join("_metadata").is_file(), "{}", locations[1]);
    let after_flink = sink_lines(&out).len();
    assert!(after_flink > after_weir + 10_000 && after_flink < expected.len(), "stopped midway: {after_flink} lines");
    let inspected = weir(&["savepoint", "inspect", locations[1], "--operator", "count"]);
    assert_eq!(inspected.code, 0, "{}", inspected.stderr);
    assert_eq!(inspected.stdout.lines().count(), keys as usize, "every key's count: {}", inspected.stdout);

    // Back on one machine, from the weir savepoint the Flink stop left.
    let back =
        write_job(&dir.path().join("back").tap_mkdir(), &generated_count_job(count, keys, 100_000, 2, &out, "memory"));
    let run = weir_with_limit(&["run", &back, "--from-savepoint", locations[1]], LONG);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_lines(&sink_lines(&out), &expected, "the count across weir, Flink and weir again");
}

/// A windowed count over generated event time (window_count: its windows are pending event-time
/// timers), at parallelism 2, with checkpoints.
fn generated_windows_job(rate: u64, out: &Path) -> String {
    let source = format!(
        "{}rate = {rate}\nevent-time-step = \"1ms\"\nwatermarks = {{ out-of-orderness = \"0s\" }}\n",
        generator_source("events", 40_000, 20)
    );
    let mut text = job(
        "generated-windows",
        2,
        &[
            source,
            wasm_operator("windows", "window_count", &["input = \"hash\"", "config = { size = \"1s\" }"]),
            file_sink("out", out),
        ],
    );
    text.push_str("\n[checkpointing]\ninterval = \"300ms\"\n");
    text
}

#[test]
fn pending_windows_move_from_weir_to_flink_rescale_there_and_come_back() {
    let cluster = FlinkCluster::start(2);
    let dir = tempfile::tempdir().unwrap();
    let whole = dir.path().join("whole");
    let expected = embedded_lines(
        &write_job(&dir.path().join("uninterrupted").tap_mkdir(), &generated_windows_job(1_000_000, &whole)),
        &whole,
    );
    assert_eq!(expected.len(), 40 * 20, "a window a second per key: {}", expected.len());

    let out = dir.path().join("out");
    let mut running =
        Running::start(&write_job(&dir.path().join("weir").tap_mkdir(), &generated_windows_job(8_000, &out)), &[]);
    std::thread::sleep(Duration::from_millis(1500));
    let first = running.cli(&["stop", &running.id, "--savepoint"]);
    assert!(running.child.wait().unwrap().success());
    let pending = weir(&["savepoint", "inspect", &first, "--operator", "windows", "--state", "weir.timers"]);
    assert!(pending.stdout.lines().count() >= 20, "every key has a window open: {}", pending.stdout);

    let id = cluster.run(
        &write_job(&dir.path().join("flink").tap_mkdir(), &generated_windows_job(8_000, &out)),
        &["--from-savepoint", &first],
    );
    cluster.wait_for(&id, "RUNNING", LONG);
    std::thread::sleep(Duration::from_secs(2));
    let stopped = cluster.cli(&["flink", "stop", "--savepoint", &id]);
    assert_eq!(stopped.code, 0, "{}", stopped.stderr);
    // From Flink's own savepoint, on RocksDB at parallelism 3.
    let flink_savepoint = stopped.stdout.lines().next().expect("Flink's savepoint").to_string();
    let on_rocksdb = generated_windows_job(8_000, &out) + "\n[state]\nbackend = \"rocksdb\"\n";
    let id = cluster.run(
        &write_job(&dir.path().join("rocksdb").tap_mkdir(), &on_rocksdb),
        &["--from-savepoint", &flink_savepoint, "--parallelism", "3"],
    );
    cluster.wait_for(&id, "RUNNING", LONG);
    std::thread::sleep(Duration::from_secs(2));
    let stopped = cluster.cli(&["flink", "stop", "--savepoint", &id]);
    assert_eq!(stopped.code, 0, "{}", stopped.stderr);
    let back = stopped.stdout.lines().nth(1).expect("a weir savepoint").to_string();
    let pending = weir(&["savepoint", "inspect", &back, "--operator", "windows", "--state", "weir.timers"]);
    assert!(pending.stdout.lines().count() >= 20, "the windows' timers came back: {}", pending.stdout);

    let run = weir_with_limit(
        &[
            "run",
            &write_job(&dir.path().join("back").tap_mkdir(), &generated_windows_job(1_000_000, &out)),
            "--from-savepoint",
            &back,
        ],
        LONG,
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_lines(&sink_lines(&out), &expected, "the windows across weir, Flink and weir again");
}

/// Each key's counts 1..n appear exactly once across both versions; the versions that emitted
/// each key's counts, in count order.
fn assert_counted_once(lines: &[String], count: u64, keys: u64) -> std::collections::BTreeMap<String, Vec<u64>> {
    let by_count = counts_by_version(lines);
    let mut versions: std::collections::BTreeMap<String, Vec<u64>> = std::collections::BTreeMap::new();
    for ((key, _), emitted) in &by_count {
        assert_eq!(emitted.len(), 1, "key {key} counted more than once: {emitted:?}");
        versions.entry(key.clone()).or_default().push(emitted[0]);
    }
    assert_eq!(by_count.len() as u64, count, "every event counted once");
    assert_eq!(versions.len() as u64, keys);
    versions
}

#[test]
fn an_upgrade_on_flink_switches_every_subtask_at_one_checkpoint_without_a_restart() {
    let cluster = FlinkCluster::start(2);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let (count, keys) = (240_000, 50);
    let id = cluster.run(&write_job(dir.path(), &generated_count_job(count, keys, 12_000, 4, &out, "memory")), &[]);
    cluster.wait_for(&id, "RUNNING", LONG);
    cluster.wait_for_checkpoints(&id, 3);
    let count_v2 = operator("count_v2");
    let upgraded = cluster.cli(&["flink", "upgrade", &id, "--operator", &format!("count={}", count_v2.display())]);
    assert_eq!(upgraded.code, 0, "{}{}", upgraded.stdout, upgraded.stderr);
    assert!(upgraded.stdout.contains("every subtask switched at checkpoint"), "{}", upgraded.stdout);
    // The same job, never restarted.
    assert_eq!(cluster.state(&id), "RUNNING");
    let failures =
        || cluster.get(&format!("/jobs/{id}/exceptions"))["exceptionHistory"]["entries"].as_array().map_or(0, Vec::len);
    assert_eq!(failures(), 0, "the upgrade restarted nothing");
    // Killed after the switch, the job comes back on v2.
    let taskmanagers = cluster.taskmanager_pids();
    Command::new("kill").args(["-9", &taskmanagers[0].to_string()]).status().unwrap();
    assert_eq!(cluster.cli(&["flink", "cluster", "add-taskmanager"]).code, 0);
    let lines = finished_lines(&cluster, &id, &out);
    assert!(failures() >= 1, "the kill restarted the job");
    let versions = assert_counted_once(&lines, count, keys);
    for (key, emitted) in &versions {
        let first_v2 =
            emitted.iter().position(|&v| v == 2).unwrap_or_else(|| panic!("{key}: no v2 count: {emitted:?}"));
        assert!(
            emitted[..first_v2].iter().all(|&v| v == 1) && emitted[first_v2..].iter().all(|&v| v == 2),
            "{key}: {emitted:?}"
        );
        assert!(first_v2 > 0, "{key} was counted by v1 before the upgrade");
    }
}

#[test]
fn a_module_that_traps_after_the_switch_is_rolled_back_in_the_same_job() {
    let cluster = FlinkCluster::start(2);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let (count, keys) = (120_000, 30);
    let id = cluster.run(&write_job(dir.path(), &generated_count_job(count, keys, 12_000, 2, &out, "memory")), &[]);
    cluster.wait_for(&id, "RUNNING", LONG);
    cluster.wait_for_checkpoints(&id, 3);
    let broken = operator("count_broken");
    let refused = cluster.cli(&["flink", "upgrade", &id, "--operator", &format!("count={}", broken.display())]);
    assert_eq!(refused.code, 1, "{}{}", refused.stdout, refused.stderr);
    assert!(refused.stderr.contains("count_broken traps on every event"), "{}", refused.stderr);
    assert!(refused.stderr.contains(&format!("rolled back: job {id} goes on")), "{}", refused.stderr);
    let versions = assert_counted_once(&finished_lines(&cluster, &id, &out), count, keys);
    assert!(versions.values().flatten().all(|&v| v == 1));

    // A module whose state does not fit is refused before anything changes.
    let id = cluster.run(
        &write_job(
            &dir.path().join("again").tap_mkdir(),
            &generated_count_job(count, keys, 12_000, 2, &dir.path().join("out2"), "memory"),
        ),
        &[],
    );
    cluster.wait_for(&id, "RUNNING", LONG);
    let window = operator("window_count");
    let refused = cluster.cli(&["flink", "upgrade", &id, "--operator", &format!("count={}", window.display())]);
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(refused.stderr.contains("operator 'count'"), "{}", refused.stderr);
    let refused = cluster.cli(&["flink", "upgrade", &id, "--operator", "nope=/x.wasm"]);
    assert!(refused.stderr.contains("the job has no operator 'nope' (it has: count)"), "{}", refused.stderr);
    assert_eq!(cluster.state(&id), "RUNNING");
    assert_eq!(cluster.cli(&["flink", "cancel", &id]).code, 0);
}

#[test]
fn a_hung_worker_fails_its_task_and_the_job_goes_on_exactly_once() {
    let cluster = FlinkCluster::start(2);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let (count, keys) = (100_000, 20);
    // A call deadline of 1 s: a worker that does not answer within it and 30 s more is stopped.
    let text = generated_count_job(count, keys, 2_000, 2, &out, "memory")
        .replace("input = \"hash\"\n", "input = \"hash\"\ncall-deadline = \"1s\"\n");
    let id = cluster.run(&write_job(dir.path(), &text), &[]);
    cluster.wait_for(&id, "RUNNING", LONG);
    cluster.wait_for_checkpoints(&id, 2);
    let workers = worker_pids(&cluster.taskmanager_pids());
    assert!(!workers.is_empty(), "the count's workers run under the TaskManagers");
    let status = Command::new("kill").args(["-STOP", &workers[0].to_string()]).status().unwrap();
    assert!(status.success());
    let started = Instant::now();
    let exceptions = loop {
        let exceptions = cluster.get(&format!("/jobs/{id}/exceptions")).to_string();
        if exceptions.contains("did not answer within 31 s") || started.elapsed() > Duration::from_secs(120) {
            break exceptions;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(exceptions.contains("did not answer within 31 s"), "{}", exceptions.chars().take(3000).collect::<String>());
    assert_lines(
        &finished_lines(&cluster, &id, &out),
        &generated_count_lines(count, keys),
        "the count after a hung worker",
    );
}

/// Waits until the file sink at `out` has more than `n` lines.
fn wait_for_lines(out: &Path, n: usize) -> usize {
    let started = Instant::now();
    loop {
        let lines = if out.exists() { sink_lines(out).len() } else { 0 };
        if lines > n {
            return lines;
        }
        assert!(started.elapsed() < LONG, "no more than {n} lines at {}", out.display());
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The `rules` example (clicks keyed by user, rules read by broadcast into broadcast state) gives
/// the embedded runtime's output on Flink, and moves between the runtimes: stopped under `weir
/// run` once the rules were read, it goes on on Flink at
/// parallelism 3 (the third subtask never read a rule: it gets them from the savepoint), is
/// upgraded there (the new module takes the broadcast state over), stopped with a savepoint and
/// resumed on Flink from it at parallelism 2, stopped again and finished under `weir run`: every
/// count and every alert exactly once.
#[test]
fn broadcast_state_on_flink_survives_moves_rescales_restores_and_upgrades() {
    const N: usize = 30_000;
    let cluster = FlinkCluster::start(2);
    let dir = tempfile::tempdir().unwrap();
    let clicks = dir.path().join("clicks.jsonl");
    generated_clicks(&clicks, N, 50);
    let job = rules_job(dir.path(), N, 2, Some(1000));
    let (counts, alerts) = expected_rules(&clicks, "user", &dir.path().join("rules.jsonl"));
    let (out, alerts_out) = (dir.path().join("counts"), dir.path().join("alerts"));
    // From the start on Flink: every subtask reads the rules into its broadcast state.
    let fresh = dir.path().join("fresh").tap_mkdir();
    std::fs::copy(&clicks, fresh.join("clicks.jsonl")).unwrap();
    let id = cluster.run(&rules_job(&fresh, N, 2, None), &[]);
    assert_lines(&finished_lines(&cluster, &id, &fresh.join("counts")), &counts, "counts on Flink");
    assert_lines(&sink_lines(&fresh.join("alerts")), &alerts, "alerts on Flink");
    // A stream read by broadcast by an operator without keyed state: each subtask gets it all.
    let spread = |out: &Path| spread_job(&clicks, "broadcast", out);
    let (flink_out, embedded_out) = (dir.path().join("spread-flink"), dir.path().join("spread-embedded"));
    let id = cluster.run(&write_job(&dir.path().join("spread-flink-job").tap_mkdir(), &spread(&flink_out)), &[]);
    let spread =
        embedded_lines(&write_job(&dir.path().join("spread-job").tap_mkdir(), &spread(&embedded_out)), &embedded_out);
    assert_eq!(spread.len(), 3 * N * 7 / 10, "three copies of each logged-in click");
    assert_lines(&finished_lines(&cluster, &id, &flink_out), &spread, "a broadcast stream on Flink");

    let stop_on_flink = |id: &str| -> (String, String) {
        let stopped = cluster.cli(&["flink", "stop", "--savepoint", id]);
        assert_eq!(stopped.code, 0, "{}", stopped.stderr);
        let locations: Vec<&str> = stopped.stdout.lines().collect();
        assert_eq!(locations.len(), 2, "Flink's savepoint, then weir's: {}", stopped.stdout);
        (locations[0].to_string(), locations[1].to_string())
    };

    let mut running = Running::start(&job, &[]);
    std::thread::sleep(Duration::from_millis(2000));
    let on_weir = running.cli(&["stop", &running.id, "--savepoint"]);
    assert!(running.child.wait().unwrap().success(), "the stopped job finishes");
    let lines = sink_lines(&out).len();
    assert!(lines < counts.len(), "stopped midway: {lines} lines");

    let id = cluster.run(&job, &["--from-savepoint", &on_weir, "--parallelism", "3"]);
    cluster.wait_for(&id, "RUNNING", LONG);
    let lines = wait_for_lines(&out, lines + 2000);
    let copy = dir.path().join("rules-copy.wasm");
    std::fs::copy(operator("rules"), &copy).unwrap();
    let upgraded = cluster.cli(&["flink", "upgrade", &id, "--operator", &format!("count={}", copy.display())]);
    assert_eq!(upgraded.code, 0, "{}{}", upgraded.stdout, upgraded.stderr);
    wait_for_lines(&out, lines + 2000);
    let (on_flink, _) = stop_on_flink(&id);

    let id = cluster.run(&job, &["--from-savepoint", &on_flink, "--parallelism", "2"]);
    cluster.wait_for(&id, "RUNNING", LONG);
    let lines = wait_for_lines(&out, sink_lines(&out).len() + 2000);
    let (_, back) = stop_on_flink(&id);
    assert!(lines < counts.len(), "stopped midway: {lines} lines");
    // The weir savepoint holds the rules once, for every subtask.
    let inspected = weir(&["savepoint", "inspect", &back, "--operator", "count", "--state", "rules"]);
    assert_eq!(inspected.code, 0, "{}", inspected.stderr);
    assert_eq!(inspected.stdout.lines().count(), 4, "the four rules: {}", inspected.stdout);

    let run = weir_with_limit(&["run", &job, "--listen", "none", "--from-savepoint", &back], LONG);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_lines(&sink_lines(&out), &counts, "counts across weir, Flink, Flink again and weir");
    assert_lines(&sink_lines(&alerts_out), &alerts, "alerts across weir, Flink, Flink again and weir");
}

/// After an upgrade that changes the state's schema, each key is migrated when it is next read,
/// not at the switch: keys read again (`b…`) and keys never read again (`a…`, migrated in the
/// background or when a savepoint exports them) alike end up in the new layout, and a weir
/// savepoint of the Flink job goes on under `weir run` with the new module, every count once.
#[test]
fn an_upgrades_migrations_reach_keys_read_again_and_keys_never_read_again() {
    let cluster = FlinkCluster::start(2);
    let dir = tempfile::tempdir().unwrap();
    let (out, events) = (dir.path().join("out"), dir.path().join("events.jsonl"));
    let mut text = String::new();
    for i in 0..10_000 {
        text.push_str(&format!("{{\"user\":\"a{}\"}}\n", i % 2000));
    }
    for i in 0..30_000 {
        text.push_str(&format!("{{\"user\":\"b{}\"}}\n", i % 10));
    }
    std::fs::write(&events, text).unwrap();
    let counting = |module: &str, rate: Option<u32>| {
        let mut text = job(
            "migrating",
            2,
            &[
                format!(
                    "{}{}",
                    file_source("events", &events),
                    // One reader: every `a` event comes before the `b` ones.
                    rate.map_or("parallelism = 1\n".to_string(), |r| format!("parallelism = 1\nrate = {r}\n"))
                ),
                wasm_operator("by-user", "key_by", &["config = { field = \"user\" }"]),
                wasm_operator("count", module, &["input = \"hash\""]),
                file_sink("out", &out),
            ],
        );
        text.push_str("\n[checkpointing]\ninterval = \"300ms\"\n");
        text
    };
    let id = cluster.run(&write_job(&dir.path().join("v1").tap_mkdir(), &counting("count", Some(3000))), &[]);
    cluster.wait_for(&id, "RUNNING", LONG);
    wait_for_lines(&out, 14_000);
    let count_v2 = operator("count_v2");
    let upgraded = cluster.cli(&["flink", "upgrade", &id, "--operator", &format!("count={}", count_v2.display())]);
    assert_eq!(upgraded.code, 0, "{}{}", upgraded.stdout, upgraded.stderr);
    wait_for_lines(&out, sink_lines(&out).len() + 2000);
    let stopped = cluster.cli(&["flink", "stop", "--savepoint", &id]);
    assert_eq!(stopped.code, 0, "{}", stopped.stderr);
    let weir_savepoint = stopped.stdout.lines().nth(1).unwrap_or_default().to_string();
    let lines = sink_lines(&out).len();
    assert!(lines < 40_000, "stopped midway: {lines} lines");

    // Every key in version 2's layout, the `a` keys too, which no event reached after the switch.
    let inspected = weir(&["savepoint", "inspect", &weir_savepoint, "--operator", "count"]);
    assert_eq!(inspected.code, 0, "{}", inspected.stderr);
    let entries: Vec<&str> = inspected.stdout.lines().collect();
    assert_eq!(entries.len(), 2010, "every key's count");
    let a_keys: Vec<&&str> = entries.iter().filter(|l| l.contains(r#""key":"a"#)).collect();
    assert_eq!(a_keys.len(), 2000);
    assert!(a_keys.iter().all(|l| l.ends_with(r#""value":{"count":5}}"#)), "{:?}", &a_keys[..3]);

    let back = write_job(&dir.path().join("v2").tap_mkdir(), &counting("count_v2", None));
    let run = weir_with_limit(&["run", &back, "--from-savepoint", &weir_savepoint], LONG);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let versions = assert_counted_once(&sink_lines(&out), 40_000, 2010);
    assert!(versions.iter().filter(|(k, _)| k.starts_with('a')).all(|(_, v)| v.iter().all(|&v| v == 1)));
    for (key, emitted) in versions.iter().filter(|(k, _)| k.starts_with('b')) {
        let first_v2 = emitted.iter().position(|&v| v == 2).unwrap_or(emitted.len());
        assert!(
            first_v2 > 0 && first_v2 < emitted.len() && emitted[first_v2..].iter().all(|&v| v == 2),
            "{key}: v1, then v2 from the switch on: {emitted:?}"
        );
    }
}
