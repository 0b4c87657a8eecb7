//! Progressive delivery (issue 31): a trial's answer time under a job of many keys and the
//! job's throughput meanwhile, the keyed count's throughput on `weir serve` with a shadow of
//! the same module beside it against without (the work doubles), with what the shadow costs in
//! memory, each in alternating stretches of one job; and the pause of each step of a canary
//! under a job of many keys.
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::{CountJob, Served, median, verdict, wait_until_counted, weir_cli};
use crate::{Artifacts, step};

/// Seconds each stretch is measured over.
const STRETCH: Duration = Duration::from_secs(3);

/// What both parts measured (medians over the rounds).
pub(super) struct Figures {
    trial: TrialFigures,
    shadow: ShadowFigures,
    canary: CanaryFigures,
}

/// The pause of each step of a canary, in milliseconds, in order.
struct CanaryFigures {
    keys: u64,
    steps: Vec<(&'static str, f64)>,
}

struct TrialFigures {
    keys: u64,
    /// From the request to the report, seconds (the CLI's upload of the module included).
    answer_s: f64,
    /// Events a second without a trial, and while one runs.
    alone: f64,
    during: f64,
    /// The pause the trial projects for migrating every key, and the upgrade's after it.
    projected_pause_ms: f64,
    paused_ms: f64,
}

struct ShadowFigures {
    keys: u64,
    /// Events a second without a shadow, and with one.
    alone: f64,
    shadowed: f64,
    /// What the shadow reported it costs, and the server's resident memory with it and without.
    shadow_mib: f64,
    rss_alone_mib: f64,
    rss_shadowed_mib: f64,
}

/// The unbounded keyed count on a `weir serve` of its own, and how to read its progress.
struct CountingJob {
    served: Served,
    weir: std::path::PathBuf,
    id: String,
    count: String,
}

impl CountingJob {
    /// Submits the Wasm count over `keys` keys at parallelism 1 (`extra` appended) and waits until
    /// every key is in state.
    fn start(artifacts: &Artifacts, dir: &Path, name: &str, keys: u64, extra: &str) -> Result<CountingJob> {
        let served = Served::start(artifacts, &dir.join(format!("{name}-data")))?;
        let count = artifacts.operators.join("count.wasm").to_string_lossy().into_owned();
        let operator = format!("module = {count:?}");
        let job = CountJob { name, operator: &operator, parallelism: 1, events: None, keys, extra }.write(dir, name)?;
        let id = weir_cli(&artifacts.weir, &served.url, &["submit", &job.to_string_lossy()])?.trim().to_string();
        wait_until_counted(&artifacts.weir, &served.url, &id, keys + keys / 5)?;
        Ok(CountingJob { served, weir: artifacts.weir.clone(), id, count })
    }

    fn cli(&self, args: &[&str]) -> Result<String> {
        weir_cli(&self.weir, &self.served.url, args)
    }

    /// Events the operator has taken in so far.
    fn counted(&self) -> Result<u64> {
        let status: serde_json::Value = serde_json::from_str(&self.cli(&["--json", "status", &self.id])?)?;
        status["vertices"][1]["events-in"].as_u64().context("the job's status has no operator counts")
    }

    /// Events a second over a stretch.
    fn rate(&self) -> Result<f64> {
        let (start, from) = (Instant::now(), self.counted()?);
        std::thread::sleep(STRETCH);
        Ok((self.counted()? - from) as f64 / start.elapsed().as_secs_f64())
    }

    /// The server's resident memory, MiB (0 where /proc does not say).
    fn rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.served.child.id())).unwrap_or_default();
        let kib = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next());
        kib.and_then(|k| k.parse::<f64>().ok()).unwrap_or(0.0) / 1024.0
    }
}

impl Drop for CountingJob {
    fn drop(&mut self) {
        let _ = self.cli(&["cancel", &self.id]);
    }
}

pub(super) fn figures(
    artifacts: &Artifacts,
    dir: &Path,
    (keys, trial_keys): (u64, u64),
    rounds: usize,
) -> Result<Figures> {
    Ok(Figures {
        trial: trials(artifacts, dir, trial_keys, rounds)?,
        shadow: shadows(artifacts, dir, keys, rounds)?,
        canary: canaries(artifacts, dir, trial_keys)?,
    })
}

