//! The kafka source and sink against a real broker on loopback (tansu, behind a proxy the tests
//! can take down), with records produced and read back by an independent client: every record
//! read once (bounded, with and without checkpoints, killed and resumed into PostgreSQL, stopped
//! with a savepoint and restored at another source parallelism, through a broker outage), the
//! sink losing nothing, and bad settings named.
use std::path::{Path, PathBuf};
use std::time::Duration;

use weir_e2e::kafka::Kafka;
use weir_e2e::postgres::Postgres;
use weir_e2e::{
    Running, Server, blackhole_sink, completed_checkpoints, expected_counts, expected_lines, file_sink, file_source,
    generated_clicks, job, run_and_kill, sink_lines, wasm_operator, weir, weir_with_env, write_job,
};

const PARTITIONS: u32 = 3;

/// `n` clicks of 40 users in `dir/clicks.jsonl`, produced to a new 3-partition topic `clicks`.
fn clicks_topic(kafka: &Kafka, dir: &Path, n: usize) -> PathBuf {
    let input = dir.join("clicks.jsonl");
    generated_clicks(&input, n, 40);
    kafka.create_topic("clicks", PARTITIONS);
    kafka.produce_lines("clicks", PARTITIONS, &input);
    input
}

/// A kafka source of topic `clicks`, with `extra` settings.
fn kafka_source(kafka: &Kafka, extra: &str) -> String {
    format!(
        "[[source]]\nuid = \"clicks\"\ntype = \"kafka\"\nbootstrap-servers = \"{}\"\ntopic = \"clicks\"\n{extra}\n",
        kafka.bootstrap()
    )
}

/// The seed documents' job: clicks from `source`, logged-in ones counted per user, into `sink`;
/// then `tables`.
fn seed_job(dir: &Path, source: &str, sink: &str, tables: &str) -> String {
    let sections = [
        source.to_string(),
        wasm_operator("logged-in", "filter", &["config = { field = \"logged_in\" }"]),
        wasm_operator("by-user", "key_by", &["config = { field = \"user\" }"]),
        wasm_operator("count-per-user", "count", &["input = \"hash\""]),
        sink.to_string(),
    ];
    write_job(dir, &format!("{}\n{tables}\n", job("clicks-per-user", 2, &sections)))
}

/// Runs the job once per moment (ms), each resuming from the latest checkpoint, killed with
/// SIGKILL at that moment or, on a loaded machine, once it has completed a checkpoint of its own
/// if later (a Kafka job starts slower than a file job); returns how many runs were killed.
fn kill_after_checkpoints(job: &str, job_dir: &Path, env: &[(String, String)], moments: &[u64]) -> usize {
    let latest = || completed_checkpoints(job_dir).pop();
    let mut killed = 0;
    for &moment in moments {
        let before = latest();
        let resume: &[&str] = if before.is_some() { &["--from-checkpoint", "latest"] } else { &[] };
        let after = Duration::from_millis(moment);
        killed += usize::from(run_and_kill(job, resume, env, |elapsed| elapsed >= after && latest() != before));
    }
    killed
}

const CHECKPOINTS: &str = "[checkpointing]\ninterval = \"100ms\"\nstorage = \"file://chk\"\n";

#[test]
fn a_bounded_source_reads_every_record_once_with_and_without_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let kafka = Kafka::start();
    let input = clicks_topic(&kafka, dir.path(), 3000);
    let expected = expected_lines(&expected_counts(&input));
    for (name, tables) in [("plain", ""), ("checkpointed", CHECKPOINTS)] {
        let run_dir = dir.path().join(name);
        std::fs::create_dir_all(&run_dir).unwrap();
        let source = kafka_source(&kafka, "stop-at = \"latest\"");
        let job = seed_job(&run_dir, &source, &file_sink("counts", &run_dir.join("out")), tables);
        let run = weir(&["run", &job, "--listen", "none"]);
        assert_eq!(run.code, 0, "{name}: {}", run.stderr);
        assert!(run.stderr.contains("events in 0          out 3000"), "{name}: every record read: {}", run.stderr);
        assert_eq!(sink_lines(&run_dir.join("out")), expected, "{name}");
    }
}

