//! What each guest language delivers (issue 16): the keyed count of issue 2 written in Rust
//! (`count`), Python (`count_py`) and JavaScript (`count_js`) on the same generator job, at
//! parallelism 1 and 2, interleaved round by round; with each module's size and its first compile
//! (`weir check` with an empty module cache).
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use super::{keyed_count_job, median, run_job, step, verdict};
use crate::Artifacts;

/// The operators compared, and the events each runs: the interpreted guests are ~40× slower,
/// so they get fewer events (enough for a few hundred batches) to keep a round short.
const GUESTS: [(&str, &str, u64); 3] =
    [("count", "Rust", 5_000_000), ("count_py", "Python", 300_000), ("count_js", "JavaScript", 300_000)];

/// One guest's figures: medians over the rounds.
pub(super) struct Language {
    name: &'static str,
    language: &'static str,
    /// Events/s at parallelism 1 and 2.
    rates: [f64; 2],
    /// Peak RSS of the `weir run` process at parallelism 1 and 2, MiB.
    peak_mib: [f64; 2],
    module_bytes: u64,
    first_compile_s: f64,
}

pub(super) fn languages(artifacts: &Artifacts, dir: &Path, keys: u64, rounds: usize) -> Result<Vec<Language>> {
    let mut jobs = Vec::new();
    for (name, _, events) in GUESTS {
        let module = format!("module = \"{}\"", artifacts.operators.join(format!("{name}.wasm")).display());
        for p in [1, 2] {
            jobs.push(keyed_count_job(dir, &format!("lang-{name}-p{p}"), &module, p, events, keys)?);
        }
    }
    let mut samples = vec![(Vec::new(), Vec::new()); jobs.len()];
    for round in 1..=rounds.max(1) {
        step(&format!("round {round}/{rounds}: the keyed count in Rust, Python and JavaScript, p=1 and p=2"));
        for (job, (rates, peaks)) in jobs.iter().zip(&mut samples) {
            let run = run_job(&artifacts.weir, job)?;
            println!("    {}: {:.0} events/s", job.file_stem().unwrap_or_default().to_string_lossy(), run.rate());
            rates.push(run.rate());
            peaks.push(run.peak_mib);
        }
    }
    let mut figures = Vec::new();
    for (i, (name, language, _)) in GUESTS.into_iter().enumerate() {
        let module = artifacts.operators.join(format!("{name}.wasm"));
        let [(r1, m1), (r2, m2)] = [0, 1].map(|p| {
            let (rates, peaks) = &mut samples[2 * i + p];
            (median(rates), median(peaks))
        });
        figures.push(Language {
            name,
            language,
            rates: [r1, r2],
            peak_mib: [m1, m2],
            module_bytes: std::fs::metadata(&module)?.len(),
            first_compile_s: first_compile(&artifacts.weir, &module, dir)?,
        });
    }
    Ok(figures)
}

/// Seconds `weir check MODULE` takes with an empty module cache: validation, compilation and
/// `describe`, which is what the first job that uses a module waits for.
fn first_compile(weir: &Path, module: &Path, dir: &Path) -> Result<f64> {
    let cache = dir.join("languages-cache");
    let _ = std::fs::remove_dir_all(&cache);
    std::fs::create_dir_all(&cache)?;
    let started = Instant::now();
    let out = Command::new(weir).arg("check").arg(module).env("WEIR_CACHE_DIR", &cache).output()?;
    let seconds = started.elapsed().as_secs_f64();
    std::fs::remove_dir_all(&cache).context("removing the bench's module cache")?;
    if !out.status.success() {
        bail!("weir check {} failed: {}", module.display(), String::from_utf8_lossy(&out.stderr));
    }
    Ok(seconds)
}

pub(super) fn print_results(figures: &[Language]) {
    println!("  operator     language      events/s p=1   events/s p=2   peak MiB p=1/p=2   module     first compile");
    for f in figures {
        println!(
            "  {:<12} {:<12} {:>13.0}  {:>13.0}   {:>7.1} / {:<7.1}  {:>6.1} MiB  {:>6.1} s",
            f.name,
            f.language,
            f.rates[0],
            f.rates[1],
            f.peak_mib[0],
            f.peak_mib[1],
            f.module_bytes as f64 / (1 << 20) as f64,
            f.first_compile_s
        );
    }
}

pub(super) fn print_targets(figures: &[Language]) {
    for (name, target) in [("count_js", 200_000.0), ("count_py", 100_000.0)] {
        if let Some(f) = figures.iter().find(|f| f.name == name) {
            println!("  {name}, p=1 >= {target:.0} events/s: {:>12.0}  {}", f.rates[0], verdict(f.rates[0] >= target));
        }
    }
}
