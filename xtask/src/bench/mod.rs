//! `cargo xtask bench`: the performance targets, measured through the real `weir` binary. Prints
//! the figures and whether each target is met; BENCHMARKS.md records them.
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{Artifacts, Workspace, step};

mod flink;
mod graphs;
mod kafka;
mod languages;
mod on_flink;
mod postgres;
mod progressive;
mod quarantine;
mod rocksdb;
mod throughput;
mod timers;
mod windows;

#[derive(clap::Args)]
pub(crate) struct BenchArgs {
    /// Events per throughput run.
    #[arg(long, default_value_t = 20_000_000)]
    events: u64,
    /// Distinct keys in throughput runs.
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// Keys (one event each) in the state-memory run.
    #[arg(long, default_value_t = 1_000_000)]
    memory_keys: u64,
    /// Keys (one event each) in the RocksDB memory, incremental checkpoint and restore run.
    #[arg(long, default_value_t = 10_000_000)]
    rocksdb_keys: u64,
    /// Events upserted into PostgreSQL (over half as many keys) in the sink's run.
    #[arg(long, default_value_t = 2_000_000)]
    postgres_events: u64,
    /// Records produced to Kafka and read back in the Kafka source's runs.
    #[arg(long, default_value_t = 3_000_000)]
    kafka_events: u64,
    /// Rounds of the throughput runs; each round runs every configuration once, interleaved, and
    /// the median per configuration is reported (the machines are shared and noisy).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Timers registered and fired, and pending in a checkpoint, in the timer runs.
    #[arg(long, default_value_t = 1_000_000)]
    timers: u64,
    /// Runs one part of the bench only.
    #[arg(long, value_enum)]
    only: Option<Part>,
}

/// A part of the bench that runs alone with `--only`.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Part {
    /// The keyed count's throughput in weir's configurations and Flink's, interleaved.
    Throughput,
    /// Timers registered and fired, and a checkpoint holding them.
    Timers,
    /// The window count against Flink's, and the timers.
    Windows,
    /// The keyed count in each guest language (Rust, Python, JavaScript).
    Languages,
    /// Jobs as graphs: the `enrich` join against Flink's, and checkpoints aligned over two inputs.
    Graphs,
    /// Flink as the engine: the Wasm count on a Flink cluster against Flink's own, the upgrade's
    /// pause against a resubmit, two TaskManagers against one.
    Flink,
    /// Progressive delivery: a trial's answer time and cost under a job of many keys, and the
    /// keyed count with a shadow of the same module beside it against without.
    Progressive,
    /// Bad records and state at hand: quarantine's cost with no bad event, the time to set one
    /// aside, and a replay of one key.
    Quarantine,
}

/// What one `weir run` reported.
struct Run {
    seconds: f64,
    events: u64,
    peak_mib: f64,
    /// Milliseconds from spawning `weir run` to the first event at a sink.
    spawn_to_first_event_ms: Option<u64>,
    /// The latest completed checkpoint.
    checkpoint: Option<CheckpointFigures>,
    /// CPU seconds of the (first) source's subtasks.
    source_cpu_s: f64,
}

/// What `weir run` reports of its latest completed checkpoint.
struct CheckpointFigures {
    /// Everything it holds, MiB.
    size_mib: f64,
    /// What it uploaded, MiB.
    uploaded_mib: f64,
    /// Trigger to completion, s.
    whole_s: f64,
    /// The longest synchronous part, ms.
    sync_ms: f64,
}

impl Run {
    fn rate(&self) -> f64 {
        self.events as f64 / self.seconds
    }
}

/// The keyed-count job: a generator of `events` (`None`: unbounded) over `keys`, `operator`
/// counting per key, a
/// blackhole sink; `extra` is appended (a `[checkpointing]` table).
struct CountJob<'a> {
    name: &'a str,
    operator: &'a str,
    parallelism: u32,
    events: Option<u64>,
    keys: u64,
    extra: &'a str,
}

