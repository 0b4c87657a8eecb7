//! The RocksDB targets beside throughput (which `throughput` measures against Flink's RocksDB
//! backend): peak memory with many keys, an incremental checkpoint after 1% of them changed, a
//! restore of all of them, and the upgrade pause.
use std::path::Path;

use anyhow::{Context, Result};

use super::{CheckpointFigures, CountJob, UpgradePauses, run_job, run_job_with, verdict};
use crate::{Artifacts, step};

/// The `[state]` table of the RocksDB runs.
pub(super) const STATE: &str =
    "[state]\nbackend = \"rocksdb\"\nlocal-dir = \"rocksdb\"\nmanaged-memory = \"256MiB\"\nincremental = true";

/// What the run of many keys measured.
pub(super) struct ManyKeys {
    keys: u64,
    peak_mib: f64,
    /// The final checkpoint of the first run, every key new.
    full: CheckpointFigures,
    /// The final checkpoint of the run resumed from it, 1% of the keys changed.
    incremental: CheckpointFigures,
    /// Spawning the resumed run to its first event at a sink.
    restore_ms: u64,
}

/// Counts `keys` keys (one event each) in RocksDB with 256 MiB of managed memory and an
/// incremental final checkpoint; then resumes from it, changes 1% of the keys and takes another.
pub(super) fn many_keys(artifacts: &Artifacts, dir: &Path, count: &str, keys: u64) -> Result<ManyKeys> {
    step(&format!("RocksDB: {keys} keys, an incremental checkpoint, a restore, 1% changed, another checkpoint"));
    let _ = std::fs::remove_dir_all(dir.join("checkpoints/rocksdb-many-keys"));
    let extra = format!("[checkpointing]\ninterval = \"1h\"\nstorage = \"file://checkpoints\"\n\n{STATE}");
    let first = CountJob {
        name: "rocksdb-many-keys",
        operator: count,
        parallelism: 1,
        events: Some(keys),
        keys,
        extra: &extra,
    };
    let changed = CountJob { events: Some(keys + keys / 100), ..first };
    let (first, changed) = (first.write(dir, "rocksdb-many-keys")?, changed.write(dir, "rocksdb-many-keys-changed")?);
    let run = run_job(&artifacts.weir, &first)?;
    let (rate, peak_mib) = (run.rate(), run.peak_mib);
    let full = run.checkpoint.context("no checkpoint in weir's summary")?;
    println!(
        "    {:.0} events/s, peak {:.1} MiB; checkpoint {:.1} MiB, sync {:.1} ms, whole {:.3} s",
        rate, peak_mib, full.size_mib, full.sync_ms, full.whole_s
    );
    let resumed = run_job_with(&artifacts.weir, &changed, &["--from-checkpoint", "latest"])?;
    let restore_ms = resumed.spawn_to_first_event_ms.context("no first event in weir's summary")?;
    let peak_mib = peak_mib.max(resumed.peak_mib);
    let incremental = resumed.checkpoint.context("no checkpoint in weir's summary")?;
    println!(
        "    restore to first event {restore_ms} ms; after 1% changed: uploaded {:.2} of {:.1} MiB, sync {:.1} ms, \
         whole {:.3} s",
        incremental.uploaded_mib, incremental.size_mib, incremental.sync_ms, incremental.whole_s
    );
    Ok(ManyKeys { keys, peak_mib, full, incremental, restore_ms })
}

/// Prints one target: what it says, the figure, and whether it is met.
fn target(what: &str, figure: String, met: bool) {
    println!("  {what}: {figure:>10}  {}", verdict(met));
}

/// Prints the RocksDB targets and whether each is met.
pub(super) fn print_targets(upgrade_keys: u64, upgrade: &UpgradePauses, many: &ManyKeys) {
    let (k, i) = (many.keys, &many.incremental);
    let share = i.uploaded_mib / many.full.size_mib.max(f64::MIN_POSITIVE);
    target(
        &format!("{k} keys in RocksDB: peak RSS < 600 MB"),
        format!("{:.1} MiB", many.peak_mib),
        many.peak_mib * 1.048576 < 600.0,
    );
    target(
        &format!("1% of {k} keys changed: uploads < 5% of a full checkpoint"),
        format!("{:.2}%", share * 100.0),
        share < 0.05,
    );
    target(&format!("1% of {k} keys changed: checkpoint < 1 s"), format!("{:.3} s", i.whole_s), i.whole_s < 1.0);
    target(&format!("1% of {k} keys changed: sync part < 50 ms"), format!("{:.1} ms", i.sync_ms), i.sync_ms < 50.0);
    target(
        &format!("{k} keys: restore from an incremental checkpoint to first event < 2 s"),
        format!("{} ms", many.restore_ms),
        many.restore_ms < 2000,
    );
    target(
        &format!("{upgrade_keys} keys in RocksDB: upgrade pause < 50 ms"),
        format!("{:.1} ms", upgrade.swap_ms),
        upgrade.swap_ms < 50.0,
    );
    println!(
        "  {upgrade_keys} keys in RocksDB: upgrade pause migrating every key: {:.1} ms (no target)",
        upgrade.migrating_ms
    );
}