/// The `counts` table holds exactly each user's count, and no prepared transaction is left.
fn assert_exact_counts(pg: &Postgres, input: &Path) {
    let expected: Vec<String> = expected_counts(input).iter().map(|(user, n)| format!("{user}|{n}")).collect();
    let rows = pg.psql("SELECT user_id, clicks FROM counts");
    let mut rows: Vec<&str> = rows.lines().collect();
    rows.sort();
    assert_eq!(rows, expected);
    assert_eq!(pg.psql("SELECT count(*) FROM pg_prepared_xacts"), "0", "no prepared transaction is left");
}

/// A broker with `n` clicks in topic `clicks` (also in `dir/clicks.jsonl`), and PostgreSQL with
/// the tables of [`postgres_sinks`], whose sections it returns.
struct SeedServers {
    dir: tempfile::TempDir,
    kafka: Kafka,
    input: PathBuf,
    pg: Postgres,
    sinks: String,
}

fn seed_servers(n: usize) -> SeedServers {
    let dir = tempfile::tempdir().unwrap();
    let kafka = Kafka::start();
    let input = clicks_topic(&kafka, dir.path(), n);
    let pg = Postgres::start(10);
    let sinks = postgres_sinks(&pg);
    SeedServers { dir, kafka, input, pg, sinks }
}

#[test]
fn killed_again_and_again_the_seed_job_leaves_exactly_the_counts_in_postgres() {
    let SeedServers { dir, kafka, input, pg, sinks } = seed_servers(8000);
    let source = kafka_source(&kafka, "stop-at = \"latest\"\nrate = 3000\nparallelism = 2");
    let job = seed_job(dir.path(), &source, &sinks, CHECKPOINTS);
    let kills = kill_after_checkpoints(&job, &dir.path().join("chk/clicks-per-user"), &pg.env(), &[250, 400, 600]);
    assert!(kills >= 2, "the job was killed {kills} times of 3");
    let resumed = weir_with_env(
        &["run", &job, "--listen", "none", "--from-checkpoint", "latest"],
        &pg.env(),
        Duration::from_secs(120),
    );
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    assert_tables_exact(&pg, &input);
}

/// An upsert sink of the counts into `counts` and an append sink of every line into `clicks`.
fn postgres_sinks(pg: &Postgres) -> String {
    pg.psql("CREATE TABLE counts (user_id text PRIMARY KEY, clicks bigint NOT NULL)");
    pg.psql("CREATE TABLE clicks (user_id text NOT NULL, clicks bigint NOT NULL)");
    let sink = |uid: &str, table: &str, extra: &str| {
        format!(
            "[[sink]]\nuid = \"{uid}\"\ntype = \"postgres\"\nurl = \"{}\"\npassword-env = \"WEIR_TEST_PG_PASSWORD\"\n\
             table = \"{table}\"\ncolumns = {{ user_id = \"key\", clicks = \"count\" }}\n{extra}\n",
            pg.url()
        )
    };
    format!(
        "{}\n{}",
        sink("counts", "counts", "mode = \"upsert\"\nkey-columns = [\"user_id\"]"),
        sink("lines", "clicks", "")
    )
}