impl CountJob<'_> {
    fn write(&self, dir: &Path, file: &str) -> Result<std::path::PathBuf> {
        let CountJob { name, operator, parallelism, events, keys, extra } = self;
        let count = events.map_or(String::new(), |n| format!("count = {n}\n"));
        let path = dir.join(format!("{file}.toml"));
        let job = format!(
            "name = \"{name}\"\nparallelism = {parallelism}\n\n\
             [[source]]\nuid = \"events\"\ntype = \"generator\"\n{count}keys = {keys}\n\n\
             [[operator]]\nuid = \"count\"\n{operator}\ninput = \"hash\"\n\n\
             [[sink]]\nuid = \"discard\"\ntype = \"blackhole\"\n\n{extra}\n"
        );
        std::fs::write(&path, job)?;
        Ok(path)
    }
}

fn keyed_count_job(
    dir: &Path,
    name: &str,
    operator: &str,
    parallelism: u32,
    events: u64,
    keys: u64,
) -> Result<std::path::PathBuf> {
    CountJob { name, operator, parallelism, events: Some(events), keys, extra: "" }.write(dir, name)
}

fn run_job(weir: &Path, job: &Path) -> Result<Run> {
    run_job_with(weir, job, &[])
}

fn run_job_with(weir: &Path, job: &Path, args: &[&str]) -> Result<Run> {
    let job = job.to_string_lossy();
    let mut all = vec!["run", &job, "--listen", "none"];
    all.extend_from_slice(args);
    run_weir(weir, &all)
}

/// Runs `weir ARGS` (a verb that runs a job in the foreground) and reads its summary.
fn run_weir(weir: &Path, args: &[&str]) -> Result<Run> {
    let spawned = now_ms();
    let out = Command::new(weir).args(args).output().with_context(|| format!("running {}", weir.display()))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("weir {args:?} failed:\n{stderr}");
    }
    let field = |prefix: &str, line_has: &str| -> Option<f64> {
        let line = stderr.lines().find(|l| l.contains(line_has))?;
        let rest = &line[line.find(prefix)? + prefix.len()..];
        rest.split_whitespace().next()?.parse().ok()
    };
    let seconds = field("finished in ", "finished in").context("no duration in weir's summary")?;
    let events = field(" out ", "  sink ").context("no sink count in weir's summary")? as u64;
    let peak_mib = field("peak memory ", "peak memory").unwrap_or(f64::NAN);
    let first_event = field("(at ", "first event at a sink").map(|ms| ms as u64);
    let checkpoint = (|| {
        Some(CheckpointFigures {
            size_mib: field("size ", "end-to-end")?,
            uploaded_mib: field("(", "end-to-end")?,
            whole_s: field("end-to-end ", "end-to-end")?,
            sync_ms: field("sync ", "end-to-end")?,
        })
    })();
    Ok(Run {
        seconds,
        events,
        peak_mib,
        spawn_to_first_event_ms: first_event.map(|ms| ms.saturating_sub(spawned)),
        checkpoint,
        source_cpu_s: field("cpu ", "  source ").unwrap_or(f64::NAN),
    })
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "NOT MET" }
}

