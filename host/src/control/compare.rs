//! Comparing the committed outputs of two jobs (or two output directories) key by key: the
//! result of a blue/green or A/B trial. `weir compare` prints it; the API serves it to the
//! dashboard.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;

use crate::job::parse;
use crate::job::spec::SinkType;

/// Each key's output lines, sorted, from the committed part files of an output directory. A
/// line's key is its JSON `key` field; other lines are grouped under the empty key.
fn lines_by_key(dir: &Path) -> anyhow::Result<BTreeMap<String, Vec<String>>> {
    let mut by_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let entries = std::fs::read_dir(dir).with_context(|| format!("cannot read output directory {}", dir.display()))?;
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with("part-") {
            continue; // only committed output
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
#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Difference {
    /// The key.
    pub key: String,
    /// Lines each side emitted for the key.
    pub lines: (usize, usize),
    /// The first line (in sorted order) where they differ, on each side.
    pub first: (Option<String>, Option<String>),
}

/// The comparison of two outputs.
#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Comparison {
    /// The first output directory.
    pub a: PathBuf,
    /// The second.
    pub b: PathBuf,
    /// Keys whose lines are the same on both sides.
    pub matching_keys: usize,
    /// Keys whose lines differ.
    pub differing_keys: usize,
    /// Where each differing key diverges, in key order.
    pub differences: Vec<Difference>,
}

/// Compares the committed outputs in directories `a` and `b`.
pub fn compare_outputs(a: &Path, b: &Path) -> anyhow::Result<Comparison> {
    let (left, right) = (lines_by_key(a)?, lines_by_key(b)?);
    let mut keys: Vec<&String> = left.keys().chain(right.keys()).collect();
    keys.sort();
    keys.dedup();
    let none = Vec::new();
    let mut comparison = Comparison {
        a: a.to_path_buf(),
        b: b.to_path_buf(),
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

/// The output directory of job file `text`'s first file sink, relative paths taken from `base`.
pub fn output_dir(text: &str, base: &Path) -> Result<PathBuf, String> {
    let spec = parse(text, "the job file").map_err(|e| e.to_string())?;
    spec.sinks
        .iter()
        .filter(|s| s.kind == SinkType::File)
        .find_map(|s| s.path.as_deref())
        .map(|path| base.join(path))
        .ok_or_else(|| "it has no file sink to compare".to_string())
}