/// Both tables hold exactly what the input makes: each user's count, and every line once.
fn assert_tables_exact(pg: &Postgres, input: &Path) {
    assert_exact_counts(pg, input);
    let mut lines: Vec<String> = pg
        .psql("SELECT user_id, clicks FROM clicks")
        .lines()
        .map(|r| r.split_once('|').unwrap())
        .map(|(u, c)| format!(r#"{{"key":"{u}","count":{c}}}"#))
        .collect();
    lines.sort();
    assert_eq!(lines, expected_lines(&expected_counts(input)), "every line once");
}

#[test]
fn on_weir_serve_the_seed_job_stops_with_a_savepoint_and_resumes_into_postgres_exactly_once() {
    let SeedServers { dir, kafka, input, pg, sinks } = seed_servers(6000);
    let slow = kafka_source(&kafka, "stop-at = \"latest\"\nrate = 1000");
    let job = seed_job(dir.path(), &slow, &sinks, CHECKPOINTS);
    let server = Server::start_with_env(&dir.path().join("data"), &[], &pg.env());
    let id = server.cli(&["submit", &job]).stdout.trim().to_string();
    std::thread::sleep(Duration::from_millis(1000));
    let stopped = server.cli(&["stop", &id, "--savepoint"]);
    assert_eq!(stopped.code, 0, "{}", stopped.stderr);
    let savepoint = stopped.stdout.trim().to_string();
    assert_eq!(server.wait_for_job(&id)["state"], "finished");
    assert_eq!(pg.psql("SELECT count(*) FROM pg_prepared_xacts"), "0", "the stop committed its transactions");
    let partial: u64 = pg.psql("SELECT count(*) FROM clicks").parse().unwrap();
    assert!(partial > 0 && partial < expected_lines(&expected_counts(&input)).len() as u64, "{partial} lines");

    // The rest at full speed, on the same server, from the savepoint.
    let fast = seed_job(dir.path(), &kafka_source(&kafka, "stop-at = \"latest\""), &sinks, CHECKPOINTS);
    let resumed = server.cli(&["submit", "--from-savepoint", &savepoint, &fast]);
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    let job = server.wait_for_job(resumed.stdout.trim());
    assert_eq!(job["state"], "finished", "{job}");
    assert_tables_exact(&pg, &input);
}

#[test]
fn stopped_with_a_savepoint_and_restored_at_source_parallelism_3_nothing_is_read_twice_or_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let kafka = Kafka::start();
    let input = clicks_topic(&kafka, dir.path(), 6000);
    let out = dir.path().join("out");
    let tables = format!("{CHECKPOINTS}savepoint-dir = \"savepoints\"\n");
    let slow = kafka_source(&kafka, "stop-at = \"latest\"\nrate = 300\nparallelism = 2");
    let job = seed_job(dir.path(), &slow, &file_sink("counts", &out), &tables);
    let running = Running::start(&job, &[]);
    // The job's status shows each partition's offset and lag (from the client's statistics,
    // every second; unknown until the partition's first fetch has answered).
    let lags = || {
        let status: serde_json::Value = serde_json::from_str(&running.cli(&["status", &running.id, "--json"])).unwrap();
        let subtasks = status["vertices"][0]["subtasks"].as_array().cloned().unwrap_or_default();
        let partitions: Vec<serde_json::Value> =
            subtasks.iter().flat_map(|s| s["status"]["partitions"].as_array().cloned().unwrap_or_default()).collect();
        partitions.iter().map(|p| p["lag"].as_u64()).collect::<Vec<_>>()
    };
    let started = std::time::Instant::now();
    let reported = |lags: Vec<Option<u64>>| lags.len() == PARTITIONS as usize && lags.iter().all(Option::is_some);
    while !reported(lags()) && started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let lags = lags();
    assert_eq!(lags.len(), PARTITIONS as usize, "{lags:?}");
    assert!(lags.iter().flatten().sum::<u64>() > 0, "{lags:?}");
    let shown = running.cli(&["status", &running.id]);
    assert_eq!(shown.matches(" lag ").count(), PARTITIONS as usize, "{shown}");
    assert!(shown.contains("source 'clicks' subtask 0: clicks/"), "{shown}");
    // And /metrics has each partition's lag, labelled by topic and partition.
    let (_, metrics) = weir_e2e::get_text(&format!("{}/metrics", running.server), None);
    let pending: Vec<&str> = metrics.lines().filter(|l| l.starts_with("weir_source_pendingRecords{")).collect();
    assert_eq!(pending.len(), PARTITIONS as usize, "{metrics}");
    assert!(pending.iter().all(|l| l.contains("operator=\"clicks\"") && l.contains("topic=\"")), "{pending:?}");
    let savepoint = running.cli(&["stop", &running.id, "--savepoint"]);
    let mut running = running;
    assert!(running.child.wait().unwrap().success());
    let read_before = sink_lines(&out).len();
    assert!(read_before > 0 && read_before < expected_lines(&expected_counts(&input)).len());

    let wide = kafka_source(&kafka, "stop-at = \"latest\"\nparallelism = 3");
    let job = seed_job(dir.path(), &wide, &file_sink("counts", &out), &tables);
    let run = weir(&["run", &job, "--listen", "none", "--from-savepoint", &savepoint]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains("parallelism 3"), "{}", run.stderr);
    assert_eq!(sink_lines(&out), expected_lines(&expected_counts(&input)), "every record once over both runs");
}

#[test]
fn a_broker_outage_is_ridden_out_and_every_record_is_counted_once() {
    let dir = tempfile::tempdir().unwrap();
    let kafka = Kafka::start();
    let input = clicks_topic(&kafka, dir.path(), 6000);
    let out = dir.path().join("out");
    let source = kafka_source(&kafka, "stop-at = \"latest\"\nrate = 4000");
    let job = seed_job(dir.path(), &source, &file_sink("counts", &out), CHECKPOINTS);
    let log = dir.path().join("stderr");
    let mut child = std::process::Command::new(weir_e2e::weir_bin())
        .args(["run", &job, "--listen", "none"])
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    kafka.set_up(false);
    std::thread::sleep(Duration::from_secs(3));
    kafka.set_up(true);
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("the job did not finish after the outage: {}", std::fs::read_to_string(&log).unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("kafka 'clicks'"), "the outage was reported: {stderr}");
    assert_eq!(sink_lines(&out), expected_lines(&expected_counts(&input)));
}

#[test]
fn the_sink_loses_no_event_when_killed_and_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let kafka = Kafka::start();
    kafka.create_topic("copies", PARTITIONS);
    let input = dir.path().join("clicks.jsonl");
    generated_clicks(&input, 6000, 40);
    let source = file_source("clicks", &input).replacen("type = \"file\"\n", "type = \"file\"\nrate = 4000\n", 1);
    let sink = format!(
        "[[sink]]\nuid = \"copies\"\ntype = \"kafka\"\nbootstrap-servers = \"{}\"\ntopic = \"copies\"\n",
        kafka.bootstrap()
    );
    let job = write_job(dir.path(), &format!("{}\n{CHECKPOINTS}", job("copy", 1, &[source, sink])));
    let kills = kill_after_checkpoints(&job, &dir.path().join("chk/copy"), &[], &[300, 500]);
    assert!(kills >= 1, "the job was killed {kills} times of 2");
    let resumed = weir(&["run", &job, "--listen", "none", "--from-checkpoint", "latest"]);
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    let written: std::collections::BTreeSet<String> = kafka.consume("copies").into_iter().collect();
    let lines = std::fs::read_to_string(&input).unwrap();
    let missing: Vec<&str> = lines.lines().filter(|l| !written.contains(*l)).collect();
    assert!(missing.is_empty(), "{} of 6000 lines are missing, such as {:?}", missing.len(), missing.first());
}

