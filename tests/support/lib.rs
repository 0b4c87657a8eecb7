//! Helpers for the end-to-end tests: where the built `weir` binary and operators are, and running
//! the binary with a time limit so that a hang fails the test instead of CI.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub mod flink;
pub mod kafka;
pub mod postgres;
pub mod proxy;
pub mod s3;

/// The repository root, found from the working directory (`cargo test` runs tests in the package
/// root, `tests/`). Not a path baked in at build time: a test binary built from another clone
/// sharing the target directory must still test this one.
pub fn repo() -> PathBuf {
    let cwd = std::env::current_dir().expect("working directory");
    cwd.ancestors()
        .find(|dir| dir.join("wit/operator.wit").is_file())
        .unwrap_or_else(|| panic!("{} is not inside a weir repository", cwd.display()))
        .to_path_buf()
}

/// The `weir` binary: `$WEIR_BIN` (set by `cargo xtask test`), else `target/release/weir`.
pub fn weir_bin() -> PathBuf {
    std::env::var_os("WEIR_BIN").map(PathBuf::from).unwrap_or_else(|| repo().join("target/release/weir"))
}

/// A built operator: `$WEIR_OPERATORS/<name>.wasm`, else `target/operators/<name>.wasm`.
pub fn operator(name: &str) -> PathBuf {
    let dir = std::env::var_os("WEIR_OPERATORS").map(PathBuf::from).unwrap_or_else(|| repo().join("target/operators"));
    let path = dir.join(format!("{name}.wasm"));
    assert!(path.exists(), "{} is missing: run `cargo xtask build` first", path.display());
    path
}

/// What a run of the binary did.
#[derive(Debug)]
pub struct Output {
    /// Exit code.
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// Wall time.
    pub elapsed: Duration,
}

/// Runs `weir ARGS` and waits at most `limit`; a run that takes longer is killed and fails the test.
pub fn weir_with_limit(args: &[&str], limit: Duration) -> Output {
    weir_with_env(args, &[], limit)
}

/// Runs `weir ARGS` with extra environment variables, waiting at most `limit`.
pub fn weir_with_env(args: &[&str], env: &[(String, String)], limit: Duration) -> Output {
    let started = Instant::now();
    let out_dir = tempfile::tempdir().expect("temp dir");
    let (stdout_path, stderr_path) = (out_dir.path().join("stdout"), out_dir.path().join("stderr"));
    let mut child = Command::new(weir_bin())
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("WEIR_CACHE_DIR", repo().join("target/test-module-cache"))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).expect("stdout file"))
        .stderr(std::fs::File::create(&stderr_path).expect("stderr file"))
        .spawn()
        .expect("weir starts");
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("weir {args:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = Output {
        code: status.code().unwrap_or(-1),
        stdout: std::fs::read_to_string(&stdout_path).unwrap_or_default(),
        stderr: std::fs::read_to_string(&stderr_path).unwrap_or_default(),
        elapsed: started.elapsed(),
    };
    // Guests' panics are theirs (logged under `weir::guest`, and named in failure causes); the
    // host's, which Rust prints at the start of a line, are bugs.
    let host_panic = output
        .stderr
        .lines()
        .any(|l| l.starts_with("thread '") && l.contains(" panicked at ") && !l.starts_with("thread '<unnamed>'"));
    assert!(!host_panic, "weir panicked:\n{}", output.stderr);
    output
}

/// Checks that a run failed (exit code 1) with every one of `needles` in its stderr.
pub fn assert_failed_with(out: &Output, needles: &[&str]) {
    assert_eq!(out.code, 1, "expected exit code 1, got {}:\n{}{}", out.code, out.stdout, out.stderr);
    for needle in needles {
        assert!(out.stderr.contains(needle), "stderr lacks {needle:?}:\n{}", out.stderr);
    }
}

/// Runs `weir ARGS` with a two-minute limit.
pub fn weir(args: &[&str]) -> Output {
    weir_with_limit(args, Duration::from_secs(120))
}