pub(crate) fn run(ws: &Workspace, artifacts: &Artifacts, args: &BenchArgs) -> Result<()> {
    let dir = ws.target().join("bench");
    std::fs::create_dir_all(&dir)?;
    let flink = match args.only {
        Some(Part::Timers | Part::Languages | Part::Flink | Part::Progressive | Part::Quarantine) => None,
        _ => flink::Flink::find(ws),
    };
    match args.only {
        Some(Part::Throughput) => {
            let rates = throughput::rates(artifacts, &dir, flink.as_ref(), (args.events, args.keys), args.rounds)?;
            println!("\nresults (median of {} rounds)", args.rounds);
            rates.print_results();
            println!("\ntargets");
            rates.print_targets();
            return Ok(());
        }
        Some(Part::Graphs) => {
            let figures = graphs::figures(artifacts, &ws.root, &dir, flink.as_ref(), args.keys, args.rounds)?;
            println!("\ntargets (median of {} rounds)", args.rounds);
            graphs::print_targets(&figures);
            return Ok(());
        }
        Some(Part::Flink) => {
            let figures = on_flink::figures(artifacts, &ws.root, &dir, args.rounds)?;
            println!("\ntargets (median of {} rounds)", args.rounds);
            on_flink::print_targets(&figures);
            return Ok(());
        }
        Some(Part::Progressive) => {
            let figures = progressive::figures(artifacts, &dir, (args.keys, args.memory_keys), args.rounds)?;
            println!("\ntargets (median of {} rounds)", args.rounds);
            progressive::print_targets(&figures);
            return Ok(());
        }
        Some(Part::Quarantine) => {
            let figures = quarantine::figures(artifacts, &dir, (args.events, args.keys), args.rounds)?;
            println!("\ntargets (median of {} rounds)", args.rounds);
            quarantine::print_targets(&figures);
            return Ok(());
        }
        Some(Part::Languages) => {
            let figures = languages::languages(artifacts, &dir, args.keys, args.rounds)?;
            println!("\nresults (median of {} rounds)", args.rounds);
            languages::print_results(&figures);
            println!("\ntargets");
            languages::print_targets(&figures);
            return Ok(());
        }
        Some(part) => {
            let windows = (part == Part::Windows)
                .then(|| windows::rates(artifacts, &ws.root, &dir, flink.as_ref(), args.events, args.keys, args.rounds))
                .transpose()?;
            let figures = timers::timers(artifacts, &dir, args.timers, args.rounds)?;
            println!("\ntargets");
            windows.iter().for_each(windows::print_targets);
            timers::print_targets(&figures, args.timers);
            return Ok(());
        }
        None => {}
    }
    let count = format!("module = \"{}\"", artifacts.operators.join("count.wasm").display());
    let rates = throughput::rates(artifacts, &dir, flink.as_ref(), (args.events, args.keys), args.rounds)?;
    let m = args.memory_keys;
    step(&format!("state memory: {m} keys in the memory backend (Wasm count, one event per key)"));
    let memory = run_job(&artifacts.weir, &keyed_count_job(&dir, "memory", &count, 1, m, m)?)?;
    let big = checkpoint_of_many_keys(artifacts, &dir, &count, m, args.rounds)?;
    let savepoint = savepoint_of_many_keys(artifacts, &dir, &count, m)?;
    let upgrade = upgrade_pauses(artifacts, &dir, (Upgraded::Count, m), args.rounds, "")?;
    let rocksdb_upgrade = upgrade_pauses(artifacts, &dir, (Upgraded::Count, m), args.rounds, rocksdb::STATE)?;
    let window_upgrade = upgrade_pauses(artifacts, &dir, (Upgraded::Windows, m), args.rounds, "")?;
    let rocksdb_keys = rocksdb::many_keys(artifacts, &dir, &count, args.rocksdb_keys)?;
    let upserts = postgres::upserts(artifacts, &dir, &count, args.postgres_events, args.postgres_events / 2)?;
    let kafka_reads = kafka::read_rates(artifacts, &dir, &count, args.kafka_events, args.rounds)?;
    let latency = kafka::latency(artifacts, &dir)?;
    let windows = windows::rates(artifacts, &ws.root, &dir, flink.as_ref(), args.events, args.keys, args.rounds)?;
    let timer_figures = timers::timers(artifacts, &dir, args.timers, args.rounds)?;
    let language_figures = languages::languages(artifacts, &dir, args.keys, args.rounds)?;
    let graph_figures = graphs::figures(artifacts, &ws.root, &dir, flink.as_ref(), args.keys, args.rounds)?;
    let progressive_figures = progressive::figures(artifacts, &dir, (args.keys, m), args.rounds)?;
    let quarantine_figures = quarantine::figures(artifacts, &dir, (args.events, args.keys), args.rounds)?;

    let control = control_plane(artifacts, &dir, args.rounds)?;

    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("\nresults ({cores} cores, median of {} rounds)", args.rounds);
    rates.print_results();
    println!("  peak RSS, {m} keys: {:.1} MiB", memory.peak_mib);
    languages::print_results(&language_figures);
    println!(
        "  checkpoint of {m} keys: {:.1} MiB, synchronous part {:.1} ms, whole {:.3} s; resume to first event {} ms",
        big.size_mib, big.sync_ms, big.whole_s, big.resume_ms
    );
    println!(
        "  savepoint of {m} keys (stop with savepoint): {:.1} MiB in {:.3} s; restore to first event {} ms",
        savepoint.size_mib, savepoint.seconds, savepoint.restore_ms
    );
    println!("\ntargets");
    rates.print_targets();
    println!(
        "  peak RSS with {m} keys < 200 MB: {:>9.1} MiB  {}",
        memory.peak_mib,
        verdict(memory.peak_mib * 1.048576 < 200.0)
    );
    println!("  {m} keys: sync part < 50 ms:     {:>9.1} ms  {}", big.sync_ms, verdict(big.sync_ms < 50.0));
    println!("  {m} keys: whole checkpoint < 1 s: {:>9.3} s   {}", big.whole_s, verdict(big.whole_s < 1.0));
    println!("  {m} keys: resume to first event < 1 s: {:>6} ms  {}", big.resume_ms, verdict(big.resume_ms < 1000));
    println!(
        "  {m} keys: savepoint < 1 s:          {:>9.3} s   {}",
        savepoint.seconds,
        verdict(savepoint.seconds < 1.0)
    );
    println!("  {m} keys: upgrade pause < 50 ms:   {:>9.1} ms  {}", upgrade.swap_ms, verdict(upgrade.swap_ms < 50.0));
    println!("  {m} keys: upgrade pause migrating every key: {:>9.1} ms (no target)", upgrade.migrating_ms);
    println!(
        "  {m} keys with a pending timer each (window count): upgrade pause < 50 ms: {:>9.1} ms  {} \
         (migrating every key: {:.1} ms)",
        window_upgrade.swap_ms,
        verdict(window_upgrade.swap_ms < 50.0),
        window_upgrade.migrating_ms
    );
    rocksdb::print_targets(m, &rocksdb_upgrade, &rocksdb_keys);
    windows::print_targets(&windows);
    graphs::print_targets(&graph_figures);
    progressive::print_targets(&progressive_figures);
    quarantine::print_targets(&quarantine_figures);
    timers::print_targets(&timer_figures, args.timers);
    languages::print_targets(&language_figures);
    println!(
        "  PostgreSQL upserts, p=2, exactly-once, checkpoints every 1 s >= 100,000/s: {:>10.0}  {} ({} rows)",
        upserts.rate,
        verdict(upserts.rate >= 100_000.0 && upserts.rows == args.postgres_events / 2),
        upserts.rows
    );
    println!(
        "  Kafka source -> Wasm count, p=1 >= 1,000,000 events/s: {:>10.0}  {} (the broker's own read limit: \
         {:.0} records/s, same rounds; weir's source thread: {:.0} records per CPU second)",
        kafka_reads.weir,
        verdict(kafka_reads.weir >= 1e6),
        kafka_reads.broker,
        kafka_reads.per_source_cpu_s
    );
    println!(
        "  Kafka -> PostgreSQL, exactly-once, checkpoints every 1 s, p99 <= 1.5 s: {:>6.0} ms  {} (p50 {:.0} ms, {} rows; \
         the broker alone: p50 {:.0} ms, p99 {:.0} ms)",
        latency.p99_ms,
        verdict(latency.p99_ms <= 1500.0),
        latency.p50_ms,
        latency.rows,
        latency.broker_ms.0,
        latency.broker_ms.1
    );
    println!(
        "  {m} keys: fork start < 1 s:           {:>6} ms  {}",
        savepoint.fork_ms,
        verdict(savepoint.fork_ms < 1000)
    );
    println!(
        "  {m} keys: savepoint restore to first event < 1 s: {:>6} ms  {}",
        savepoint.restore_ms,
        verdict(savepoint.restore_ms < 1000)
    );
    println!(
        "  submit to first event < 100 ms:      {:>9} ms  {}",
        control.submit_to_first_event_ms,
        verdict(control.submit_to_first_event_ms < 100)
    );
    println!("\ncontrol plane (weir serve, through the CLI)");
    println!("  upload + precompile of count.wasm:   {:>9} ms", control.first_upload_ms);
    println!("  the same bytes again (no compile):   {:>9} ms", control.second_upload_ms);
    Ok(())
}