#[test]
fn bad_settings_are_refused_naming_the_connector() {
    let dir = tempfile::tempdir().unwrap();
    let kafka = Kafka::start();
    kafka.create_topic("clicks", PARTITIONS);
    let out = file_sink("counts", &dir.path().join("out"));
    let kafka_sink = |extra: &str| {
        format!(
            "[[sink]]\nuid = \"copies\"\ntype = \"kafka\"\nbootstrap-servers = \"{}\"\n{extra}\n",
            kafka.bootstrap()
        )
    };
    for (source, sink, needle) in [
        (
            kafka_source(&kafka, "").replace("topic = \"clicks\"", "topic = \"nowhere\""),
            out.clone(),
            "source 'clicks': topic 'nowhere'",
        ),
        (
            kafka_source(&kafka, "start-from = \"yesterday\""),
            out.clone(),
            "source 'clicks': start-from \"yesterday\" is not",
        ),
        (kafka_source(&kafka, "stop-at = \"soon\""), out.clone(), "source 'clicks': stop-at \"soon\""),
        (
            kafka_source(&kafka, "properties = { \"group.id\" = \"x\" }"),
            out.clone(),
            "property \"group.id\" is weir's to set",
        ),
        (
            kafka_source(&kafka, "properties = { \"no.such.property\" = \"1\" }"),
            out.clone(),
            "source 'clicks': cannot create a kafka consumer",
        ),
        (
            kafka_source(&kafka, "").replace(&kafka.bootstrap(), "127.0.0.1:1"),
            out.clone(),
            "source 'clicks': cannot read the topics of the kafka brokers at 127.0.0.1:1",
        ),
        (kafka_source(&kafka, ""), kafka_sink("topic = \"nowhere\""), "sink 'copies': topic 'nowhere'"),
        (
            kafka_source(&kafka, ""),
            kafka_sink("topic = \"clicks\"\ndelivery = \"exactly-once\""),
            "sink 'copies': delivery = \"exactly-once\" is not supported",
        ),
        (kafka_source(&kafka, ""), kafka_sink(""), "sink 'copies': `topic` is required"),
        (
            file_source("clicks", &dir.path().join("x")).replace("path", "topic = \"t\"\npath"),
            out.clone(),
            "`topic` is a setting of kafka sources only",
        ),
    ] {
        std::fs::write(dir.path().join("x"), "").unwrap();
        let job = seed_job(dir.path(), &source, &sink, "");
        let run = weir_with_env(&["run", &job, "--listen", "none"], &[], Duration::from_secs(60));
        assert_ne!(run.code, 0, "{needle}");
        assert!(run.stderr.contains(needle), "wanted {needle:?} in: {}", run.stderr);
    }
}

