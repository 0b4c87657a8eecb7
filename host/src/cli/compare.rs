//! `weir compare A B`: where the committed outputs of two jobs (or two output directories)
//! diverge, key by key (the comparison itself is [`crate::control::compare`]).
use std::path::Path;

use crate::control::compare::compare_outputs;

/// Compares the committed outputs in directories `a` and `b` and prints, per key that differs,
/// where; `json` prints the whole comparison as JSON.
pub(super) fn compare(a: &Path, b: &Path, json: bool) -> anyhow::Result<()> {
    let comparison = compare_outputs(a, b)?;
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
