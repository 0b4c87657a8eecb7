//! The clicks job end to end: filter logged-in users, key by user, count per user.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use weir_e2e::{
    clicks_job, expected_counts, expected_lines, file_sink, generator_source, job, part_files, repo, sink_lines,
    wasm_operator, weir, write_job,
};

/// A larger, deterministic clicks file: `n` clicks by `users` users.
fn generate_clicks(path: &Path, n: u64, users: u64) {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut text = String::new();
    for i in 0..n {
        let user = next() % users;
        let logged_in = next() % 10 < 7;
        text.push_str(&format!(
            "{{\"ts\":{},\"user\":\"user-{user}\",\"page\":\"/p/{}\",\"logged_in\":{logged_in}}}\n",
            1_763_700_000_000u64 + i,
            next() % 50
        ));
    }
    std::fs::write(path, text).expect("write clicks");
}

fn run_clicks(input: &Path, count_module: &str, parallelism: u32, dir: &Path) -> Vec<String> {
    let out = dir.join(format!("out-{count_module}-p{parallelism}"));
    let job_dir = dir.join(format!("job-{count_module}-p{parallelism}"));
    std::fs::create_dir_all(&job_dir).expect("job dir");
    let job = write_job(&job_dir, &clicks_job(input, count_module, parallelism, &out));
    let run = weir(&["run", &job]);
    assert_eq!(run.code, 0, "weir run failed:\n{}", run.stderr);
    assert_eq!(part_files(&out).len(), parallelism as usize, "one part file per sink subtask");
    sink_lines(&out)
}

#[test]
fn example_clicks_give_exact_per_user_counts_at_parallelism_1_and_4() {
    let input = repo().join("examples/clicks/clicks.jsonl");
    let expected = expected_lines(&expected_counts(&input));
    assert_eq!(expected.len(), 42, "the shipped example has 42 logged-in clicks");
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(run_clicks(&input, "count", 1, dir.path()), expected);
    assert_eq!(run_clicks(&input, "count", 4, dir.path()), expected);
}

#[test]
fn large_clicks_give_the_same_counts_at_every_parallelism() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("clicks.jsonl");
    generate_clicks(&input, 50_000, 997);
    let counts = expected_counts(&input);
    let expected = expected_lines(&counts);
    assert_eq!(expected.len() as u64, counts.values().sum::<u64>());
    for parallelism in [1, 2, 3, 4] {
        assert_eq!(run_clicks(&input, "count", parallelism, dir.path()), expected, "parallelism {parallelism}");
    }
}

/// At parallelism 1 the order of events is deterministic, so the outputs must be equal byte for
/// byte; above it, subtasks interleave upstream batches differently run to run, so the lines must
/// be equal as sorted lists.
#[test]
fn python_javascript_and_c_count_write_the_same_bytes_as_rust_count() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("clicks.jsonl");
    generate_clicks(&input, 5_000, 101);
    run_clicks(&input, "count", 1, dir.path());
    let only_part = |out: &str| std::fs::read(&part_files(&dir.path().join(out))[0]).unwrap();
    let rust = only_part("out-count-p1");
    assert_eq!(rust.iter().filter(|&&b| b == b'\n').count(), expected_counts(&input).values().sum::<u64>() as usize);
    for module in ["count_py", "count_js", "count_c"] {
        run_clicks(&input, module, 1, dir.path());
        assert!(rust == only_part(&format!("out-{module}-p1")), "count and {module} wrote different bytes");
    }

    let rust = run_clicks(&input, "count", 2, dir.path());
    assert_eq!(run_clicks(&input, "count_py", 2, dir.path()), rust);
    assert_eq!(run_clicks(&input, "count_js", 2, dir.path()), rust);
    assert_eq!(run_clicks(&input, "count_c", 2, dir.path()), rust);
}