#[test]
fn credentials_the_brokers_refuse_and_passwords_in_the_job_file_are_refused_naming_the_connector() {
    let dir = tempfile::tempdir().unwrap();
    let kafka = Kafka::start_authenticating();
    let sasl = "properties = { \"security.protocol\" = \"SASL_PLAINTEXT\", \"sasl.mechanism\" = \"SCRAM-SHA-256\", \
                \"sasl.username\" = \"nobody\" }\npassword-env = \"WEIR_TEST_KAFKA_PASSWORD\"";
    let input = dir.path().join("clicks.jsonl");
    generated_clicks(&input, 10, 2);
    let kafka_sink = format!(
        "[[sink]]\nuid = \"copies\"\ntype = \"kafka\"\nbootstrap-servers = \"{}\"\ntopic = \"copies\"\n{sasl}\n",
        kafka.bootstrap()
    );
    let blackhole = "[[sink]]\nuid = \"out\"\ntype = \"blackhole\"\n".to_string();
    let password = vec![("WEIR_TEST_KAFKA_PASSWORD".to_string(), "wrong".to_string())];
    for (source, sink, env, needle) in [
        (kafka_source(&kafka, sasl), blackhole.clone(), &password, "source 'clicks': cannot read the topics"),
        (file_source("clicks", &input), kafka_sink.clone(), &password, "sink 'copies': cannot read the topics"),
        (
            kafka_source(&kafka, sasl),
            blackhole.clone(),
            &vec![],
            "`password-env` names WEIR_TEST_KAFKA_PASSWORD, which is not set",
        ),
        (
            kafka_source(&kafka, "properties = { \"sasl.password\" = \"hunter2\" }"),
            blackhole.clone(),
            &password,
            "source 'clicks': property \"sasl.password\" is a password; never put one in a job file",
        ),
    ] {
        let job = write_job(dir.path(), &job("auth", 1, &[source, sink]));
        let run = weir_with_env(&["run", &job, "--listen", "none"], env, Duration::from_secs(60));
        assert_ne!(run.code, 0, "{needle}");
        assert!(run.stderr.contains(needle), "wanted {needle:?} in: {}", run.stderr);
        if needle.contains("cannot read the topics") {
            assert!(run.stderr.contains("SASL authentication error"), "the cause is named: {}", run.stderr);
        }
    }
}

