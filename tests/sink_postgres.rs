//! The `postgres` sink against a real PostgreSQL server on loopback: killed again and again at
//! random moments and resumed, the table holds exactly the counts (upsert) or every output line
//! once (append), and no prepared transaction is left; bad settings and bad input are refused,
//! naming the sink.
use std::path::Path;
use std::time::Duration;

use weir_e2e::postgres::Postgres;
use weir_e2e::{
    Running, clicks_job, completed_checkpoints, expected_counts, expected_lines, file_source, generated_clicks, job,
    kill_repeatedly, operator, weir_with_env, write_job,
};

/// A `postgres` sink section writing `(user_id, clicks)` from the count's `key` and `count`.
fn postgres_sink(pg: &Postgres, table: &str, extra: &str) -> String {
    format!(
        "[[sink]]\nuid = \"counts\"\ntype = \"postgres\"\nurl = \"{}\"\npassword-env = \"WEIR_TEST_PG_PASSWORD\"\n\
         table = \"{table}\"\ncolumns = {{ user_id = \"key\", clicks = \"count\" }}\n{extra}\n",
        pg.url()
    )
}

/// Checkpoints every 100 ms.
const CHECKPOINTS: &str = "[checkpointing]\ninterval = \"100ms\"\nstorage = \"file://chk\"\n";

/// The clicks job at parallelism 2 reading 8000 clicks at 4000 per second into `sink`, then
/// `tables` (such as [`CHECKPOINTS`]).
fn clicks_into(dir: &Path, sink: &str, tables: &str) -> String {
    clicks_counted_by(dir, (8000, 4000), "count", sink, tables)
}

/// The clicks job at parallelism 2 reading `clicks` clicks at `rate` per second, counted by
/// operator `count` (a module; with its config lines), into `sink`, then `tables`.
fn clicks_counted_by(dir: &Path, (clicks, rate): (usize, u32), count: &str, sink: &str, tables: &str) -> String {
    let input = dir.join("clicks.jsonl");
    generated_clicks(&input, clicks, 40);
    let file_job = clicks_job(&input, count, 2, &dir.join("unused"));
    let without_sink = &file_job[..file_job.find("[[sink]]").unwrap()];
    let rate = format!("type = \"file\"\nrate = {rate}\npath = ");
    let source = without_sink.replacen("type = \"file\"\npath = ", &rate, 1);
    write_job(dir, &format!("{source}\n{sink}\n{tables}"))
}

/// `weir run JOB` in the background with the password in its environment.
fn spawn(job: &str, pg: &Postgres, stderr: std::process::Stdio) -> std::process::Child {
    let mut run = std::process::Command::new(weir_e2e::weir_bin());
    run.args(["run", job, "--listen", "none"]).envs(pg.env()).stderr(stderr).spawn().unwrap()
}

/// The `counts` table holds exactly each user's count of the input, and no prepared transaction
/// is left.
fn assert_exact_counts(pg: &Postgres, dir: &Path) {
    let expected: Vec<String> =
        expected_counts(&dir.join("clicks.jsonl")).iter().map(|(user, n)| format!("{user}|{n}")).collect();
    let rows = pg.psql("SELECT user_id, clicks FROM counts");
    let mut rows: Vec<&str> = rows.lines().collect();
    rows.sort();
    assert_eq!(rows, expected);
    assert_eq!(pg.psql("SELECT count(*) FROM pg_prepared_xacts"), "0", "no prepared transaction is left");
}