/// Keys that JSON must escape (quotes, backslashes, control characters, DEL) and keys beyond
/// ASCII come out of the C count as they do out of the Rust one, escaped byte for byte alike.
/// (Keys that are not UTF-8, which only a Kafka source can bring, the C count replaces as Rust's
/// `from_utf8_lossy` does, maximal invalid prefix by prefix: `tests/kafka.rs` checks it.)
#[test]
fn hostile_keys_come_out_of_the_c_count_as_out_of_the_rust_one() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("hostile.jsonl");
    let users =
        ["quote\\\"d", "back\\\\slash", "tab\\there", "new\\nline", "\\u0001ctl", "\\u007fdel", "é", "日本", "🦀", ""];
    let lines: Vec<String> = (0..2000)
        .map(|i| format!("{{\"ts\":{i},\"user\":\"{}\",\"logged_in\":true}}", users[i % users.len()]))
        .collect();
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let rust = run_clicks(&input, "count", 1, dir.path());
    assert_eq!(rust.len(), 2000);
    assert!(rust.iter().any(|l| l.contains(r#""key":"quote\"d""#)), "{:?}", &rust[..3]);
    assert_eq!(run_clicks(&input, "count_c", 1, dir.path()), rust);
}

/// The same over 200,000 generated events on 10,000 keys: about 200 batches, each key's count
/// read back from the host batch after batch, so a guest that keeps or decodes state wrongly
/// across batches shows.
#[test]
fn every_language_counts_many_batches_identically() {
    let dir = tempfile::tempdir().unwrap();
    let run = |module: &str, parallelism: u32| -> Vec<u8> {
        let out = dir.path().join(format!("gen-{module}-p{parallelism}"));
        let job_dir = dir.path().join(format!("gen-job-{module}-p{parallelism}"));
        std::fs::create_dir_all(&job_dir).unwrap();
        let text = job(
            "generated-counts",
            parallelism,
            &[
                generator_source("events", 200_000, 10_000),
                wasm_operator("count", module, &["input = \"hash\""]),
                file_sink("counts", &out),
            ],
        );
        let ran = weir(&["run", &write_job(&job_dir, &text), "--listen", "none"]);
        assert_eq!(ran.code, 0, "{module}: {}", ran.stderr);
        let mut lines: Vec<&str> = Vec::new();
        let parts: Vec<Vec<u8>> = part_files(&out).iter().map(|p| std::fs::read(p).unwrap()).collect();
        if parallelism == 1 {
            return parts.concat();
        }
        for part in &parts {
            lines.extend(std::str::from_utf8(part).unwrap().lines());
        }
        lines.sort();
        lines.join("\n").into_bytes()
    };
    let rust = run("count", 1);
    assert_eq!(rust.iter().filter(|&&b| b == b'\n').count(), 200_000);
    assert!(rust.ends_with(b"{\"key\":\"k9999\",\"count\":20}\n"), "each key counted to 20");
    for module in ["count_py", "count_js"] {
        assert!(run(module, 1) == rust, "{module} wrote other bytes than count over 200,000 events");
    }
    let rust = run("count", 2);
    assert!(run("count_js", 2) == rust, "count_js at parallelism 2");
}

/// A module built against `weir:operator@0.2.0` (today's `count` as it was built then, kept in
/// `tests/fixtures/`) runs unchanged on this host and writes what the current build writes.
#[test]
fn a_module_built_against_contract_0_2_0_runs_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("clicks.jsonl");
    generate_clicks(&input, 5_000, 101);
    for parallelism in [1, 2] {
        let current = run_clicks(&input, "count", parallelism, dir.path());
        assert_eq!(run_clicks(&input, "test/count-0.2.0", parallelism, dir.path()), current);
    }
}

/// The shipped job, as a newcomer runs it: its output adds files beside those of earlier runs
/// (the demo's, say), which stay as they were.
#[test]
fn shipped_example_job_runs_as_is() {
    let job = repo().join("examples/clicks/job.toml");
    let out = repo().join("examples/clicks/out/counts");
    let before: BTreeMap<_, _> = std::fs::read_dir(&out)
        .map(|entries| entries.flatten().map(|e| (e.path(), std::fs::read(e.path()).ok())).collect())
        .unwrap_or_default();
    let run = weir(&["run", &job.to_string_lossy()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains("job 'clicks-per-user' finished"), "{}", run.stderr);
    let mut lines: Vec<String> = Vec::new();
    for part in part_files(&out).iter().filter(|p| !before.contains_key(*p)) {
        lines.extend(std::fs::read_to_string(part).unwrap().lines().map(str::to_string));
    }
    lines.sort();
    assert_eq!(lines, expected_lines(&expected_counts(&repo().join("examples/clicks/clicks.jsonl"))));
    for (path, bytes) in before {
        assert_eq!(std::fs::read(&path).ok(), bytes, "{} was changed", path.display());
    }
}

#[test]
fn generator_source_feeds_keyed_counts() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let sections = [
        generator_source("events", 10_000, 7),
        wasm_operator("count", "count", &["input = \"hash\""]),
        file_sink("out", &out),
    ];
    let job = write_job(dir.path(), &job("generated", 3, &sections));
    let run = weir(&["run", &job]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let lines = sink_lines(&out);
    assert_eq!(lines.len(), 10_000);
    // Key k<j> gets the events i with i mod 7 = j: 1429 for j < 4, 1428 for j = 4, 5 and 6.
    let mut finals = BTreeMap::new();
    for line in &lines {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let best = finals.entry(v["key"].as_str().unwrap().to_string()).or_insert(0);
        *best = (*best).max(v["count"].as_u64().unwrap());
    }
    let expected: BTreeMap<String, u64> = (0..7).map(|j| (format!("k{j}"), if j < 4 { 1429 } else { 1428 })).collect();
    assert_eq!(finals, expected);
}

#[test]
fn stdout_sink_prints_one_line_per_event() {
    let dir = tempfile::tempdir().unwrap();
    let sections = [
        weir_e2e::file_source("clicks", &repo().join("examples/clicks/clicks.jsonl")),
        wasm_operator("by-user", "key_by", &["config = { field = \"user\" }"]),
        wasm_operator("count", "count", &["input = \"hash\""]),
        "[[sink]]\nuid = \"print\"\ntype = \"stdout\"\n".to_string(),
    ];
    let run = weir(&["run", &write_job(dir.path(), &job("printed", 2, &sections))]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let mut printed: Vec<&str> = run.stdout.lines().collect();
    printed.sort();
    let mut users: BTreeMap<String, u64> = BTreeMap::new();
    for line in std::fs::read_to_string(repo().join("examples/clicks/clicks.jsonl")).unwrap().lines() {
        let click: serde_json::Value = serde_json::from_str(line).unwrap();
        *users.entry(click["user"].as_str().unwrap().to_string()).or_insert(0) += 1;
    }
    assert_eq!(printed, expected_lines(&users).iter().map(String::as_str).collect::<Vec<_>>());
}

/// `rate` paces a source: 600 events at 1,000 per second cannot finish in under 0.5 s (a lower
/// bound only, so a slow machine cannot make this fail).
#[test]
fn rate_limits_a_source() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let source = format!("{}rate = 1000\n", generator_source("paced", 600, 10));
    let sections = [source, wasm_operator("count", "count", &["input = \"hash\""]), file_sink("out", &out)];
    let run = weir(&["run", &write_job(dir.path(), &job("paced", 1, &sections))]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(sink_lines(&out).len(), 600);
    assert!(run.elapsed >= std::time::Duration::from_millis(500), "took only {:?}", run.elapsed);
}

/// The first run of a module compiles it, which can take seconds for a large one: the run says
/// so, and reports loading apart from the job's own time.
#[test]
fn compiling_a_module_is_reported_apart_from_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let job = write_job(dir.path(), &clicks_job(&repo().join("examples/clicks/clicks.jsonl"), "count", 1, &out));
    let run = |cache: &Path| {
        std::process::Command::new(weir_e2e::weir_bin())
            .args(["run", &job, "--listen", "none"])
            .env("WEIR_CACHE_DIR", cache)
            .output()
            .unwrap()
    };
    let cache = dir.path().join("cache");
    let first = run(&cache);
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert!(first.status.success(), "{stderr}");
    assert!(stderr.contains("compiling ") && stderr.contains("count.wasm (0.1 MiB); this happens once per module"));
    assert!(stderr.contains("compiled ") && stderr.contains("modules loaded in "), "{stderr}");
    let second = run(&cache);
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(!stderr.contains("compiling "), "the second run takes the compiled code from the cache: {stderr}");
}

/// Every example's `job.toml` runs as its comment says, from a copy of the repository's layout
/// (its relative paths to `../clicks/clicks.jsonl` and `../../target/operators/` kept).
#[test]
fn every_example_job_file_runs_and_writes_what_its_comment_says() {
    let dir = tempfile::tempdir().unwrap();
    let examples = dir.path().join("examples");
    std::fs::create_dir_all(dir.path().join("target")).unwrap();
    let operators = weir_e2e::operator("count").parent().unwrap().to_path_buf();
    std::os::unix::fs::symlink(&operators, dir.path().join("target/operators")).unwrap();
    let clicks: Vec<serde_json::Value> = std::fs::read_to_string(repo().join("examples/clicks/clicks.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    std::fs::create_dir_all(examples.join("clicks")).unwrap();
    std::fs::copy(repo().join("examples/clicks/clicks.jsonl"), examples.join("clicks/clicks.jsonl")).unwrap();

    // Running counts per value of `field` over every click, with `tail` inside each line.
    let counts = |field: &str, tail: &str| {
        let mut seen: BTreeMap<String, u64> = BTreeMap::new();
        let mut lines: Vec<String> = clicks
            .iter()
            .map(|c| {
                let key = c[field].as_str().unwrap().to_string();
                let n = seen.entry(key.clone()).or_default();
                *n += 1;
                format!(r#"{{"key":"{key}","count":{n}{tail}}}"#)
            })
            .collect();
        lines.sort();
        lines
    };
    let windows_of = |clicks: &[serde_json::Value], tail: &str| {
        let mut per: BTreeMap<(String, u64), u64> = BTreeMap::new();
        for c in clicks {
            let start = c["ts"].as_u64().unwrap() / 10_000 * 10_000;
            *per.entry((c["user"].as_str().unwrap().to_string(), start)).or_default() += 1;
        }
        let mut lines: Vec<String> = per
            .iter()
            .map(|((user, start), n)| {
                format!(r#"{{"key":"{user}","start":{start},"end":{},"count":{n}{tail}}}"#, start + 10_000)
            })
            .collect();
        lines.sort();
        lines
    };
    let windows = |tail: &str| windows_of(&clicks, tail);
    // late_events: the clicks to "/late" come after their windows were emitted.
    let late_text = std::fs::read_to_string(repo().join("examples/late_events/clicks.jsonl")).unwrap();
    let (mut late, in_time): (Vec<&str>, Vec<&str>) = late_text.lines().partition(|l| l.contains(r#""page":"/late""#));
    late.sort();
    let in_time: Vec<serde_json::Value> = in_time.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    let late_events =
        by_sink(&[("counts", &windows_of(&in_time, "")), ("late", &late.iter().map(|l| l.to_string()).collect())]);
    let mut logged_in: Vec<String> = std::fs::read_to_string(repo().join("examples/clicks/clicks.jsonl"))
        .unwrap()
        .lines()
        .filter(|l| l.contains(r#""logged_in":true"#))
        .map(str::to_string)
        .collect();
    logged_in.sort();
    let clicks_file = repo().join("examples/clicks/clicks.jsonl");
    let join = weir_e2e::expected_join(&clicks_file, &repo().join("examples/enrich/profiles.jsonl"));
    let rules = weir_e2e::expected_rules(&clicks_file, "page", &repo().join("examples/rules/rules.jsonl"));
    let expected: Vec<(&str, Vec<String>)> = vec![
        ("count", counts("user", "")),
        ("count_js", counts("user", "")),
        ("count_py", counts("user", "")),
        ("count_c", counts("user", "")),
        ("recent_count", counts("user", "")),
        ("count_v2", counts("user", r#","v":2"#)),
        ("count_v2_js", counts("user", r#","v":2"#)),
        ("count_v2_py", counts("user", r#","v":2"#)),
        ("key_by", counts("page", "")),
        ("filter", logged_in),
        ("window_count", windows("")),
        ("window_count_js", windows("")),
        ("window_count_py", windows("")),
        ("window_count_v2", windows(r#","v":2"#)),
        ("idle_timeout", vec![r#"{"key":"early","events":20}"#.to_string()]),
        ("count_broken", Vec::new()),
        ("enrich", by_sink(&[("enriched", &join.0), ("unmatched", &join.1)])),
        ("enrich_py", by_sink(&[("enriched", &join.0), ("unmatched", &join.1)])),
        ("rules", by_sink(&[("alerts", &rules.1), ("counts", &rules.0)])),
        ("rules_py", by_sink(&[("alerts", &rules.1), ("counts", &rules.0)])),
        ("late_events", late_events),
    ];
    let mut with_job_files: Vec<String> = std::fs::read_dir(repo().join("examples"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().join("job.toml").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| !name.starts_with("clicks"))
        .collect();
    with_job_files.sort();
    let mut tested: Vec<String> = expected.iter().map(|(name, _)| name.to_string()).collect();
    tested.sort();
    assert_eq!(with_job_files, tested, "every example with a job file is run here");
    let mut without: Vec<String> = std::fs::read_dir(repo().join("examples"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir() && !e.path().join("job.toml").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    without.retain(|name| !name.starts_with(".") && name != "target");
    assert!(without.is_empty(), "examples without a job file: {without:?}");

    for (example, lines) in expected {
        let from = repo().join("examples").join(example);
        let to = examples.join(example);
        std::fs::create_dir_all(&to).unwrap();
        for file in ["job.toml", "clicks.jsonl", "sessions.jsonl", "profiles.jsonl", "rules.jsonl"] {
            if from.join(file).is_file() {
                std::fs::copy(from.join(file), to.join(file)).unwrap();
            }
        }
        let run = weir(&["run", &to.join("job.toml").to_string_lossy(), "--listen", "none"]);
        if example == "count_broken" {
            assert_eq!(run.code, 1, "{}", run.stderr);
            assert!(run.stderr.contains("panicked at count_broken/src/lib.rs:40:21"), "{}", run.stderr);
            continue;
        }
        assert_eq!(run.code, 0, "{example}: {}", run.stderr);
        assert_eq!(written(&to.join("out")), lines, "{example}");
    }
}

/// The lines of several sinks as [`written`] shows them: each prefixed with its sink's name.
fn by_sink(sinks: &[(&str, &Vec<String>)]) -> Vec<String> {
    sinks.iter().flat_map(|(sink, lines)| lines.iter().map(move |l| format!("{sink}: {l}"))).collect()
}

/// What an example's sinks wrote under `out`: its one sink's lines, or, when its sinks write to
/// directories of their own under it, each one's lines prefixed with its name, in name order.
fn written(out: &Path) -> Vec<String> {
    let mut sinks: Vec<PathBuf> =
        std::fs::read_dir(out).unwrap().flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect();
    if sinks.is_empty() {
        return sink_lines(out);
    }
    sinks.sort();
    let named: Vec<(String, Vec<String>)> =
        sinks.iter().map(|s| (s.file_name().unwrap().to_string_lossy().into_owned(), sink_lines(s))).collect();
    by_sink(&named.iter().map(|(sink, lines)| (sink.as_str(), lines)).collect::<Vec<_>>())
}