/// The watermarks of operator `uid` and of each of its subtasks, from the job's status.
fn watermarks(running: &Running, uid: &str) -> (Option<i64>, Vec<Option<i64>>) {
    let status: serde_json::Value = serde_json::from_str(&running.cli(&["status", &running.id, "--json"])).unwrap();
    let vertices = status["vertices"].as_array().cloned().unwrap_or_default();
    let Some(vertex) = vertices.iter().find(|v| v["uid"] == uid) else { return (None, Vec::new()) };
    let subtasks = vertex["subtasks"].as_array().cloned().unwrap_or_default();
    (vertex["watermark"].as_i64(), subtasks.iter().map(|s| s["watermark"].as_i64()).collect())
}

#[test]
fn an_idle_partition_holds_the_watermark_back_only_until_its_idle_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let kafka = Kafka::start();
    // Every record in partition 0 of 2, record timestamps from their `ts` (1,000 to 2,999 ms):
    // the source subtask reading partition 1 gets nothing.
    let input = dir.path().join("clicks.jsonl");
    let lines: Vec<String> =
        (0..2000).map(|i| format!("{{\"user\":\"u{}\",\"logged_in\":true,\"ts\":{}}}", i % 40, 1000 + i)).collect();
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    kafka.create_topic("clicks", 2);
    kafka.produce_lines("clicks", 1, &input);
    let expected = 2999 - 500 - 1;
    for (idle_timeout, holds_back) in [("", true), (", idle-timeout = \"300ms\"", false)] {
        let watermarks_setting = format!("watermarks = {{ out-of-orderness = \"500ms\"{idle_timeout} }}");
        let source = kafka_source(&kafka, &format!("parallelism = 2\n{watermarks_setting}"));
        let job = seed_job(dir.path(), &source, &blackhole_sink("counts"), "");
        let running = Running::start(&job, &[]);
        let started = std::time::Instant::now();
        let (mut counted, mut sources) = (None, Vec::new());
        while started.elapsed() < Duration::from_secs(20) {
            (counted, _) = watermarks(&running, "count-per-user");
            (_, sources) = watermarks(&running, "clicks");
            if counted == Some(expected) || (holds_back && sources.contains(&Some(expected))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if holds_back {
            // Read to its end, and still nothing downstream: partition 1 never had a watermark.
            assert!(sources.contains(&Some(expected)), "{sources:?}");
            std::thread::sleep(Duration::from_secs(1));
            assert_eq!(watermarks(&running, "count-per-user").0, None);
        } else {
            assert_eq!(counted, Some(expected), "the idle subtask held the watermark back; sources: {sources:?}");
        }
    }
}

/// Every event entering weir is bounded, key and value together, and a record without a value
/// (a tombstone) fails the job naming where it is, rather than passing on an empty event.
#[test]
fn oversized_records_and_tombstones_are_refused_naming_partition_and_offset() {
    let kafka = Kafka::start_direct();
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, usize, Option<usize>, &str); 2] = [
        // 9 MiB of key and 8 MiB of value: neither alone is over 16 MiB, together they are.
        ("oversized", 9 << 20, Some(8 << 20), "has 17825792 bytes of key and value, more than 16 MiB"),
        ("deleted", 3, None, "is a tombstone"),
    ];
    for (topic, key, value, message) in cases {
        kafka.create_topic(topic, 1);
        kafka.produce_sized(topic, 1, Some(10));
        kafka.produce_sized(topic, key, value);
        let source = format!(
            "[[source]]\nuid = \"in\"\ntype = \"kafka\"\nbootstrap-servers = \"{}\"\ntopic = \"{topic}\"\n\
             stop-at = \"latest\"\n",
            kafka.bootstrap()
        );
        let text = job(topic, 1, &[source, blackhole_sink("out")]);
        let out = weir(&["run", &write_job(dir.path(), &text), "--listen", "none"]);
        assert_eq!(out.code, 1, "{topic}: {}", out.stderr);
        let at = format!("the record at offset 1 of topic '{topic}' partition 0 {message}");
        assert!(out.stderr.contains("source 'in'") && out.stderr.contains(&at), "{topic}: {}", out.stderr);
    }
}