/// What the checkpoint bench of many keys measured (medians over the rounds).
struct BigCheckpoint {
    size_mib: f64,
    sync_ms: f64,
    whole_s: f64,
    resume_ms: u64,
}

/// Counts `keys` keys (one event each) and takes the job's final checkpoint of them to local
/// disk; then resumes a longer run of the same job from it and times spawn to first event.
fn checkpoint_of_many_keys(
    artifacts: &Artifacts,
    dir: &Path,
    count: &str,
    keys: u64,
    rounds: usize,
) -> Result<BigCheckpoint> {
    // Interval 1 h: only the final checkpoint, taken once every key is in the state.
    let extra = "[checkpointing]\ninterval = \"1h\"\nstorage = \"file://checkpoints\"";
    let job =
        CountJob { name: "checkpoint-many-keys", operator: count, parallelism: 1, events: Some(keys), keys, extra };
    let first = job.write(dir, "checkpoint-many-keys")?;
    let resume = CountJob { events: Some(keys + keys / 10), ..job }.write(dir, "checkpoint-many-keys-resume")?;
    let (mut sizes, mut syncs, mut wholes, mut resumes) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 1..=rounds.max(1) {
        step(&format!("round {round}/{rounds}: checkpoint of {keys} keys, then resume from it"));
        let run = run_job(&artifacts.weir, &first)?;
        let CheckpointFigures { size_mib: size, whole_s: whole, sync_ms: sync, .. } =
            run.checkpoint.context("no checkpoint in weir's summary")?;
        let resumed = run_job_with(&artifacts.weir, &resume, &["--from-checkpoint", "latest"])?;
        let resume_ms = resumed.spawn_to_first_event_ms.context("no first event in weir's summary")?;
        println!("    {size:.1} MiB, sync {sync:.1} ms, whole {whole:.3} s; resume to first event {resume_ms} ms");
        sizes.push(size);
        syncs.push(sync);
        wholes.push(whole);
        resumes.push(resume_ms as f64);
    }
    Ok(BigCheckpoint {
        size_mib: median(&mut sizes),
        sync_ms: median(&mut syncs),
        whole_s: median(&mut wholes),
        resume_ms: median(&mut resumes) as u64,
    })
}

