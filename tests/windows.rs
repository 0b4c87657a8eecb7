//! Windows: the tumbling event-time window count (`examples/window_count`) over out-of-order
//! events, checked against windows computed here; timers kept by savepoints, fired by `--drain`,
//! in memory and in RocksDB.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use weir_e2e::*;

const SIZE: i64 = 10_000;
const EVENTS: usize = 120_000;
const USERS: usize = 50;

/// `EVENTS` clicks 5 ms apart with up to 1 s of jitter either way (`ts`), then 300 clicks from
/// the first 100 s, which come long after their windows closed. Returns the file and the lines of
/// the windows of every click but the late ones: `{"key":…,"start":…,"end":…,"count":n}`.
fn clicks(dir: &Path) -> (PathBuf, Vec<String>) {
    let mut text = String::new();
    for i in 0..EVENTS {
        let user = format!("u{}", (i * 31) % USERS);
        let ts = (i as i64) * 5 + ((i as i64 * 7919) % 2001) - 1000;
        text.push_str(&format!("{{\"user\":\"{user}\",\"ts\":{ts}}}\n"));
    }
    let on_time = text.len();
    for i in 0..300 {
        text.push_str(&format!("{{\"user\":\"u{}\",\"ts\":{}}}\n", i % USERS, i * 333));
    }
    let path = dir.join("clicks.jsonl");
    std::fs::write(&path, text).unwrap();
    let lines = windows_of(&path, on_time as u64);
    (path, lines)
}

/// The window lines of the clicks in the first `bytes` bytes of `input`, sorted.
fn windows_of(input: &Path, bytes: u64) -> Vec<String> {
    let text = std::fs::read(input).unwrap();
    let mut windows: BTreeMap<(String, i64), u64> = BTreeMap::new();
    for line in String::from_utf8_lossy(&text[..bytes as usize]).lines() {
        let click: serde_json::Value = serde_json::from_str(line).unwrap();
        let ts = click["ts"].as_i64().unwrap();
        *windows.entry((click["user"].as_str().unwrap().to_string(), ts - ts.rem_euclid(SIZE))).or_default() += 1;
    }
    let mut lines: Vec<String> = windows
        .into_iter()
        .map(|((key, start), count)| {
            format!("{{\"key\":\"{key}\",\"start\":{start},\"end\":{},\"count\":{count}}}", start + SIZE)
        })
        .collect();
    lines.sort();
    lines
}

/// Clicks from `input` (event time in `ts`, watermarks 2 s behind) keyed by user and counted per
/// 10 s window at `parallelism` by `examples/window_count`, into `out`; `extra` lines after the
/// header, `source_extra` in the source's table.
fn window_job(dir: &Path, input: &Path, parallelism: u32, out: &Path, source_extra: &str, extra: &str) -> String {
    window_job_with(dir, input, parallelism, "window_count", out, source_extra, extra)
}

/// The same, counting with `module`.
fn window_job_with(
    dir: &Path,
    input: &Path,
    parallelism: u32,
    module: &str,
    out: &Path,
    source_extra: &str,
    extra: &str,
) -> String {
    let source = file_source("clicks", input)
        + "timestamp-field = \"ts\"\nwatermarks = { out-of-orderness = \"2s\" }\n"
        + source_extra;
    let sections = [
        source,
        wasm_operator("by-user", "key_by", &["config = { field = \"user\" }"]),
        wasm_operator("windows", module, &["input = \"hash\"", "config = { size = \"10s\" }"]),
        file_sink("counts", out),
    ];
    write_job(dir, &format!("{}\n{extra}", job("window-clicks", parallelism, &sections)))
}