/// A savepoint restored against a topic whose log no longer holds its offsets (recreated here
/// on another broker with fewer records): refused, naming the partition and both offsets,
/// rather than waiting past the end for offsets the log never reaches; with `offset-reset` the
/// partition starts where it says.
#[test]
fn restored_offsets_outside_the_log_are_refused_unless_offset_reset_says_where_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let first = Kafka::start_direct();
    first.create_topic("clicks", 1);
    let input = dir.path().join("clicks.jsonl");
    generated_clicks(&input, 200, 10);
    first.produce_lines("clicks", 1, &input);
    let out = dir.path().join("out");
    let reader = |kafka: &Kafka, extra: &str| {
        let source = format!(
            "[[source]]\nuid = \"clicks\"\ntype = \"kafka\"\nbootstrap-servers = \"{}\"\ntopic = \"clicks\"\n{extra}\n",
            kafka.bootstrap()
        );
        let by_user = wasm_operator("by-user", "key_by", &["config = { field = \"user\" }"]);
        let tables = "[checkpointing]\ninterval = \"300ms\"\nstorage = \"file://chk\"\nsavepoint-dir = \"savepoints\"\n\
             [restart]\nstrategy = \"none\"\n";
        write_job(dir.path(), &format!("{}\n{tables}", job("reader", 1, &[source, by_user, file_sink("out", &out)])))
    };
    let running = Running::start(&reader(&first, ""), &[]);
    let started = std::time::Instant::now();
    while sink_lines(&out).len() < 200 {
        assert!(started.elapsed() < Duration::from_secs(30), "the 200 records were not read");
        std::thread::sleep(Duration::from_millis(50));
    }
    let savepoint = running.cli(&["stop", &running.id, "--savepoint"]);
    drop(running);

    let second = Kafka::start_direct();
    second.create_topic("clicks", 1);
    let few = dir.path().join("few.jsonl");
    generated_clicks(&few, 5, 10);
    second.produce_lines("clicks", 1, &few);
    let restore = |job: &str| weir(&["run", job, "--listen", "none", "--from-savepoint", &savepoint]);
    let refused = restore(&reader(&second, "stop-at = \"latest\""));
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    let outside = "the restored offset 200 of topic 'clicks' partition 0 is outside the partition's log, which holds \
                   offsets 0 to 5";
    assert!(refused.stderr.contains(outside) && refused.stderr.contains("offset-reset"), "{}", refused.stderr);
    assert_eq!(sink_lines(&out).len(), 200, "nothing read");

    let reset = restore(&reader(&second, "stop-at = \"latest\"\noffset-reset = \"earliest\""));
    assert_eq!(reset.code, 0, "{}", reset.stderr);
    assert_eq!(sink_lines(&out).len(), 205, "the recreated topic's 5 records read once");
}

