//! No path that loses committed output: second runs into one sink directory, restores and
//! upgrades into the directory a job wrote before, two jobs of one name, and a second job while
//! the first waits to restart. Each through the real binary, with and without checkpointing.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use weir_e2e::{
    Running, Server, assert_failed_with, expected_counts, expected_lines, file_sink, file_source, generated_clicks,
    job, operator, part_files, sink_lines, wasm_operator, weir, write_job,
};

/// The clicks job reading `input` into `out`, checkpointing every 100 ms into `chk/` when
/// `checkpointing`; the source limited to `rate` events per second when given.
fn clicks(dir: &Path, out: &str, checkpointing: bool, rate: Option<u32>) -> String {
    let mut source = file_source("clicks", &dir.join("clicks.jsonl"));
    if let Some(rate) = rate {
        source = source.replacen("type = \"file\"\n", &format!("type = \"file\"\nrate = {rate}\n"), 1);
    }
    let text = job(
        "clicks-per-user",
        2,
        &[
            source,
            wasm_operator("logged-in", "filter", &["config = { field = \"logged_in\" }"]),
            wasm_operator("by-user", "key_by", &["config = { field = \"user\" }"]),
            wasm_operator("count-per-user", "count", &["input = \"hash\""]),
            file_sink("counts", &dir.join(out)),
        ],
    );
    let savepoints = "[checkpointing]\nsavepoint-dir = \"file://savepoints\"\n";
    match checkpointing {
        true => format!("{text}\n{savepoints}interval = \"100ms\"\nstorage = \"file://chk\"\n"),
        false => format!("{text}\n{savepoints}interval = \"0s\"\n"),
    }
}

/// Every part file's bytes, by name.
fn contents(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    part_files(dir).into_iter().map(|p| (p.clone(), std::fs::read(&p).unwrap())).collect()
}

/// `lines` twice over, sorted.
fn twice(lines: &[String]) -> Vec<String> {
    let mut both = [lines, lines].concat();
    both.sort();
    both
}

#[test]
fn a_second_run_into_the_same_directory_keeps_the_first_runs_output() {
    for checkpointing in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        generated_clicks(&dir.path().join("clicks.jsonl"), 3000, 17);
        let expected = expected_lines(&expected_counts(&dir.path().join("clicks.jsonl")));
        let job = write_job(dir.path(), &clicks(dir.path(), "out", checkpointing, None));
        let first = weir(&["run", &job, "--listen", "none"]);
        assert_eq!(first.code, 0, "{}", first.stderr);
        let out = dir.path().join("out");
        assert_eq!(sink_lines(&out), expected, "checkpointing {checkpointing}: the first run");
        let written = contents(&out);
        let second = weir(&["run", &job, "--listen", "none"]);
        assert_eq!(second.code, 0, "{}", second.stderr);
        let after = contents(&out);
        for (path, bytes) in &written {
            assert_eq!(after.get(path), Some(bytes), "checkpointing {checkpointing}: {} was changed", path.display());
        }
        assert_eq!(sink_lines(&out), twice(&expected), "checkpointing {checkpointing}: both runs' output");
    }
}

/// The seed documents' workflow: stop with a savepoint, deploy, restore into the directory the
/// job wrote before. Nothing written before the stop is lost, nothing is written twice.
#[test]
fn stop_with_savepoint_and_restore_into_the_same_directory_loses_nothing() {
    for checkpointing in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        generated_clicks(&dir.path().join("clicks.jsonl"), 12_000, 40);
        let expected = expected_lines(&expected_counts(&dir.path().join("clicks.jsonl")));
        let job = write_job(dir.path(), &clicks(dir.path(), "out", checkpointing, Some(6000)));
        let running = Running::start(&job, &[]);
        std::thread::sleep(Duration::from_millis(900));
        let savepoint = running.cli(&["stop", &running.id, "--savepoint"]);
        drop(running);
        let before = sink_lines(&dir.path().join("out"));
        assert!(!before.is_empty() && before.len() < expected.len(), "stopped mid-way: {} lines", before.len());
        // The savepoint moved and renamed on the way, as a user deploying it would.
        let moved = dir.path().join("deployed-savepoint");
        std::fs::rename(&savepoint, &moved).unwrap();
        let restored = weir(&["run", &job, "--listen", "none", "--from-savepoint", &moved.to_string_lossy()]);
        assert_eq!(restored.code, 0, "{}", restored.stderr);
        assert_eq!(sink_lines(&dir.path().join("out")), expected, "checkpointing {checkpointing}");

        // The renamed savepoint is inspected and disposed of like any other; dispose deletes only
        // the files its _metadata lists, and leaves what else is in the directory.
        let moved = moved.to_string_lossy().into_owned();
        let inspected = weir(&["savepoint", "inspect", &moved, "--operator", "count-per-user"]);
        assert_eq!(inspected.code, 0, "{}", inspected.stderr);
        assert!(inspected.stdout.lines().count() > 0);
        let wider = job_with_max_parallelism(&job, 256);
        let refused = weir(&["run", &wider, "--listen", "none", "--from-savepoint", &moved]);
        let taken = format!("savepoint {moved} was taken with max-parallelism 128");
        assert_failed_with(&refused, &[&taken, "set max-parallelism = 128"]);
        std::fs::write(Path::new(&moved).join("notes.txt"), "mine").unwrap();
        let disposed = weir(&["savepoint", "dispose", "--force", &moved]);
        assert_eq!(disposed.code, 0, "{}", disposed.stderr);
        let left: Vec<String> =
            std::fs::read_dir(&moved).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert_eq!(left, ["notes.txt"], "only the savepoint's own files went");
    }
}

