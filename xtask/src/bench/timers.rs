//! Timers: how long 1,000,000 timers take to be registered and fired (the window count against
//! the keyed count over the same generated events, one event per key), and the synchronous part
//! of a checkpoint that holds 1,000,000 pending timers.
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use super::{Served, median, run_job, step, wait_until_counted, weir_cli};
use crate::Artifacts;

/// What the timer bench measured (medians over the rounds).
pub(super) struct TimerFigures {
    /// The window job: every key's one event opens a window and sets a timer, which fires.
    pub(super) with_timers_s: f64,
    /// The keyed count over the same events: no timers.
    pub(super) without_timers_s: f64,
    /// Checkpoints holding `timers` pending timers, with the memory backend and with RocksDB.
    pub(super) pending: [Pending; 2],
}

/// A checkpoint holding pending timers.
pub(super) struct Pending {
    /// The longest synchronous part, ms.
    sync_ms: f64,
    /// Its size, MiB.
    size_mib: f64,
}

/// A generated job over `keys` keys, event i at i ms, watermarks at the highest timestamp, into
/// `operator` (a `module = …` line and its config) and a blackhole; `source` and `extra` add to
/// the source's table and the file.
fn job(dir: &Path, name: &str, keys: u64, source: &str, operator: &str, extra: &str) -> Result<PathBuf> {
    let path = dir.join(format!("{name}.toml"));
    let text = format!(
        "name = \"{name}\"\nparallelism = 1\n\n\
         [[source]]\nuid = \"events\"\ntype = \"generator\"\nkeys = {keys}\nevent-time-step = \"1ms\"\n\
         watermarks = {{ out-of-orderness = \"0s\" }}\n{source}\n\n\
         [[operator]]\nuid = \"windows\"\n{operator}\ninput = \"hash\"\n\n\
         [[sink]]\nuid = \"discard\"\ntype = \"blackhole\"\n\n{extra}\n"
    );
    std::fs::write(&path, text)?;
    Ok(path)
}

pub(super) fn timers(artifacts: &Artifacts, dir: &Path, timers: u64, rounds: usize) -> Result<TimerFigures> {
    let module = |name: &str| format!("module = \"{}\"", artifacts.operators.join(format!("{name}.wasm")).display());
    let bounded = format!("count = {timers}");
    // 10 s windows over 1 ms steps: each key's one event is alone in its window, whose timer
    // fires as the watermark passes it.
    let windows = format!("{}\nconfig = {{ size = \"10s\" }}", module("window_count"));
    let with_timers = job(dir, "timers-fired", timers, &bounded, &windows, "")?;
    let without_timers = job(dir, "timers-none", timers, &bounded, &module("count"), "")?;
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for round in 1..=rounds.max(1) {
        step(&format!("round {round}/{rounds}: {timers} timers registered and fired, and the same events counted"));
        let fired = run_job(&artifacts.weir, &with_timers)?;
        let counted = run_job(&artifacts.weir, &without_timers)?;
        println!("    window count {:.3} s, keyed count {:.3} s", fired.seconds, counted.seconds);
        with.push(fired.seconds);
        without.push(counted.seconds);
    }

    let memory = pending_checkpoint(artifacts, dir, timers, "")?;
    let rocksdb = pending_checkpoint(artifacts, dir, timers, super::rocksdb::STATE)?;
    Ok(TimerFigures {
        with_timers_s: median(&mut with),
        without_timers_s: median(&mut without),
        pending: [memory, rocksdb],
    })
}

/// Runs a job that holds `timers` pending timers (state settings `state`) on `weir serve` until a
/// checkpoint has stored them all.
fn pending_checkpoint(artifacts: &Artifacts, dir: &Path, timers: u64, state: &str) -> Result<Pending> {
    let backend = if state.is_empty() { "memory" } else { "RocksDB" };
    step(&format!("a checkpoint holding {timers} pending timers, {backend} state backend"));
    let module = artifacts.operators.join("window_count.wasm");
    // 1 h windows: the generator's first 3.6 M events (7 s at its rate) all fall in each key's
    // first window, so after `timers` events every key has one pending timer.
    let rate = format!("rate = {}", timers / 2);
    let hourly = format!("module = \"{}\"\nconfig = {{ size = \"1h\" }}", module.display());
    let extra = format!("[checkpointing]\ninterval = \"3s\"\nstorage = \"file://checkpoints\"\n{state}");
    let name = format!("timers-pending-{}", backend.to_lowercase());
    let job = job(dir, &name, timers, &rate, &hourly, &extra)?;
    let served = Served::start(artifacts, &dir.join("timers-serve-data"))?;
    let id = weir_cli(&artifacts.weir, &served.url, &["submit", &job.to_string_lossy()])?.trim().to_string();
    wait_until_counted(&artifacts.weir, &served.url, &id, timers)?;
    // The next checkpoint holds every key's timer.
    let since = super::now_ms();
    let started = std::time::Instant::now();
    let completed = loop {
        let stats: serde_json::Value =
            serde_json::from_str(&weir_cli(&artifacts.weir, &served.url, &["--json", "checkpoints", &id])?)?;
        let latest = &stats["latest"]["completed"];
        if latest["latest-ack-timestamp"].as_u64().unwrap_or(0) > since {
            break latest.clone();
        }
        anyhow::ensure!(started.elapsed() < Duration::from_secs(30), "no checkpoint after every key was counted");
        std::thread::sleep(Duration::from_millis(100));
    };
    weir_cli(&artifacts.weir, &served.url, &["cancel", &id])?;
    let sync_ms = completed["tasks"]["windows"]["sync-duration-ms"].as_f64().context("no synchronous part")?;
    let size_mib = completed["state-size"].as_f64().unwrap_or(0.0) / f64::from(1 << 20);
    println!("    synchronous part {sync_ms:.1} ms, {size_mib:.1} MiB");
    Ok(Pending { sync_ms, size_mib })
}

/// Prints the timer targets of issue 15.
pub(super) fn print_targets(figures: &TimerFigures, timers: u64) {
    let fired = figures.with_timers_s - figures.without_timers_s;
    println!(
        "  {timers} timers registered and fired < 1 s: {fired:>9.3} s   {} (the window count {:.3} s less the keyed \
         count of the same events {:.3} s)",
        super::verdict(fired < 1.0),
        figures.with_timers_s,
        figures.without_timers_s
    );
    for (pending, backend) in figures.pending.iter().zip(["memory", "RocksDB"]) {
        println!(
            "  checkpoint with {timers} pending timers, {backend}: sync part < 50 ms: {:>7.1} ms  {} ({:.1} MiB)",
            pending.sync_ms,
            super::verdict(pending.sync_ms < 50.0),
            pending.size_mib
        );
    }
}