/// The `clicks` table holds every output line of the input exactly once.
fn assert_every_line_once(pg: &Postgres, dir: &Path) {
    let rows = pg.psql("SELECT user_id, clicks FROM clicks");
    let mut rows: Vec<String> = rows
        .lines()
        .map(|r| r.split_once('|').unwrap())
        .map(|(u, c)| format!(r#"{{"key":"{u}","count":{c}}}"#))
        .collect();
    rows.sort();
    assert_eq!(rows, expected_lines(&expected_counts(&dir.join("clicks.jsonl"))), "every line once");
}

/// Runs `job` from `from` (`--from-checkpoint latest`, `--from-savepoint PATH`) to its end and
/// checks that it succeeded and left no prepared transaction; returns what it printed.
fn resumed_to_the_end(job: &str, from: &[&str], pg: &Postgres) -> String {
    let args = [&["run", job, "--listen", "none"], from].concat();
    let resumed = weir_with_env(&args, &pg.env(), Duration::from_secs(120));
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    assert_eq!(pg.psql("SELECT count(*) FROM pg_prepared_xacts"), "0", "no prepared transaction is left");
    resumed.stderr
}

/// Kills the job three times at random moments and resumes it to the end.
fn killed_and_resumed(dir: &Path, job: &str, pg: &Postgres) {
    let job_dir = dir.join("chk/clicks-per-user");
    let kills = kill_repeatedly(job, &pg.env(), 3, || !completed_checkpoints(&job_dir).is_empty());
    assert!(kills >= 2, "the job was killed {kills} times of 3");
    resumed_to_the_end(job, &["--from-checkpoint", "latest"], pg);
}

#[test]
fn killed_again_and_again_an_upsert_job_leaves_exactly_the_counts() {
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start(10);
    pg.psql("CREATE TABLE counts (user_id text PRIMARY KEY, clicks bigint NOT NULL)");
    let sink = postgres_sink(&pg, "counts", "mode = \"upsert\"\nkey-columns = [\"user_id\"]");
    let job = clicks_into(dir.path(), &sink, CHECKPOINTS);
    killed_and_resumed(dir.path(), &job, &pg);
    assert_exact_counts(&pg, dir.path());
}

#[test]
fn killed_again_and_again_an_append_job_writes_every_line_once() {
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start(10);
    pg.psql("CREATE TABLE clicks (user_id text NOT NULL, clicks bigint NOT NULL)");
    let job = clicks_into(dir.path(), &postgres_sink(&pg, "clicks", ""), CHECKPOINTS);
    killed_and_resumed(dir.path(), &job, &pg);
    assert_every_line_once(&pg, dir.path());
}

#[test]
fn without_checkpointing_an_undisturbed_job_writes_every_line_once() {
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start(0);
    pg.psql("CREATE TABLE clicks (user_id text NOT NULL, clicks bigint NOT NULL)");
    // No prepared transactions: the server allows none, and none are needed.
    let job = clicks_into(dir.path(), &postgres_sink(&pg, "clicks", ""), "");
    let out = weir_with_env(&["run", &job, "--listen", "none"], &pg.env(), Duration::from_secs(60));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_every_line_once(&pg, dir.path());
}

#[test]
fn bad_settings_and_bad_input_are_refused_naming_the_sink() {
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start(10);
    pg.psql("CREATE TABLE counts (user_id text PRIMARY KEY, clicks bigint NOT NULL)");
    let run = |job: &str, env: &[(String, String)]| {
        weir_with_env(&["run", job, "--listen", "none"], env, Duration::from_secs(60))
    };
    let wrong = vec![("WEIR_TEST_PG_PASSWORD".to_string(), "wrong".to_string())];
    type Env = Vec<(String, String)>;
    let cases: Vec<(String, Env, &str)> = vec![
        (postgres_sink(&pg, "nope", ""), pg.env(), "sink 'counts': reading table \"nope\""),
        (
            postgres_sink(&pg, "counts", "").replace("clicks = \"count\"", "visits = \"count\""),
            pg.env(),
            "table \"counts\" has no column \"visits\" (it has: clicks, user_id)",
        ),
        (postgres_sink(&pg, "counts", ""), wrong, "sink 'counts': cannot connect to PostgreSQL"),
        (postgres_sink(&pg, "counts", ""), Vec::new(), "`password-env` names WEIR_TEST_PG_PASSWORD, which is not set"),
        (postgres_sink(&pg, "counts", "").replace("weir@", "weir:secret@"), pg.env(), "`url` holds a password"),
        (postgres_sink(&pg, "counts", "mode = \"upsert\""), pg.env(), "mode = \"upsert\" needs `key-columns`"),
    ];
    for (sink, env, message) in cases {
        let out = run(&clicks_into(dir.path(), &sink, CHECKPOINTS), &env);
        assert_eq!(out.code, 1, "{sink}: {}", out.stderr);
        assert!(out.stderr.contains(message), "{sink}: {}", out.stderr);
    }
    // A value that is not JSON: a text file straight into the sink.
    std::fs::write(dir.path().join("words.txt"), "hello\n").unwrap();
    let text =
        job("words", 1, &[file_source("words", &dir.path().join("words.txt")), postgres_sink(&pg, "counts", "")]);
    let out = run(&write_job(dir.path(), &text), &pg.env());
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("sink 'counts': an event value is not a JSON object"), "{}", out.stderr);
    assert_eq!(pg.psql("SELECT count(*) FROM counts"), "0", "nothing was written");
}

#[test]
fn a_server_without_prepared_transactions_is_refused_with_how_to_allow_them() {
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start(0);
    pg.psql("CREATE TABLE counts (user_id text PRIMARY KEY, clicks bigint NOT NULL)");
    let job = clicks_into(dir.path(), &postgres_sink(&pg, "counts", ""), CHECKPOINTS);
    let out = weir_with_env(&["run", &job, "--listen", "none"], &pg.env(), Duration::from_secs(60));
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("max_prepared_transactions = 0") && out.stderr.contains("postgresql.conf"),
        "{}",
        out.stderr
    );
}

