//! Flink as the engine (issue 30): the Wasm `count` on the Flink runner against Flink's own Java
//! keyed count (`xtask/flink/FlinkClusterCount.java`) on the same local cluster, in the same
//! rounds; `weir flink upgrade`'s pause against a stop-with-savepoint and resubmit; and the Wasm
//! count on two TaskManagers against one.
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use weir_e2e::flink::{FlinkCluster, flink_home};

use super::{median, step};
use crate::Artifacts;

/// Events and keys of each count run.
const EVENTS: u64 = 3_000_000;
const KEYS: u64 = 10_000;

/// What the Flink part of the bench measured (medians).
pub(super) struct OnFlinkFigures {
    /// Events per second of the Wasm count on Flink and of Flink's Java count, at parallelism 1 and 2.
    wasm: [f64; 2],
    java: [f64; 2],
    /// `weir flink upgrade`'s pause, and a stop-with-savepoint and resubmit's downtime, in ms.
    upgrade_pause_ms: f64,
    resubmit_ms: f64,
    /// The Wasm count at parallelism 2 on one TaskManager of two slots and on two of one.
    one_taskmanager: f64,
    two_taskmanagers: f64,
}

fn count_job(dir: &Path, name: &str, artifacts: &Artifacts, events: u64, rate: Option<u64>) -> Result<String> {
    let path = dir.join(format!("{name}.toml"));
    let rate = rate.map(|r| format!("rate = {r}\n")).unwrap_or_default();
    let text = format!(
        "name = \"{name}\"\nparallelism = 1\n\n[[source]]\nuid = \"events\"\ntype = \"generator\"\ncount = {events}\n\
         keys = {KEYS}\n{rate}\n[[operator]]\nuid = \"count\"\nmodule = \"{}\"\ninput = \"hash\"\n\n[[sink]]\nuid = \
         \"out\"\ntype = \"blackhole\"\n",
        artifacts.operators.join("count.wasm").display()
    );
    std::fs::write(&path, text)?;
    Ok(path.display().to_string())
}

/// Events per second of a finished Flink job: events over its duration (scheduling included, as
/// for the Java count).
fn rate_of(cluster: &FlinkCluster, id: &str, events: u64) -> f64 {
    let job = cluster.wait_for(id, "FINISHED", Duration::from_secs(1800));
    events as f64 / (job["duration"].as_f64().unwrap_or(f64::MAX) / 1000.0)
}

/// One unmeasured run of each count on a fresh cluster: its JVMs compile their hot code first.
fn warm_up(cluster: &FlinkCluster, job: &str, jar: Option<&Path>) -> Result<()> {
    step("warming the cluster's JVMs up (one unmeasured run of each count)");
    let id = cluster.run(job, &["--parallelism", "2"]);
    cluster.wait_for(&id, "FINISHED", Duration::from_secs(1800));
    if let Some(jar) = jar {
        let id = run_java(cluster, jar, 2)?;
        cluster.wait_for(&id, "FINISHED", Duration::from_secs(1800));
    }
    Ok(())
}

/// Flink's Java count, as a jar, compiled once.
fn java_jar(root: &Path, dir: &Path) -> Result<std::path::PathBuf> {
    let home = flink_home();
    let classes = dir.join("cluster-count-classes");
    std::fs::create_dir_all(&classes)?;
    let status = Command::new("javac")
        .arg("-nowarn")
        .arg("-cp")
        .arg(format!("{}/lib/*", home.display()))
        .arg("-d")
        .arg(&classes)
        .arg(root.join("xtask/flink/FlinkClusterCount.java"))
        .status()
        .context("running javac")?;
    anyhow::ensure!(status.success(), "javac could not compile FlinkClusterCount.java");
    let jar = dir.join("flink-cluster-count.jar");
    let status = Command::new("jar")
        .args(["--create", "--file"])
        .arg(&jar)
        .args(["--main-class", "FlinkClusterCount", "-C"])
        .arg(&classes)
        .arg(".")
        .status()?;
    anyhow::ensure!(status.success(), "jar could not package FlinkClusterCount");
    Ok(jar)
}

/// Submits the Java count with Flink's own client; its job id.
fn run_java(cluster: &FlinkCluster, jar: &Path, parallelism: u32) -> Result<String> {
    let address = cluster.url.trim_start_matches("http://");
    let out = Command::new(flink_home().join("bin/flink"))
        .args(["run", "-d", "-m", address, "-c", "FlinkClusterCount"])
        .arg(jar)
        .args([format!("n={EVENTS}"), format!("k={KEYS}"), format!("p={parallelism}")])
        .output()
        .context("running Flink's client")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    match stdout.split_whitespace().find(|w| w.len() == 32 && w.chars().all(|c| c.is_ascii_hexdigit())) {
        Some(id) => Ok(id.to_string()),
        None => bail!("Flink's client named no job: {stdout}{}", String::from_utf8_lossy(&out.stderr)),
    }
}