#[test]
fn windows_are_emitted_once_each_with_exact_counts_at_parallelism_1_2_and_4() {
    let dir = tempfile::tempdir().unwrap();
    let (input, expected) = clicks(dir.path());
    for parallelism in [1, 2, 4] {
        let out = dir.path().join(format!("out-{parallelism}"));
        let job = window_job(dir.path(), &input, parallelism, &out, "", "");
        let run = weir(&["run", &job, "--listen", "none"]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        let lines = sink_lines(&out);
        assert_eq!(lines.len(), expected.len(), "at parallelism {parallelism}");
        assert_eq!(lines, expected, "at parallelism {parallelism}");
    }
    // The Python and JavaScript twins write the same lines, and so does window_count as built
    // against weir:operator@0.3.0 (tests/fixtures), whose frames have no inputs or outputs.
    for module in ["window_count_py", "window_count_js", "test/window_count-0.3.0"] {
        let out = dir.path().join(format!("out-{}", module.replace('/', "-")));
        let job = window_job_with(dir.path(), &input, 2, module, &out, "", "");
        let run = weir(&["run", &job, "--listen", "none"]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert_eq!(sink_lines(&out), expected, "{module}");
    }
}

const CHECKPOINTS: &str = "[checkpointing]\ninterval = \"100ms\"\nstorage = \"file://chk\"\n";

/// RocksDB state with incremental (native) checkpoints: timers are found by one seek per key group.
const ROCKSDB: &str = "[state]\nbackend = \"rocksdb\"\nincremental = true\nmanaged-memory = \"32MiB\"\n";

#[test]
fn killed_again_and_again_a_windowed_job_emits_every_window_exactly_once() {
    killed_again_and_again(CHECKPOINTS);
}

#[test]
fn killed_again_and_again_a_windowed_job_in_rocksdb_emits_every_window_exactly_once() {
    killed_again_and_again(&format!("{CHECKPOINTS}\n{ROCKSDB}"));
}

/// The window job at parallelism 2 with `extra` (its checkpoints, its state), killed up to four
/// times and resumed from its latest checkpoint: every window once, none lost.
fn killed_again_and_again(extra: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (input, expected) = clicks(dir.path());
    let out = dir.path().join("out");
    let job = window_job(dir.path(), &input, 2, &out, "rate = 40000\n", extra);
    let checkpoints = dir.path().join("chk/window-clicks");
    let kills = kill_repeatedly(&job, &[], 4, || !completed_checkpoints(&checkpoints).is_empty());
    assert!(kills >= 2, "the job was killed {kills} times of 4");
    let resume: &[&str] =
        if completed_checkpoints(&checkpoints).is_empty() { &[] } else { &["--from-checkpoint", "latest"] };
    let mut args = vec!["run", job.as_str(), "--listen", "none"];
    args.extend_from_slice(resume);
    let run = weir(&args);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(sink_lines(&out), expected, "every window once, none lost");
}

/// The source's rate in the upgrade tests: 20,000 clicks a second, so that the job runs about 6 s,
/// long enough for its upgrades even when each compiles the new module first on a busy machine
/// (at 40,000 a second, CI once saw the job end before the upgrade came).
const UPGRADED_RATE: &str = "rate = 20000\n";

#[test]
fn the_window_operator_upgraded_mid_window_fires_the_old_timers_in_the_new_module() {
    let dir = tempfile::tempdir().unwrap();
    let (input, expected) = clicks(dir.path());
    let out = dir.path().join("out");
    let server = Server::start(&dir.path().join("data"), &[]);
    let job = window_job(dir.path(), &input, 2, &out, UPGRADED_RATE, CHECKPOINTS);
    let id = server.cli(&["submit", &job]).stdout.trim().to_string();
    std::thread::sleep(Duration::from_millis(1200));
    let upgraded = server.cli(&["upgrade", &id, "--operator", &window_count_v2()]);
    assert_eq!(upgraded.code, 0, "{}", upgraded.stderr);
    let finished = server.wait_for_job(&id);
    assert_eq!(finished["state"], "finished", "{finished}");
    assert_every_window_once_from_both_versions(&out, &expected);
}

/// The same on `weir run`, upgraded twice: to the new layout, then to the same module again, so
/// the timers handed over in place at the first upgrade are handed over once more.
#[test]
fn the_window_operator_upgraded_twice_under_weir_run_fires_the_old_timers_in_the_new_module() {
    let upgrade = || vec!["--operator".to_string(), window_count_v2()];
    upgraded_under_weir_run(&[(1000, upgrade()), (400, upgrade())]);
}

/// On `weir run`: `window_count_v2` as a canary on half the key groups mid-window, then promoted.
/// Each part of each subtask finds its timers in the state handed over to it (split where the
/// canary's key groups end) and fires them in its own module, so the windows open when the
/// canary started are emitted by whichever module serves their key then, each once.
#[test]
fn a_canary_of_the_window_operator_fires_each_parts_timers_in_its_own_module() {
    let canary = ["--operator".to_string(), window_count_v2(), "--canary".to_string(), "50%".to_string()];
    upgraded_under_weir_run(&[(1000, canary.to_vec()), (500, vec!["--promote".to_string()])]);
}

/// The window job on `weir run` (20,000 clicks a second, checkpointing) through `upgrades`, each
/// after its wait in milliseconds (the arguments of `weir upgrade JOB …`): every window once,
/// from both versions.
fn upgraded_under_weir_run(upgrades: &[(u64, Vec<String>)]) {
    let dir = tempfile::tempdir().unwrap();
    let (input, expected) = clicks(dir.path());
    let out = dir.path().join("out");
    let job = window_job(dir.path(), &input, 2, &out, UPGRADED_RATE, CHECKPOINTS);
    let mut running = Running::start(&job, &[]);
    for (wait, args) in upgrades {
        std::thread::sleep(Duration::from_millis(*wait));
        let mut all = vec!["upgrade", running.id.as_str()];
        all.extend(args.iter().map(String::as_str));
        running.cli(&all);
    }
    assert!(running.child.wait().unwrap().success(), "the upgraded job finishes");
    assert_every_window_once_from_both_versions(&out, &expected);
}

/// `--operator` for an upgrade of the window operator to `examples/window_count_v2`, which
/// migrates its state to another layout and marks what it emits with `"v":2`.
fn window_count_v2() -> String {
    format!("windows={}", operator("window_count_v2").display())
}

/// Every window in `out` once with its full count (as `expected` has it), whichever version
/// emitted it; and both did.
fn assert_every_window_once_from_both_versions(out: &Path, expected: &[String]) {
    let mut versions = BTreeMap::new();
    let mut lines: Vec<String> = sink_lines(out)
        .iter()
        .map(|line| {
            let mut window: serde_json::Value = serde_json::from_str(line).unwrap();
            *versions.entry(window["v"].as_u64().unwrap_or(1)).or_insert(0) += 1;
            window.as_object_mut().unwrap().remove("v");
            window.to_string()
        })
        .collect();
    lines.sort();
    // Both sides as serde_json writes a value (keys in order), for one comparison.
    let mut expected: Vec<String> =
        expected.iter().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap().to_string()).collect();
    expected.sort();
    assert_eq!(lines, expected);
    assert!(versions.len() == 2, "windows by version: {versions:?}");
}

const SAVEPOINTS: &str =
    "[checkpointing]\ninterval = \"200ms\"\nstorage = \"file://chk\"\nsavepoint-dir = \"savepoints\"\n";

/// Runs the window job slowly (20,000 clicks a second) at parallelism 2 and stops it with a
/// savepoint after 1.5 s (`stop_args` after `--savepoint`); returns the savepoint and where the
/// source had read to.
fn stopped_mid_window(dir: &Path, input: &Path, out: &Path, stop_args: &[&str]) -> (PathBuf, u64) {
    stopped_mid_window_with(dir, input, out, stop_args, "")
}

/// The same with `state` (a `[state]` table, or nothing).
fn stopped_mid_window_with(dir: &Path, input: &Path, out: &Path, stop_args: &[&str], state: &str) -> (PathBuf, u64) {
    let job = window_job(dir, input, 2, out, "rate = 20000\n", &format!("{SAVEPOINTS}\n{state}"));
    let mut running = Running::start(&job, &[]);
    std::thread::sleep(Duration::from_millis(1500));
    let mut args = vec!["stop", running.id.as_str(), "--savepoint"];
    args.extend_from_slice(stop_args);
    let savepoint = PathBuf::from(running.cli(&args));
    assert!(running.child.wait().unwrap().success(), "the stopped job finishes");
    let metadata = read_metadata(&savepoint.join("_metadata"));
    let position = position_number(&metadata["sources"][0]["position"]);
    assert!(position > 0 && position < std::fs::metadata(input).unwrap().len() / 2, "stopped mid-file at {position}");
    (savepoint, position)
}

#[test]
fn pending_windows_are_saved_and_fire_after_a_restore_at_another_parallelism() {
    pending_windows_fire_after_a_restore("");
}

#[test]
fn pending_windows_in_rocksdb_are_saved_and_fire_after_a_restore_at_another_parallelism() {
    pending_windows_fire_after_a_restore(ROCKSDB);
}

/// Stops the window job with a savepoint mid-window and restores it at parallelism 3, both runs
/// with `state`: the pending windows fire after the restore with the counts of both runs.
fn pending_windows_fire_after_a_restore(state: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (input, expected) = clicks(dir.path());
    let out = dir.path().join("out");
    let (savepoint, position) = stopped_mid_window_with(dir.path(), &input, &out, &[], state);
    // Only windows the watermark had passed are out: fewer than those of what was read. The
    // others are pending, with their timers: one per user and open window.
    let before = sink_lines(&out);
    assert!(!before.is_empty() && before.len() < windows_of(&input, position).len(), "{} windows", before.len());
    let timers: Vec<serde_json::Value> = inspect(&savepoint)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|l| l["state"] == "weir.timers")
        .collect();
    assert_eq!(timers.len() + before.len(), windows_of(&input, position).len());
    assert!(timers.iter().all(|t| t["map-key"]["timer"] == "event-time" && t["map-key"]["time"].as_i64().unwrap() % SIZE == SIZE - 1));
    let job = window_job(dir.path(), &input, 3, &out, "", &format!("{SAVEPOINTS}\n{state}"));
    let run = weir(&["run", &job, "--listen", "none", "--from-savepoint", &savepoint.to_string_lossy()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(sink_lines(&out), expected, "every window once, with the counts of both runs");
}

#[test]
fn stop_with_drain_emits_every_window_before_the_savepoint() {
    let dir = tempfile::tempdir().unwrap();
    let (input, _) = clicks(dir.path());
    let out = dir.path().join("out");
    let (savepoint, position) = stopped_mid_window(dir.path(), &input, &out, &["--drain"]);
    // Every window of what was read, partial ones included (Flink's --drain), and nothing left:
    // no window, no timer.
    assert_eq!(sink_lines(&out), windows_of(&input, position));
    assert_eq!(inspect(&savepoint), "");
}

/// What `weir savepoint inspect` prints of operator `windows` in `savepoint`.
fn inspect(savepoint: &Path) -> String {
    let inspected = weir(&["savepoint", "inspect", &savepoint.to_string_lossy(), "--operator", "windows"]);
    assert_eq!(inspected.code, 0, "{}", inspected.stderr);
    inspected.stdout
}

#[test]
fn a_generator_with_an_event_time_step_feeds_windows() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    // Event i: key k<i mod 10>, timestamp i ms; 10,000 events make ten 1 s windows of 100 per key.
    let source = generator_source("numbers", 10_000, 10)
        + "event-time-step = \"1ms\"\nwatermarks = { out-of-orderness = \"0s\" }\n";
    let sections = [
        source,
        wasm_operator("windows", "window_count", &["input = \"hash\"", "config = { size = \"1s\" }"]),
        file_sink("counts", &out),
    ];
    let job = write_job(dir.path(), &job("generated-windows", 2, &sections));
    let run = weir(&["run", &job, "--listen", "none"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let mut expected: Vec<String> = (0..10)
        .flat_map(|w| (0..10).map(move |k| (w, k)))
        .map(|(w, k)| format!("{{\"key\":\"k{k}\",\"start\":{},\"end\":{},\"count\":100}}", w * 1000, w * 1000 + 1000))
        .collect();
    expected.sort();
    assert_eq!(sink_lines(&out), expected);
}

#[test]
fn a_key_idle_for_its_timeout_of_processing_time_is_emitted_once() {
    let dir = tempfile::tempdir().unwrap();
    // 3,000 events at 1,000 a second: key "early" only in the first 200, key "late" after them,
    // so "early" is idle for 2.8 s before the job ends and "late" never for 500 ms.
    let input = dir.path().join("events.jsonl");
    let lines: Vec<String> =
        (0..3000).map(|i| format!("{{\"user\":\"{}\"}}", if i < 200 { "early" } else { "late" })).collect();
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let out = dir.path().join("out");
    let sections = [
        file_source("events", &input) + "rate = 1000\n",
        wasm_operator("by-user", "key_by", &["config = { field = \"user\" }"]),
        wasm_operator("idle", "idle_timeout", &["input = \"hash\"", "config = { timeout = \"500ms\" }"]),
        file_sink("timed-out", &out),
    ];
    let job = write_job(dir.path(), &job("idle-users", 2, &sections));
    let run = weir(&["run", &job, "--listen", "none"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(sink_lines(&out), [r#"{"key":"early","events":200}"#]);
}

/// The resident memory of process `pid`, in MiB.
fn resident_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap_or("VmRSS: 0 kB");
    line.split_whitespace().nth(1).and_then(|kb| kb.parse::<u64>().ok()).unwrap_or(0) / 1024
}

/// A guest whose timers set themselves again for a time already reached, from `on_timer`
/// (`test/rearm`): event-time ones at the time they fired at, processing-time ones at now. The
/// job keeps flowing with bounded memory, fires each such timer once per advance of time, and
/// stops with a savepoint (event time) or is canceled (processing time) at once.
#[test]
fn timers_that_set_themselves_again_neither_hang_the_job_nor_eat_memory() {
    for domain in ["event", "processing"] {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("clicks.jsonl");
        generated_clicks(&input, 40_000, 2000);
        let source = file_source("clicks", &input).replacen("type = \"file\"\n", "type = \"file\"\nrate = 8000\n", 1)
            + "timestamp-field = \"ts\"\nwatermarks = { out-of-orderness = \"0s\" }\n";
        let config = format!("config = {{ domain = \"{domain}\" }}");
        let text = job(
            "rearming",
            1,
            &[
                source,
                wasm_operator("by-user", "key_by", &["config = { field = \"user\" }"]),
                wasm_operator("rearm", "test/rearm", &["input = \"hash\"", &config]),
                file_sink("fired", &dir.path().join("out")),
            ],
        );
        let text = format!("{text}\n[checkpointing]\ninterval = \"500ms\"\nstorage = \"file://chk\"\n");
        let running = Running::start(&write_job(dir.path(), &text), &[]);
        std::thread::sleep(Duration::from_millis(2500));
        let pid = running.child.id();
        let memory = resident_mib(pid);
        assert!(memory < 400, "{domain}: {memory} MiB resident after 2.5 s");
        let asked = std::time::Instant::now();
        match domain {
            "event" => drop(running.cli(&["stop", &running.id, "--savepoint"])),
            _ => drop(running.cli(&["cancel", &running.id])),
        }
        let ended = running.wait_for_end(Duration::from_secs(10));
        assert!(ended.is_some(), "{domain}: still running 10 s after it was asked to end");
        assert!(asked.elapsed() < Duration::from_secs(5), "{domain}: ended {:?} after it was asked", asked.elapsed());
        let fired = sink_lines(&dir.path().join("out"));
        assert!(fired.len() > 2000, "{domain}: the timers' output flowed to the sink: {} lines", fired.len());
    }
}

/// A guest that sets 2,000 far-future timers per event (`test/rearm`, `far`): in memory the
/// timer queue counts against `state-limit` (64 MiB here), and the job fails saying so; in
/// RocksDB the queue keeps the earliest 100,000 timers of a domain in memory and the rest on
/// disk, so that 4,000,000 timers pass under the same limit and every one fires once, at the end.
#[test]
fn pending_timers_are_bounded_in_memory_and_spill_to_disk_in_rocksdb() {
    for (backend, events) in [("memory", 40_000), ("rocksdb", 2_000)] {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("clicks.jsonl");
        generated_clicks(&input, events, 2000);
        let source = file_source("clicks", &input) + "timestamp-field = \"ts\"\n";
        let text = job(
            "far-timers",
            1,
            &[
                source,
                wasm_operator("by-user", "key_by", &["config = { field = \"user\" }"]),
                wasm_operator(
                    "rearm",
                    "test/rearm",
                    &["input = \"hash\"", "config = { domain = \"far\" }", "state-limit = \"64MiB\""],
                ),
                blackhole_sink("out"),
            ],
        );
        let text = format!("{text}\n[state]\nbackend = \"{backend}\"\nmanaged-memory = \"64MiB\"\n");
        let text = if backend == "memory" { text.replace("managed-memory = \"64MiB\"\n", "") } else { text };
        let out =
            weir_with_limit(&["run", &write_job(dir.path(), &text), "--listen", "none"], Duration::from_secs(300));
        if backend == "memory" {
            assert_eq!(out.code, 1, "{backend}: {}", out.stderr);
            for needle in ["grew past `state-limit` (64.0 MiB)", "pending timers"] {
                assert!(out.stderr.contains(needle), "{backend}: {needle}: {}", out.stderr);
            }
            continue;
        }
        assert_eq!(out.code, 0, "{backend}: {}", out.stderr);
        let sink = out.stderr.lines().find(|l| l.trim_start().starts_with("sink")).unwrap_or_default().to_string();
        assert!(sink.contains("events in 4000000 "), "every timer fired once: {sink}");
        let peak: f64 = out
            .stderr
            .lines()
            .find_map(|l| l.trim().strip_prefix("peak memory ")?.strip_suffix(" MiB")?.parse().ok())
            .unwrap_or(0.0);
        assert!(peak < 400.0, "{backend}: peak memory {peak} MiB with 4,000,000 timers");
    }
}