/// Kafka keys are any bytes: keys that are not UTF-8 (a lone continuation byte, a sequence cut
/// short, a surrogate's encoding, an overlong one) reach the count as they are, and the C count
/// shows them as the Rust one does, each invalid part replaced by U+FFFD as `from_utf8_lossy`
/// replaces it, line for line.
#[test]
fn keys_that_are_not_utf8_come_out_of_the_c_count_as_out_of_the_rust_one() {
    let dir = tempfile::tempdir().unwrap();
    let kafka = Kafka::start();
    let keys = ["ff", "80", "61ff62", "c328", "e282", "f09f92", "eda080", "c0af", "f4908080", "e282ac", "f09f9280"];
    let lines: Vec<String> =
        (0..500).map(|i| format!("{{\"key-hex\":\"{}\",\"seq\":{i}}}", keys[i % keys.len()])).collect();
    let input = dir.path().join("raw-keys.jsonl");
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    kafka.create_topic("clicks", 1);
    kafka.produce_lines("clicks", 1, &input);
    let mut outputs = Vec::new();
    for module in ["count", "count_c"] {
        let out = dir.path().join(format!("out-{module}"));
        let sections = [
            kafka_source(&kafka, "stop-at = \"latest\""),
            wasm_operator("count", module, &["input = \"hash\""]),
            file_sink("counts", &out),
        ];
        let job_dir = dir.path().join(module);
        std::fs::create_dir_all(&job_dir).unwrap();
        let job = write_job(&job_dir, &job("raw-keys", 1, &sections));
        let run = weir(&["run", &job, "--listen", "none"]);
        assert_eq!(run.code, 0, "{module}: {}", run.stderr);
        outputs.push(sink_lines(&out));
    }
    assert_eq!(outputs[0].len(), 500);
    assert!(outputs[0].iter().any(|l| l == "{\"key\":\"a\u{FFFD}b\",\"count\":1}"), "{:?}", &outputs[0][..5]);
    assert!(outputs[0].iter().any(|l| l.starts_with("{\"key\":\"€\"")), "a valid key stays as it is");
    assert_eq!(outputs[1], outputs[0]);
}

/// `weir replay --events-from` a Kafka source: a key's records of the topic, up to its end when
/// the replay starts, through the job's filter and key_by, counted from the savepoint's state.
#[test]
fn a_replay_reads_a_keys_records_from_the_jobs_kafka_topic() {
    let dir = tempfile::tempdir().unwrap();
    let kafka = Kafka::start();
    let input = clicks_topic(&kafka, dir.path(), 3000);
    let source = kafka_source(&kafka, "");
    let job = seed_job(dir.path(), &source, &file_sink("counts", &dir.path().join("out")), "");
    // A savepoint written for the job: u5's count at 100, no source positions (from the start).
    let savepoint = dir.path().join("sp");
    let sp = savepoint.to_str().unwrap();
    let written =
        weir(&["savepoint", "write", sp, "--job", &job, "--operator", "count-per-user", "--set", "u5", "count=100"]);
    assert_eq!(written.code, 0, "{}", written.stderr);
    let replay =
        ["replay", sp, "--job", &job, "--operator", "count-per-user", "--key", "u5", "--events-from", "clicks"];
    let out = weir(&replay);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines: Vec<serde_json::Value> = out.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let clicks = expected_counts(&input)["u5"];
    assert_eq!(lines.len() as u64, 1 + clicks, "{}", out.stdout);
    assert_eq!(lines[0]["restored"]["count"], 100);
    assert_eq!(lines.last().unwrap()["after"]["count"], 100 + clicks);
    assert!(lines[1..].iter().all(|l| l["value"].as_str().unwrap().contains("\"user\":\"u5\"")));
    // Twice, the same events (their order across the topic's partitions is the broker's).
    let values = |stdout: &str| {
        let mut values: Vec<String> = stdout
            .lines()
            .skip(1)
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["value"].to_string())
            .collect();
        values.sort();
        values
    };
    assert_eq!(values(&weir(&replay).stdout), values(&out.stdout));
}