/// The steps of canaries under the count of `keys` keys: `count_v2` (which migrates each key's
/// state) on 10%, then 50%, promoted; then `count_v2` again (the same layout) on 50%, aborted by
/// handing its key groups back.
fn canaries(artifacts: &Artifacts, dir: &Path, keys: u64) -> Result<CanaryFigures> {
    step(&format!("canary: the pause of each step under the Wasm keyed count (p=1) of {keys} keys"));
    let extra =
        "[checkpointing]\ninterval = \"1h\"\nstorage = \"file://checkpoints\"\nsavepoint-dir = \"savepoints\"\n";
    let job = CountingJob::start(artifacts, dir, "canaried", keys, extra)?;
    let module = |name: &str| format!("count={}", artifacts.operators.join(format!("{name}.wasm")).display());
    let v2 = module("count_v2");
    let mut steps = Vec::new();
    let plan: [(&'static str, Vec<&str>); 5] = [
        ("count_v2 on 10% (migrating 10% of the keys)", vec!["--operator", &v2, "--canary", "10%", "--no-trial"]),
        ("count_v2 on 50% (migrating 40% more)", vec!["--canary", "50%"]),
        ("count_v2 promoted (migrating the other 50%)", vec!["--promote"]),
        ("count_v2 again on 50% (the same layout)", vec!["--operator", &v2, "--canary", "50%", "--no-trial"]),
        ("its abort, handing back", vec!["--abort"]),
    ];
    for (what, args) in plan {
        let mut all = vec!["--json", "upgrade", job.id.as_str()];
        all.extend(args);
        let status: serde_json::Value = serde_json::from_str(&job.cli(&all)?)?;
        let pause = status["pause-ms"].as_f64().with_context(|| format!("{what} failed: {status}"))?;
        println!("    {what}: paused {pause:.1} ms");
        steps.push((what, pause));
        std::thread::sleep(Duration::from_millis(500));
    }
    Ok(CanaryFigures { keys, steps })
}

/// `count` -> `count_v2` tried under the count of `keys` keys, checkpointing every 2 s.
fn trials(artifacts: &Artifacts, dir: &Path, keys: u64, rounds: usize) -> Result<TrialFigures> {
    step(&format!("trial: count -> count_v2 tried under the Wasm keyed count (p=1) of {keys} keys"));
    let extra = "[checkpointing]\ninterval = \"2s\"\nstorage = \"file://checkpoints\"\n";
    let job = CountingJob::start(artifacts, dir, "tried", keys, extra)?;
    // A completed checkpoint of every key to try on.
    std::thread::sleep(Duration::from_millis(2500));
    let v2 = format!("count={}", artifacts.operators.join("count_v2.wasm").display());
    let (mut answers, mut alone, mut during, mut pauses) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 1..=rounds.max(1) {
        alone.push(job.rate()?);
        let (start, from) = (Instant::now(), job.counted()?);
        let report = job.cli(&["--json", "upgrade", &job.id, "--trial", "--operator", &v2])?;
        let answer = start.elapsed().as_secs_f64();
        during.push((job.counted()? - from) as f64 / start.elapsed().as_secs_f64());
        let report: serde_json::Value = serde_json::from_str(&report)?;
        if report["passed"] != true {
            bail!("the trial failed: {report}");
        }
        let op = &report["operators"][0];
        pauses.push(op["projected-pause-ms"].as_f64().unwrap_or(0.0));
        answers.push(answer);
        println!(
            "    round {round}: answered in {answer:.2} s ({} entries migrated, from {}); {:.0} events/s alone, \
             {:.0} meanwhile",
            op["migrated"],
            report["state-from"].as_str().unwrap_or(""),
            alone[round - 1],
            during[round - 1]
        );
    }
    // The upgrade the trials projected the pause of.
    let upgraded = job.cli(&["--json", "upgrade", &job.id, "--no-trial", "--operator", &v2])?;
    let upgraded: serde_json::Value = serde_json::from_str(&upgraded)?;
    let paused_ms = upgraded["pause-ms"].as_f64().with_context(|| format!("the upgrade failed: {upgraded}"))?;
    Ok(TrialFigures {
        keys,
        answer_s: median(&mut answers),
        alone: median(&mut alone),
        during: median(&mut during),
        projected_pause_ms: median(&mut pauses),
        paused_ms,
    })
}

/// The count of `keys` keys with and without a shadow of the same module.
fn shadows(artifacts: &Artifacts, dir: &Path, keys: u64, rounds: usize) -> Result<ShadowFigures> {
    step(&format!("shadow: the Wasm keyed count (p=1, {keys} keys) with and without a shadow of the same module"));
    let job = CountingJob::start(artifacts, dir, "shadowed", keys, "")?;
    let shadow = format!("count={}", job.count);
    let (mut alone, mut shadowed, mut shadow_mib, mut rss_alone, mut rss_shadowed) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 1..=rounds.max(1) {
        alone.push(job.rate()?);
        rss_alone.push(job.rss_mib());
        job.cli(&["shadow", &job.id, "--operator", &shadow])?;
        shadowed.push(job.rate()?);
        rss_shadowed.push(job.rss_mib());
        let status: serde_json::Value = serde_json::from_str(&job.cli(&["--json", "shadow", "status", &job.id])?)?;
        let report = &status["shadows"][0];
        if report["status"] != "running" {
            bail!("the shadow stopped: {report}");
        }
        shadow_mib.push(report["memory-bytes"].as_f64().unwrap_or(0.0) / f64::from(1 << 20));
        job.cli(&["shadow", &job.id, "--stop"])?;
        println!(
            "    round {round}: {:.0} events/s alone, {:.0} with the shadow ({:.0} equal lines so far)",
            alone[round - 1],
            shadowed[round - 1],
            report["equal"].as_f64().unwrap_or(0.0)
        );
        // The live state settles once the shadow is gone: the next stretch starts from it.
        std::thread::sleep(Duration::from_millis(500));
    }
    Ok(ShadowFigures {
        keys,
        alone: median(&mut alone),
        shadowed: median(&mut shadowed),
        shadow_mib: median(&mut shadow_mib),
        rss_alone_mib: median(&mut rss_alone),
        rss_shadowed_mib: median(&mut rss_shadowed),
    })
}

pub(super) fn print_targets(f: &Figures) {
    let t = &f.trial;
    println!(
        "  trial of count_v2 under {} keys: answers within 2 s: {:>6.2} s  {}",
        t.keys,
        t.answer_s,
        verdict(t.answer_s <= 2.0)
    );
    let (projected, paused) = (t.projected_pause_ms, t.paused_ms);
    println!(
        "  trial's projected pause within 3x of the upgrade's: projected {projected:.1} ms, paused {paused:.1} ms  {}",
        verdict(projected * 3.0 >= paused && projected <= paused * 3.0)
    );
    let cost = 1.0 - t.during / t.alone;
    println!(
        "  trial of count_v2 under {} keys: throughput meanwhile within 10% of without: {:>5.1}% lower  {} \
         ({:.0} events/s alone, {:.0} meanwhile)",
        t.keys,
        cost * 100.0,
        verdict(cost <= 0.10),
        t.alone,
        t.during
    );
    let s = &f.shadow;
    let ratio = s.shadowed / s.alone;
    println!(
        "  shadow of the same module, {} keys: throughput >= 45% of without: {:>5.1}%  {} ({:.0} events/s alone, \
         {:.0} with the shadow)",
        s.keys,
        ratio * 100.0,
        verdict(ratio >= 0.45),
        s.alone,
        s.shadowed
    );
    println!(
        "  shadow's memory, as it reports it: {:.1} MiB; the server's resident memory {:.1} MiB without it, {:.1} MiB \
         with it (no target)",
        s.shadow_mib, s.rss_alone_mib, s.rss_shadowed_mib
    );
    let c = &f.canary;
    for (what, pause) in &c.steps {
        println!(
            "  canary step under {} keys, pause under 10 ms: {what}: {pause:>7.1} ms  {}",
            c.keys,
            verdict(*pause < 10.0)
        );
    }
}