#[test]
fn rows_are_visible_only_once_their_checkpoint_completes() {
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start(10);
    pg.psql("CREATE TABLE clicks (user_id text NOT NULL, clicks bigint NOT NULL)");
    // Checkpoints every 2 s: the rows of the first 2 s are prepared, not committed, meanwhile.
    let checkpoints = CHECKPOINTS.replace("interval = \"100ms\"", "interval = \"2s\"");
    let job = clicks_into(dir.path(), &postgres_sink(&pg, "clicks", ""), &checkpoints);
    let mut child = spawn(&job, &pg, std::process::Stdio::null());
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(pg.psql("SELECT count(*) FROM clicks"), "0", "nothing is visible before the first checkpoint");
    assert!(child.wait().unwrap().success());
    let expected = expected_lines(&expected_counts(&dir.path().join("clicks.jsonl")));
    assert_eq!(pg.psql("SELECT count(*) FROM clicks"), expected.len().to_string());
}

#[test]
fn a_postgres_restart_mid_run_is_ridden_out_and_the_counts_are_exact() {
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start(10);
    pg.psql("CREATE TABLE counts (user_id text PRIMARY KEY, clicks bigint NOT NULL)");
    let sink = postgres_sink(&pg, "counts", "mode = \"upsert\"\nkey-columns = [\"user_id\"]");
    let restart = "[restart]\nstrategy = \"fixed-delay\"\nattempts = 10\ndelay = \"300ms\"\n";
    let job = clicks_into(dir.path(), &sink, &format!("{CHECKPOINTS}\n{restart}"));
    let child = spawn(&job, &pg, std::process::Stdio::piped());
    std::thread::sleep(Duration::from_millis(800));
    pg.restart();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("sink 'counts'") && stderr.contains("restarting"), "the restart was noticed: {stderr}");
    assert_exact_counts(&pg, dir.path());
}