/// Writes `toml` as `job.toml` in `dir` and returns its path as a string.
pub fn write_job(dir: &Path, toml: &str) -> String {
    let path = dir.join("job.toml");
    std::fs::write(&path, toml).expect("write job file");
    path.to_string_lossy().into_owned()
}

/// Every line of every part file in a file sink's directory, sorted.
pub fn sink_lines(dir: &Path) -> Vec<String> {
    let mut lines: Vec<String> = part_files(dir)
        .iter()
        .flat_map(|p| std::fs::read_to_string(p).expect("read part").lines().map(str::to_string).collect::<Vec<_>>())
        .collect();
    lines.sort();
    lines
}

/// Asserts that sorted `lines` are `expected`, naming, when they are not, up to ten of the lines
/// missing and of those that should not be there (with their counts), rather than printing both.
pub fn assert_lines(lines: &[String], expected: &[String], what: &str) {
    if lines == expected {
        return;
    }
    fn count(all: &[String]) -> BTreeMap<&str, usize> {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        all.iter().for_each(|l| *counts.entry(l.as_str()).or_default() += 1);
        counts
    }
    let (got, want) = (count(lines), count(expected));
    let differ = |a: &BTreeMap<&str, usize>, b: &BTreeMap<&str, usize>| -> Vec<String> {
        let over = a.iter().filter(|(l, n)| b.get(*l).copied().unwrap_or(0) < **n);
        over.take(10).map(|(l, n)| format!("{l} ×{n}")).collect()
    };
    panic!(
        "{what}: {} lines where {} were expected\n  missing: {:?}\n  unexpected: {:?}",
        lines.len(),
        expected.len(),
        differ(&want, &got),
        differ(&got, &want)
    );
}

/// The part files of a file sink's directory, sorted by name.
pub fn part_files(dir: &Path) -> Vec<PathBuf> {
    let mut parts: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("part-")))
        .collect();
    parts.sort();
    parts
}

/// A path as a TOML string literal.
pub fn toml_path(path: &Path) -> String {
    serde_json::to_string(&path.to_string_lossy()).expect("path as string")
}

/// A job file: a header and `[[source]]`, `[[operator]]` and `[[sink]]` sections built by the
/// functions below.
pub fn job(name: &str, parallelism: u32, sections: &[String]) -> String {
    format!("name = \"{name}\"\nparallelism = {parallelism}\n\n{}", sections.join("\n"))
}

/// A `file` source section.
pub fn file_source(uid: &str, path: &Path) -> String {
    format!("[[source]]\nuid = \"{uid}\"\ntype = \"file\"\npath = {}\n", toml_path(path))
}

/// A `generator` source section.
pub fn generator_source(uid: &str, count: u64, keys: u64) -> String {
    format!("[[source]]\nuid = \"{uid}\"\ntype = \"generator\"\ncount = {count}\nkeys = {keys}\n")
}

/// An operator section running `module` (a name under the built operators), with extra lines
/// such as `input = "hash"` or `config = { … }`.
pub fn wasm_operator(uid: &str, module: &str, extra: &[&str]) -> String {
    format!("[[operator]]\nuid = \"{uid}\"\nmodule = {}\n{}\n", toml_path(&operator(module)), extra.join("\n"))
}

/// A `file` sink section.
pub fn file_sink(uid: &str, path: &Path) -> String {
    format!("[[sink]]\nuid = \"{uid}\"\ntype = \"file\"\npath = {}\n", toml_path(path))
}

/// A `blackhole` sink section.
pub fn blackhole_sink(uid: &str) -> String {
    format!("[[sink]]\nuid = \"{uid}\"\ntype = \"blackhole\"\n")
}

