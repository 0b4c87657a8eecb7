//! The RocksDB targets: the keyed count against Flink 2.3's RocksDB backend in the same run (the
//! anchor in `../shared/anchors/flink`, when it is set up), peak memory with many keys, an
//! incremental checkpoint after 1% of them changed, a restore of all of them, and the upgrade
//! pause.
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::{CheckpointFigures, CountJob, UpgradePauses, run_job, run_job_with, verdict};
use crate::{Artifacts, Workspace, step};

/// The `[state]` table of the RocksDB runs.
pub(super) const STATE: &str =
    "[state]\nbackend = \"rocksdb\"\nlocal-dir = \"rocksdb\"\nmanaged-memory = \"256MiB\"\nincremental = true";

/// Flink's side of the comparison: the anchor's `run.sh`.
pub(super) struct Flink {
    run_sh: PathBuf,
    /// `$FLINKBENCH`: the anchor's FLINK_HOME is `flink-2.3.0` in it.
    pub(super) home: PathBuf,
}

impl Flink {
    /// Why Flink was not measured.
    pub(super) const MISSING: &str = "set it up once with ../shared/anchors/flink/setup.sh";

    /// The anchor, if it is set up on this machine.
    pub(super) fn find(ws: &Workspace) -> Option<Flink> {
        let run_sh = ws.root.join("../shared/anchors/flink/run.sh");
        let home = std::env::var_os("FLINKBENCH")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/flinkbench")))?;
        (run_sh.is_file() && home.join("flink-2.3.0").is_dir() && home.join("classes").is_dir())
            .then_some(Flink { run_sh, home })
    }

    /// Events per second of Flink's keyed count with RocksDB at parallelism 1, no checkpoints.
    pub(super) fn rocksdb_rate(&self, round: usize, events: u64, keys: u64) -> Result<f64> {
        let tag = format!("weir-bench-rdb-{round}");
        let out = Command::new("bash")
            .arg(&self.run_sh)
            .args(["one", &tag, "mode=run", &format!("n={events}"), &format!("k={keys}"), "p=1"])
            .args(["backend=rocksdb", "ckpt=0"])
            .output()
            .context("running Flink's anchor")?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let rate = stdout.split_whitespace().find_map(|w| w.strip_prefix("throughput_eps=")?.parse().ok());
        match rate {
            Some(rate) => Ok(rate),
            None => bail!("Flink's anchor printed no throughput: {stdout}"),
        }
    }
}

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
pub(super) fn print_targets(
    rate: f64,
    flink: Option<f64>,
    upgrade_keys: u64,
    upgrade: &UpgradePauses,
    many: &ManyKeys,
) {
    let ratio = "RocksDB p=1 / Flink RocksDB p=1 >= 3";
    match flink {
        Some(flink) => target(ratio, format!("{:.2}", rate / flink), rate / flink >= 3.0),
        None => println!("  {ratio}: not measured ({})", Flink::MISSING),
    }
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