pub(super) fn figures(artifacts: &Artifacts, root: &Path, dir: &Path, rounds: usize) -> Result<OnFlinkFigures> {
    step("the Flink runner: starting a local Flink cluster (two TaskManagers of two slots)");
    let cluster = FlinkCluster::start(2);
    let jar = java_jar(root, dir)?;
    let job = count_job(dir, "flink-count", artifacts, EVENTS, None)?;
    warm_up(&cluster, &job, Some(&jar))?;
    let (mut wasm, mut java) = ([Vec::new(), Vec::new()], [Vec::new(), Vec::new()]);
    for round in 0..rounds {
        for (i, p) in [1u32, 2].into_iter().enumerate() {
            step(&format!(
                "round {}: keyed count of {EVENTS} events at parallelism {p}: Wasm on Flink, then Java",
                round + 1
            ));
            let id = cluster.run(&job, &["--parallelism", &p.to_string()]);
            wasm[i].push(rate_of(&cluster, &id, EVENTS));
            let id = run_java(&cluster, &jar, p)?;
            java[i].push(rate_of(&cluster, &id, EVENTS));
            println!("    Wasm {:.0} events/s, Java {:.0} events/s", wasm[i][round], java[i][round]);
        }
    }

    // The upgrade's pause against a stop-with-savepoint and resubmit, on a paced count.
    let paced = count_job(dir, "flink-paced-count", artifacts, u64::MAX / 4, Some(20_000))?;
    let count_v2 = artifacts.operators.join("count_v2.wasm").display().to_string();
    let (mut pauses, mut downtimes) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        step(&format!(
            "round {}: weir flink upgrade count → count_v2, then stop with a savepoint and resubmit",
            round + 1
        ));
        let id = cluster.run(&paced, &["--parallelism", "2"]);
        cluster.wait_for(&id, "RUNNING", Duration::from_secs(300));
        cluster.wait_for_checkpoints(&id, 2);
        let upgraded = cluster.cli(&["flink", "upgrade", &id, "--operator", &format!("count={count_v2}")]);
        anyhow::ensure!(upgraded.code == 0, "weir flink upgrade: {}", upgraded.stderr);
        let pause =
            upgraded.stdout.split("pause ").nth(1).and_then(|r| r.split(' ').next()).and_then(|p| p.parse().ok());
        pauses.push(pause.context("the upgrade printed no pause")?);
        let started = Instant::now();
        let stopped = cluster.cli(&["flink", "stop", "--savepoint", &id]);
        anyhow::ensure!(stopped.code == 0, "weir flink stop: {}", stopped.stderr);
        let savepoint = stopped.stdout.lines().next().unwrap_or_default().to_string();
        let id = cluster.run(&paced, &["--parallelism", "2", "--from-savepoint", &savepoint]);
        // Down until every task of the new job runs.
        loop {
            let job = cluster.get(&format!("/jobs/{id}"));
            let vertices = job["vertices"].as_array().cloned().unwrap_or_default();
            if !vertices.is_empty() && vertices.iter().all(|v| v["status"] == "RUNNING") {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        downtimes.push(started.elapsed().as_secs_f64() * 1000.0);
        println!("    upgrade pause {:.1} ms, stop and resubmit {:.0} ms", pauses[round], downtimes[round]);
        anyhow::ensure!(cluster.cli(&["flink", "cancel", &id]).code == 0, "cancelling the paced count");
    }
    drop(cluster);

    // Two TaskManagers against one: the same slots, in one JVM or two.
    let (mut one, mut two) = (Vec::new(), Vec::new());
    for (taskmanagers, slots, rates) in [(1, 2, &mut one), (2, 1, &mut two)] {
        step(&format!("the Wasm count at parallelism 2 on {taskmanagers} TaskManager(s) of {slots} slot(s)"));
        let cluster = FlinkCluster::start_with(taskmanagers, slots);
        warm_up(&cluster, &job, None)?;
        for _ in 0..rounds {
            let id = cluster.run(&job, &["--parallelism", "2"]);
            rates.push(rate_of(&cluster, &id, EVENTS));
        }
    }
    Ok(OnFlinkFigures {
        wasm: [median(&mut wasm[0]), median(&mut wasm[1])],
        java: [median(&mut java[0]), median(&mut java[1])],
        upgrade_pause_ms: median(&mut pauses),
        resubmit_ms: median(&mut downtimes),
        one_taskmanager: median(&mut one),
        two_taskmanagers: median(&mut two),
    })
}

pub(super) fn print_targets(f: &OnFlinkFigures) {
    for (i, p) in [1, 2].into_iter().enumerate() {
        let ratio = f.wasm[i] / f.java[i];
        println!(
            "  Wasm count on Flink at p{p}: {:.0} events/s, Flink's Java count {:.0}: {ratio:.2}× (target ≥ 0.5×: {})",
            f.wasm[i],
            f.java[i],
            super::verdict(ratio >= 0.5)
        );
    }
    println!(
        "  weir flink upgrade pause {:.1} ms (target < 100 ms: {}); stop with a savepoint and resubmit: {:.0} ms down",
        f.upgrade_pause_ms,
        super::verdict(f.upgrade_pause_ms < 100.0),
        f.resubmit_ms
    );
    println!(
        "  Wasm count at p2 on two TaskManagers {:.0} events/s, on one {:.0}: {:.2}×",
        f.two_taskmanagers,
        f.one_taskmanager,
        f.two_taskmanagers / f.one_taskmanager
    );
}
