//! Checkpoints taken while a job runs: every completed checkpoint holds exactly the state of the
//! events before its barrier (exactly-once alignment), `_metadata` is written last and checked,
//! and only `retained` checkpoints are kept.
use std::collections::BTreeMap;
use std::path::Path;

use weir_e2e::{
    clicks_job, completed_checkpoints, counts_before, generated_clicks, position_number, read_metadata,
    snapshot_values, weir, write_job,
};

/// Runs the clicks job slowly at parallelism 2 with checkpoints every 50 ms; returns the
/// directory holding the job's checkpoints.
fn run_with_checkpoints(dir: &Path, checkpointing: &str) -> std::path::PathBuf {
    let input = dir.join("clicks.jsonl");
    generated_clicks(&input, 4000, 40);
    let job = clicks_job(&input, "count", 2, &dir.join("out")).replacen(
        "type = \"file\"\npath = ",
        "type = \"file\"\nrate = 4000\npath = ",
        1,
    );
    let job = format!("{job}\n[checkpointing]\ninterval = \"50ms\"\nstorage = \"file://chk\"\n{checkpointing}\n");
    let run = weir(&["run", &write_job(dir, &job), "--listen", "none"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    dir.join("chk/clicks-per-user")
}

/// Counts per user in a checkpoint's `count-per-user` state files (value state 0, JSON numbers).
fn checkpointed_counts(checkpoint: &Path, metadata: &serde_json::Value) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for state in metadata["states"].as_array().unwrap() {
        assert_eq!(state["uid"], "count-per-user", "only the counter keeps state: {state}");
        let bytes = std::fs::read(checkpoint.join(state["file"].as_str().unwrap())).unwrap();
        assert_eq!(bytes.len() as u64, state["size"].as_u64().unwrap());
        for (index, key, value) in snapshot_values(&bytes) {
            assert_eq!(index, 0);
            let count: u64 = serde_json::from_slice(&value).unwrap();
            assert!(counts.insert(String::from_utf8(key).unwrap(), count).is_none(), "a key in two subtasks");
        }
    }
    counts
}

#[test]
fn every_checkpoint_holds_exactly_the_events_before_its_barrier() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = run_with_checkpoints(dir.path(), "retained = 1000");
    let done = completed_checkpoints(&checkpoints);
    assert!(done.len() >= 5, "only {} checkpoints completed", done.len());
    let mut last_position = 0;
    for checkpoint in &done {
        let metadata = read_metadata(&checkpoint.join("_metadata"));
        assert_eq!(metadata["max-parallelism"], 128);
        let sources = metadata["sources"].as_array().unwrap();
        assert_eq!(sources.len(), 1);
        let position = position_number(&sources[0]["position"]);
        assert!(position >= last_position, "positions move forward");
        last_position = position;
        let mut ranges: Vec<(u64, u64)> = metadata["states"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (s["key-groups"]["start"].as_u64().unwrap(), s["key-groups"]["end"].as_u64().unwrap()))
            .collect();
        ranges.sort();
        assert_eq!(ranges, vec![(0, 64), (64, 128)], "one file per count-per-user subtask, by key groups");
        assert_eq!(
            checkpointed_counts(checkpoint, &metadata),
            counts_before(&dir.path().join("clicks.jsonl"), position),
            "{} at byte {position}",
            checkpoint.display()
        );
    }
    assert!(last_position > 0);
}

#[test]
fn only_the_retained_checkpoints_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = run_with_checkpoints(dir.path(), "retained = 2");
    let done = completed_checkpoints(&checkpoints);
    assert_eq!(done.len(), 2, "{done:?}");
    let ids: Vec<u64> = done
        .iter()
        .map(|d| d.file_name().unwrap().to_string_lossy().trim_start_matches("chk-").parse().unwrap())
        .collect();
    assert_eq!(ids[1], ids[0] + 1, "the two newest: {ids:?}");
    // Nothing older than them is left, complete or not.
    for entry in std::fs::read_dir(&checkpoints).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name == ".weir-job.lock" {
            continue; // held by the job that runs on this directory
        }
        let id: u64 = name.trim_start_matches("chk-").parse().unwrap();
        assert!(id >= ids[0], "{name} should have been deleted");
    }
}

#[test]
fn at_least_once_checkpoints_never_miss_an_event_before_the_barrier() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = run_with_checkpoints(dir.path(), "mode = \"at-least-once\"\nretained = 1000");
    let done = completed_checkpoints(&checkpoints);
    assert!(!done.is_empty());
    for checkpoint in &done {
        let metadata = read_metadata(&checkpoint.join("_metadata"));
        let position = position_number(&metadata["sources"][0]["position"]);
        let actual = checkpointed_counts(checkpoint, &metadata);
        for (user, count) in counts_before(&dir.path().join("clicks.jsonl"), position) {
            assert!(actual.get(&user).copied().unwrap_or(0) >= count, "{user} in {}", checkpoint.display());
        }
    }
}

#[test]
fn bad_checkpointing_settings_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let base = clicks_job(&weir_e2e::repo().join("examples/clicks/clicks.jsonl"), "count", 1, &dir.path().join("out"));
    for (settings, needle) in [
        ("interval = \"soon\"", "[checkpointing] interval \"soon\" is not a duration"),
        ("interval = \"1s\"\nretained = 0", "retained must be at least 1"),
        ("interval = \"1s\"\ntimeout = \"0s\"", "timeout must be longer than 0s"),
        ("interval = \"1s\"\nmin-pause = \"a bit\"", "[checkpointing] min-pause \"a bit\" is not a duration"),
        ("interval = \"1s\"\nmax-concurrent = 0", "max-concurrent must be at least 1"),
        ("interval = \"1s\"\nretention = \"forever\"", "unknown variant `forever`"),
        ("interval = \"1s\"\ntimout = \"1m\"", "unknown field `timout`"),
        (
            "interval = \"1s\"\n[restart]\nstrategy = \"fixed-delay\"\ninitial-backoff = \"1s\"",
            "[restart] `initial-backoff` is not a setting of the fixed-delay strategy",
        ),
        ("interval = \"1s\"\n[restart]\nstrategy = \"always\"", "unknown variant `always`"),
        ("interval = \"1s\"\nstorage = \"ftp://x\"", "checkpoint storage ftp://x: the URL must start with file://"),
        ("interval = \"1s\"\nmode = \"sometimes\"", "unknown variant `sometimes`"),
    ] {
        let job = write_job(dir.path(), &format!("{base}\n[checkpointing]\n{settings}\n"));
        let run = weir(&["run", &job, "--listen", "none"]);
        assert_eq!(run.code, 1, "{settings}: {}", run.stderr);
        assert!(run.stderr.contains(needle), "{settings}: stderr lacks {needle:?}:\n{}", run.stderr);
    }
}