/// Waits up to 60 s for `child` to end; its exit status and stderr.
fn wait_output(mut child: std::process::Child, limit: Duration) -> (Option<i32>, String) {
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("weir run did not end within {limit:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Checkpoints every 30 s: none completes while the 2-second job runs, so that a savepoint taken
/// meanwhile is the only point it has committed anything at.
const RARE_CHECKPOINTS: &str = "[checkpointing]\ninterval = \"30s\"\nstorage = \"file://chk\"\n";

#[test]
fn a_savepoint_restored_after_a_cancel_or_a_kill_commits_exactly_what_it_covers() {
    for end in ["cancel", "kill"] {
        let dir = tempfile::tempdir().unwrap();
        let pg = Postgres::start(10);
        pg.psql("CREATE TABLE clicks (user_id text NOT NULL, clicks bigint NOT NULL)");
        let job = clicks_into(dir.path(), &postgres_sink(&pg, "clicks", ""), RARE_CHECKPOINTS);
        let running = Running::start_with_env(&job, &[], &pg.env());
        std::thread::sleep(Duration::from_millis(700));
        let savepoint = running.cli(&["savepoint", &running.id]);
        match end {
            // The canceled run ends (and lets go of the job's directories) before the restore.
            "cancel" => {
                running.cli(&["cancel", &running.id]);
                assert!(running.wait_for_end(Duration::from_secs(30)).is_some(), "the canceled run ends");
            }
            _ => drop(running),
        }
        // Its transactions stay prepared: the savepoint covers them, no checkpoint completed.
        resumed_to_the_end(&job, &["--from-savepoint", &savepoint], &pg);
        assert_every_line_once(&pg, dir.path());
    }
}

#[test]
fn a_fork_into_another_table_leaves_its_parents_transactions_to_the_parent() {
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start(10);
    for table in ["clicks", "forked"] {
        pg.psql(&format!("CREATE TABLE {table} (user_id text NOT NULL, clicks bigint NOT NULL)"));
    }
    // 8000 clicks at 2000 a second: the parent runs 4 s, and commits only at its end.
    let job = clicks_counted_by(dir.path(), (8000, 2000), "count", &postgres_sink(&pg, "clicks", ""), RARE_CHECKPOINTS);
    let parent = Running::start_with_env(&job, &[], &pg.env());
    std::thread::sleep(Duration::from_millis(700));
    let savepoint = parent.cli(&["savepoint", &parent.id]);
    let fork_job = std::fs::read_to_string(&job)
        .unwrap()
        .replace("name = \"clicks-per-user\"", "name = \"clicks-fork\"")
        .replace("table = \"clicks\"", "table = \"forked\"");
    let fork_dir = dir.path().join("fork");
    std::fs::create_dir_all(&fork_dir).unwrap();
    let fork_job = write_job(&fork_dir, &fork_job);
    let fork = std::process::Command::new(weir_e2e::weir_bin())
        .args(["fork", &savepoint, &fork_job])
        .envs(pg.env())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(pg.psql("SELECT count(*) FROM clicks"), "0", "the fork committed nothing of its parent's");
    let (code, stderr) = wait_output(fork, Duration::from_secs(60));
    assert_eq!(code, Some(0), "{stderr}");
    let ended = parent.wait_for_end(Duration::from_secs(60));
    assert!(ended.is_some_and(|s| s.success()), "the parent finished: {ended:?}");
    assert_every_line_once(&pg, dir.path());
    let expected = expected_lines(&expected_counts(&dir.path().join("clicks.jsonl")));
    let forked: usize = pg.psql("SELECT count(*) FROM forked").parse().unwrap();
    assert!(forked > 0 && forked < expected.len(), "the fork wrote what came after the savepoint: {forked}");
    assert_eq!(pg.psql("SELECT count(*) FROM pg_prepared_xacts"), "0");
}

#[test]
fn killed_right_after_upgrades_a_resumed_job_writes_every_line_once() {
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start(10);
    pg.psql("CREATE TABLE clicks (user_id text NOT NULL, clicks bigint NOT NULL)");
    // flaky_count that never traps, upgraded to count: the same state, handed over in place.
    let checkpoints = CHECKPOINTS.replace("interval = \"100ms\"", "interval = \"1s\"");
    let sink = postgres_sink(&pg, "clicks", "");
    let job = clicks_counted_by(dir.path(), (24000, 4000), "test/flaky_count", &sink, &checkpoints);
    let text = std::fs::read_to_string(&job).unwrap();
    let never_traps = "input = \"hash\"\nconfig = { trap-at = 1000000, attempts = 0 }";
    std::fs::write(&job, text.replace("input = \"hash\"", never_traps)).unwrap();
    let upgrade = format!("count-per-user={}", operator("count").display());
    for cycle in 0..2 {
        let resume: &[&str] = if cycle == 0 { &[] } else { &["--from-checkpoint", "latest"] };
        let running = Running::start_with_env(&job, resume, &pg.env());
        // A checkpoint of this run completes (every 1 s), then the upgrade stops the job at a
        // savepoint after it, and the new run is killed before its own first checkpoint.
        std::thread::sleep(Duration::from_millis(1300));
        running.cli(&["upgrade", &running.id, "--operator", &upgrade]);
        std::thread::sleep(Duration::from_millis(300));
        drop(running);
    }
    resumed_to_the_end(&job, &["--from-checkpoint", "latest"], &pg);
    assert_every_line_once(&pg, dir.path());
}

#[test]
fn a_lock_in_the_way_fails_the_job_naming_its_holder_and_cancel_does_not_wait_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start(10);
    pg.psql("CREATE TABLE counts (user_id text PRIMARY KEY, clicks bigint NOT NULL)");
    // A transaction left prepared by someone else holds user u0's row (u0 is logged in).
    pg.psql("BEGIN; INSERT INTO counts VALUES ('u0', 0); PREPARE TRANSACTION 'left-behind';");
    let upsert = "mode = \"upsert\"\nkey-columns = [\"user_id\"]";
    let no_restarts = "[restart]\nstrategy = \"none\"\n";
    let sink = postgres_sink(&pg, "counts", &format!("{upsert}\nstatement-timeout = \"2s\""));
    let job = clicks_into(dir.path(), &sink, &format!("{CHECKPOINTS}\n{no_restarts}"));
    let out = weir_with_env(&["run", &job, "--listen", "none"], &pg.env(), Duration::from_secs(60));
    assert_eq!(out.code, 1, "{}", out.stderr);
    let holder = "prepared transaction 'left-behind'";
    for needle in ["sink 'counts'", "canceling statement due to", "statement-timeout = 2s", holder] {
        assert!(out.stderr.contains(needle), "{needle}: {}", out.stderr);
    }

    // With a long timeout, the sink waits in the server: a cancel interrupts it there.
    let sink = postgres_sink(&pg, "counts", &format!("{upsert}\nstatement-timeout = \"10min\""));
    let job = clicks_into(dir.path(), &sink, &format!("{CHECKPOINTS}\n{no_restarts}"));
    let running = Running::start_with_env(&job, &[], &pg.env());
    std::thread::sleep(Duration::from_millis(1500));
    let canceled = std::time::Instant::now();
    running.cli(&["cancel", &running.id]);
    let ended = running.wait_for_end(Duration::from_secs(10)).expect("weir run ends within 10 s of the cancel");
    assert_eq!(ended.code(), Some(1), "a canceled run exits 1");
    assert!(canceled.elapsed() < Duration::from_secs(5), "canceled in {:?}", canceled.elapsed());
    pg.psql("ROLLBACK PREPARED 'left-behind'");
}

/// The clicks job counting with `count` and the config `flaky_count` reads once it is swapped
/// in (`trap-at`: the count it traps at, in every attempt), appending into table `clicks`, with
/// checkpoints every 200 ms and `upgrade` settings.
fn upgradable_clicks(dir: &Path, pg: &Postgres, clicks: (usize, u32), trap_at: u64, upgrade: &str) -> String {
    let checkpoints = CHECKPOINTS.replace("interval = \"100ms\"", "interval = \"200ms\"");
    let tables = format!("{checkpoints}\n[upgrade]\n{upgrade}\n");
    let job = clicks_counted_by(dir, clicks, "count", &postgres_sink(pg, "clicks", ""), &tables);
    let text = std::fs::read_to_string(&job).unwrap();
    let config = format!("input = \"hash\"\nconfig = {{ trap-at = {trap_at}, attempts = 100 }}");
    std::fs::write(&job, text.replace("input = \"hash\"", &config)).unwrap();
    job
}

fn swap_to_flaky_count(running: &Running) -> weir_e2e::Output {
    let flaky = format!("count-per-user={}", operator("test/flaky_count").display());
    // Without the trial, which could refuse it when a recent event it replays traps.
    weir_e2e::weir(&["--server", &running.server, "upgrade", &running.id, "--no-trial", "--operator", &flaky])
}

#[test]
fn a_rolled_back_upgrade_leaves_the_table_as_if_the_failed_module_never_ran() {
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start(10);
    pg.psql("CREATE TABLE clicks (user_id text NOT NULL, clicks bigint NOT NULL)");
    // 40 users, 2000 clicks a second: flaky_count, swapped in at about count 70, commits for
    // about 2 s before it traps at count 150, within the rollback window (30 s).
    let job = upgradable_clicks(dir.path(), &pg, (20_000, 2000), 150, "rollback-window = \"30s\"");
    let running = Running::start_with_env(&job, &[], &pg.env());
    std::thread::sleep(Duration::from_millis(2000));
    swap_to_flaky_count(&running);
    let server = running.server.clone();
    let id = running.id.clone();
    let started = std::time::Instant::now();
    let history = loop {
        let status = weir_e2e::weir(&["--server", &server, "--json", "status", &id]);
        let job: serde_json::Value = serde_json::from_str(&status.stdout).unwrap_or_default();
        let events: Vec<String> = job["history"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|h| h["event"].as_str().map(str::to_string))
            .collect();
        if events.len() >= 3 || status.code != 0 || started.elapsed() > Duration::from_secs(30) {
            break events;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(history, ["started", "upgraded", "rolled-back"], "the failed module was rolled back");
    let ended = running.wait_for_end(Duration::from_secs(60));
    assert!(ended.is_some_and(|s| s.success()), "{ended:?}");
    assert_every_line_once(&pg, dir.path());
    assert_eq!(pg.psql("SELECT count(*) FROM pg_prepared_xacts"), "0", "no prepared transaction is left");
}

#[test]
fn output_after_an_upgrade_waits_for_its_rollback_window_and_a_kill_meanwhile_writes_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start(10);
    pg.psql("CREATE TABLE clicks (user_id text NOT NULL, clicks bigint NOT NULL)");
    let job = upgradable_clicks(dir.path(), &pg, (20_000, 2000), 1_000_000, "rollback-window = \"6s\"");
    let running = Running::start_with_env(&job, &[], &pg.env());
    std::thread::sleep(Duration::from_millis(2000));
    let swapped = swap_to_flaky_count(&running);
    assert_eq!(swapped.code, 0, "{}", swapped.stderr);
    let rows = || pg.psql("SELECT count(*) FROM clicks").parse::<u64>().unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    let early = rows();
    std::thread::sleep(Duration::from_millis(2000));
    assert_eq!(rows(), early, "the new module's rows are held back during the rollback window");
    drop(running);
    let stderr = resumed_to_the_end(&job, &["--from-checkpoint", "latest"], &pg);
    assert!(stderr.contains("from savepoint"), "resumed from the upgrade's savepoint: {stderr}");
    assert_every_line_once(&pg, dir.path());
}