/// What the upgrade bench measured, as the server reports the pauses.
struct UpgradePauses {
    /// To the `_v2` module: every key's state migrated from schema version 1 to 2.
    migrating_ms: f64,
    /// The median of the `_v2` module swapped for itself: the swap alone, no migration.
    swap_ms: f64,
}

/// The job an upgrade bench runs.
#[derive(Clone, Copy)]
enum Upgraded {
    /// The keyed count (`count`, then `count_v2`).
    Count,
    /// The window count with 1 h windows (`window_count`, then `window_count_v2`): every key has
    /// an open window and a pending timer, none of which fires during the bench.
    Windows,
}

impl Upgraded {
    /// The operator's uid and its module before the upgrades.
    fn operator(self) -> (&'static str, &'static str) {
        match self {
            Upgraded::Count => ("count", "count"),
            Upgraded::Windows => ("windows", "window_count"),
        }
    }

    /// Writes the unbounded job over `keys` keys that runs `module`, with `extra` after it.
    fn write(self, dir: &Path, name: &str, module: &str, keys: u64, extra: &str) -> Result<std::path::PathBuf> {
        match self {
            Upgraded::Count => {
                let operator = format!("module = {module:?}");
                CountJob { name, operator: &operator, parallelism: 1, events: None, keys, extra }.write(dir, name)
            }
            Upgraded::Windows => windows::weir_job(dir, name, Path::new(module), (None, keys), "1h", extra),
        }
    }
}