/// The clicks job of `examples/clicks`, reading `input`, with `count_module` as the counting
/// operator, at `parallelism`, writing to `out`.
pub fn clicks_job(input: &Path, count_module: &str, parallelism: u32, out: &Path) -> String {
    job(
        "clicks-per-user",
        parallelism,
        &[
            file_source("clicks", input),
            wasm_operator("logged-in", "filter", &["config = { field = \"logged_in\" }"]),
            wasm_operator("by-user", "key_by", &["config = { field = \"user\" }"]),
            wasm_operator("count-per-user", count_module, &["input = \"hash\""]),
            file_sink("counts", out),
        ],
    )
}

/// Per-user counts of logged-in clicks, computed from the input without weir.
pub fn expected_counts(input: &Path) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for line in std::fs::read_to_string(input).expect("read input").lines() {
        let click: serde_json::Value = serde_json::from_str(line).expect("input is JSON");
        if click["logged_in"] == serde_json::Value::Bool(true) {
            *counts.entry(click["user"].as_str().expect("user").to_string()).or_insert(0) += 1;
        }
    }
    counts
}

/// The lines a running count must emit: for a user with n clicks, counts 1 to n, once each.
pub fn expected_lines(counts: &BTreeMap<String, u64>) -> Vec<String> {
    expected_lines_after(counts, &BTreeMap::new())
}

