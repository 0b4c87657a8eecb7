//! The `postgres` sink against a real PostgreSQL server on loopback: killed again and again at
//! random moments and resumed, the table holds exactly the counts (upsert) or every output line
//! once (append), and no prepared transaction is left; bad settings and bad input are refused,
//! naming the sink.
use std::path::Path;
use std::time::Duration;

use weir_e2e::postgres::Postgres;
use weir_e2e::{
    clicks_job, completed_checkpoints, expected_counts, expected_lines, file_source, generated_clicks, job,
    kill_repeatedly, weir_with_env, write_job,
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
    let input = dir.join("clicks.jsonl");
    generated_clicks(&input, 8000, 40);
    let file_job = clicks_job(&input, "count", 2, &dir.join("unused"));
    let without_sink = &file_job[..file_job.find("[[sink]]").unwrap()];
    let source = without_sink.replacen("type = \"file\"\npath = ", "type = \"file\"\nrate = 4000\npath = ", 1);
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

/// Kills the job three times at random moments and resumes it to the end.
fn killed_and_resumed(dir: &Path, job: &str, pg: &Postgres) {
    let job_dir = dir.join("chk/clicks-per-user");
    let kills = kill_repeatedly(job, &pg.env(), 3, || !completed_checkpoints(&job_dir).is_empty());
    assert!(kills >= 2, "the job was killed {kills} times of 3");
    let resumed = weir_with_env(
        &["run", job, "--listen", "none", "--from-checkpoint", "latest"],
        &pg.env(),
        Duration::from_secs(120),
    );
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    assert_eq!(pg.psql("SELECT count(*) FROM pg_prepared_xacts"), "0", "no prepared transaction is left");
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
