//! Bad records and state at hand (issue 32): the keyed count's throughput with
//! `on-error = "quarantine"` and no bad event against `fail`, in alternating runs; the time to
//! isolate one bad event in a batch of 1,024 (as the host logs it); and the time `weir replay`
//! takes over 10,000 events of one key.
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use super::{median, run_job, verdict};
use crate::{Artifacts, step};

/// Events of the key a replay takes.
const REPLAYED: usize = 10_000;

/// What the part measured (medians over the rounds).
pub(super) struct Figures {
    events: u64,
    /// Events a second with `fail`, and with `quarantine` (no bad event).
    fail: f64,
    quarantine: f64,
    /// Milliseconds to set the one bad event of a batch of 1,024 aside: median and slowest.
    isolate_median_ms: f64,
    isolate_max_ms: f64,
    isolated: usize,
    /// Seconds `weir replay` took over [`REPLAYED`] events.
    replay_s: f64,
}

/// The count job: a generator of `events` over `keys` into `module` with the operator lines
/// `operator`, its output and its quarantine to blackhole sinks.
fn job(
    dir: &Path,
    name: &str,
    module: &Path,
    operator: &str,
    (events, keys): (u64, u64),
) -> Result<std::path::PathBuf> {
    let quarantine = match operator.contains("quarantine") {
        true => "[[sink]]\nuid = \"set-aside\"\ntype = \"blackhole\"\ninputs = [{ from = \"count.quarantine\" }]\n",
        false => "",
    };
    let text = format!(
        "name = \"{name}\"\nparallelism = 1\n\n\
         [[source]]\nuid = \"events\"\ntype = \"generator\"\ncount = {events}\nkeys = {keys}\n\n\
         [[operator]]\nuid = \"count\"\nmodule = {module:?}\ninput = \"hash\"\n{operator}\n\n\
         [[sink]]\nuid = \"discard\"\ntype = \"blackhole\"\ninputs = [{{ from = \"count\" }}]\n\n{quarantine}"
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text)?;
    Ok(path)
}

pub(super) fn figures(artifacts: &Artifacts, dir: &Path, (events, keys): (u64, u64), rounds: usize) -> Result<Figures> {
    let dir = dir.join("quarantine");
    std::fs::create_dir_all(&dir)?;
    let count = artifacts.operators.join("count.wasm");
    step(&format!("quarantine: the Wasm count over {events} events, {keys} keys, on-error fail against quarantine"));
    let fail_job = job(&dir, "fail", &count, "", (events, keys))?;
    let quarantine_job = job(&dir, "quarantine", &count, "on-error = \"quarantine\"", (events, keys))?;
    let (mut fail, mut quarantine) = (Vec::new(), Vec::new());
    for round in 1..=rounds.max(1) {
        fail.push(run_job(&artifacts.weir, &fail_job)?.rate());
        quarantine.push(run_job(&artifacts.weir, &quarantine_job)?.rate());
        println!(
            "    round {round}: {:.0} events/s with fail, {:.0} with quarantine",
            fail[round - 1],
            quarantine[round - 1]
        );
    }

    step("quarantine: one bad event in every 1,024 (key k7 of 1,024 keys), the time to set it aside");
    let poison = artifacts.operators.join("test/poison.wasm");
    let operator = "config = { key = \"k7\" }\non-error = { action = \"quarantine\", max-per-minute = 1000000 }";
    let poisoned = job(&dir, "poisoned", &poison, operator, (200 * 1024, 1024))?;
    let out = Command::new(&artifacts.weir).args(["run", &poisoned.to_string_lossy(), "--listen", "none"]).output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("the poisoned job failed:\n{stderr}");
    }
    // "… set 1 of 1024 events aside in 12.3 ms", per guest call that set events aside.
    let mut isolate: Vec<f64> = stderr
        .lines()
        .filter(|l| l.contains(" of 1024 events aside in "))
        .filter_map(|l| l.rsplit(" in ").next()?.trim_end_matches(" ms").parse().ok())
        .collect();
    if isolate.is_empty() {
        bail!("the poisoned job set no batch's event aside:\n{stderr}");
    }
    let isolated = isolate.len();
    let isolate_max_ms = isolate.iter().copied().fold(0.0, f64::max);

    step(&format!("replay: one key over {REPLAYED} events from a written savepoint"));
    let replay_job = job(&dir, "replayed", &count, "", (1, 1))?;
    let savepoint = dir.join("replay-savepoint");
    let _ = std::fs::remove_dir_all(&savepoint);
    let job_arg = replay_job.to_string_lossy().into_owned();
    let written = Command::new(&artifacts.weir)
        .args(["savepoint", "write", &savepoint.to_string_lossy(), "--job", &job_arg, "--operator", "count"])
        .args(["--set", "k1", "count=5"])
        .output()?;
    if !written.status.success() {
        bail!("weir savepoint write failed: {}", String::from_utf8_lossy(&written.stderr));
    }
    let events_file = dir.join("replayed-events.jsonl");
    std::fs::write(&events_file, (0..REPLAYED).map(|i| format!("{{\"seq\":{i}}}\n")).collect::<String>())?;
    let mut replay = Vec::new();
    for _ in 0..rounds.max(1) {
        let started = Instant::now();
        let out = Command::new(&artifacts.weir)
            .args(["replay", &savepoint.to_string_lossy(), "--job", &job_arg, "--operator", "count", "--key", "k1"])
            .arg("--events")
            .arg(&events_file)
            .output()
            .context("running weir replay")?;
        let seconds = started.elapsed().as_secs_f64();
        if !out.status.success() || out.stdout.iter().filter(|b| **b == b'\n').count() != REPLAYED + 1 {
            bail!("weir replay failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        replay.push(seconds);
    }
    Ok(Figures {
        events,
        fail: median(&mut fail),
        quarantine: median(&mut quarantine),
        isolate_median_ms: median(&mut isolate),
        isolate_max_ms,
        isolated,
        replay_s: median(&mut replay),
    })
}

pub(super) fn print_targets(f: &Figures) {
    let cost = 1.0 - f.quarantine / f.fail;
    println!(
        "  on-error = \"quarantine\" with no bad event, {} events: throughput within 2% of fail: {:>5.1}% lower  {} \
         ({:.0} events/s with fail, {:.0} with quarantine)",
        f.events,
        cost * 100.0,
        verdict(cost <= 0.02),
        f.fail,
        f.quarantine
    );
    println!(
        "  one bad event in a batch of 1,024 set aside in under 50 ms: median {:.1} ms, slowest {:.1} ms over {} \
         batches  {}",
        f.isolate_median_ms,
        f.isolate_max_ms,
        f.isolated,
        verdict(f.isolate_median_ms < 50.0)
    );
    println!(
        "  replay of one key over {REPLAYED} events under 1 s: {:.2} s (the whole command: compile cache warm)  {}",
        f.replay_s,
        verdict(f.replay_s < 1.0)
    );
}