/// The lines a running count restored with `saved` counts must emit: for a user with n clicks,
/// the counts after their saved one up to n, once each.
pub fn expected_lines_after(counts: &BTreeMap<String, u64>, saved: &BTreeMap<String, u64>) -> Vec<String> {
    let mut lines: Vec<String> = counts
        .iter()
        .flat_map(|(user, &n)| {
            let from = saved.get(user).copied().unwrap_or(0) + 1;
            (from..=n).map(move |c| format!(r#"{{"key":"{user}","count":{c}}}"#))
        })
        .collect();
    lines.sort();
    lines
}

/// The per-user counts count operator `operator` holds in `savepoint` (`weir savepoint inspect`).
pub fn saved_counts(savepoint: &str, operator: &str) -> BTreeMap<String, u64> {
    let inspected = weir(&["savepoint", "inspect", savepoint, "--operator", operator]);
    assert_eq!(inspected.code, 0, "{}", inspected.stderr);
    inspected
        .stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|v| (v["key"].as_str().unwrap().to_string(), v["value"].as_u64().unwrap()))
        .collect()
}

/// Per (user, count) in count output `lines`, the versions of `count` that emitted it (`"v":2`
/// marks count_v2's lines, none v1's).
pub fn counts_by_version(lines: &[String]) -> BTreeMap<(String, u64), Vec<u64>> {
    let mut by_count: BTreeMap<(String, u64), Vec<u64>> = BTreeMap::new();
    for line in lines {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let key = (v["key"].as_str().unwrap().to_string(), v["count"].as_u64().unwrap());
        by_count.entry(key).or_default().push(v["v"].as_u64().unwrap_or(1));
    }
    by_count
}

/// Checks that the committed output in `dir/out` has every user's counts (of the clicks in
/// `dir/clicks.jsonl`) from 1 to their total, each once; returns which versions emitted each.
pub fn every_count_once(dir: &Path) -> BTreeMap<(String, u64), Vec<u64>> {
    let counts = expected_counts(&dir.join("clicks.jsonl"));
    let emitted = counts_by_version(&sink_lines(&dir.join("out")));
    let expected: Vec<(String, u64)> = counts.iter().flat_map(|(u, &n)| (1..=n).map(move |c| (u.clone(), c))).collect();
    assert_eq!(emitted.keys().cloned().collect::<Vec<_>>(), expected, "every count of every user");
    let twice: Vec<_> = emitted.iter().filter(|(_, versions)| versions.len() != 1).collect();
    assert!(twice.is_empty(), "emitted more than once: {twice:?}");
    emitted
}

/// Per user, the version that emitted each of their counts, in count order, once
/// [`every_count_once`] has checked `dir`'s committed output.
pub fn versions_by_user(dir: &Path) -> BTreeMap<String, Vec<u64>> {
    let mut by_user: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for ((user, _), versions) in every_count_once(dir) {
        by_user.entry(user).or_default().push(versions[0]);
    }
    by_user
}

/// Polls `status` until `ready` holds of what it answers (for 20 s at most); returns that answer.
pub fn wait_until(
    status: impl Fn() -> serde_json::Value,
    ready: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let started = Instant::now();
    loop {
        let answer = status();
        if ready(&answer) {
            return answer;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "never ready: {answer}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What the `enrich` example writes for `clicks` and `profiles` (JSON lines with `ts` and
/// `user`): each click with the `plan` of its user's newest profile at or before it
/// (`{"ts":…,"user":…,"page":…,"plan":…}`), or, with none, the click as it came to its side
/// output `unmatched`; both sorted.
pub fn expected_join(clicks: &Path, profiles: &Path) -> (Vec<String>, Vec<String>) {
    let profiles = json_lines(profiles);
    let (mut enriched, mut unmatched) = (Vec::new(), Vec::new());
    for (line, click) in json_lines(clicks) {
        let ts = click["ts"].as_i64().expect("ts");
        let plan = profiles
            .iter()
            .filter(|(_, p)| p["user"] == click["user"] && p["ts"].as_i64().expect("ts") <= ts)
            .max_by_key(|(_, p)| p["ts"].as_i64())
            .map(|(_, p)| p["plan"].as_str().expect("plan").to_string());
        match plan {
            Some(plan) => enriched.push(format!(
                "{{\"ts\":{ts},\"user\":{},\"page\":{},\"plan\":\"{plan}\"}}",
                click["user"], click["page"]
            )),
            None => unmatched.push(line),
        }
    }
    enriched.sort();
    unmatched.sort();
    (enriched, unmatched)
}

/// What the `rules` example writes for `clicks` keyed by their field `key_field`, and `rules`
/// (`{"ts":…,"key":…,"max_clicks":n}`, `key` absent: for every key): each key's running count per
/// click in time order (`{"key":…,"ts":…,"count":n}`), and an alert where a count is over the
/// `max_clicks` of the latest rule for its key at or before the click (at the same time, the
/// key's own over the one for every key); both sorted.
pub fn expected_rules(clicks: &Path, key_field: &str, rules: &Path) -> (Vec<String>, Vec<String>) {
    let rules: Vec<(Option<String>, i64, u64)> = json_lines(rules)
        .iter()
        .map(|(_, r)| {
            let key = r["key"].as_str().map(str::to_string);
            (key, r["ts"].as_i64().expect("ts"), r["max_clicks"].as_u64().expect("max_clicks"))
        })
        .collect();
    let mut clicks: Vec<(i64, String)> = json_lines(clicks)
        .iter()
        .map(|(_, c)| (c["ts"].as_i64().expect("ts"), c[key_field].as_str().expect("key field").to_string()))
        .collect();
    clicks.sort();
    let (mut counts, mut alerts, mut seen) = (Vec::new(), Vec::new(), BTreeMap::new());
    for (ts, key) in clicks {
        let count = seen.entry(key.clone()).or_insert(0u64);
        *count += 1;
        counts.push(format!("{{\"key\":\"{key}\",\"ts\":{ts},\"count\":{count}}}"));
        let in_force = rules
            .iter()
            .filter(|(for_key, from, _)| for_key.as_ref().is_none_or(|k| *k == key) && *from <= ts)
            .max_by_key(|(for_key, from, _)| (*from, for_key.is_some()));
        if let Some((_, _, max)) = in_force.filter(|(.., max)| *count > *max) {
            alerts.push(format!("{{\"key\":\"{key}\",\"ts\":{ts},\"count\":{count},\"max_clicks\":{max}}}"));
        }
    }
    counts.sort();
    alerts.sort();
    (counts, alerts)
}

/// Rules for `n` clicks: 20 clicks for every user and 5 for u7 from the start, 10 for u3 from a
/// third of the way, 40 for every user from halfway.
pub fn rules_file(dir: &Path, n: usize) -> PathBuf {
    let rules = dir.join("rules.jsonl");
    let text = format!(
        "{{\"ts\":0,\"max_clicks\":20}}\n{{\"ts\":0,\"key\":\"u7\",\"max_clicks\":5}}\n\
         {{\"ts\":{},\"key\":\"u3\",\"max_clicks\":10}}\n{{\"ts\":{},\"max_clicks\":40}}\n",
        n / 3,
        n / 2
    );
    std::fs::write(&rules, text).unwrap();
    rules
}

/// The `rules` example's job over `n` generated clicks keyed by user and the rules of
/// [`rules_file`], at `parallelism`, the clicks source limited to `rate`.
pub fn rules_job(dir: &Path, n: usize, parallelism: u32, rate: Option<u32>) -> String {
    let clicks = dir.join("clicks.jsonl");
    if !clicks.exists() {
        generated_clicks(&clicks, n, 50);
    }
    let rules = rules_file(dir, n);
    let timed = "timestamp-field = \"ts\"\nwatermarks = { out-of-orderness = \"0s\" }\n";
    let rate = rate.map_or(String::new(), |r| format!("rate = {r}\n"));
    let text = job(
        "rules",
        parallelism,
        &[
            format!("{}{timed}{rate}", file_source("clicks", &clicks)),
            format!("{}{timed}", file_source("rules", &rules)),
            wasm_operator("by-user", "key_by", &["config = { field = \"user\" }", "inputs = [{ from = \"clicks\" }]"]),
            wasm_operator(
                "count",
                "rules",
                &["inputs = [{ from = \"by-user\", partitioning = \"hash\" }, { from = \"rules\", partitioning = \
                   \"broadcast\" }]"],
            ),
            format!("{}inputs = [{{ from = \"count\" }}]\n", file_sink("counts", &dir.join("counts"))),
            format!("{}inputs = [{{ from = \"count.alerts\" }}]\n", file_sink("alerts", &dir.join("alerts"))),
        ],
    );
    write_job(dir, &text)
}

/// A job at parallelism 3 that keeps the logged-in ones of `clicks`, its filter reading them by
/// `partitioning` (`rebalance`: each click once; `broadcast`: once per subtask), written to `out`.
pub fn spread_job(clicks: &Path, partitioning: &str, out: &Path) -> String {
    let inputs = format!("inputs = [{{ from = \"clicks\", partitioning = \"{partitioning}\" }}]");
    job(
        "spread",
        3,
        &[
            file_source("clicks", clicks),
            wasm_operator("logged-in", "filter", &["config = { field = \"logged_in\" }", &inputs]),
            file_sink("out", out),
        ],
    )
}

/// Each line of a file of JSON lines, with its value.
fn json_lines(path: &Path) -> Vec<(String, serde_json::Value)> {
    let text = std::fs::read_to_string(path).expect("read JSON lines");
    text.lines().map(|l| (l.to_string(), serde_json::from_str(l).expect("a JSON line"))).collect()
}

/// `n` clicks by `users` users, one JSON object a line, 70% of them logged in (deterministic).
pub fn generated_clicks(path: &Path, n: usize, users: usize) {
    let mut text = String::new();
    for i in 0..n {
        let logged_in = (i * 7919) % 10 < 7;
        text.push_str(&format!("{{\"ts\":{i},\"user\":\"u{}\",\"logged_in\":{logged_in}}}\n", (i * 31) % users));
    }
    std::fs::write(path, text).expect("write clicks");
}

/// Per-user counts of logged-in clicks in the first `position` bytes of a clicks file: what a
/// checkpoint taken at that source position must hold.
pub fn counts_before(input: &Path, position: u64) -> BTreeMap<String, u64> {
    let text = std::fs::read(input).expect("read input");
    let mut counts = BTreeMap::new();
    for line in String::from_utf8_lossy(&text[..position as usize]).lines() {
        let click: serde_json::Value = serde_json::from_str(line).expect("input is JSON");
        if click["logged_in"] == true {
            *counts.entry(click["user"].as_str().expect("user").to_string()).or_insert(0) += 1;
        }
    }
    counts
}

/// The completed checkpoints (directories with a `_metadata`) in a job's checkpoint directory,
/// oldest first; none while the directory does not exist yet.
pub fn completed_checkpoints(job_dir: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(job_dir)
        .map(|entries| entries.flatten().map(|e| e.path()).filter(|d| d.join("_metadata").is_file()).collect())
        .unwrap_or_default();
    dirs.sort();
    dirs
}

/// Starts `weir run JOB ARGS…` (with `env`) and kills it with SIGKILL once `until` holds; false
/// when the job ended by itself first.
pub fn run_and_kill(job: &str, args: &[&str], env: &[(String, String)], until: impl Fn(Duration) -> bool) -> bool {
    let mut child = Command::new(weir_bin())
        .args(["run", job, "--listen", "none"])
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !until(started.elapsed()) {
        if started.elapsed() >= Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the kill condition never held");
        }
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    true
}

/// A small xorshift generator: the kill moments vary from run to run, and the seed is printed so
/// that a failing sequence can be replayed with WEIR_TEST_SEED.
fn kill_moments(n: usize) -> Vec<Duration> {
    let seed = std::env::var("WEIR_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
    });
    eprintln!("kill moments from WEIR_TEST_SEED={seed}");
    let mut x: u64 = seed;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            Duration::from_millis(250 + x % 500)
        })
        .collect()
}

/// Runs the job `kills` times, killing it with SIGKILL at random moments; each run after the
/// first checkpoint resumes from the latest. Returns how many runs were killed (a run may finish
/// before its moment).
pub fn kill_repeatedly(job: &str, env: &[(String, String)], kills: usize, checkpointed: impl Fn() -> bool) -> usize {
    let mut killed = 0;
    for moment in kill_moments(kills) {
        let resume: &[&str] = if checkpointed() { &["--from-checkpoint", "latest"] } else { &[] };
        killed += usize::from(run_and_kill(job, resume, env, |elapsed| elapsed >= moment));
    }
    killed
}

/// `weir run JOB` in the background, with its API on a free port; killed when dropped.
pub struct Running {
    /// The process.
    pub child: std::process::Child,
    /// Its API: `http://127.0.0.1:<port>`.
    pub server: String,
    /// The job's id.
    pub id: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    /// Starts `weir run JOB ARGS…` and waits until its API lists the job.
    pub fn start(job: &str, args: &[&str]) -> Running {
        Running::start_with_env(job, args, &[])
    }

    /// The same, with `env` in its environment (a sink's password, say).
    pub fn start_with_env(job: &str, args: &[&str], env: &[(String, String)]) -> Running {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let child = Command::new(weir_bin())
            .args(["run", job, "--listen", &listen])
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("WEIR_CACHE_DIR", repo().join("target/test-module-cache"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let server = format!("http://{listen}");
        let started = Instant::now();
        // A `--token` among `args` is the one the API asks for.
        let token = args.iter().position(|a| *a == "--token").and_then(|i| args.get(i + 1)).copied();
        let id = loop {
            let mut list = vec!["--server", &server, "--json", "jobs"];
            list.extend(token.map(|t| ["--token", t]).into_iter().flatten());
            let listed = weir(&list);
            if listed.code == 0 {
                let jobs: serde_json::Value = serde_json::from_str(&listed.stdout).unwrap();
                break jobs["jobs"][0]["id"].as_str().unwrap().to_string();
            }
            assert!(started.elapsed() < Duration::from_secs(20), "weir run did not serve its API");
            std::thread::sleep(Duration::from_millis(20));
        };
        Running { child, server, id }
    }

    /// Waits up to `limit` for the run to end by itself: its exit status, or `None` (it is killed
    /// when dropped).
    pub fn wait_for_end(mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("the run's status") {
                return Some(status);
            }
            if started.elapsed() > limit {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs a client verb against the job's API; returns its trimmed stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut all = vec!["--server", &self.server];
        all.extend_from_slice(args);
        let out = weir(&all);
        assert_eq!(out.code, 0, "weir {args:?}: {}", out.stderr);
        out.stdout.trim().to_string()
    }
}

/// A `weir serve` on a free loopback port, killed when dropped.
pub struct Server {
    child: std::process::Child,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    /// Its data directory.
    pub data_dir: PathBuf,
    log: PathBuf,
}

/// GETs `url`; returns the status and the body as text.
pub fn get_text(url: &str, token: Option<&str>) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into();
    let mut request = ureq::http::Request::builder().method("GET").uri(url);
    if let Some(token) = token {
        request = request.header("Authorization", format!("Bearer {token}"));
    }
    let response = agent.run(request.body(Vec::new()).expect("request")).expect("the server answers");
    let status = response.status().as_u16();
    (status, response.into_body().read_to_string().expect("body"))
}

/// A free loopback port (free when asked; good enough for tests on one machine).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port()
}

impl Server {
    /// Starts `weir serve` on `data_dir` with `extra` arguments and waits until it answers.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Server {
        Server::start_with_env(data_dir, extra, &[])
    }

    /// The same, with `env` in the server's environment (a sink's password, say).
    pub fn start_with_env(data_dir: &Path, extra: &[&str], env: &[(String, String)]) -> Server {
        Server::start_under(&[], data_dir, extra, env)
    }

    /// The same, run by `wrapper` (a command and its arguments, such as `prlimit --nofile=…`).
    pub fn start_under(wrapper: &[&str], data_dir: &Path, extra: &[&str], env: &[(String, String)]) -> Server {
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        let log = data_dir.with_extension(format!("serve-{port}.log"));
        let listen = format!("127.0.0.1:{port}");
        let weir = weir_bin().to_string_lossy().into_owned();
        let (program, args) = match wrapper.split_first() {
            Some((program, args)) => (program.to_string(), [args, &[weir.as_str()]].concat()),
            None => (weir.clone(), Vec::new()),
        };
        let child = Command::new(program)
            .args(args)
            .args(["serve", "--listen", &listen, "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("WEIR_CACHE_DIR", repo().join("target/test-module-cache"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("weir serve starts");
        let server = Server { child, url, data_dir: data_dir.to_path_buf(), log };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(started.elapsed() < Duration::from_secs(30), "weir serve did not start:\n{}", server.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    /// What the server wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs a client verb against this server.
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut all = vec!["--server", &self.url];
        all.extend_from_slice(args);
        weir(&all)
    }

    /// Sends a request; returns the status and the JSON body.
    pub fn http(&self, method: &str, path: &str, body: &[u8], token: Option<&str>) -> (u16, serde_json::Value) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let mut request = ureq::http::Request::builder().method(method).uri(format!("{}{path}", self.url));
        if method != "GET" {
            // As the CLI and the dashboard do: the server refuses changes without a content type.
            request = request.header("Content-Type", "application/json");
        }
        if let Some(token) = token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        let response = agent.run(request.body(body.to_vec()).expect("request")).expect("the server answers");
        let status = response.status().as_u16();
        let text = response.into_body().read_to_string().expect("body");
        (status, serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}")))
    }

    /// GETs `path`; returns the status and the body as text.
    pub fn get_text(&self, path: &str, token: Option<&str>) -> (u16, String) {
        get_text(&format!("{}{path}", self.url), token)
    }

    /// Polls a job until it reaches a terminal state, and returns its record.
    pub fn wait_for_job(&self, id: &str) -> serde_json::Value {
        self.wait_for_job_within(id, Duration::from_secs(60))
    }

    /// [`Server::wait_for_job`] for a job that may take up to `limit`.
    pub fn wait_for_job_within(&self, id: &str, limit: Duration) -> serde_json::Value {
        let started = Instant::now();
        loop {
            let (status, job) = self.http("GET", &format!("/v1/jobs/{id}"), b"", None);
            assert_eq!(status, 200, "{job}");
            if ["finished", "canceled", "failed"].contains(&job["state"].as_str().unwrap_or("")) {
                return job;
            }
            assert!(started.elapsed() < limit, "job {id} did not end: {job}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server (SIGKILL: the data directory must survive a crash, not just a shutdown).
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The JSON of a checkpoint's `_metadata`, after checking its `sha256:` line.
pub fn read_metadata(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).expect("read _metadata");
    let (json, checksum) = text.trim_end().rsplit_once("\nsha256:").expect("a sha256 line");
    let actual = sha256_hex(json.as_bytes());
    assert_eq!(actual, checksum, "{} does not match its checksum", path.display());
    serde_json::from_str(json).expect("_metadata is JSON")
}

/// Writes `metadata` as a `_metadata` file: the JSON, then its `sha256:` line.
pub fn write_metadata(path: &Path, metadata: &serde_json::Value) {
    let json = metadata.to_string();
    std::fs::write(path, format!("{json}\nsha256:{}\n", sha256_hex(json.as_bytes()))).expect("write _metadata");
}

/// The number in a source position of `_metadata`, stored as hex: a file source's next byte
/// offset (the start of the first range it has left, `{"ranges":[{"from":…,"to":…},…]}`) or a
/// generator's next index (its first pending one, or `next`); the 8 little-endian bytes of the
/// number in positions of weir before sources rescaled.
pub fn position_number(position: &serde_json::Value) -> u64 {
    let hex = position.as_str().expect("a position is a hex string");
    let bytes: Vec<u8> =
        (0..hex.len() / 2).map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex")).collect();
    if let Ok(number) = <[u8; 8]>::try_from(bytes.as_slice()) {
        return u64::from_le_bytes(number);
    }
    let json: serde_json::Value = serde_json::from_slice(&bytes).expect("a file or generator position is JSON");
    let number = match json.get("ranges") {
        Some(ranges) => &ranges[0]["from"],
        None => json["pending"].get(0).unwrap_or(&json["next"]),
    };
    number.as_u64().unwrap_or_else(|| panic!("no file offset or generator index in {json}"))
}

fn sha256_hex(bytes: &[u8]) -> String {
    // A test-side SHA-256 through the weir binary would be circular; `sha256sum` is on every
    // machine this runs on.
    let mut child = Command::new("sha256sum").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("sha256sum");
    std::io::Write::write_all(child.stdin.as_mut().expect("stdin"), bytes).expect("write");
    let out = child.wait_with_output().expect("sha256sum output");
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or_default().to_string()
}

/// The value-state entries of a snapshot file (docs: `host/src/checkpoint/snapshot.rs`), as
/// (state index, key, value), decoded independently of weir's own reader.
pub fn snapshot_values(bytes: &[u8]) -> Vec<(u32, Vec<u8>, Vec<u8>)> {
    let mut at = 8;
    assert_eq!(&bytes[..8], b"WEIRSNP1");
    let body_end = bytes.len() - 32;
    let u32_at = |at: &mut usize| {
        let v = u32::from_le_bytes(bytes[*at..*at + 4].try_into().unwrap());
        *at += 4;
        v
    };
    let take = |at: &mut usize, n: usize| {
        let v = bytes[*at..*at + n].to_vec();
        *at += n;
        v
    };
    let states = u32_at(&mut at);
    for _ in 0..states {
        let name_len = u32_at(&mut at) as usize;
        at += name_len + 1 + 4;
    }
    let mut values = Vec::new();
    let groups = u32_at(&mut at);
    for _ in 0..groups {
        at += 2;
        let count = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
        at += 8;
        for _ in 0..count {
            let state = u32_at(&mut at);
            let key_len = u32_at(&mut at) as usize;
            let key = take(&mut at, key_len);
            let item = take(&mut at, 1)[0];
            assert_eq!(item, 0, "only value state expected here");
            let value_len = u32_at(&mut at) as usize;
            values.push((state, key, take(&mut at, value_len)));
        }
    }
    assert_eq!(at, body_end, "the snapshot has no trailing bytes before its checksum");
    values
}