/// The job file at `job` with `max-parallelism` set to `n`, written beside it; its path.
fn job_with_max_parallelism(job: &str, n: u32) -> String {
    let text = std::fs::read_to_string(job).unwrap().replacen(
        "parallelism = 2\n",
        &format!("parallelism = 2\nmax-parallelism = {n}\n"),
        1,
    );
    let path = Path::new(job).with_file_name("wider.toml");
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

/// A job file's `[restart]` that waits `delay` before restarting.
fn restarting(text: &str, delay: &str) -> String {
    format!("{text}[restart]\nstrategy = \"fixed-delay\"\nattempts = 2\ndelay = \"{delay}\"\n")
}

/// While a job waits to restart, its sink directory is still its own: a second job on it is
/// refused, and the first then finishes with exactly-once output.
#[test]
fn a_sink_directory_stays_claimed_while_its_job_waits_to_restart() {
    let dir = tempfile::tempdir().unwrap();
    generated_clicks(&dir.path().join("clicks.jsonl"), 4000, 30);
    let server = Server::start(&dir.path().join("data"), &[]);
    let flaky = clicks(dir.path(), "out", true, Some(4000)).replacen(
        &format!("module = {}\ninput = \"hash\"", weir_e2e::toml_path(&operator("count"))),
        &format!(
            "module = {}\ninput = \"hash\"\nconfig = {{ trap-at = 20, attempts = 1 }}",
            weir_e2e::toml_path(&operator("test/flaky_count"))
        ),
        1,
    );
    assert!(flaky.contains("flaky_count"), "{flaky}");
    let first = write_job(dir.path(), &restarting(&flaky, "4s"));
    let id = server.cli(&["submit", &first]).stdout.trim().to_string();
    let started = Instant::now();
    loop {
        let (_, record) = server.http("GET", &format!("/v1/jobs/{id}"), b"", None);
        if record["state"] == "restarting" {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "the job never restarted: {record}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let other_dir = dir.path().join("other");
    std::fs::create_dir_all(&other_dir).unwrap();
    std::fs::copy(dir.path().join("clicks.jsonl"), other_dir.join("clicks.jsonl")).unwrap();
    let second = clicks(&other_dir, "../out", false, None).replace("clicks-per-user", "another-job");
    let refused = server.cli(&["submit", &write_job(&other_dir, &second)]);
    assert_failed_with(
        &refused,
        &["sink 'counts': another job is writing to", "give each job a sink directory of its own"],
    );
    let record = server.wait_for_job(&id);
    assert_eq!(record["state"], "finished", "{record}");
    assert_eq!(sink_lines(&dir.path().join("out")), expected_lines(&expected_counts(&dir.path().join("clicks.jsonl"))));
}

/// Two jobs of one name: the second is refused while the first runs; one that runs while the
/// first is down (its server killed) writes checkpoints of its own, and the first, resumed,
/// goes on from its own checkpoint, not the other's.
#[test]
fn two_jobs_of_one_name_never_take_each_others_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    generated_clicks(&dir.path().join("clicks.jsonl"), 16_000, 40);
    let expected = expected_lines(&expected_counts(&dir.path().join("clicks.jsonl")));
    let data = dir.path().join("data");
    let server = Server::start(&data, &[]);
    let first = write_job(dir.path(), &clicks(dir.path(), "out", true, Some(5000)));
    let id = server.cli(&["submit", &first]).stdout.trim().to_string();
    std::thread::sleep(Duration::from_millis(800));

    // The same name, its own sink, the same checkpoint storage: refused while the first runs.
    let second_dir = dir.path().join("second");
    std::fs::create_dir_all(&second_dir).unwrap();
    let second_text = clicks(dir.path(), "out-second", true, None)
        .replace("file://chk", &format!("file://{}", dir.path().join("chk").display()))
        .replace("file://savepoints", &format!("file://{}", dir.path().join("savepoints").display()));
    let second = write_job(&second_dir, &second_text);
    let refused = server.cli(&["submit", &second]);
    assert_failed_with(&refused, &["another job named 'clicks-per-user' is running with its checkpoints in"]);
    server.kill();

    // While the first job's server is down, the second runs to its end beside its checkpoints.
    let run = weir(&["run", &second, "--listen", "none"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(sink_lines(&dir.path().join("out-second")), expected);

    let server = Server::start(&data, &[]);
    let record = server.wait_for_job(&id);
    assert_eq!(record["state"], "finished", "{record}");
    assert_eq!(sink_lines(&dir.path().join("out")), expected, "the first job resumed from its own checkpoint");
    let log = server.log();
    assert!(log.contains(&format!("resuming job {id}")), "{log}");
}
