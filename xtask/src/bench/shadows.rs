//! Shadow runs (`weir shadow`): the keyed count's throughput on `weir serve` with a shadow of the
//! same module beside it against without, in alternating stretches of one job (the work
//! doubles), and what the shadow costs in memory.
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::{CountJob, Served, median, verdict, wait_until_counted, weir_cli};
use crate::{Artifacts, step};

/// Medians over the rounds.
pub(super) struct ShadowFigures {
    keys: u64,
    /// Events a second without a shadow, and with one.
    alone: f64,
    shadowed: f64,
    /// What the shadow reported it costs, and the server's resident memory with it and without.
    shadow_mib: f64,
    rss_alone_mib: f64,
    rss_shadowed_mib: f64,
}

/// Seconds each stretch is measured over.
const STRETCH: Duration = Duration::from_secs(3);

pub(super) fn figures(artifacts: &Artifacts, dir: &Path, keys: u64, rounds: usize) -> Result<ShadowFigures> {
    step(&format!("shadow: the Wasm keyed count (p=1, {keys} keys) with and without a shadow of the same module"));
    let served = Served::start(artifacts, &dir.join("shadow-data"))?;
    let (weir, server) = (&artifacts.weir, served.url.clone());
    let count = artifacts.operators.join("count.wasm").to_string_lossy().into_owned();
    let operator = format!("module = {count:?}");
    let job = CountJob { name: "shadowed", operator: &operator, parallelism: 1, events: None, keys, extra: "" }
        .write(dir, "shadowed")?;
    let id = weir_cli(weir, &server, &["submit", &job.to_string_lossy()])?.trim().to_string();
    wait_until_counted(weir, &server, &id, keys)?;
    let counted = || -> Result<u64> {
        let status: serde_json::Value = serde_json::from_str(&weir_cli(weir, &server, &["--json", "status", &id])?)?;
        status["vertices"][1]["events-in"].as_u64().context("the job's status has no operator counts")
    };
    let rate = || -> Result<f64> {
        let (start, from) = (Instant::now(), counted()?);
        std::thread::sleep(STRETCH);
        Ok((counted()? - from) as f64 / start.elapsed().as_secs_f64())
    };
    let rss = || rss_mib(served.child.id());
    let shadow = format!("count={count}");
    let (mut alone, mut shadowed, mut shadow_mib, mut rss_alone, mut rss_shadowed) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 1..=rounds.max(1) {
        alone.push(rate()?);
        rss_alone.push(rss());
        weir_cli(weir, &server, &["shadow", &id, "--operator", &shadow])?;
        shadowed.push(rate()?);
        rss_shadowed.push(rss());
        let status: serde_json::Value =
            serde_json::from_str(&weir_cli(weir, &server, &["--json", "shadow", "status", &id])?)?;
        let report = &status["shadows"][0];
        if report["status"] != "running" {
            bail!("the shadow stopped: {report}");
        }
        shadow_mib.push(report["memory-bytes"].as_f64().unwrap_or(0.0) / f64::from(1 << 20));
        weir_cli(weir, &server, &["shadow", &id, "--stop"])?;
        println!(
            "    round {round}: {:.0} events/s alone, {:.0} with the shadow ({:.0} equal lines so far)",
            alone[round - 1],
            shadowed[round - 1],
            report["equal"].as_f64().unwrap_or(0.0)
        );
        // The live state settles once the shadow is gone: the next stretch starts from it.
        std::thread::sleep(Duration::from_millis(500));
    }
    weir_cli(weir, &server, &["cancel", &id])?;
    Ok(ShadowFigures {
        keys,
        alone: median(&mut alone),
        shadowed: median(&mut shadowed),
        shadow_mib: median(&mut shadow_mib),
        rss_alone_mib: median(&mut rss_alone),
        rss_shadowed_mib: median(&mut rss_shadowed),
    })
}

/// The resident memory of process `pid`, MiB (0 where /proc does not say).
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next());
    kib.and_then(|k| k.parse::<f64>().ok()).unwrap_or(0.0) / 1024.0
}

pub(super) fn print_targets(f: &ShadowFigures) {
    let ratio = f.shadowed / f.alone;
    println!(
        "  shadow of the same module, {} keys: throughput >= 45% of without: {:>5.1}%  {} ({:.0} events/s alone, \
         {:.0} with the shadow)",
        f.keys,
        ratio * 100.0,
        verdict(ratio >= 0.45),
        f.alone,
        f.shadowed
    );
    println!(
        "  shadow's memory, as it reports it: {:.1} MiB; the server's resident memory {:.1} MiB without it, {:.1} MiB \
         with it (no target)",
        f.shadow_mib, f.rss_alone_mib, f.rss_shadowed_mib
    );
}
