//! `weir run JOB.toml`.
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::Context;

use crate::job;
use crate::runtime::{self, JobSummary};
use crate::wasm::WasmEngine;

#[derive(clap::Args)]
pub(super) struct RunArgs {
    /// The job file (TOML).
    job: PathBuf,
}

pub(super) fn run(args: RunArgs) -> anyhow::Result<()> {
    let spec = job::read(&args.job)?;
    let name = spec.name.clone();
    let engine = WasmEngine::new(super::module_cache_dir()).map_err(anyhow::Error::msg)?;
    let graph = job::build(spec, &args.job, &engine, 0)?;
    let summary =
        runtime::execute(graph, Arc::new(AtomicBool::new(false))).with_context(|| format!("job '{name}' failed"))?;
    print_summary(&name, &summary);
    Ok(())
}

fn print_summary(name: &str, summary: &JobSummary) {
    eprintln!("job '{name}' finished in {:.3} s", summary.duration.as_secs_f64());
    if let Some(kib) = peak_rss_kib() {
        eprintln!("  peak memory {:.1} MiB", kib as f64 / 1024.0);
    }
    for v in &summary.vertices {
        let cpu = match &v.chained_into {
            Some(uid) => format!("runs in '{uid}'"),
            None => format!("cpu {:.3} s", v.cpu.as_secs_f64()),
        };
        eprintln!(
            "  {:<8} {:<24} parallelism {:<3} events in {:<10} out {:<10} {cpu}",
            v.kind, v.uid, v.parallelism, v.events_in, v.events_out
        );
    }
}

/// The process's peak resident set size, where the OS reports it (Linux: `VmHWM`).
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