/// Upgrades under an unbounded `job` over `keys` keys on `weir serve`, once every key is in
/// state: to the `_v2` module (which migrates every key's state), then `rounds` times from it to
/// itself (the same module deployed again: state declared alike, so the swap alone is timed).
/// `state` is the job's `[state]` table (empty: memory).
fn upgrade_pauses(
    artifacts: &Artifacts,
    dir: &Path,
    (job, keys): (Upgraded, u64),
    rounds: usize,
    state: &str,
) -> Result<UpgradePauses> {
    let backend = if state.is_empty() { "memory" } else { "rocksdb" };
    let (uid, from) = job.operator();
    let to = format!("{from}_v2");
    step(&format!("upgrade pause: {from} -> {to} -> {to} under a job with {keys} keys in {backend} state"));
    let served = Served::start(artifacts, &dir.join(format!("upgrade-data-{from}-{backend}")))?;
    let server = served.url.clone();
    let result = (|| {
        let module = |name: &str| artifacts.operators.join(format!("{name}.wasm")).to_string_lossy().into_owned();
        let extra = format!(
            "[checkpointing]\ninterval = \"1h\"\nstorage = \"file://checkpoints\"\nsavepoint-dir = \"savepoints\"\n\n{state}"
        );
        let name = format!("upgrade-many-keys-{from}-{backend}");
        let job = job.write(dir, &name, &module(from), keys, &extra)?;
        let id = weir_cli(&artifacts.weir, &server, &["submit", &job.to_string_lossy()])?.trim().to_string();
        wait_until_counted(&artifacts.weir, &server, &id, keys + keys / 5)?;
        let operator = format!("{uid}={}", module(&to));
        let swap = |what: &str| -> Result<f64> {
            let upgraded = weir_cli(&artifacts.weir, &server, &["--json", "upgrade", &id, "--operator", &operator])?;
            let status: serde_json::Value = serde_json::from_str(&upgraded)?;
            let pause = status["pause-ms"].as_f64().with_context(|| format!("the upgrade failed: {status}"))?;
            println!("    {what}: paused {pause:.1} ms");
            std::thread::sleep(std::time::Duration::from_millis(300));
            Ok(pause)
        };
        let migrating_ms = swap(&format!("{from} -> {to}, migrating every key's state"))?;
        let mut pauses = Vec::new();
        for round in 1..=rounds.max(1) {
            pauses.push(swap(&format!("round {round}: {to} -> {to}"))?);
        }
        weir_cli(&artifacts.weir, &server, &["cancel", &id])?;
        Ok(UpgradePauses { migrating_ms, swap_ms: median(&mut pauses) })
    })();
    drop(served);
    result
}

/// What the savepoint bench measured.
struct BigSavepoint {
    size_mib: f64,
    /// Trigger to completion, as the job's statistics record it.
    seconds: f64,
    /// Spawning `weir run --from-savepoint` to its first event at a sink.
    restore_ms: u64,
    /// Spawning `weir fork` of the savepoint to the new job's first event at a sink.
    fork_ms: u64,
}

