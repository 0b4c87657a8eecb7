//! Comparing the committed outputs of two jobs (or two output directories) key by key: the
//! result of a blue/green or A/B trial. `weir compare` prints it; the API serves it to the
//! dashboard.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;

use crate::checkpoint::savepoint::SavepointLocation;
use crate::control::jobs::JobInfo;
use crate::job::parse;
use crate::job::spec::SinkType;

/// Each key's output lines, sorted, from the committed part files of an output directory (those
/// `before` does not hold: the output a savepoint had). A line's key is its JSON `key` field;
/// other lines are grouped under the empty key.
fn lines_by_key(dir: &Path, before: Option<&Since>) -> anyhow::Result<BTreeMap<String, Vec<String>>> {
    let mut by_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let entries = std::fs::read_dir(dir).with_context(|| format!("cannot read output directory {}", dir.display()))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("part-") {
            continue; // only committed output
        }
        if before.is_some_and(|since| crate::connectors::recorded_in(&since.committed, &name)) {
            continue;
        }
        let text =
            std::fs::read_to_string(entry.path()).with_context(|| format!("cannot read {}", entry.path().display()))?;
        for line in text.lines() {
            let value: Option<serde_json::Value> = serde_json::from_str(line).ok();
            let key = value.as_ref().and_then(|v| v["key"].as_str()).unwrap_or_default().to_string();
            by_key.entry(key).or_default().push(line.to_string());
        }
    }
    for lines in by_key.values_mut() {
        lines.sort();
    }
    Ok(by_key)
}

/// Where one key's outputs diverge.
#[derive(Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Difference {
    /// The key.
    pub key: String,
    /// Lines each side emitted for the key.
    pub lines: (usize, usize),
    /// The first line (in sorted order) where they differ, on each side.
    pub first: (Option<String>, Option<String>),
}

/// The savepoint a comparison starts from, and what the compared sink had committed at it.
pub struct Since {
    /// Where it is.
    pub savepoint: String,
    /// The file sink's record at it ([`crate::runtime::SinkFactory::committed`]).
    pub committed: serde_json::Value,
}

/// The comparison of two outputs.
#[derive(Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Comparison {
    /// The first output directory.
    pub a: PathBuf,
    /// The second.
    pub b: PathBuf,
    /// The savepoint the comparison starts from (a fork's): output committed before it is left
    /// out on both sides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// Keys whose lines are the same on both sides.
    pub matching_keys: usize,
    /// Keys whose lines differ.
    pub differing_keys: usize,
    /// Where each differing key diverges, in key order.
    pub differences: Vec<Difference>,
}

/// Compares the committed outputs in directories `a` and `b`, from savepoint `since` on when
/// given.
pub fn compare_outputs(a: &Path, b: &Path, since: Option<&Since>) -> anyhow::Result<Comparison> {
    let (left, right) = (lines_by_key(a, since)?, lines_by_key(b, since)?);
    let mut keys: Vec<&String> = left.keys().chain(right.keys()).collect();
    keys.sort();
    keys.dedup();
    let none = Vec::new();
    let mut comparison = Comparison {
        a: a.to_path_buf(),
        b: b.to_path_buf(),
        since: since.map(|s| s.savepoint.clone()),
        matching_keys: 0,
        differing_keys: 0,
        differences: Vec::new(),
    };
    for key in keys {
        let (l, r) = (left.get(key).unwrap_or(&none), right.get(key).unwrap_or(&none));
        if l == r {
            comparison.matching_keys += 1;
            continue;
        }
        comparison.differing_keys += 1;
        let at = l.iter().zip(r).position(|(x, y)| x != y).unwrap_or(l.len().min(r.len()));
        comparison.differences.push(Difference {
            key: key.clone(),
            lines: (l.len(), r.len()),
            first: (l.get(at).cloned(), r.get(at).cloned()),
        });
    }
    Ok(comparison)
}

/// The output directory of job file `text`'s file sink `sink`, or its first file sink; relative
/// paths taken from `base`.
pub fn output_dir(text: &str, base: &Path, sink: Option<&str>) -> Result<PathBuf, String> {
    file_sink(text, base, sink).map(|(_, dir)| dir)
}

/// The uid and directory of job file `text`'s file sink `sink`, or its first file sink.
fn file_sink(text: &str, base: &Path, sink: Option<&str>) -> Result<(String, PathBuf), String> {
    let spec = parse(text, "the job file").map_err(|e| e.to_string())?;
    let files = || spec.sinks.iter().filter(|s| s.kind == SinkType::File);
    let dir = |s: &super::super::job::spec::SinkSpec| Some((s.uid.clone(), base.join(s.path.as_deref()?)));
    match sink {
        None => files().find_map(dir).ok_or_else(|| "it has no file sink to compare".to_string()),
        Some(uid) => files().filter(|s| s.uid == uid).find_map(dir).ok_or_else(|| {
            let names: Vec<String> = files().map(|s| format!("'{}'", s.uid)).collect();
            match names.is_empty() {
                true => "it has no file sink to compare".to_string(),
                false => format!("it has no file sink '{uid}' (its file sinks: {})", names.join(", ")),
            }
        }),
    }
}

/// Where a comparison of jobs `a` and `b` (their records) starts: when one was forked from a
/// savepoint of the other, or both from the same savepoint, that savepoint, with what the
/// parent's file sink (`sink`, or its first) had committed at it; else none (the whole outputs
/// are compared).
pub fn fork_point(a: &JobInfo, b: &JobInfo, base: &Path, sink: Option<&str>) -> Result<Option<Since>, String> {
    let forked_from = |j: &JobInfo| j.lineage.as_ref().filter(|l| l.fork).map(|l| l.savepoint.clone());
    let Some(savepoint) = forked_from(b).or_else(|| forked_from(a)) else { return Ok(None) };
    let unreadable = |e: String| format!("cannot read savepoint {savepoint}, where the fork started: {e}");
    let metadata = SavepointLocation::parse(&savepoint, base).and_then(|at| at.metadata()).map_err(unreadable)?;
    let siblings = forked_from(a) == forked_from(b);
    let Some(parent) = [a, b].into_iter().find(|j| j.id == metadata.job_id).or(siblings.then_some(a)) else {
        return Ok(None);
    };
    // The parent's sink (forks keep its uid, or name another sink).
    let (uid, _) = file_sink(&parent.job, base, sink)?;
    let committed = metadata.sinks.iter().find(|s| s.uid == uid).map(|s| s.committed.clone());
    let committed = committed.ok_or_else(|| {
        format!(
            "savepoint {savepoint} records nothing of sink '{uid}' (its job ran without checkpointing, so its \
             output has no barriers to tell what came before the fork): compare the output directories"
        )
    })?;
    Ok(Some(Since { savepoint, committed }))
}
