//! `weir compare A B`: where the committed outputs of two jobs (or two output directories)
//! diverge, key by key: the result of a blue/green or A/B trial.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;

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
struct Difference {
    key: String,
    /// Lines each side emitted for the key.
    lines: (usize, usize),
    /// The first line (in sorted order) where they differ, on each side.
    first: (Option<String>, Option<String>),
}

/// The comparison of two outputs.
#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct Comparison {
    a: PathBuf,
    b: PathBuf,
    matching_keys: usize,
    differing_keys: usize,
    differences: Vec<Difference>,
}

/// Compares the committed outputs in directories `a` and `b` and prints, per key that differs,
/// where; `json` prints the whole comparison as JSON.
pub(super) fn compare(a: &Path, b: &Path, json: bool) -> anyhow::Result<()> {
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
    if json {
        println!("{}", serde_json::to_string_pretty(&comparison)?);
        return Ok(());
    }
    println!(
        "{} keys match, {} differ ({} against {})",
        comparison.matching_keys,
        comparison.differing_keys,
        a.display(),
        b.display()
    );
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
