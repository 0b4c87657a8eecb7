//! `weir compare A B`: where the committed outputs of two jobs (or two output directories)
//! diverge, key by key (the comparison itself is [`crate::control::compare`]).
use std::path::{Path, PathBuf};

use super::client::Client;
use crate::control::compare::compare_outputs;

/// Compares the committed outputs of `a` and `b`, each an output directory or a job on `server`,
/// and prints, per key that differs, where; `json` prints the whole comparison as JSON. Two jobs
/// are compared by the server, which knows their lineage: a fork and its parent (or two forks
/// of one savepoint) are compared from the fork's savepoint on. A job's output is that of its
/// file sink `sink`, or of its first file sink.
pub(super) fn compare(a: &str, b: &str, sink: Option<&str>, server: &Client, json: bool) -> anyhow::Result<()> {
    let is_dir = |side: &str| Path::new(side).is_dir();
    let comparison = match is_dir(a) || is_dir(b) {
        false => server.compare(&server.job_id(a)?, &server.job_id(b)?, sink)?,
        true => {
            let dir = |side: &str| match is_dir(side) {
                true => Ok(PathBuf::from(side)),
                false => server.job_id(side).and_then(|id| server.output_dir(&id, sink)),
            };
            compare_outputs(&dir(a)?, &dir(b)?, None)?
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&comparison)?);
        return Ok(());
    }
    println!(
        "{} keys match, {} differ ({} against {})",
        comparison.matching_keys,
        comparison.differing_keys,
        comparison.a.display(),
        comparison.b.display()
    );
    if let Some(savepoint) = &comparison.since {
        println!("from savepoint {savepoint} on, where the fork started (output committed before it left out)");
    }
    for d in &comparison.differences {
        let show = |line: &Option<String>| line.clone().unwrap_or_else(|| "(nothing)".to_string());
        println!(
            "  {}: {} lines against {}; first difference: {} / {}",
            d.key,
            d.lines.0,
            d.lines.1,
            show(&d.first.0),
            show(&d.first.1)
        );
    }
    Ok(())
}