/// Starts `weir run JOB` serving its API on a free loopback port; returns the process, the API's
/// address and the job's id once it answers.
fn run_serving(weir: &Path, job: &Path) -> Result<(std::process::Child, String, String)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let server = format!("http://127.0.0.1:{port}");
    let mut child = Command::new(weir)
        .arg("run")
        .arg(job)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let started = std::time::Instant::now();
    loop {
        if let Ok(out) = weir_cli(weir, &server, &["--json", "jobs"]) {
            let jobs: serde_json::Value = serde_json::from_str(&out)?;
            if let Some(id) = jobs["jobs"][0]["id"].as_str() {
                return Ok((child, server, id.to_string()));
            }
        }
        if started.elapsed() > std::time::Duration::from_secs(30) {
            let _ = child.kill();
            bail!("weir run did not serve its API");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Runs an unbounded count over `keys` keys until every key is in state, stops it with a
/// savepoint (timed by the job's statistics), then restores a run of the same job from it and
/// times spawn to first event.
fn savepoint_of_many_keys(artifacts: &Artifacts, dir: &Path, count: &str, keys: u64) -> Result<BigSavepoint> {
    step(&format!("savepoint of {keys} keys: stop with savepoint, then restore from it"));
    let extra = "[checkpointing]\ninterval = \"1h\"\nstorage = \"file://checkpoints\"\nsavepoint-dir = \"savepoints\"";
    let unbounded =
        CountJob { name: "savepoint-many-keys", operator: count, parallelism: 1, events: None, keys, extra };
    let job = unbounded.write(dir, "savepoint-many-keys")?;
    let (mut child, server, id) = run_serving(&artifacts.weir, &job)?;
    let result = (|| -> Result<(String, f64, f64)> {
        wait_until_counted(&artifacts.weir, &server, &id, keys + keys / 5)?;
        let location = weir_cli(&artifacts.weir, &server, &["stop", &id, "--savepoint"])?.trim().to_string();
        let stats: serde_json::Value =
            serde_json::from_str(&weir_cli(&artifacts.weir, &server, &["--json", "checkpoints", &id])?)?;
        let latest = &stats["latest"]["completed"];
        let seconds = latest["end-to-end-duration-ms"].as_f64().context("no savepoint in the statistics")? / 1000.0;
        let size_mib = latest["state-size"].as_f64().unwrap_or(0.0) / (1 << 20) as f64;
        Ok((location, seconds, size_mib))
    })();
    let _ = child.wait();
    let (location, seconds, size_mib) = result?;
    let metadata = std::fs::read_to_string(Path::new(&location).join("_metadata"))?;
    let json = metadata.rsplit_once("\nsha256:").map_or(metadata.as_str(), |(json, _)| json);
    let position = generator_index(&serde_json::from_str::<serde_json::Value>(json)?["sources"][0]["position"])
        .context("no generator position in the savepoint")?;
    let resume =
        CountJob { events: Some(position + keys / 10), ..unbounded }.write(dir, "savepoint-many-keys-resume")?;
    let restored = run_job_with(&artifacts.weir, &resume, &["--from-savepoint", &location])?;
    let restore_ms = restored.spawn_to_first_event_ms.context("no first event in weir's summary")?;
    // A fork: a new job of its own name from the same savepoint.
    let fork = CountJob { name: "savepoint-many-keys-fork", events: Some(position + keys / 10), ..unbounded };
    let fork = fork.write(dir, "savepoint-many-keys-fork")?;
    let forked = run_weir(&artifacts.weir, &["fork", &location, &fork.to_string_lossy()])?;
    let fork_ms = forked.spawn_to_first_event_ms.context("no first event in weir's summary")?;
    println!("    {size_mib:.1} MiB in {seconds:.3} s; restore to first event {restore_ms} ms, fork {fork_ms} ms");
    Ok(BigSavepoint { size_mib, seconds, restore_ms, fork_ms })
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// What the control-plane bench measured.
struct ControlPlane {
    first_upload_ms: u128,
    second_upload_ms: u128,
    /// Median over the rounds.
    submit_to_first_event_ms: u64,
}

/// A `weir serve` on a fresh data directory and a free loopback port, stopped when dropped.
struct Served {
    child: std::process::Child,
    url: String,
}

impl Served {
    fn start(artifacts: &Artifacts, data: &Path) -> Result<Served> {
        let _ = std::fs::remove_dir_all(data);
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        // Relative paths in submitted jobs (checkpoints, savepoints) resolve against the
        // server's working directory: the bench's own.
        let child = Command::new(&artifacts.weir)
            .current_dir(data.parent().context("the data directory has no parent")?)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
            .arg(data)
            .stderr(std::process::Stdio::null())
            .spawn()?;
        let served = Served { child, url: format!("http://127.0.0.1:{port}") };
        let started = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if started.elapsed() > std::time::Duration::from_secs(30) {
                bail!("weir serve did not start");
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        Ok(served)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until the operator of job `id` has counted more than `events` events.
fn wait_until_counted(weir: &Path, server: &str, id: &str, events: u64) -> Result<()> {
    loop {
        let status: serde_json::Value = serde_json::from_str(&weir_cli(weir, server, &["--json", "status", id])?)?;
        if status["vertices"][1]["events-in"].as_u64().unwrap_or(0) > events {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn weir_cli(weir: &Path, server: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(weir).arg("--server").arg(server).args(args).output()?;
    if !out.status.success() {
        bail!("weir {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8(out.stdout)?)
}

fn sha_of(upload_output: &str) -> Result<String> {
    upload_output.split_whitespace().next().map(str::to_string).context("no sha256 in the upload output")
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Starts `weir serve` on a fresh data directory; measures module upload (with and without
/// compiling) and, with the modules uploaded, the time from `weir submit` of the clicks job to its
/// first event at a sink, as the server records it.
fn control_plane(artifacts: &Artifacts, dir: &Path, rounds: usize) -> Result<ControlPlane> {
    step("control plane: module upload and submit-to-first-event latency");
    let served = Served::start(artifacts, &dir.join("serve-data"))?;
    let server = served.url.clone();
    let result = (|| {
        let module = |name: &str| artifacts.operators.join(format!("{name}.wasm")).to_string_lossy().into_owned();
        let timed = std::time::Instant::now();
        let count = sha_of(&weir_cli(&artifacts.weir, &server, &["modules", "upload", &module("count")])?)?;
        let first_upload_ms = timed.elapsed().as_millis();
        let timed = std::time::Instant::now();
        weir_cli(&artifacts.weir, &server, &["modules", "upload", &module("count")])?;
        let second_upload_ms = timed.elapsed().as_millis();
        let filter = sha_of(&weir_cli(&artifacts.weir, &server, &["modules", "upload", &module("filter")])?)?;
        let key_by = sha_of(&weir_cli(&artifacts.weir, &server, &["modules", "upload", &module("key_by")])?)?;

        let clicks = std::path::absolute(artifacts.operators.join("../../examples/clicks/clicks.jsonl"))?;
        let job = format!(
            "name = \"clicks-per-user\"\nparallelism = 2\n\n\
             [[source]]\nuid = \"clicks\"\ntype = \"file\"\npath = {clicks:?}\n\n\
             [[operator]]\nuid = \"logged-in\"\nmodule = \"{filter}\"\nconfig = {{ field = \"logged_in\" }}\n\n\
             [[operator]]\nuid = \"by-user\"\nmodule = \"{key_by}\"\nconfig = {{ field = \"user\" }}\n\n\
             [[operator]]\nuid = \"count-per-user\"\nmodule = \"{count}\"\ninput = \"hash\"\n\n\
             [[sink]]\nuid = \"counts\"\ntype = \"blackhole\"\n",
            clicks = clicks.to_string_lossy(),
        );
        let job_file = dir.join("submit-clicks.toml");
        std::fs::write(&job_file, job)?;
        let job_file = job_file.to_string_lossy().into_owned();
        let mut latencies = Vec::new();
        for round in 1..=rounds.max(1) {
            let submitted = now_ms();
            let id = weir_cli(&artifacts.weir, &server, &["submit", &job_file])?.trim().to_string();
            let first = loop {
                let status: serde_json::Value =
                    serde_json::from_str(&weir_cli(&artifacts.weir, &server, &["--json", "status", &id])?)?;
                if let Some(first) = status["first-event-at"].as_u64() {
                    break first;
                }
                if status["state"] == "failed" {
                    bail!("the submitted job failed: {}", status["failure"]);
                }
            };
            println!("    round {round}: first event {} ms after submit", first.saturating_sub(submitted));
            latencies.push(first.saturating_sub(submitted));
        }
        latencies.sort();
        Ok(ControlPlane { first_upload_ms, second_upload_ms, submit_to_first_event_ms: latencies[latencies.len() / 2] })
    })();
    drop(served);
    result
}

/// The index a generator source resumes at, from its position in `_metadata`: the hex of the
/// index's 8 little-endian bytes.
fn generator_index(position: &serde_json::Value) -> Option<u64> {
    let hex = position.as_str().filter(|h| h.len() == 16)?;
    let bytes: Vec<u8> = (0..8).map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()).collect::<Option<_>>()?;
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}
